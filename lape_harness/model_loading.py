"""Loading a model for lape-harness's own commands: the one home of device choice, dtype names and
model loading (profile, lens, finetune, sweep, fallback and the demo use it; lm-eval's models
load through lm-eval's own loader).

Example:
    >>> dtype_name("bf16", on_gpu=False), dtype_name("auto", on_gpu=False), dtype_name("auto", on_gpu=True)
    ('bfloat16', 'float32', 'bfloat16')
    >>> model, tokenizer = load_model("lape:gemma-3-270m", device=pick_device())   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from lape_harness.embedded import resolve_pretrained
from lape_harness.errors import InputError
from lape_harness.hf_loading import load_pretrained

#: the dtype names the CLI takes (``--dtype``) -> torch's names; ``auto``: bf16 on a GPU, fp32 on a CPU.
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def pick_device(device: str | None = None) -> str:
    """``device`` when given, else ``cuda`` where there is one and ``cpu`` otherwise (lm-eval's ``hf``
    alone asks for ``cuda`` even on a machine without it); a CUDA device PyTorch cannot see is an error.

    >>> pick_device("cpu"), pick_device() in ("cuda", "cpu")
    ('cpu', True)
    """
    import torch

    if device and str(device).startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device} was given but PyTorch sees no CUDA device; use --device cpu")
    return str(device) if device else ("cuda" if torch.cuda.is_available() else "cpu")


def dtype_name(choice: str, on_gpu: bool) -> str:
    """torch's name of the ``--dtype`` ``choice`` (:data:`DTYPES`); ``auto``: bfloat16 on a GPU, else float32."""
    return DTYPES.get(choice) or ("bfloat16" if on_gpu else "float32")


def load_model(name: str, revision: str | None = None, dtype: Any = None, device: Any = "cpu", device_map: Any = None):
    """``(model, tokenizer)``, the model placed where it runs, straight from the checkpoint: with
    ``device_map`` as given, else onto ``device``. ``name``: a hub id, a folder or ``lape:`` name.
    Under torchrun every rank loads its own copy; loading it into host memory first and moving it
    afterwards would need world size × model size of host RAM."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_pretrained(name)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    kwargs = {"revision": revision, "low_cpu_mem_usage": True}
    if device_map is not None:
        kwargs["device_map"] = device_map
    elif str(device) != "cpu":
        kwargs["device_map"] = {"": str(device)}
    model = load_pretrained(AutoModelForCausalLM, path, dtype=dtype, **kwargs)
    return model.eval(), tokenizer
