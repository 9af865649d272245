"""Loading models across transformers versions (the dtype keyword) and straight onto the device."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import torch
import transformers

from lape_harness.hf_loading import dtype_keyword, dtype_kwargs

ROOT = Path(__file__).resolve().parent.parent


def test_the_dtype_keyword_follows_the_transformers_version():
    assert dtype_keyword("4.45.0") == dtype_keyword("4.55.4") == "torch_dtype"
    assert dtype_keyword("4.56.0") == dtype_keyword("5.24.0") == "dtype"
    assert dtype_kwargs(None) == {}
    from packaging.version import Version

    assert dtype_keyword() == ("dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype")


def test_no_model_is_loaded_with_a_hard_coded_dtype_keyword():
    """``from_pretrained(dtype=...)`` raises TypeError on transformers < 4.56: every load goes
    through lape_harness.hf_loading, which picks the keyword."""
    offenders = []
    for path in sorted([*(ROOT / "lape_harness").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("from_pretrained", "from_config")
                    and any(keyword.arg in ("dtype", "torch_dtype") for keyword in node.keywords)):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


class _OldTransformersModel:
    """``from_pretrained`` of transformers 4.55: no ``dtype`` keyword; records how it was called."""

    calls: list[dict] = []

    @classmethod
    def from_pretrained(cls, path, torch_dtype=None, **kwargs):
        if "dtype" in kwargs:
            raise TypeError("__init__() got an unexpected keyword argument 'dtype'")
        cls.calls.append({"path": path, "torch_dtype": torch_dtype, **kwargs})
        return cls()

    def eval(self):
        return self

    def to(self, *args, **kwargs):
        raise AssertionError("the model must be loaded where it runs, not moved there afterwards")


class _Tokenizer:
    @classmethod
    def from_pretrained(cls, path, **kwargs):
        return "tokenizer"


@pytest.fixture
def old_transformers(monkeypatch):
    # The module lape-harness imports now: loading a model can put a new transformers module into
    # sys.modules, so the one this file imported at collection time may be stale.
    current = sys.modules["transformers"]
    _OldTransformersModel.calls = []
    monkeypatch.setattr(current, "__version__", "4.55.4")
    monkeypatch.setattr(current, "AutoModelForCausalLM", _OldTransformersModel)
    monkeypatch.setattr(current, "AutoTokenizer", _Tokenizer)
    return _OldTransformersModel.calls


def test_profile_loads_each_rank_straight_onto_its_device(old_transformers):
    """torchrun: rank r loads onto cuda:r directly (no whole model in host RAM first), and the
    keyword of transformers < 4.56 is used."""
    from lape_harness.model_loading import load_model

    model, tokenizer = load_model("some/model", None, torch.bfloat16, torch.device("cuda", 1), None)
    assert tokenizer == "tokenizer"
    (call,) = old_transformers
    assert call["device_map"] == {"": "cuda:1"} and call["torch_dtype"] is torch.bfloat16
    assert call["low_cpu_mem_usage"] is True
    load_model("some/model", None, torch.float32, torch.device("cpu"), {"model.layers": 0, "lm_head": 1})
    assert old_transformers[1]["device_map"] == {"model.layers": 0, "lm_head": 1}


def test_bake_loads_with_the_old_keyword(old_transformers, tmp_path):
    # The load happens; the fake model then fails where the neuron sites are looked up.
    from builders import random_neuron_set

    from lape_harness.errors import InputError
    from lape_harness.steering.bake import bake_checkpoint

    neurons = tmp_path / "n.safetensors"
    random_neuron_set(2, 32).save(neurons)
    with pytest.raises((InputError, AttributeError)):
        bake_checkpoint("some/model", neurons, "-de", tmp_path / "out", dtype="bfloat16")
    assert old_transformers[0]["torch_dtype"] is torch.bfloat16
