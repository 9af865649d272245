"""Drawing helpers shared by every picture lape-harness makes: matplotlib on the Agg backend,
numbers written into heatmap cells, colour scales for changes in %, atomic PNG writes.

Example:
    >>> plt = pyplot()
    >>> figure, axis = plt.subplots()
    >>> annotate(axis, np.array([[0.5, np.nan]]), ".1f")
    >>> save_figure(figure, "heatmap.png")                  # doctest: +SKIP
"""

from __future__ import annotations

import os

import numpy as np

from lape_harness.atomic import atomic_path


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str | os.PathLike) -> None:
    """Write ``figure`` as a PNG atomically and close it."""
    plt = pyplot()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)


def annotate(axis, matrix: np.ndarray, fmt: str, threshold: float | None = None, fontsize: float = 7,
             dark: str = "high") -> None:
    """Write each finite cell's value into the heatmap, white on dark cells. ``dark`` says where
    the colour map is dark: ``"high"`` values (magma_r), ``"low"`` ones (viridis) or at both
    ends (``"both"``, diverging maps, compared by magnitude)."""
    finite = matrix[np.isfinite(matrix)]
    if threshold is None:
        threshold = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for (row, column), value in np.ndenumerate(matrix):
        if np.isfinite(value):
            is_dark = {"high": value > threshold, "low": value < threshold, "both": abs(value) > abs(threshold)}[dark]
            colour = "white" if is_dark else "black"
            text = format(value, fmt)
            text = text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0"
            axis.text(column, row, text, ha="center", va="center", fontsize=fontsize, color=colour)


def percent_norm(limit: float):
    """Colour normalization for changes in % centred on 0: linear up to ±50 %, logarithmic beyond
    (so +30 % stays visible next to +250 %)."""
    from matplotlib.colors import Normalize, SymLogNorm

    limit = max(float(limit), 1e-6)
    return SymLogNorm(linthresh=10.0, linscale=1.0, vmin=-limit, vmax=limit) if limit > 50 else Normalize(-limit, limit)


def group_spans(codes: list[str], key) -> list[tuple[int, int, str]]:
    """Consecutive runs ``(start, end, label)`` of equal ``key(code)``.

    >>> group_spans(["de", "nl", "fr"], {"de": "G", "nl": "G", "fr": "R"}.get)
    [(0, 1, 'G'), (2, 2, 'R')]
    """
    spans, start = [], 0
    for position in range(1, len(codes) + 1):
        if position == len(codes) or key(codes[position]) != key(codes[start]):
            spans.append((start, position - 1, key(codes[start])))
            start = position
    return spans


def cell_font(n: int) -> float:
    """A readable font size for the numbers in an ``n``-wide heatmap."""
    return max(4.5, min(9.0, 160 / max(n, 1)))
