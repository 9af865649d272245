"""Where lape-harness keeps things: the user cache (converted models, starter corpora, demo
runs) and the repository's ``neuron_cache/``.

The cache root is ``$LAPE_HARNESS_CACHE``, else ``$XDG_CACHE_HOME/lape-harness``, else
``~/.cache/lape-harness``.

Example:
    >>> cache_dir().name                                  # doctest: +SKIP
    'lape-harness'
    >>> model_slug("meta-llama/Llama-3.1-8B")
    'llama-3.1-8b'
"""

from __future__ import annotations

import os
import re
from pathlib import Path


def cache_dir() -> Path:
    """The user cache root (not created here)."""
    explicit = os.environ.get("LAPE_HARNESS_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "lape-harness"


def corpus_dir() -> Path:
    """Starter corpora: ``train/<lang>.txt`` and ``heldout/<lang>.txt`` (see ``lape-harness corpus``)."""
    return cache_dir() / "corpus"


def model_slug(model_id: str) -> str:
    """A folder name for a model id or path: the last path part, lower-cased, safe characters only."""
    name = model_id.rstrip("/").split("/")[-1].split(":")[-1] or "model"
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-") or "model"
