"""Pictures of neuron sets and of steering results, each returning the numbers it drew.

From a neuron set (``lape-top1.safetensors``):

* :func:`plot_neurons_per_layer`: heatmap of neurons per layer per language;
* :func:`plot_overlap`: Jaccard overlap between languages, ordered by family, with the
  family and script groups marked;
* :func:`plot_specialization`: per language, the mean relative depth of its neurons and
  the share no other language uses, coloured by script, with the paper's three claims
  (deeper layers, non-Latin scripts more specific, related languages overlap) put to the
  numbers by :func:`specialization_summary`.

From lm-eval results (see :mod:`lape_harness.leaderboard` for reading them):

* :func:`ppl_change_matrix` / :func:`plot_ppl_change`: deactivate language L (plan
  ``-L``) and the relative perplexity change in every evaluated language;
* :func:`forcing_matrix` / :func:`plot_forcing`: source × target success rate of the
  language-forcing tasks under one plan.

Every plot uses matplotlib's Agg backend and writes a PNG atomically.

Example:
    >>> numbers = plot_overlap(NeuronSet.load("lape-top1.safetensors"), "overlap.png")  # doctest: +SKIP
    >>> numbers["jaccard"][("de", "nl")]                                              # doctest: +SKIP
    0.21
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from lape_harness.atomic import atomic_path
from lape_harness.errors import InputError
from lape_harness.languages import get_language

# --------------------------------------------------------------------------- languages


def _language(code: str):
    try:
        return get_language(code)
    except InputError:
        return None


def family_of(code: str) -> str:
    language = _language(code)
    return language.family if language else "other"


def script_of(code: str) -> str:
    language = _language(code)
    return language.script if language else "?"


def order_by_family(codes) -> list[str]:
    """Languages grouped by family (largest family first), then by script, then by code.

    >>> order_by_family(["de", "ru", "fr", "nl", "pl"])
    ['de', 'nl', 'fr', 'pl', 'ru']
    """
    codes = list(dict.fromkeys(codes))
    size = Counter(family_of(code) for code in codes)
    return sorted(codes, key=lambda c: (family_of(c) == "other", -size[family_of(c)], family_of(c), script_of(c), c))


# --------------------------------------------------------------------------- drawing helpers


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: str | os.PathLike) -> None:
    plt = _pyplot()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)


def _annotate(axis, matrix: np.ndarray, fmt: str, threshold: float | None = None, fontsize: float = 7,
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


def _group_spans(codes: list[str], key) -> list[tuple[int, int, str]]:
    """Consecutive runs ``(start, end, label)`` of equal ``key(code)``."""
    spans, start = [], 0
    for position in range(1, len(codes) + 1):
        if position == len(codes) or key(codes[position]) != key(codes[start]):
            spans.append((start, position - 1, key(codes[start])))
            start = position
    return spans


def _cell_font(n: int) -> float:
    return max(4.5, min(9.0, 160 / max(n, 1)))


# --------------------------------------------------------------------------- neuron sets


def neurons_per_layer(neuron_set) -> tuple[list[str], np.ndarray]:
    """Languages (family order) and ``counts[language, layer]`` of their neurons."""
    languages = order_by_family(neuron_set.languages)
    counts = np.zeros((len(languages), neuron_set.num_layers), dtype=np.int64)
    for row, code in enumerate(languages):
        layers = neuron_set.neurons[code].layer.numpy()
        counts[row] = np.bincount(layers, minlength=neuron_set.num_layers)[: neuron_set.num_layers]
    return languages, counts


def plot_neurons_per_layer(neuron_set, path: str | os.PathLike) -> dict[str, Any]:
    """Heatmap: rows = languages (by family), columns = layers, cells = neuron counts.

    Returns ``{"languages", "layers", "counts": {code: [per layer]}, "total_per_layer"}``.
    """
    plt = _pyplot()
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
        _annotate(axis, counts.astype(float), ".0f", dark="low", fontsize=_cell_font(max(layers, len(languages))) * 0.85)
    _mark_families(axis, languages)
    figure.colorbar(image, ax=axis, label="language-specific neurons (count)", fraction=0.03, pad=0.1)
    axis.set_title(f"Language-specific neurons per layer: {_set_title(neuron_set)}")
    _save(figure, path)
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
    for start, end, family in _group_spans(languages, family_of):
        if start > 0:
            axis.axhline(start - 0.5, color="white", linewidth=1.6)
        axis.annotate(family, xy=(1.0, (start + end) / 2), xycoords=("axes fraction", "data"), xytext=(4, 0),
                      textcoords="offset points", va="center", ha="left", fontsize=7, color="dimgray")


def _neuron_ids(neuron_set, code: str) -> set[tuple[int, int]]:
    entry = neuron_set.neurons[code]
    return set(zip(entry.layer.tolist(), entry.index.tolist()))


def overlap(neuron_set) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Languages (family order), shared-neuron counts ``|A ∩ B|`` and Jaccard ``|A ∩ B| / |A ∪ B|``."""
    languages = order_by_family(neuron_set.languages)
    sets = [_neuron_ids(neuron_set, code) for code in languages]
    k = len(languages)
    shared = np.zeros((k, k), dtype=np.int64)
    jaccard = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            both = len(sets[i] & sets[j])
            either = len(sets[i] | sets[j])
            shared[i, j] = both
            jaccard[i, j] = both / either if either else 0.0
    return languages, shared, jaccard


