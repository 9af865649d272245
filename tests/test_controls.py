"""Random matched controls (lape_harness.controls) and `lape-harness identify --random-control`."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from builders import PLANTED_LANGUAGES, as_pairs, planted_stats

from lape_harness.cli import main
from lape_harness.controls import random_control
from lape_harness.errors import InputError
from lape_harness.lape import identify
from lape_harness.neurons import LanguageNeurons, NeuronSet
from lape_harness.steering import parse_steer
from lape_harness.steering.compiled import compile_plan


def _per_layer(entry):
    return Counter(entry.layer.tolist())


def test_counts_per_language_and_layer_equal_and_disjoint(planted_set):
    stats, neuron_set = planted_set
    control = random_control(neuron_set, stats, seed=3)
    assert control.languages == neuron_set.languages
    assert sum(control.counts().values()) > 20, "the fixture must select neurons"
    for lang in PLANTED_LANGUAGES:
        assert _per_layer(control[lang]) == _per_layer(neuron_set[lang])
        pairs = as_pairs(control[lang])
        assert len(set(pairs)) == len(pairs), "drawn without replacement"
        assert not set(pairs) & set(as_pairs(neuron_set[lang]))
        assert pairs == sorted(pairs)


def test_values_equal_a_direct_computation_from_the_stats(planted_set):
    stats, neuron_set = planted_set
    control = random_control(neuron_set, stats, seed=0)
    over_zero, sums, tokens = stats.over_zero.tolist(), stats.activation_sum.tolist(), stats.tokens.tolist()
    k = len(PLANTED_LANGUAGES)
    for row, lang in enumerate(PLANTED_LANGUAGES):
        for n, (layer, index) in enumerate(as_pairs(control[lang])):
            means = [sums[other][layer][index] / tokens[other] for other in range(k)]
            others = sum(means[other] for other in range(k) if other != row) / (k - 1)
            assert control[lang].mean[n].item() == pytest.approx(means[row], rel=1e-5)
            assert control[lang].others_mean[n].item() == pytest.approx(others, rel=1e-5, abs=1e-6)
            assert control[lang].probability[n].item() == pytest.approx(over_zero[row][layer][index] / tokens[row])
    assert control.has_means and control.meta["stats_hash"] == stats.content_hash()


def test_seed_reproducible_different_seeds_differ(planted_set):
    stats, neuron_set = planted_set
    first, again, other = (random_control(neuron_set, stats, seed) for seed in (5, 5, 6))
    assert first.content_hash() == again.content_hash()
    assert first.content_hash() != other.content_hash()
    assert first.meta["control"]["seed"] == 5 and first.meta["control"]["of_hash"] == neuron_set.content_hash()


def test_language_draw_does_not_depend_on_the_other_languages(planted_set):
    stats, neuron_set = planted_set
    subset = NeuronSet(["fr", "de"], neuron_set.num_layers, neuron_set.width,
                       {lang: neuron_set.neurons[lang] for lang in ("fr", "de")}, dict(neuron_set.meta))  # fmt: skip
    assert as_pairs(random_control(subset, None, 2)["de"]) == as_pairs(random_control(neuron_set, None, 2)["de"])


def test_without_stats_only_deactivate_and_multiply(planted_set):
    _, neuron_set = planted_set
    control = random_control(neuron_set, None, seed=0)
    assert not control.has_means and torch.isnan(control["de"].mean).all()
    assert compile_plan(parse_steer("-de*0.5*fr"), control, neuron_set.num_layers, neuron_set.width)
    with pytest.raises(InputError, match="deactivate/multiply"):
        compile_plan(parse_steer("-de+fr"), control, neuron_set.num_layers, neuron_set.width)


def test_statistics_of_another_identification_are_refused(planted_set):
    stats, neuron_set = planted_set
    other, _ = planted_stats(seed=9)
    with pytest.raises(InputError, match="not the ones this neuron set was identified from"):
        random_control(neuron_set, other, 0)


def test_full_layer_leaves_no_room():
    full = NeuronSet(["de", "fr"], 1, 3, {"de": _entry([0, 0, 0], [0, 1, 2]), "fr": _entry([], [])}, {})
    with pytest.raises(InputError, match="too few others remain"):
        random_control(full, None, 0)


def _entry(layer, index):
    n = len(layer)
    return LanguageNeurons(torch.tensor(layer, dtype=torch.long), torch.tensor(index, dtype=torch.long),
                           *(torch.zeros(n) for _ in range(3)))  # fmt: skip


def test_identify_writes_controls_that_steer(tmp_path, capsys):
    stats, _ = planted_stats()
    path = tmp_path / "stats.safetensors"
    stats.save(path)
    assert main(["identify", str(path), "--top-rate", "0.3", "--exclusive", "--random-control", "--seed", "0", "4"]) == 0
    written = [line.split(":")[0].split("/")[-1] for line in capsys.readouterr().out.splitlines()]
    assert written == ["lape-top30.safetensors", "lape-top30-exclusive.safetensors",
                       "lape-top30-control-s0.safetensors", "lape-top30-control-s4.safetensors",
                       "lape-top30-exclusive-control-s0.safetensors", "lape-top30-exclusive-control-s4.safetensors"]
    real = NeuronSet.load(tmp_path / "lape-top30-exclusive.safetensors")
    control = NeuronSet.load(tmp_path / "lape-top30-exclusive-control-s4.safetensors")
    assert control.content_hash() == random_control(real, stats, 4).content_hash()
    assert control.meta["control"]["of_exclusive"] is True
    edits = compile_plan(parse_steer("-de+2*fr.diff"), control, stats.num_layers, stats.width)
    assert sum(len(edit.index) for edit in edits.values()) > 0


def test_control_command_for_existing_sets(tmp_path, capsys):
    stats, _ = planted_stats()
    stats.save(tmp_path / "stats.safetensors")
    real = identify(stats, top_rate=0.3)
    real.save(tmp_path / "lape-top30.safetensors")
    argv = ["control", str(tmp_path / "lape-top30.safetensors"), "--seed", "2", "--out-dir", str(tmp_path / "c")]
    assert main(argv + ["--stats", str(tmp_path / "stats.safetensors")]) == 0
    control = NeuronSet.load(tmp_path / "c" / "lape-top30-control-s2.safetensors")
    assert control.content_hash() == random_control(real, stats, 2).content_hash()
    assert "random control (seed 2) of top 30%" in capsys.readouterr().out
    assert main(argv) == 0
    assert not NeuronSet.load(tmp_path / "c" / "lape-top30-control-s2.safetensors").has_means
    assert "only deactivate and multiply" in capsys.readouterr().err


def test_control_command_refuses_negative_seeds_before_any_work(tmp_path, capsys):
    stats, _ = planted_stats()
    identify(stats, top_rate=0.3).save(tmp_path / "lape-top30.safetensors")
    assert main(["control", str(tmp_path / "lape-top30.safetensors"), "--seed", "-1"]) == 2
    assert "--seed -1: seeds are whole numbers from 0 up" in capsys.readouterr().err
    assert not list(tmp_path.glob("*control*"))
