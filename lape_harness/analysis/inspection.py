"""Readable summaries of lape-harness files: activation statistics and neuron sets.

:func:`summarize` returns a JSON-ready dict (what ``lape-harness inspect --json`` prints) and
:func:`render` turns it into text: model, languages and token counts; for statistics, the
activation probability per language and layer; for neuron sets, each language's neuron count,
its spread over the layers, and the overlap between languages (shared counts and Jaccard).

Example:
    >>> print(render(summarize("neuron_cache/tiny/lape-top1.safetensors")))   # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import torch

from lape_harness.neurons import METADATA_KEY, NEURON_SET_KIND, STATS_KIND, ActivationStats, NeuronFileError, NeuronSet

SPARK = "▁▂▃▄▅▆▇█"


def file_kind(path: str | os.PathLike) -> str:
    """``"activation_stats"`` or ``"neuron_set"``, from the file's metadata (unreadable files raise
    the loader's clear :class:`NeuronFileError`)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            kind = json.loads((handle.metadata() or {})[METADATA_KEY]).get("kind")
    except Exception:  # let the loader say precisely what is wrong
        ActivationStats.load(path)
        raise
    if kind not in (STATS_KIND, NEURON_SET_KIND):
        raise NeuronFileError(f"{str(path)!r} holds {kind!r}; inspect reads statistics and neuron-set files")
    return kind


