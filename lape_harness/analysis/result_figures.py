"""Pictures of steering results: the perplexity-change and forcing matrices of
:mod:`lape_harness.analysis.result_matrices` as heatmaps, and :func:`results_report` (both pictures with
their numbers in ``results.md``).

Example:
    >>> runs = load_runs(["results/sweep"])                                  # doctest: +SKIP
    >>> plot_ppl_change(ppl_change_matrix(runs), "ppl_change.png")["-de"]     # doctest: +SKIP
    {'de': 0.52, 'en': 0.03}
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lape_harness.analysis.figures import annotate, cell_font, percent_norm, pyplot, save_figure
from lape_harness.analysis.result_matrices import Matrix, forcing_matrix, ppl_change_matrix
from lape_harness.analysis.results import deactivated_language
from lape_harness.atomic import write_text_atomic
from lape_harness.errors import InputError


def plot_ppl_change(matrix: Matrix, path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Heatmap of :func:`ppl_change_matrix` in percent (red = perplexity rises); the cells
    where the deactivated language is the evaluated one are boxed. Returns the values."""
    plt = pyplot()
    percent = matrix.values * 100
    finite = np.abs(percent[np.isfinite(percent)])
    limit = max(float(finite.max()) if finite.size else 1.0, 1e-6)
    figure, axis = plt.subplots(figsize=(max(5.5, 0.5 * len(matrix.columns) + 3), max(3.0, 0.45 * len(matrix.rows) + 2)))
    image = axis.imshow(np.ma.masked_invalid(percent), cmap="RdBu_r", norm=percent_norm(limit), aspect="auto")
    axis.set_facecolor("#dddddd")
    annotate(axis, percent, ".0f" if limit >= 10 else ".1f", threshold=min(limit * 0.6, 30), dark="both",
             fontsize=cell_font(len(matrix.columns)))
    for i, plan in enumerate(matrix.rows):
        language = deactivated_language(plan)
        if language in matrix.columns:
            j = matrix.columns.index(language)
            axis.add_patch(pyplot().Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.6))
    axis.set_xticks(range(len(matrix.columns)))
    axis.set_xticklabels(matrix.columns, fontsize=8)
    axis.set_yticks(range(len(matrix.rows)))
    axis.set_yticklabels([f"steer={plan}" for plan in matrix.rows], fontsize=8)
    axis.set_xlabel("evaluated language (held-out text, lape_ppl_<lang>)")
    axis.set_ylabel("deactivated language (plan)")
    figure.colorbar(image, ax=axis, label="perplexity change vs no steering (%)\nred = worse", fraction=0.04, pad=0.02)
    axis.set_title(f"Deactivating a language's neurons: perplexity change ({os.path.basename(matrix.model)})\n"
                   "boxed: the deactivated language itself (should rise most)", fontsize=10)
    save_figure(figure, path)
    return matrix.as_dict()


def plot_forcing(matrix: Matrix, path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Heatmap of :func:`forcing_matrix` in percent (0–100), with the mean per target language
    as an extra row. Returns the values."""
    plt = pyplot()
    percent = matrix.values * 100
    column_mean = np.array([np.nanmean(c) if np.isfinite(c).any() else np.nan for c in percent.T])
    shown = np.vstack([percent, column_mean[None, :]])
    figure, axis = plt.subplots(figsize=(max(5.5, 0.5 * len(matrix.columns) + 3), max(3.2, 0.45 * len(shown) + 2)))
    image = axis.imshow(np.ma.masked_invalid(shown), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    axis.set_facecolor("#dddddd")
    annotate(axis, shown, ".0f", threshold=50, dark="low", fontsize=cell_font(len(matrix.columns)))
    axis.axhline(len(matrix.rows) - 0.5, color="white", linewidth=2)
    axis.set_xticks(range(len(matrix.columns)))
    axis.set_xticklabels(matrix.columns, fontsize=8)
    axis.set_yticks(range(len(shown)))
    axis.set_yticklabels(matrix.rows + ["mean"], fontsize=8)
    axis.set_xlabel("target language (steered towards)")
    axis.set_ylabel("source language (of the question)")
    overall = np.nanmean(percent) if np.isfinite(percent).any() else float("nan")
    metric = matrix.title.split(" ")[0]
    figure.colorbar(image, ax=axis, label=f"{metric}: answers in the target language (%)", fraction=0.04, pad=0.02)
    axis.set_title(f"Language forcing: {matrix.title} ({os.path.basename(matrix.model)})\n"
                   f"overall {overall:.0f}%", fontsize=10)
    save_figure(figure, path)
    return matrix.as_dict()


def _matrix_markdown(matrix: Matrix, signed: bool = False) -> str:
    lines = [f"| {matrix.title} | " + " | ".join(matrix.columns) + " |", "|---|" + "---:|" * len(matrix.columns)]
    for i, row in enumerate(matrix.rows):
        cells = ["" if not np.isfinite(v) else (f"{v * 100:+.1f}%" if signed else f"{v * 100:.0f}%")
                 for v in matrix.values[i]]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_report(runs, out_dir: str | os.PathLike, model: str | None = None, forcing_plan: str | None = None,
                   forcing_metric: str = "target_rate", ppl_metric: str = "byte_perplexity") -> tuple[list[str], list[str]]:
    """Write ``ppl_change.png`` and/or ``forcing.png`` with ``results.md`` (their numbers) from
    lm-eval results; returns (paths written, notes on what could not be drawn)."""
    out = Path(out_dir)
    written, notes, text = [], [], [f"# Steering results: {model or ', '.join(sorted({r.model for r in runs}))}", ""]
    try:
        ppl = ppl_change_matrix(runs, model=model, metric=ppl_metric)
        plot_ppl_change(ppl, out / "ppl_change.png")
        written.append(str(out / "ppl_change.png"))
        text += ["## Perplexity change when a language is deactivated", "", _matrix_markdown(ppl, signed=True), "",
                 "![perplexity change](ppl_change.png)", ""]
    except InputError as error:
        notes.append(f"perplexity-change matrix not drawn: {error}")
    try:
        forcing = forcing_matrix(runs, plan=forcing_plan, model=model, metric=forcing_metric)
        plot_forcing(forcing, out / "forcing.png")
        written.append(str(out / "forcing.png"))
        text += ["## Language forcing (rows: source, columns: target)", "", _matrix_markdown(forcing), "",
                 "![forcing](forcing.png)", ""]
    except InputError as error:
        notes.append(f"forcing matrix not drawn: {error}")
    if written:
        text += [f"- {note}" for note in notes]
        write_text_atomic(out / "results.md", "\n".join(text) + "\n")
        written.append(str(out / "results.md"))
    return written, notes
