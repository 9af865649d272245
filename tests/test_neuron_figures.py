"""Neuron-set analysis and pictures of a synthetic neuron set, checked against plain loops."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from builders import assert_picture

from lape_harness.analysis import neuron_figures
from lape_harness.cli import main
from lape_harness.languages import family_of, order_by_family
from lape_harness.neurons import LanguageNeurons, NeuronSet

LANGUAGES = ["en", "de", "nl", "fr", "es", "ru", "zh", "ja"]
LAYERS, WIDTH = 6, 64


def synthetic_set(seed: int = 0) -> NeuronSet:
    """Related languages share a pool of deep neurons; each also has its own."""
    rng = random.Random(seed)
    pools = {}
    neurons = {}
    for code in LANGUAGES:
        family = family_of(code)
        pool = pools.setdefault(family, {(rng.randrange(3, LAYERS), rng.randrange(WIDTH)) for _ in range(15)})
        own = {(rng.randrange(LAYERS), rng.randrange(WIDTH)) for _ in range(rng.randrange(5, 25))}
        ids = sorted(own | set(sorted(pool)[: rng.randrange(3, 12)]))
        n = len(ids)
        neurons[code] = LanguageNeurons(torch.tensor([l for l, _ in ids]), torch.tensor([i for _, i in ids]),
                                        torch.ones(n), torch.zeros(n), torch.ones(n))
    return NeuronSet(LANGUAGES, LAYERS, WIDTH, neurons, {"model": {"model_id": "synthetic/model"}})


def test_language_order_groups_families():
    ordered = order_by_family(LANGUAGES)
    families = [family_of(code) for code in ordered]
    assert families[:3] == ["Germanic"] * 3  # the largest family first
    positions = {f: [i for i, x in enumerate(families) if x == f] for f in families}
    assert all(p == list(range(p[0], p[-1] + 1)) for p in positions.values())  # each family contiguous


def test_neuron_plots_report_what_plain_loops_count(tmp_path):
    neuron_set = synthetic_set()
    ids = {code: set(zip(neuron_set[code].layer.tolist(), neuron_set[code].index.tolist())) for code in LANGUAGES}

    per_layer = neuron_figures.plot_neurons_per_layer(neuron_set, tmp_path / "layers.png")
    for code in LANGUAGES:
        assert per_layer["counts"][code] == [sum(1 for layer, _ in ids[code] if layer == k) for k in range(LAYERS)]
    assert_picture(tmp_path / "layers.png")

    overlap = neuron_figures.plot_overlap(neuron_set, tmp_path / "overlap.png")
    for a in LANGUAGES:
        for b in LANGUAGES:
            if a != b:
                assert overlap["shared"][(a, b)] == len(ids[a] & ids[b])
                assert overlap["jaccard"][(a, b)] == pytest.approx(len(ids[a] & ids[b]) / len(ids[a] | ids[b]))
    assert_picture(tmp_path / "overlap.png")

    summary = neuron_figures.plot_specialization(neuron_set, tmp_path / "specialization.png")
    by_code = {row["code"]: row for row in summary["languages"]}
    for code in LANGUAGES:
        others = set().union(*(ids[c] for c in LANGUAGES if c != code))
        assert by_code[code]["unique_share"] == pytest.approx(len(ids[code] - others) / len(ids[code]))
        assert by_code[code]["mean_depth"] == pytest.approx(np.mean([l / (LAYERS - 1) for l, _ in ids[code]]))
    same = [len(ids[a] & ids[b]) / len(ids[a] | ids[b]) for i, a in enumerate(LANGUAGES) for b in LANGUAGES[i + 1:]
            if family_of(a) == family_of(b)]
    assert summary["jaccard_same_family"] == pytest.approx(np.mean(same))
    assert summary["jaccard_same_family"] > summary["jaccard_different_family"]  # built in by the shared pools
    assert any(line.startswith("Related languages overlap more? yes") for line in summary["lines"])
    assert_picture(tmp_path / "specialization.png")


def test_plot_cli(tmp_path, capsys):
    neurons = tmp_path / "lape-top1.safetensors"
    synthetic_set().save(neurons)
    assert main(["plot", "--neurons", str(neurons), "--out", str(tmp_path / "out")]) == 0
    assert "Deeper layers?" in capsys.readouterr().out
    for name in ("neurons_per_layer.png", "overlap.png", "specialization.png"):
        assert_picture(tmp_path / "out" / name)
    assert "| en | Latn | Germanic |" in (tmp_path / "out" / "neurons.md").read_text()
    assert main(["plot"]) == 2
