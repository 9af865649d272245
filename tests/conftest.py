"""Shared fixtures (no network): tiny models built once per session, neuron-set files for them,
planted statistics, local perplexity tasks and a profiling corpus, and a stand-in for loading a model.
What they build comes from ``builders.py``."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from builders import (  # noqa: E402
    ModelLoadAttempted,
    build_tiny_model,
    planted_stats,
    write_neuron_file,
    write_perplexity_tasks,
    write_profile_corpus,
)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """Path to a tiny Llama-style model (gated MLP, BOS-prepending tokenizer)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), arch="llama")


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory):
    """Path to a tiny GPT-2-style model (non-gated MLP, no BOS)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"), arch="gpt2")


@pytest.fixture(scope="session")
def neuron_file(tmp_path_factory):
    """``neuron_file(model=None, **shape)``: the path of a ``lape-top1.safetensors`` holding
    ``builders.random_neuron_set(**shape)``. With ``model`` (a model folder, e.g. ``tiny_llama``)
    the file records that model as `lape-harness profile` does and has its layer count and width;
    without, it records the placeholder model "tiny" (for tests that load no model). The same
    arguments give the same file for the whole session: tests read it, never change it."""
    saved = {}

    def make(model=None, **shape):
        key = (str(model), tuple(sorted((name, tuple(v) if isinstance(v, list) else v) for name, v in shape.items())))
        if key not in saved:
            saved[key] = write_neuron_file(tmp_path_factory.mktemp("neurons") / "lape-top1.safetensors", model, **shape)
        return saved[key]

    return make


@pytest.fixture(scope="module")
def planted_set():
    """``(stats, neuron set)``: ``builders.planted_stats()`` (3 layers × 40 neurons) identified at top rate 0.3."""
    from lape_harness.lape import identify

    stats, _ = planted_stats(layers=3, width=40)
    return stats, identify(stats, top_rate=0.3)


@pytest.fixture(scope="module")
def ppl_tasks(tmp_path_factory):
    """A folder of rolling-log-likelihood tasks ``tinyppl_de``, ``tinyppl_fr`` over local JSON lines."""
    return write_perplexity_tasks(tmp_path_factory.mktemp("tasks"))


@pytest.fixture(scope="module")
def ppl_task_manager(ppl_tasks):
    """A TaskManager of the ``ppl_tasks`` alone (indexing all of lm-eval's takes seconds)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(ppl_tasks), include_defaults=False)


@pytest.fixture(scope="module")
def profile_corpus(tmp_path_factory):
    """``(folder, {language: paragraphs})``: a corpus of ``builders.PROFILE_LANGUAGES`` to profile."""
    folder = tmp_path_factory.mktemp("corpus")
    return folder, write_profile_corpus(folder)


@pytest.fixture
def no_model_load(monkeypatch):
    """Loading a model raises ``builders.ModelLoadAttempted``: what a command reports first comes before the load."""
    import lape_harness.model_loading as model_loading

    def refuse(*args, **kwargs):
        raise ModelLoadAttempted

    monkeypatch.setattr(model_loading, "load_model", refuse)