def summarize(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON-ready summary of a statistics or neuron-set file."""
    if file_kind(path) == STATS_KIND:
        return summarize_stats(ActivationStats.load(path), path)
    return summarize_neuron_set(NeuronSet.load(path), path)


def summarize_stats(stats: ActivationStats, path: str | os.PathLike = "") -> dict[str, Any]:
    probability = stats.probability()
    mean = stats.mean_activation()
    return {
        "kind": STATS_KIND,
        "path": str(path),
        "model": stats.meta.get("model", {}),
        "num_layers": stats.num_layers,
        "width": stats.width,
        "seq_len": stats.meta.get("seq_len"),
        "dtype": stats.meta.get("dtype"),
        "stats_hash": stats.content_hash(),
        "package_version": stats.meta.get("package_version"),
        "languages": stats.languages,
        "per_language": {
            language: {
                "tokens": int(stats.tokens[row]),
                "mean_probability": float(probability[row].mean()),
                "never_active": float((stats.over_zero[row] == 0).double().mean()),
                "mean_activation": float(mean[row].mean()),
                "probability_per_layer": probability[row].mean(dim=1).tolist(),
            }
            for row, language in enumerate(stats.languages)
        },
    }


def summarize_neuron_set(neuron_set: NeuronSet, path: str | os.PathLike = "") -> dict[str, Any]:
    from lape_harness.analysis.neuron_analysis import neurons_per_layer, overlap

    ordered, per_layer = neurons_per_layer(neuron_set)
    overlap_languages, shared, jaccard = overlap(neuron_set)
    distinct = {
        pair for language in neuron_set.languages
        for pair in zip(neuron_set.neurons[language].layer.tolist(), neuron_set.neurons[language].index.tolist())
    }  # fmt: skip
    meta = neuron_set.meta
    return {
        "kind": NEURON_SET_KIND,
        "path": str(path),
        "model": meta.get("model", {}),
        "num_layers": neuron_set.num_layers,
        "width": neuron_set.width,
        "seq_len": meta.get("seq_len"),
        "dtype": meta.get("dtype"),
        "thresholds": meta.get("thresholds", {}),
        "stats_hash": meta.get("stats_hash"),
        "neuron_set_hash": neuron_set.content_hash(),
        "package_version": meta.get("package_version"),
        "languages": neuron_set.languages,
        "distinct_neurons": len(distinct),
        "per_language": {
            language: {
                "tokens": (meta.get("tokens_per_language") or {}).get(language),
                "neurons": len(neuron_set.neurons[language]),
                "per_layer": per_layer[ordered.index(language)].tolist(),
                "mean_activation": _mean(neuron_set.neurons[language].mean),
            }
            for language in neuron_set.languages
        },
        "overlap": {"languages": overlap_languages, "shared": shared.tolist(), "jaccard": jaccard.round(4).tolist()},
    }


def render(summary: dict[str, Any]) -> str:
    """The text ``lape-harness inspect`` prints."""
    lines = _header(summary)
    if summary["kind"] == STATS_KIND:
        lines += _stats_table(summary)
    else:
        lines += _neuron_table(summary) + [""] + _overlap_tables(summary)
    return "\n".join(lines)


def _header(summary: dict[str, Any]) -> list[str]:
    model = summary["model"] or {}
    what = "activation statistics" if summary["kind"] == STATS_KIND else "neuron set"
    identity = ", ".join(
        part for part in (
            model.get("model_type"),
            f"{summary['num_layers']} layers × {summary['width']} neurons",
            f"config {model['config_hash']}" if model.get("config_hash") else None,
            f"revision {model['revision']}" if model.get("revision") else None,
        ) if part
    )  # fmt: skip
    lines = [
        f"{what}: {summary['path']}",
        f"model:    {model.get('model_id') or '(unknown)'} ({identity})",
        f"profile:  seq_len {summary['seq_len']}, dtype {summary['dtype']}, "
        f"statistics {str(summary['stats_hash'])[:16]}",
    ]
    thresholds = summary.get("thresholds")
    if thresholds:
        lines.append(
            f"method:   LAPE top {thresholds['top_rate'] * 100:g}% = {thresholds['candidates']} candidates "
            f"({thresholds['candidates_kept']} pass the filter); filter q{thresholds['filter_rate']:g} "
            f"(p > {thresholds['filter_threshold']:.4g}), language bar q{thresholds['activation_bar_ratio']:g} "
            f"(p > {thresholds['activation_bar']:.4g}); {summary['distinct_neurons']} distinct neurons"
        )
    return lines + [""]


def _stats_table(summary: dict[str, Any]) -> list[str]:
    layers = summary["num_layers"]
    group = _layers_per_char(layers)
    lines = [f"{'lang':<6}{'tokens':>14}{'mean p':>9}{'never on':>10}{'mean act':>11}  p {_spark_label(layers)}"]
    for language, row in summary["per_language"].items():
        lines.append(
            f"{language:<6}{row['tokens']:>14,}{row['mean_probability']:>9.3f}{row['never_active']:>10.1%}"
            f"{row['mean_activation']:>11.4f}  {sparkline(_fold(row['probability_per_layer'], group, average=True), top=1.0)}"
        )
    return lines


def _neuron_table(summary: dict[str, Any]) -> list[str]:
    layers = summary["num_layers"]
    buckets = layer_buckets(layers)
    heads = [f"L{start}-{end - 1}" if end - start > 1 else f"L{start}" for start, end in buckets]
    lines = [
        f"{'lang':<6}{'tokens':>14}{'neurons':>9}" + "".join(f"{head:>9}" for head in heads)
        + f"  {_spark_label(layers)}"
    ]  # fmt: skip
    for language, row in summary["per_language"].items():
        tokens = f"{row['tokens']:,}" if row["tokens"] is not None else "?"
        counts = row["per_layer"]
        lines.append(
            f"{language:<6}{tokens:>14}{row['neurons']:>9}"
            + "".join(f"{sum(counts[start:end]):>9}" for start, end in buckets)
            + f"  {sparkline(_fold(counts, _layers_per_char(layers)))}"
        )
    return lines


def _overlap_tables(summary: dict[str, Any]) -> list[str]:
    overlap = summary["overlap"]
    languages = overlap["languages"]
    head = "      " + "".join(f"{language:>6}" for language in languages)
    lines = ["shared neurons |A ∩ B| (diagonal: the language's own count)", head]
    for language, row in zip(languages, overlap["shared"]):
        lines.append(f"{language:<6}" + "".join(f"{value:>6}" for value in row))
    lines += ["", "Jaccard |A ∩ B| / |A ∪ B|", head]
    for language, row in zip(languages, overlap["jaccard"]):
        lines.append(f"{language:<6}" + "".join(f"{_fraction(value):>6}" for value in row))
    return lines


def layer_buckets(layers: int, count: int = 4) -> list[tuple[int, int]]:
    """``count`` contiguous layer ranges ``[start, end)`` covering ``0..layers-1`` (fewer if few layers).

    >>> layer_buckets(32)
    [(0, 8), (8, 16), (16, 24), (24, 32)]
    >>> layer_buckets(2)
    [(0, 1), (1, 2)]
    """
    count = max(1, min(count, layers))
    edges = [round(layers * i / count) for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:]))


SPARK_WIDTH = 40  # at most this many characters per sparkline; deeper models fold layers together


def _layers_per_char(layers: int) -> int:
    return -(-layers // SPARK_WIDTH)


def _spark_label(layers: int) -> str:
    group = _layers_per_char(layers)
    return f"per layer (0→{layers - 1})" if group == 1 else f"per {group} layers (0→{layers - 1})"


def _fold(values: list[float], group: int, average: bool = False) -> list[float]:
    """Sum (or average) consecutive groups of ``group`` values."""
    chunks = [values[start : start + group] for start in range(0, len(values), group)]
    return [sum(chunk) / (len(chunk) if average else 1) for chunk in chunks]


def sparkline(values: list[float], top: float | None = None) -> str:
    """One character per value, scaled to ``top`` (default: the largest); ``·`` for zero.

    >>> sparkline([0, 1, 4, 8])
    '·▁▄█'
    """
    top = top if top is not None else max(values, default=0)
    if not top:
        return "·" * len(values)
    steps = len(SPARK)
    return "".join(
        "·" if value <= 0 else SPARK[min(steps, max(1, math.ceil(value / top * steps))) - 1] for value in values
    )


def _fraction(value: float) -> str:
    return "1" if value == 1 else "0" if value == 0 else f"{value:.2f}".lstrip("0")


def _mean(values: torch.Tensor) -> float | None:
    return float(values.double().mean()) if values.numel() else None


def neuron_set_line(neuron_set) -> str:
    """One line: candidates, kept, (neuron, language) pairs, emptiest/fullest language, distinct neurons.

    E.g. ``top 1% = 4588 candidates, 4588 kept; 5210 language neurons over 21 languages (fewest bo 12,
    most en 800), 4588 distinct``.
    """
    thresholds = neuron_set.meta["thresholds"]
    counts = neuron_set.counts()
    distinct = {pair for lang in neuron_set.languages
                for pair in zip(neuron_set[lang].layer.tolist(), neuron_set[lang].index.tolist())}  # fmt: skip
    fewest = min(counts, key=counts.get)
    most = max(counts, key=counts.get)
    control = neuron_set.meta.get("control")
    return (
        (f"random control (seed {control['seed']}) of " if control else "")
        + f"top {thresholds['top_rate'] * 100:g}% = {thresholds['candidates']} candidates, "
        f"{thresholds['candidates_kept']} kept; {sum(counts.values())} language neurons over "
        f"{len(counts)} languages (fewest {fewest} {counts[fewest]}, most {most} {counts[most]}), "
        f"{len(distinct)} distinct"
    )
