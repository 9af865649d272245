"""The models the benchmarks run on: a tiny Llama built on the spot, and Gemma-3-270m when converted.

Example:
    >>> gemma_path()      # doctest: +SKIP
    '/home/me/.cache/lape-harness/models/gemma-3-270m'
"""

from __future__ import annotations


def gemma_path() -> str | None:
    """The converted Gemma-3-270m folder, or None when `lape:gemma-3-270m` was never used here."""
    from lape_harness.embedded import EMBEDDED_MODELS, converted_dir

    folder = converted_dir(EMBEDDED_MODELS["gemma-3-270m"])
    return str(folder) if (folder / "config.json").is_file() else None
