"""Pictures of a neuron set, each returning the numbers it drew (computed by
:mod:`lape_harness.analysis.neuron_analysis`):

* :func:`plot_neurons_per_layer`: heatmap of neurons per layer per language;
* :func:`plot_overlap`: Jaccard overlap between languages, ordered by family, with the
  family and script groups marked;
* :func:`plot_specialization`: per language, the mean relative depth of its neurons and
  the share no other language uses, coloured by script, with the paper's three claims
  printed beside;
* :func:`neuron_report`: the three pictures and ``neurons.md`` in one folder.

Example:
    >>> numbers = plot_overlap(NeuronSet.load("lape-top1.safetensors"), "overlap.png")  # doctest: +SKIP
    >>> numbers["jaccard"][("de", "nl")]                                              # doctest: +SKIP
    0.21
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from lape_harness.analysis.figures import annotate, cell_font, group_spans, pyplot, save_figure
from lape_harness.analysis.neuron_analysis import (
    neurons_per_layer,
    overlap,
    specialization,
    specialization_summary,
    summary_lines,
)
from lape_harness.atomic import write_text_atomic
from lape_harness.languages import family_of, script_of


def plot_neurons_per_layer(neuron_set, path: str | os.PathLike) -> dict[str, Any]:
    """Heatmap: rows = languages (by family), columns = layers, cells = neuron counts.

    Returns ``{"languages", "layers", "counts": {code: [per layer]}, "total_per_layer"}``.
    """
    plt = pyplot()
    languages, counts = neurons_per_layer(neuron_set)
    layers = neuron_set.num_layers
    width = min(22, max(6.5, 0.42 * layers + 3))
    figure, axis = plt.subplots(figsize=(width, max(3.5, 0.33 * len(languages) + 1.8)))
    image = axis.imshow(counts, aspect="auto", cmap="viridis", interpolation="nearest")
    axis.set_xticks(range(layers))
    axis.set_xticklabels([str(layer) for layer in range(layers)], fontsize=7)
    axis.set_yticks(range(len(languages)))
    axis.set_yticklabels([f"{code} ({script_of(code)})" for code in languages], fontsize=8)
    axis.set_xlabel("layer (0 = closest to the input)")
    axis.set_ylabel("language (script)")
    if layers <= 40 and len(languages) <= 30:
        annotate(axis, counts.astype(float), ".0f", dark="low", fontsize=cell_font(max(layers, len(languages))) * 0.85)
    _mark_families(axis, languages)
    figure.colorbar(image, ax=axis, label="language-specific neurons (count)", fraction=0.03, pad=0.1)
    axis.set_title(f"Language-specific neurons per layer: {_set_title(neuron_set)}")
    save_figure(figure, path)
    return {
        "languages": languages,
        "layers": layers,
        "counts": {code: counts[row].tolist() for row, code in enumerate(languages)},
        "total_per_layer": counts.sum(axis=0).tolist(),
    }


def _set_title(neuron_set) -> str:
    model = neuron_set.meta.get("model", {}).get("model_id") or "model"
    rate = neuron_set.meta.get("thresholds", {}).get("top_rate")
    return f"{os.path.basename(str(model).rstrip('/'))}" + (f", top {rate:.0%}" if isinstance(rate, float) else "")


def _mark_families(axis, languages: list[str]) -> None:
    """Lines between the families of the rows and the family name on the right-hand side."""
    for start, end, family in group_spans(languages, family_of):
        if start > 0:
            axis.axhline(start - 0.5, color="white", linewidth=1.6)
        axis.annotate(family, xy=(1.0, (start + end) / 2), xycoords=("axes fraction", "data"), xytext=(4, 0),
                      textcoords="offset points", va="center", ha="left", fontsize=7, color="dimgray")


def plot_overlap(neuron_set, path: str | os.PathLike) -> dict[str, Any]:
    """Jaccard heatmap between languages; families separated by lines, scripts in the labels.

    Returns ``{"languages", "shared": {(a, b): n}, "jaccard": {(a, b): x}}`` (off-diagonal pairs).
    """
    plt = pyplot()
    languages, shared, jaccard = overlap(neuron_set)
    k = len(languages)
    shown = jaccard.copy()
    np.fill_diagonal(shown, np.nan)  # the diagonal (1.0) would flatten the colour scale
    side = max(5.5, 0.42 * k + 2.5)
    figure, axis = plt.subplots(figsize=(side + 1.8, side))
    finite = shown[np.isfinite(shown)]
    image = axis.imshow(shown, cmap="magma_r", vmin=0.0, vmax=max(float(finite.max()) if finite.size else 0.0, 1e-9))
    labels = [f"{code} ({script_of(code)})" for code in languages]
    axis.set_xticks(range(k))
    axis.set_xticklabels(labels, rotation=90, fontsize=8)
    axis.set_yticks(range(k))
    axis.set_yticklabels(labels, fontsize=8)
    for tick, code in zip(axis.get_xticklabels() + axis.get_yticklabels(), languages * 2):
        if script_of(code) != "Latn":
            tick.set_fontweight("bold")
    if k <= 30:
        annotate(axis, np.round(shown * 100), ".0f", threshold=(np.nanmax(shown) * 100 / 2 if finite.size else 0),
                  fontsize=cell_font(k))
    for start, end, _family in group_spans(languages, family_of):
        if start > 0:
            axis.axhline(start - 0.5, color="steelblue", linewidth=1.4)
            axis.axvline(start - 0.5, color="steelblue", linewidth=1.4)
        axis.annotate(_family, xy=(1.0, (start + end) / 2), xycoords=("axes fraction", "data"), xytext=(4, 0),
                      textcoords="offset points", va="center", ha="left", fontsize=7, color="steelblue")
    axis.set_xlabel("language (script; bold = non-Latin)")
    axis.set_ylabel("language (script; bold = non-Latin)")
    figure.colorbar(image, ax=axis, label="Jaccard overlap |A∩B| / |A∪B| (cells: ×100)", fraction=0.04,
                    pad=0.12 if k > 12 else 0.2)
    axis.set_title(f"Neuron overlap between languages, families separated\n{_set_title(neuron_set)}")
    save_figure(figure, path)
    pairs = [(a, b) for a in range(k) for b in range(k) if a != b]
    return {
        "languages": languages,
        "shared": {(languages[a], languages[b]): int(shared[a, b]) for a, b in pairs},
        "jaccard": {(languages[a], languages[b]): float(jaccard[a, b]) for a, b in pairs},
    }


def plot_specialization(neuron_set, path: str | os.PathLike) -> dict[str, Any]:
    """Two bar panels per language (mean relative depth, unique share), the summary printed beside.

    Returns :func:`specialization_summary`'s dictionary plus ``"lines"`` (the printed text).
    """
    plt = pyplot()
    summary = specialization_summary(neuron_set)
    rows = specialization(neuron_set)
    codes = [r.code for r in rows]
    colours = ["tab:blue" if r.script == "Latn" else "tab:orange" for r in rows]
    figure = plt.figure(figsize=(max(11, 0.45 * len(rows) + 4), 7.8))
    grid = figure.add_gridspec(2, 2, height_ratios=[3, 1.15])
    depth_axis, unique_axis = figure.add_subplot(grid[0, 0]), figure.add_subplot(grid[0, 1])
    text_axis = figure.add_subplot(grid[1, :])
    depth = [0 if math.isnan(r.mean_depth) else r.mean_depth for r in rows]
    unique = [0 if math.isnan(r.unique_share) else r.unique_share * 100 for r in rows]
    depth_axis.bar(range(len(rows)), depth, color=colours)
    depth_axis.axhline(0.5, color="gray", linestyle="--", linewidth=1, label="uniform over layers")
    depth_axis.set_ylim(0, 1)
    depth_axis.set_ylabel("mean relative depth (0 = first layer, 1 = last)")
    depth_axis.set_title("Where each language's neurons sit")
    unique_axis.bar(range(len(rows)), unique, color=colours)
    unique_axis.set_ylim(0, 100)
    unique_axis.set_ylabel("neurons used by no other language (%)")
    unique_axis.set_title("How language-exclusive they are")
    from matplotlib.patches import Patch

    for axis in (depth_axis, unique_axis):
        axis.set_xticks(range(len(rows)))
        axis.set_xticklabels(codes, rotation=90, fontsize=8)
        axis.set_xlabel("language (grouped by family)")
    depth_axis.legend(handles=[Patch(color="tab:blue", label="Latin script"), Patch(color="tab:orange", label="other scripts"),
                               *depth_axis.get_legend_handles_labels()[0]], fontsize=7, loc="upper right")
    lines = summary_lines(summary)
    text_axis.axis("off")
    import textwrap

    wrapped = "\n".join(textwrap.fill(line, 150, subsequent_indent="    ") for line in lines)
    text_axis.text(0.0, 1.0, wrapped, va="top", ha="left", fontsize=8.5, family="monospace", transform=text_axis.transAxes)
    figure.suptitle(f"Neuron specialization by language and script: {_set_title(neuron_set)}")
    figure.tight_layout()
    save_figure(figure, path)
    return {**summary, "lines": lines}


def neuron_report(neuron_set, out_dir: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Write the three neuron-set pictures and ``neurons.md`` (the numbers beside them) into
    ``out_dir``; returns (paths written, summary lines)."""
    out = Path(out_dir)
    per_layer = plot_neurons_per_layer(neuron_set, out / "neurons_per_layer.png")
    plot_overlap(neuron_set, out / "overlap.png")
    summary = plot_specialization(neuron_set, out / "specialization.png")
    lines = [f"# Neuron set: {_set_title(neuron_set)}", "", *[f"- {line}" for line in summary["lines"]], ""]
    lines += ["| language | script | family | neurons | mean depth | in last third | unique |", "|---|---|---|---:|---:|---:|---:|"]
    for row in summary["languages"]:
        fmt = lambda x, spec: "n/a" if isinstance(x, float) and math.isnan(x) else format(x, spec)  # noqa: E731
        lines.append(f"| {row['code']} | {row['script']} | {row['family']} | {row['count']} | {fmt(row['mean_depth'], '.2f')} "
                     f"| {fmt(row['deep_share'], '.0%')} | {fmt(row['unique_share'], '.0%')} |")
    lines += ["", "Neurons per layer (all languages): " + ", ".join(map(str, per_layer["total_per_layer"])), "",
              "![neurons per layer](neurons_per_layer.png)", "", "![overlap](overlap.png)", "",
              "![specialization](specialization.png)", ""]
    write_text_atomic(out / "neurons.md", "\n".join(lines))
    names = ("neurons_per_layer.png", "overlap.png", "specialization.png", "neurons.md")
    return [str(out / name) for name in names], summary["lines"]