def plot_overlap(neuron_set, path: str | os.PathLike) -> dict[str, Any]:
    """Jaccard heatmap between languages; families separated by lines, scripts in the labels.

    Returns ``{"languages", "shared": {(a, b): n}, "jaccard": {(a, b): x}}`` (off-diagonal pairs).
    """
    plt = _pyplot()
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
        _annotate(axis, np.round(shown * 100), ".0f", threshold=(np.nanmax(shown) * 100 / 2 if finite.size else 0),
                  fontsize=_cell_font(k))
    for start, end, _family in _group_spans(languages, family_of):
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
    _save(figure, path)
    pairs = [(a, b) for a in range(k) for b in range(k) if a != b]
    return {
        "languages": languages,
        "shared": {(languages[a], languages[b]): int(shared[a, b]) for a, b in pairs},
        "jaccard": {(languages[a], languages[b]): float(jaccard[a, b]) for a, b in pairs},
    }


@dataclass
class LanguageSpecialization:
    """One language's neurons: how many, how deep, how exclusive."""

    code: str
    script: str
    family: str
    count: int
    mean_depth: float  # mean of layer / (num_layers - 1): 0 = first layer, 1 = last
    deep_share: float  # share in the last third of the layers
    unique_share: float  # share used by no other language


def specialization(neuron_set) -> list[LanguageSpecialization]:
    """Per language (family order): count, mean relative depth, deep share, unique share."""
    languages = order_by_family(neuron_set.languages)
    owners: Counter = Counter()
    ids = {code: _neuron_ids(neuron_set, code) for code in languages}
    for neurons in ids.values():
        owners.update(neurons)
    last = max(neuron_set.num_layers - 1, 1)
    rows = []
    for code in languages:
        layers = neuron_set.neurons[code].layer.double().numpy()
        count = len(layers)
        depth = layers / last
        rows.append(LanguageSpecialization(
            code, script_of(code), family_of(code), count,
            float(depth.mean()) if count else math.nan,
            float((layers >= neuron_set.num_layers * 2 / 3).mean()) if count else math.nan,
            sum(owners[n] == 1 for n in ids[code]) / count if count else math.nan,
        ))
    return rows


