"""LAPE identification against a plain per-neuron reference that follows the paper's steps literally."""

from __future__ import annotations

import math

import pytest
import torch

from lape_harness.errors import InputError
from lape_harness.lape import entropy_ranking, identify, identify_many
from lape_harness.neurons import ActivationStats, NeuronSet

LANGS = ["bo", "de", "fr", "ja", "en"]


def reference_lape(over_zero, tokens, top_rate, filter_rate=0.95, bar_ratio=0.95):
    """Loop over every neuron: returns {language: sorted [(layer, index)]} and the entropies."""
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
    chosen = {lang: sorted(n for n in picks if p[k][n[0]][n[1]] > bar) for k, lang in enumerate(LANGS[:k_count])}
    return chosen, entropy


def planted_stats(seed=0, layers=3, width=40, quiet_last=False):
    """Random statistics; neuron (l, 3k+1) of layer l fires almost only for language k.

    Values are chosen so that entropies are either exactly tied (identical columns) or clearly
    apart, never a rounding error apart (summation order may differ from the reference's).
    """
    g = torch.Generator().manual_seed(seed)
    tokens = torch.tensor([1000, 1500, 800, 1200, 900], dtype=torch.int64)
    k = len(tokens)
    p = torch.rand(k, layers, width, generator=g) * 0.6 + 0.1
    planted = {}
    for lang_index in range(k):
        for layer in range(layers):
            index = 3 * lang_index + 1
            p[:, layer, index] = 0.01 * (lang_index + 1)  # distinct entropies per language: no near-ties
            p[lang_index, layer, index] = 0.97
            planted.setdefault(LANGS[lang_index], []).append((layer, index))
    p[:, 0, 0] = 0.0  # never fires
    if quiet_last:  # the last language never reaches the bar and has no planted neurons
        p[-1] = p[-1].clamp(max=0.05)
        planted.pop(LANGS[k - 1])
    over_zero = (p * tokens.view(-1, 1, 1)).round().long()
    activation_sum = torch.randn(k, layers, width, generator=g, dtype=torch.float64) * tokens.view(-1, 1, 1)
    meta = {"model": {"model_id": "tiny/test", "num_layers": layers, "width": width}, "seq_len": 64, "dtype": "float32"}
    return ActivationStats(LANGS[:k], over_zero, activation_sum, tokens, meta), planted


def as_pairs(entry):
    return list(zip(entry.layer.tolist(), entry.index.tolist()))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("top_rate", [0.02, 0.1, 0.3, 1.0])
def test_matches_plain_reference(seed, top_rate):
    stats, _ = planted_stats(seed)
    expected, _ = reference_lape(stats.over_zero.tolist(), stats.tokens.tolist(), top_rate)
    result = identify(stats, top_rate=top_rate)
    assert result.languages == LANGS
    for lang in LANGS:
        assert as_pairs(result[lang]) == expected[lang]


def test_planted_neurons_are_found_with_their_means():
    stats, planted = planted_stats()
    result = identify(stats, top_rate=0.15)
    means = stats.mean_activation()
    for k, lang in enumerate(LANGS):
        assert set(planted[lang]) <= set(as_pairs(result[lang]))
        entry = result[lang]
        for position, (layer, index) in enumerate(as_pairs(entry)):
            column = means[:, layer, index].tolist()
            others = [value for other, value in enumerate(column) if other != k]
            assert entry.mean[position].item() == pytest.approx(column[k], rel=1e-6, abs=1e-6)
            assert entry.others_mean[position].item() == pytest.approx(sum(others) / len(others), rel=1e-5, abs=1e-6)
            assert entry.probability[position].item() == pytest.approx(
                stats.over_zero[k, layer, index].item() / stats.tokens[k].item(), rel=1e-6
            )


def test_last_language_without_neurons_keeps_its_place():
    stats, _ = planted_stats(quiet_last=True)
    expected, _ = reference_lape(stats.over_zero.tolist(), stats.tokens.tolist(), 0.3)
    result = identify(stats, top_rate=0.3)
    assert expected["en"] == [] and len(result["en"]) == 0
    assert result.languages == LANGS and list(result.counts()) == LANGS
    assert all(len(result[lang]) > 0 for lang in LANGS[:-1])


