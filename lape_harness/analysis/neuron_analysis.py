"""Neuron-set analysis: where each language's neurons sit and how they overlap, and the
paper's three claims (deeper layers, non-Latin scripts more specific, related languages
overlap) put to the numbers. No drawing here: :mod:`lape_harness.analysis.neuron_figures` draws these.

Example:
    >>> neuron_set = NeuronSet.load("neuron_cache/gemma-3-270m/lape-top1.safetensors")  # doctest: +SKIP
    >>> specialization_summary(neuron_set)["jaccard_same_family"]                       # doctest: +SKIP
    0.12
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from lape_harness.languages import family_of, order_by_family, script_of


def neurons_per_layer(neuron_set) -> tuple[list[str], np.ndarray]:
    """Languages (family order) and ``counts[language, layer]`` of their neurons."""
    languages = order_by_family(neuron_set.languages)
    counts = np.zeros((len(languages), neuron_set.num_layers), dtype=np.int64)
    for row, code in enumerate(languages):
        layers = neuron_set.neurons[code].layer.numpy()
        counts[row] = np.bincount(layers, minlength=neuron_set.num_layers)[: neuron_set.num_layers]
    return languages, counts


def neuron_ids(neuron_set, code: str) -> set[tuple[int, int]]:
    entry = neuron_set.neurons[code]
    return set(zip(entry.layer.tolist(), entry.index.tolist()))


def overlap(neuron_set) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Languages (family order), shared-neuron counts ``|A ∩ B|`` and Jaccard ``|A ∩ B| / |A ∪ B|``."""
    languages = order_by_family(neuron_set.languages)
    sets = [neuron_ids(neuron_set, code) for code in languages]
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
    ids = {code: neuron_ids(neuron_set, code) for code in languages}
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