def _mean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def specialization_summary(neuron_set) -> dict[str, Any]:
    """The paper's three claims put to this neuron set's numbers.

    * deeper layers: share of all neurons in the last third of the layers, and their mean
      relative depth (0.5 would be uniform);
    * non-Latin scripts more specific: mean unique share, Latin vs non-Latin languages;
    * related languages overlap: mean Jaccard of same-family pairs vs different-family pairs.
    """
    rows = specialization(neuron_set)
    _languages, _shared, jaccard = overlap(neuron_set)
    languages = order_by_family(neuron_set.languages)
    same, different = [], []
    for a in range(len(languages)):
        for b in range(a + 1, len(languages)):
            (same if family_of(languages[a]) == family_of(languages[b]) else different).append(jaccard[a, b])
    all_layers = np.concatenate([neuron_set.neurons[c].layer.numpy() for c in languages]) if languages else np.array([])
    last = max(neuron_set.num_layers - 1, 1)
    latin = [r for r in rows if r.script == "Latn" and r.count]
    other = [r for r in rows if r.script != "Latn" and r.count]
    by_script: dict[str, list[LanguageSpecialization]] = {}
    for row in rows:
        by_script.setdefault(row.script, []).append(row)
    return {
        "languages": [r.__dict__ for r in rows],
        "deep_share_all": float((all_layers >= neuron_set.num_layers * 2 / 3).mean()) if all_layers.size else math.nan,
        "mean_depth_all": float((all_layers / last).mean()) if all_layers.size else math.nan,
        "unique_share_latin": _mean(r.unique_share for r in latin),
        "unique_share_non_latin": _mean(r.unique_share for r in other),
        "jaccard_same_family": _mean(same),
        "jaccard_different_family": _mean(different),
        "by_script": {
            script: {"languages": [r.code for r in group], "neurons": sum(r.count for r in group),
                     "mean_depth": _mean(r.mean_depth for r in group), "unique_share": _mean(r.unique_share for r in group)}
            for script, group in sorted(by_script.items())
        },
    }


def _verdict(flag: bool | None) -> str:
    return "n/a" if flag is None else ("yes" if flag else "no")


def _compare(a: float, b: float) -> bool | None:
    return None if math.isnan(a) or math.isnan(b) else a > b


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The summary as short plain-text lines (printed beside the plot and to stdout)."""
    pct = lambda x: "n/a" if math.isnan(x) else f"{x:.0%}"  # noqa: E731
    num = lambda x: "n/a" if math.isnan(x) else f"{x:.2f}"  # noqa: E731
    lines = [
        f"Deeper layers? {_verdict(_compare(summary['mean_depth_all'], 0.5))}: "
        f"{pct(summary['deep_share_all'])} of neurons in the last third; mean depth {num(summary['mean_depth_all'])} (0.5 = uniform)",
        f"Non-Latin more specific? {_verdict(_compare(summary['unique_share_non_latin'], summary['unique_share_latin']))}: "
        f"unique share {pct(summary['unique_share_non_latin'])} non-Latin vs {pct(summary['unique_share_latin'])} Latin",
        f"Related languages overlap more? {_verdict(_compare(summary['jaccard_same_family'], summary['jaccard_different_family']))}: "
        f"Jaccard {num(summary['jaccard_same_family'])} same family vs {num(summary['jaccard_different_family'])} different",
        "Per script: " + "; ".join(
            f"{script} ({','.join(group['languages'])}): depth {num(group['mean_depth'])}, unique {pct(group['unique_share'])}"
            for script, group in summary["by_script"].items()
        ),
    ]
    return lines


def plot_specialization(neuron_set, path: str | os.PathLike) -> dict[str, Any]:
    """Two bar panels per language (mean relative depth, unique share), the summary printed beside.

    Returns :func:`specialization_summary`'s dictionary plus ``"lines"`` (the printed text).
    """
    plt = _pyplot()
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
    _save(figure, path)
    return {**summary, "lines": lines}


# --------------------------------------------------------------------------- results


@dataclass
class Matrix:
    """A labelled matrix drawn by the results plots; NaN where nothing was measured."""

    rows: list[str]
    columns: list[str]
    values: np.ndarray
    model: str
    title: str = ""

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {r: {c: float(self.values[i, j]) for j, c in enumerate(self.columns) if np.isfinite(self.values[i, j])}
                for i, r in enumerate(self.rows)}


def _one_model(runs, model: str | None):
    models = sorted({run.model for run in runs})
    if model is not None:
        runs = [run for run in runs if run.model == model]
        if not runs:
            raise InputError(f"no results for model {model!r}; the inputs have: {', '.join(models)}")
        return runs, model
    if len(models) != 1:
        raise InputError(f"the results are from {len(models)} models ({', '.join(models)}); "
                         "pick one with --model (library: model=...)")
    return runs, models[0]


def _scores(run, family: str, metric: str) -> dict[str, float]:
    """``{language label: score}`` of ``run``'s tasks in ``family`` (e.g. ``lape_ppl``)."""
    from lape_harness.leaderboard import _metric_key, _number, classify_task

    found = {}
    for task, values in run.metrics.items():
        placed = classify_task(task)
        if placed is None or placed[0] != family:
            continue
        key = _metric_key(values, metric)
        if key is not None and _number(values[key]) is not None:
            found[placed[1]] = _number(values[key])
    return found


