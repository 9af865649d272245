"""Random matched controls: for a neuron set, a set of equally many random neurons per language and layer.

A claim such as "deactivating de's neurons raises de's perplexity most" needs a control: what
does switching off *any* equally many neurons in the same layers do? :func:`random_control`
draws, for every language L and layer l, as many neurons as L has in l, uniformly without
replacement from the neurons of l that are *not* L's own (they may be other languages'
neurons). The draw is seeded per ``(seed, language)``, so a language's control does not depend
on which other languages the set holds, and is recorded in the metadata (``control``: the seed,
the content hash and thresholds of the set it controls).

With activation statistics the control carries the statistics' values at its neurons (the
language's mean activation, the mean of the other languages' means, its activation
probability, computed as :mod:`lape_harness.lape` does for real sets), so every steering method
works on it. Without statistics it carries none (``has_means`` False: only deactivate and
multiply plans work).

Example:
    >>> from lape_harness.neurons import ActivationStats, NeuronSet
    >>> real = NeuronSet.load("neuron_cache/gemma-3-270m/lape-top3.safetensors")           # doctest: +SKIP
    >>> stats = ActivationStats.load("neuron_cache/gemma-3-270m/stats.safetensors")        # doctest: +SKIP
    >>> control = random_control(real, stats, seed=0)                                      # doctest: +SKIP
    >>> control.counts() == real.counts(), control.meta["control"]["seed"]                 # doctest: +SKIP
    (True, 0)
"""

from __future__ import annotations

import hashlib

import torch

from lape_harness.errors import InputError
from lape_harness.neurons import ActivationStats, LanguageNeurons, NeuronSet

CONTROL_METHOD = "uniform per layer from the neurons not selected for the language"


def random_control(neuron_set: NeuronSet, stats: ActivationStats | None = None, seed: int = 0) -> NeuronSet:
    """A random control of ``neuron_set`` (see the module docstring): same counts per language
    and per layer, disjoint from each language's own neurons, reproducible from ``seed``.

    >>> def language(layer, index):
    ...     n = len(layer)
    ...     return LanguageNeurons(torch.tensor(layer), torch.tensor(index), *(torch.zeros(n),) * 3)
    >>> real = NeuronSet(["de", "fr"], 2, 6, {"de": language([0, 0, 1], [0, 1, 5]), "fr": language([1], [2])}, {})
    >>> control = random_control(real, seed=1)
    >>> control["de"].layer.tolist(), control.has_means
    ([0, 0, 1], False)
    >>> set(control["de"].index[:2].tolist()) & {0, 1}
    set()
    """
    values = _values(neuron_set, stats)
    neurons = {}
    for row, language in enumerate(neuron_set.languages):
        own = neuron_set.neurons[language]
        layer, index = _draw(own, neuron_set.width, _generator(seed, language))
        neurons[language] = LanguageNeurons.at(layer, index, values, row)
    meta = {
        **neuron_set.meta,
        "has_means": values is not None,
        "control": {
            "seed": seed,
            "method": CONTROL_METHOD,
            "of_hash": neuron_set.content_hash(),
            "of_thresholds": neuron_set.meta.get("thresholds"),
            "of_exclusive": bool(neuron_set.meta.get("exclusive")),
        },
    }
    if stats is not None:
        meta["stats_hash"] = stats.content_hash()
    return NeuronSet(list(neuron_set.languages), neuron_set.num_layers, neuron_set.width, neurons, meta)


def check_seeds(seeds) -> list[int]:
    """The distinct seeds, each a whole number ≥ 0 (the file name ``-control-s<N>`` that the
    leaderboard pairs controls by has no room for a sign).

    >>> check_seeds([0, 3, 0])
    [0, 3]
    """
    negative = [seed for seed in seeds if seed < 0]
    if negative:
        raise InputError(f"--seed {' '.join(map(str, negative))}: seeds are whole numbers from 0 up "
                         "(control files are named -control-s<N>)")
    return list(dict.fromkeys(seeds))


def control_filename(name: str, seed: int) -> str:
    """The control's file name next to the real set's.

    >>> control_filename("lape-top3.safetensors", 0), control_filename("lape-top1-exclusive.safetensors", 7)
    ('lape-top3-control-s0.safetensors', 'lape-top1-exclusive-control-s7.safetensors')
    """
    stem = name[: -len(".safetensors")] if name.endswith(".safetensors") else name
    return f"{stem}-control-s{seed}.safetensors"


def _draw(own: LanguageNeurons, width: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per layer of ``own``, as many indices as it has there, uniformly from the rest of the layer;
    sorted by ``(layer, index)`` like a real set."""
    layers, counts = own.layer.long().unique(return_counts=True)
    picked_layer, picked_index = [], []
    for layer, count in zip(layers.tolist(), counts.tolist()):
        free = torch.ones(width, dtype=torch.bool)
        free[own.index[own.layer == layer].long()] = False
        candidates = free.nonzero().view(-1)
        if candidates.numel() < count:
            raise InputError(
                f"layer {layer} has {count} selected neurons of {width}: too few others remain for a control"
            )
        chosen = candidates[torch.randperm(candidates.numel(), generator=generator)[:count]].sort().values
        picked_layer.append(torch.full((count,), layer, dtype=torch.int64))
        picked_index.append(chosen)
    if not picked_layer:
        return torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64)
    return torch.cat(picked_layer), torch.cat(picked_index)


def _generator(seed: int, language: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{language}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def _values(neuron_set: NeuronSet, stats: ActivationStats | None) -> dict[str, torch.Tensor] | None:
    """Per language row (the set's order), layer and neuron: mean, others' mean and probability."""
    if stats is None:
        return None
    recorded = neuron_set.meta.get("stats_hash")
    if recorded and recorded != stats.content_hash():
        raise InputError(
            "these statistics are not the ones this neuron set was identified from (their hashes differ); "
            "pass the statistics file `lape-harness identify` read for it"
        )
    if (stats.num_layers, stats.width) != (neuron_set.num_layers, neuron_set.width):
        raise InputError(
            f"the statistics have {stats.num_layers} layers × {stats.width} neurons, the neuron set "
            f"{neuron_set.num_layers} × {neuron_set.width}: they are for different models"
        )
    return stats.select(list(neuron_set.languages)).neuron_values()
