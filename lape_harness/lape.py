"""LAPE: language activation probability entropy, and the language-specific neurons it selects.

For every neuron (layer ``l``, index ``j``) and language ``k``, with ``p = over_zero / tokens``:

1. ``p̂ = p / Σ_k p`` (0 where a neuron never fires), entropy ``H = −Σ_k p̂ log p̂`` (natural
   log, ``0·log 0 = 0``); low entropy = language-specific;
2. ``τ`` = the ``round(filter_rate · L·I·K)``-th smallest of all ``L·I·K`` probabilities; a
   neuron with no language ``p > τ`` gets ``H = +inf`` (this also drops never-firing neurons);
3. the ``round(L·I · top_rate)`` neurons with the lowest ``H`` over the whole model (all layers
   jointly) are the candidates; ties are broken by flat index ``l·I + j`` (lowest first), so
   the result is deterministic; candidates with ``H = +inf`` are dropped;
4. ``bar`` = the ``round(activation_bar_ratio · L·I·K)``-th smallest probability (the same value
   as ``τ`` by default); a candidate belongs to EVERY language whose ``p > bar``, so neurons can
   be shared, and a language may get none (it keeps its empty place).

Everything is vectorized (one pass per layer, no loop over neurons) and exact in float64.

Example:
    >>> stats = ActivationStats.load("neuron_cache/tiny/stats.safetensors")   # doctest: +SKIP
    >>> sets = identify_many(stats, [0.01, 0.02])                              # doctest: +SKIP
    >>> sets[0.01].counts()                                                    # doctest: +SKIP
    {'de': 51, 'en': 12, ...}
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch

from lape_harness.errors import InputError
from lape_harness.neurons import ActivationStats, LanguageNeurons, NeuronSet

DEFAULT_TOP_RATES = (0.01, 0.02, 0.03, 0.04, 0.05)
DEFAULT_FILTER_RATE = 0.95
DEFAULT_ACTIVATION_BAR_RATIO = 0.95


def identify(
    stats: ActivationStats,
    top_rate: float = 0.01,
    filter_rate: float = DEFAULT_FILTER_RATE,
    activation_bar_ratio: float = DEFAULT_ACTIVATION_BAR_RATIO,
    languages: Sequence[str] | None = None,
) -> NeuronSet:
    """The language-specific neurons of ``stats`` at one ``top_rate`` (see the module docstring).

    >>> identify(stats, top_rate=0.01)["de"].layer    # doctest: +SKIP
    """
    return identify_many(stats, [top_rate], filter_rate, activation_bar_ratio, languages)[top_rate]


def identify_many(
    stats: ActivationStats,
    top_rates: Sequence[float] = DEFAULT_TOP_RATES,
    filter_rate: float = DEFAULT_FILTER_RATE,
    activation_bar_ratio: float = DEFAULT_ACTIVATION_BAR_RATIO,
    languages: Sequence[str] | None = None,
) -> dict[float, NeuronSet]:
    """One :class:`NeuronSet` per top rate; the entropies and thresholds are computed once.

    ``languages`` restricts the identification to a subset of the profiled languages (in the
    given order); the provenance still records the hash of the full statistics.

    A top rate that selects no neuron at all (e.g. 0.0001 of a small model: ``round(L·I·rate)``
    is 0) is an :class:`InputError`, raised before any set is returned so that nothing is
    written: such a set steers nothing, and every plan with it would fail only at evaluation,
    after a model load. A single language without neurons in an otherwise non-empty set is
    LAPE's own outcome (the language keeps its empty place) and is kept; ``lape-harness
    identify`` warns about it, and steering that language with the set is an error
    (:meth:`~lape_harness.steering.plan.SteeringPlan.check_languages`).
    """
    _check_rates(top_rates, filter_rate, activation_bar_ratio)
    with _one_torch_thread():
        return _identify_many(stats, top_rates, filter_rate, activation_bar_ratio, languages)


def _identify_many(stats, top_rates, filter_rate, activation_bar_ratio, languages) -> dict[float, NeuronSet]:
    stats_hash = stats.content_hash()
    if languages is not None:
        stats = stats.select(list(languages))
    _check_languages(stats)

    probability_bar = _quantiles(stats, {filter_rate, activation_bar_ratio})
    tau, bar = probability_bar[filter_rate], probability_bar[activation_bar_ratio]
    entropy = lape_entropy(stats, tau)

    base_meta = {
        "model": stats.meta.get("model", {}),
        "stats_hash": stats_hash,
        "languages": stats.languages,
        "tokens_per_language": dict(zip(stats.languages, stats.tokens.tolist())),
        "seq_len": stats.meta.get("seq_len"),
        "dtype": stats.meta.get("dtype"),
        "method": "lape",
    }
    ranking = entropy_ranking(entropy)
    sets = {}
    for top_rate in top_rates:
        candidates = round(entropy.numel() * top_rate)
        picks = ranking[:candidates].sort().values  # candidates with +inf entropy are dropped
        thresholds = {
            "top_rate": top_rate,
            "filter_rate": filter_rate,
            "activation_bar_ratio": activation_bar_ratio,
            "filter_threshold": tau,
            "activation_bar": bar,
            "candidates": candidates,
            "candidates_kept": int(picks.numel()),
        }
        sets[top_rate] = NeuronSet(
            list(stats.languages),
            stats.num_layers,
            stats.width,
            _assign(stats, picks, bar),
            {**base_meta, "thresholds": thresholds},
        )
        if not any(sets[top_rate].counts().values()):
            raise InputError(
                f"top rate {top_rate:g} selects no neurons ({entropy.numel()} neurons × {top_rate:g} = {candidates} "
                f"candidate(s), {int(picks.numel())} with a finite entropy, none above the activation bar for any "
                f"language); use a higher --top-rate: at least {1 / entropy.numel():.2g} gives one candidate, the "
                "paper uses 0.01 to 0.05"
            )
    return sets


def lape_entropy(stats: ActivationStats, filter_threshold: float) -> torch.Tensor:
    """Per neuron, flattened as ``l·I + j`` (float64 ``[L·I]``): the LAPE entropy, ``+inf`` where
    no language's activation probability exceeds ``filter_threshold``.

    The entropy is only computed for the neurons that pass the filter (a small share: the filter
    keeps the neurons with some probability in the top ``1 − filter_rate`` of all of them), a
    few layers at a time so that the temporaries stay small.
    """
    over_zero = stats.over_zero.numpy()
    tokens = stats.tokens.numpy()[:, None, None]
    entropy = np.full((stats.num_layers, stats.width), np.inf)
    chunk = max(1, _CHUNK_VALUES // (len(stats.languages) * stats.width))
    for start in range(0, stats.num_layers, chunk):
        probability = over_zero[:, start : start + chunk] / tokens  # float64 [K, chunk, I]
        passing = (probability > filter_threshold).any(axis=0)
        kept = torch.from_numpy(probability[:, passing])  # [K, m]; every column sums to > 0
        normalized = kept / kept.sum(dim=0, keepdim=True)
        entropy[start : start + chunk][passing] = torch.xlogy(normalized, normalized).sum(dim=0).neg_().numpy()
    return torch.from_numpy(entropy.reshape(-1))


_CHUNK_VALUES = 1 << 23  # probabilities per chunk (64 MiB of float64)


def entropy_ranking(entropy: torch.Tensor) -> torch.Tensor:
    """Flat indices of the neurons with finite entropy, lowest entropy first, ties by lowest index.

    >>> entropy_ranking(torch.tensor([3.0, 1.0, float("inf"), 0.5, 1.0])).tolist()
    [3, 1, 4, 0]
    """
    finite = torch.isfinite(entropy).nonzero().view(-1)
    order = torch.sort(entropy[finite], stable=True).indices
    return finite[order]


def _quantiles(stats: ActivationStats, rates: set[float]) -> dict[float, float]:
    """For each rate, the ``round(rate · L·I·K)``-th smallest activation probability."""
    probability = stats.over_zero.numpy().reshape(len(stats.languages), -1) / stats.tokens.numpy()[:, None].astype(
        np.float64
    )
    flat = probability.reshape(-1)
    ranks = {rate: min(max(round(rate * flat.size), 1), flat.size) - 1 for rate in rates}
    flat.partition(sorted(set(ranks.values())))  # in place: no second copy of L·I·K values
    return {rate: float(flat[rank]) for rate, rank in ranks.items()}


def _assign(stats: ActivationStats, picks: torch.Tensor, bar: float) -> dict[str, LanguageNeurons]:
    """Each kept candidate goes to every language whose activation probability exceeds ``bar``."""
    k = len(stats.languages)
    tokens = stats.tokens.double().view(-1, 1)
    probability = stats.over_zero.reshape(k, -1)[:, picks].double() / tokens
    mean = stats.activation_sum.reshape(k, -1)[:, picks] / tokens
    others_mean = (mean.sum(dim=0, keepdim=True) - mean) / (k - 1)
    rows, columns = (probability > bar).nonzero(as_tuple=True)  # by language, then by (layer, index)
    sizes = torch.bincount(rows, minlength=k).tolist()  # minlength: a language without neurons keeps its place
    fields = {
        "layer": (picks[columns] // stats.width).split(sizes),
        "index": (picks[columns] % stats.width).split(sizes),
        "mean": mean[rows, columns].float().split(sizes),
        "others_mean": others_mean[rows, columns].float().split(sizes),
        "probability": probability[rows, columns].float().split(sizes),
    }
    return {
        language: LanguageNeurons(**{name: parts[row].clone() for name, parts in fields.items()})
        for row, language in enumerate(stats.languages)
    }


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """The work is memory-bound NumPy plus small torch ops: a second torch thread only spins
    (measured: twice the CPU time, and slower on a shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _check_rates(top_rates: Sequence[float], filter_rate: float, activation_bar_ratio: float) -> None:
    if not top_rates:
        raise InputError("no top rate given; pass at least one, e.g. --top-rate 0.01")
    for rate in top_rates:
        if not 0 < rate <= 1:
            raise InputError(f"top rate {rate} is outside (0, 1]; it is a fraction of all neurons, e.g. 0.01 for 1%")
    for name, rate in (("filter rate", filter_rate), ("activation bar ratio", activation_bar_ratio)):
        if not 0 < rate < 1:
            raise InputError(f"{name} {rate} is outside (0, 1); it is a quantile of all probabilities, e.g. 0.95")


def _check_languages(stats: ActivationStats) -> None:
    if len(stats.languages) < 2:
        raise InputError(
            f"LAPE compares languages, but only {stats.languages} are selected; give at least two languages"
        )
    empty = [lang for lang, n in zip(stats.languages, stats.tokens.tolist()) if n <= 0]
    if empty:
        raise InputError(f"languages {empty} have no profiled tokens; profile them or leave them out with --languages")


def neuron_set_filename(top_rate: float, exclusive: bool = False) -> str:
    """The conventional file name of a neuron set: the top rate in percent.

    >>> neuron_set_filename(0.01), neuron_set_filename(0.005), neuron_set_filename(0.03, exclusive=True)
    ('lape-top1.safetensors', 'lape-top0.5.safetensors', 'lape-top3-exclusive.safetensors')
    """
    return f"lape-top{round(top_rate * 100, 6):g}{'-exclusive' if exclusive else ''}.safetensors"
