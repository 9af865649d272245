"""LAPE identification against a plain per-neuron reference that follows the paper's steps literally
(references/lape.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from builders import PLANTED_LANGUAGES, as_pairs, planted_stats
from references.lape import reference_lape

from lape_harness.errors import InputError
from lape_harness.lape import entropy_ranking, identify, identify_many
from lape_harness.neurons import ActivationStats, NeuronSet


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("top_rate", [0.02, 0.1, 0.3, 1.0])
def test_matches_plain_reference(seed, top_rate):
    stats, _ = planted_stats(seed)
    expected, _ = reference_lape(stats.over_zero.tolist(), stats.tokens.tolist(), stats.languages, top_rate)
    result = identify(stats, top_rate=top_rate)
    assert result.languages == PLANTED_LANGUAGES
    for lang in PLANTED_LANGUAGES:
        assert as_pairs(result[lang]) == expected[lang]


def test_planted_neurons_are_found_with_their_means():
    stats, planted = planted_stats()
    result = identify(stats, top_rate=0.15)
    means = stats.mean_activation()
    for k, lang in enumerate(PLANTED_LANGUAGES):
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
    expected, _ = reference_lape(stats.over_zero.tolist(), stats.tokens.tolist(), stats.languages, 0.3)
    result = identify(stats, top_rate=0.3)
    assert expected["en"] == [] and len(result["en"]) == 0
    assert result.languages == PLANTED_LANGUAGES and list(result.counts()) == PLANTED_LANGUAGES
    assert all(len(result[lang]) > 0 for lang in PLANTED_LANGUAGES[:-1])


def test_never_firing_neurons_are_never_selected():
    stats, _ = planted_stats()
    stats.over_zero[:, 1, :] = 0  # a whole dead layer
    result = identify(stats, top_rate=1.0)
    for lang in PLANTED_LANGUAGES:
        pairs = as_pairs(result[lang])
        assert (0, 0) not in pairs and not any(layer == 1 for layer, _ in pairs)


def test_ties_are_broken_by_lowest_flat_index():
    stats, _ = planted_stats()
    # Ten identical, very specific neurons in layer 2: only the first few fit into the top-k.
    stats.over_zero[:, 2, 20:30] = 0
    stats.over_zero[1, 2, 20:30] = 1400
    count = round(3 * 40 * 0.05)  # 6 candidates, fewer than the 10 + 15 planted ties
    expected, _ = reference_lape(stats.over_zero.tolist(), stats.tokens.tolist(), stats.languages, 0.05)
    result = identify(stats, top_rate=0.05)
    picked = sorted(pair for lang in PLANTED_LANGUAGES for pair in as_pairs(result[lang]))
    assert len(set(picked)) == count
    assert {lang: as_pairs(result[lang]) for lang in PLANTED_LANGUAGES} == expected
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
    expected, _ = reference_lape(stats.over_zero.tolist(), stats.tokens.tolist(), stats.languages, 0.1, 0.9, 0.8)
    assert {lang: as_pairs(sets[0.1][lang]) for lang in PLANTED_LANGUAGES} == expected


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


@pytest.mark.parametrize("top_rate", ["0.01", "0.02", "0.03", "0.04", "0.05"])
def test_equals_the_authors_own_selection_on_the_committed_gemma_statistics(top_rate):
    """Tang et al.'s identify.py, run unchanged on neuron_cache/gemma-3-270m/stats.safetensors
    (tests/fixtures/authors_lape/record.py says how), selected exactly these neurons per language
    and layer; lape-harness selects the same."""
    fixture = Path(__file__).parent / "fixtures" / "authors_lape" / "gemma-3-270m.json"
    recorded = json.loads(fixture.read_text())
    stats = ActivationStats.load(Path(__file__).resolve().parents[1] / recorded["statistics"])
    assert stats.content_hash() == recorded["stats_hash"] and stats.languages == recorded["languages"]
    ours = identify(stats, top_rate=float(top_rate))
    authors = recorded["sets"][top_rate]
    assert len(authors) == len(stats.languages)  # no trailing language lost: their bincount kept every one
    for language, per_layer in zip(stats.languages, authors):
        pairs = sorted((layer, index) for layer, indices in enumerate(per_layer) for index in indices)
        assert as_pairs(ours[language]) == pairs, (top_rate, language)
