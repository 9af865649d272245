"""Loading transformers models the same way on every supported transformers version.

transformers 4.56 renamed the keyword that sets the weights' dtype from ``torch_dtype=`` to
``dtype=``: versions before 4.56 reject ``dtype=`` with a ``TypeError``, later ones warn about
``torch_dtype=``. Every model lape-harness loads goes through :func:`load_pretrained` or
:func:`from_config`, which pass the keyword the installed version expects (the switch lm-eval's
``hf`` model makes).

Example:
    >>> dtype_keyword("4.55.4"), dtype_keyword("4.56.0"), dtype_keyword("5.0.0")
    ('torch_dtype', 'dtype', 'dtype')
    >>> dtype_kwargs("auto", version="4.46.3")
    {'torch_dtype': 'auto'}
    >>> model = load_pretrained(AutoModelForCausalLM, "meta-llama/Llama-3.1-8B", dtype=torch.bfloat16,
    ...                         device_map={"": "cuda:0"})   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

RENAMED_IN = "4.56.0"  # the first transformers version whose from_pretrained takes dtype=
def dtype_keyword(version: str | None = None) -> str:
    """``"dtype"`` for transformers ≥ 4.56, else ``"torch_dtype"`` (``version``: the installed one)."""
    from packaging.version import Version

    if version is None:
        import transformers

        version = transformers.__version__
    return "dtype" if Version(version) >= Version(RENAMED_IN) else "torch_dtype"


def dtype_kwargs(dtype: Any, version: str | None = None) -> dict[str, Any]:
    """``{keyword: dtype}`` for ``from_pretrained`` / ``from_config`` (nothing when ``dtype`` is None)."""
    return {} if dtype is None else {dtype_keyword(version): dtype}


def load_pretrained(model_class, path: str, *, dtype: Any = None, **kwargs):
    """``model_class.from_pretrained(path, **kwargs)`` with ``dtype`` under the right keyword."""
    return model_class.from_pretrained(path, **dtype_kwargs(dtype), **kwargs)


def from_config(model_class, config, *, dtype: Any = None, **kwargs):
    """``model_class.from_config(config, **kwargs)`` with ``dtype`` under the right keyword."""
    return model_class.from_config(config, **dtype_kwargs(dtype), **kwargs)