def _single_deactivation(plan: str) -> str | None:
    """The language a plan only deactivates (``-de``, ``-de=-1.5``), else None."""
    from lape_harness.steering import SteeringPlan, parse_steer

    try:
        parsed = parse_steer(plan.split(" @")[0])
    except InputError:
        return None
    if not isinstance(parsed, SteeringPlan) or len(parsed.terms) != 1 or parsed.terms[0].op != "deactivate":
        return None
    return parsed.terms[0].language


def ppl_change_matrix(runs, model: str | None = None, metric: str = "byte_perplexity") -> Matrix:
    """Relative perplexity change (plan / baseline − 1) of every held-out language (columns,
    tasks ``lape_ppl_<lang>``) under each single-language deactivation plan (rows, ``-L``).

    ``runs`` are :func:`lape_harness.leaderboard.load_runs` results of one model (or pick
    ``model``); the baseline is its plan ``none``. Rows are labelled by plan, so the same
    language deactivated with two fill values gives two rows.
    """
    from lape_harness.leaderboard import BASELINE, _plan_labels

    runs, model = _one_model(runs, model)
    labels = _plan_labels(runs)
    baseline: dict[str, float] = {}
    per_plan: dict[str, dict[str, float]] = {}
    deactivated: dict[str, str] = {}
    for position, run in enumerate(runs):
        scores = _scores(run, "lape_ppl", metric)
        if not scores:
            continue
        if run.plan == BASELINE:
            baseline.update(scores)
        elif (language := _single_deactivation(run.plan)) is not None:
            per_plan.setdefault(labels[position], {}).update(scores)
            deactivated[labels[position]] = language
    if not baseline:
        raise InputError(f"no baseline perplexities (plan 'none', tasks lape_ppl_*) for {model}; "
                         "include the unsteered run, e.g. sweep --plans=none,-en,-de --tasks lape_ppl")
    if not per_plan:
        raise InputError(f"no single-language deactivation plans (e.g. '-de') with lape_ppl_* results for {model}; "
                         "run e.g. sweep --plans=none,-en,-de,-fr --tasks lape_ppl")
    columns = order_by_family(baseline)
    position = {code: i for i, code in enumerate(order_by_family(list(deactivated.values()) + columns))}
    rows = sorted(per_plan, key=lambda plan: (position[deactivated[plan]], plan))
    values = np.full((len(rows), len(columns)), np.nan)
    for i, plan in enumerate(rows):
        for j, code in enumerate(columns):
            if code in per_plan[plan] and baseline[code] > 0:
                values[i, j] = per_plan[plan][code] / baseline[code] - 1
    return Matrix(rows, columns, values, model, f"relative {metric} change")


