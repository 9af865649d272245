"""LAPE neuron selection, one neuron at a time: the reference ``lape_harness.lape`` is checked against.

It follows the method of Tang et al. 2024, "Language-Specific Neurons: The Key to Multilingual
Capabilities in Large Language Models" (arXiv 2402.16438, §2: activation probability, language
activation probability entropy, the filter and the activation bar), step by step as their code does
it: ``identify.py``, function ``activation()``, of github.com/RUCAIBox/Language-Specific-Neurons
(read at commits 1ec944cf50adac636e8b52c5663b2c68fcbd4cd0 and fdecc8d5c83eea482e0cdfedd6c8a9d81d479ef8,
which differ only in ``top_rate``). It is a rewrite in plain loops, not a copy of that code (which
carries no licence header; the repository shows no licence file). Its steps, with identify.py's
tensor operation for each:

1. ``p[k][l][j] = over_zero / tokens``; ``p̂ = p / Σ_k p`` (0 where the sum is 0: identify.py sets
   NaN to 0); ``H = −Σ_k p̂ log p̂`` with ``0 log 0 = 0``.
2. ``τ = kthvalue(round(filter_rate · N))`` of all ``N = K·L·I`` probabilities, i.e. the
   ``round(filter_rate · N)``-th smallest; a neuron where no language has ``p > τ`` gets ``H = +inf``.
3. The ``round(top_rate · L·I)`` neurons of lowest ``H`` over the whole model (``topk(largest=False)``).
4. ``bar = kthvalue(round(activation_bar_ratio · N))``; a candidate belongs to every language with
   ``p > bar``; each language's neurons sorted by (layer, index).

Where lape-harness decides what identify.py leaves open or gets wrong (docs/identify.md, "The
method, exactly"), the reference does as lape-harness documents:

* ties of ``H`` are broken by the lowest flat index ``layer · I + index`` (``torch.topk`` leaves
  the order of ties unspecified);
* candidates with ``H = +inf`` are dropped; identify.py keeps them, which matters only when the bar
  lies below the filter (``activation_bar_ratio < filter_rate``); with the defaults both are the same
  value and such a neuron can pass neither;
* every language keeps its place, also with no neurons (identify.py splits by
  ``torch.bincount(lang)`` without ``minlength`` and so loses trailing languages without neurons).

Example (two languages, one layer of four neurons):
    >>> chosen, entropy = reference_lape([[[90, 10, 50, 0]], [[10, 90, 50, 0]]], [100, 100], ["de", "fr"],
    ...                                  top_rate=0.5, filter_rate=0.75, bar_ratio=0.75)
    >>> chosen
    {'de': [(0, 0)], 'fr': [(0, 1)]}
    >>> round(entropy[(0, 0)], 4), entropy[(0, 2)], entropy[(0, 3)]
    (0.3251, inf, inf)
"""

from __future__ import annotations

import math


def reference_lape(over_zero, tokens, languages, top_rate, filter_rate=0.95, bar_ratio=0.95):
    """Loop over every neuron of ``over_zero[k][l][j]`` (nested lists; ``tokens[k]`` per language):
    returns ``{language: sorted [(layer, index)]}`` and the entropy of every ``(layer, index)``."""
    k_count, layers, width = len(over_zero), len(over_zero[0]), len(over_zero[0][0])
    p = [[[over_zero[k][l][j] / tokens[k] for j in range(width)] for l in range(layers)] for k in range(k_count)]
    everything = sorted(p[k][l][j] for k in range(k_count) for l in range(layers) for j in range(width))
    tau = everything[round(filter_rate * len(everything)) - 1]
    bar = everything[round(bar_ratio * len(everything)) - 1]
    entropy = {}
    for l in range(layers):
        for j in range(width):
            column = [p[k][l][j] for k in range(k_count)]
            total = sum(column)
            h = 0.0
            for value in column:
                share = value / total if total > 0 else 0.0
                if share > 0:
                    h -= share * math.log(share)
            if not any(value > tau for value in column):
                h = math.inf
            entropy[(l, j)] = h
    order = sorted(entropy, key=lambda n: (entropy[n], n[0] * width + n[1]))
    picks = [n for n in order[: round(layers * width * top_rate)] if entropy[n] != math.inf]
    chosen = {lang: sorted(n for n in picks if p[k][n[0]][n[1]] > bar) for k, lang in enumerate(languages[:k_count])}
    return chosen, entropy
