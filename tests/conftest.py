"""Shared fixtures: tiny models built once per test session (no network)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tiny_models import build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """Path to a tiny Llama-style model (gated MLP, BOS-prepending tokenizer)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), arch="llama")


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory):
    """Path to a tiny GPT-2-style model (non-gated MLP, no BOS)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"), arch="gpt2")