def plot_ppl_change(matrix: Matrix, path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Heatmap of :func:`ppl_change_matrix` in percent (red = perplexity rises); the cells
    where the deactivated language is the evaluated one are boxed. Returns the values."""
    plt = _pyplot()
    percent = matrix.values * 100
    finite = np.abs(percent[np.isfinite(percent)])
    limit = max(float(finite.max()) if finite.size else 1.0, 1e-6)
    figure, axis = plt.subplots(figsize=(max(5.5, 0.5 * len(matrix.columns) + 3), max(3.0, 0.45 * len(matrix.rows) + 2)))
    image = axis.imshow(np.ma.masked_invalid(percent), cmap="RdBu_r", norm=percent_norm(limit), aspect="auto")
    axis.set_facecolor("#dddddd")
    _annotate(axis, percent, ".0f" if limit >= 10 else ".1f", threshold=min(limit * 0.6, 30), dark="both", fontsize=_cell_font(len(matrix.columns)))
    for i, plan in enumerate(matrix.rows):
        language = _single_deactivation(plan)
        if language in matrix.columns:
            j = matrix.columns.index(language)
            axis.add_patch(_pyplot().Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.6))
    axis.set_xticks(range(len(matrix.columns)))
    axis.set_xticklabels(matrix.columns, fontsize=8)
    axis.set_yticks(range(len(matrix.rows)))
    axis.set_yticklabels([f"steer={plan}" for plan in matrix.rows], fontsize=8)
    axis.set_xlabel("evaluated language (held-out text, lape_ppl_<lang>)")
    axis.set_ylabel("deactivated language (plan)")
    figure.colorbar(image, ax=axis, label="perplexity change vs no steering (%)\nred = worse", fraction=0.04, pad=0.02)
    axis.set_title(f"Deactivating a language's neurons: perplexity change ({os.path.basename(matrix.model)})\n"
                   "boxed: the deactivated language itself (should rise most)", fontsize=10)
    _save(figure, path)
    return matrix.as_dict()


def forcing_matrix(runs, plan: str | None = None, model: str | None = None, metric: str = "target_rate") -> Matrix:
    """Language-forcing success (``metric`` of tasks ``lape_forcing_<src>_to_<tgt>``) under
    one plan: rows = source (prompt) language, columns = target language.

    ``plan`` defaults to the only plan with forcing results (pass it when there are several,
    e.g. ``auto`` and ``none``).
    """
    from lape_harness.leaderboard import _plan_labels

    runs, model = _one_model(runs, model)
    labels = _plan_labels(runs)
    per_plan: dict[str, dict[str, float]] = {}
    for position, run in enumerate(runs):
        scores = _scores(run, "lape_forcing", metric)
        if scores:
            per_plan.setdefault(labels[position], {}).update(scores)
    if not per_plan:
        raise InputError(f"no lape_forcing_* results reporting {metric} for {model}; "
                         "run e.g. sweep --plans auto --tasks lape_forcing")
    if plan is None:
        if len(per_plan) > 1:
            raise InputError(f"forcing results exist for several plans ({', '.join(sorted(per_plan))}); choose one with --plan")
        plan = next(iter(per_plan))
    if plan not in per_plan:
        raise InputError(f"no forcing results for plan {plan!r}; there are: {', '.join(sorted(per_plan))}")
    pairs = [label.split("→") for label in per_plan[plan]]
    sources = order_by_family({pair[0] for pair in pairs})
    targets = order_by_family({pair[1] for pair in pairs})
    values = np.full((len(sources), len(targets)), np.nan)
    for label, score in per_plan[plan].items():
        source, target = label.split("→")
        values[sources.index(source), targets.index(target)] = score
    return Matrix(sources, targets, values, model, f"{metric} under steer={plan}")


def plot_forcing(matrix: Matrix, path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Heatmap of :func:`forcing_matrix` in percent (0–100), with the mean per target language
    as an extra row. Returns the values."""
    plt = _pyplot()
    percent = matrix.values * 100
    column_mean = np.array([np.nanmean(c) if np.isfinite(c).any() else np.nan for c in percent.T])
    shown = np.vstack([percent, column_mean[None, :]])
    figure, axis = plt.subplots(figsize=(max(5.5, 0.5 * len(matrix.columns) + 3), max(3.2, 0.45 * len(shown) + 2)))
    image = axis.imshow(np.ma.masked_invalid(shown), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    axis.set_facecolor("#dddddd")
    _annotate(axis, shown, ".0f", threshold=50, dark="low", fontsize=_cell_font(len(matrix.columns)))
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
    _save(figure, path)
    return matrix.as_dict()


# --------------------------------------------------------------------------- reports


def neuron_report(neuron_set, out_dir: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Write the three neuron-set pictures and ``neurons.md`` (the numbers beside them) into
    ``out_dir``; returns (paths written, summary lines)."""
    from pathlib import Path

    from lape_harness.atomic import write_text_atomic

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
    from pathlib import Path

    from lape_harness.atomic import write_text_atomic

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