def test_never_firing_neurons_are_never_selected():
    stats, _ = planted_stats()
    stats.over_zero[:, 1, :] = 0  # a whole dead layer
    result = identify(stats, top_rate=1.0)
    for lang in LANGS:
        pairs = as_pairs(result[lang])
        assert (0, 0) not in pairs and not any(layer == 1 for layer, _ in pairs)


def test_ties_are_broken_by_lowest_flat_index():
    stats, _ = planted_stats()
    # Ten identical, very specific neurons in layer 2: only the first few fit into the top-k.
    stats.over_zero[:, 2, 20:30] = 0
    stats.over_zero[1, 2, 20:30] = 1400
    count = round(3 * 40 * 0.05)  # 6 candidates, fewer than the 10 + 15 planted ties
    expected, _ = reference_lape(stats.over_zero.tolist(), stats.tokens.tolist(), 0.05)
    result = identify(stats, top_rate=0.05)
    picked = sorted(pair for lang in LANGS for pair in as_pairs(result[lang]))
    assert len(set(picked)) == count
    assert {lang: as_pairs(result[lang]) for lang in LANGS} == expected
    assert identify(stats, top_rate=0.05)["de"].index.tolist() == result["de"].index.tolist()


def test_entropy_ranking_is_stable_and_skips_infinite():
    values = torch.tensor([3.0, 1.0, 1.0, math.inf, 0.5, 1.0, math.inf])
    assert entropy_ranking(values).tolist() == [4, 1, 2, 5, 0]
    assert entropy_ranking(torch.full((3,), math.inf)).tolist() == []


def test_entropy_and_thresholds_recorded():
    stats, _ = planted_stats()
    threads = torch.get_num_threads()
    sets = identify_many(stats, [0.05, 0.1], filter_rate=0.9, activation_bar_ratio=0.8)
    assert torch.get_num_threads() == threads
    assert list(sets) == [0.05, 0.1]
    flat = sorted((stats.over_zero.double() / stats.tokens.double().view(-1, 1, 1)).view(-1).tolist())
    thresholds = sets[0.1].meta["thresholds"]
    assert thresholds["filter_threshold"] == flat[round(0.9 * len(flat)) - 1]
    assert thresholds["activation_bar"] == flat[round(0.8 * len(flat)) - 1]
    assert thresholds["candidates"] == 12 and thresholds["top_rate"] == 0.1
    meta = sets[0.05].meta
    assert meta["stats_hash"] == stats.content_hash()
    assert meta["model"]["model_id"] == "tiny/test" and meta["seq_len"] == 64
    assert meta["tokens_per_language"]["de"] == 1500
    expected, _ = reference_lape(stats.over_zero.tolist(), stats.tokens.tolist(), 0.1, 0.9, 0.8)
    assert {lang: as_pairs(sets[0.1][lang]) for lang in LANGS} == expected


def test_language_subset_and_round_trip(tmp_path):
    stats, planted = planted_stats()
    result = identify(stats, top_rate=0.2, languages=["ja", "de"])
    assert result.languages == ["ja", "de"]
    assert result.meta["stats_hash"] == stats.content_hash()
    assert set(planted["ja"]) <= set(as_pairs(result["ja"]))
    result.save(tmp_path / "set.safetensors")
    loaded = NeuronSet.load(tmp_path / "set.safetensors")
    assert loaded.counts() == result.counts()
    assert torch.equal(loaded["de"].index, result["de"].index)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"top_rate": 0.0}, "outside (0, 1]"),
        ({"top_rate": 1.5}, "outside (0, 1]"),
        ({"filter_rate": 1.0}, "filter rate"),
        ({"activation_bar_ratio": 0.0}, "activation bar ratio"),
        ({"languages": ["de", "xx"]}, "not in these statistics"),
        ({"languages": ["de"]}, "at least two languages"),
    ],
)
def test_bad_input(kwargs, message):
    stats, _ = planted_stats()
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace("]", r"\]")):
        identify(stats, **kwargs)


def test_language_without_tokens_is_an_error():
    stats, _ = planted_stats()
    stats.tokens[2] = 0
    with pytest.raises(InputError, match="no profiled tokens"):
        identify(stats)
