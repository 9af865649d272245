"""Plots of a synthetic neuron set and of hand-written results, checked against plain loops."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from lape_harness import plots
from lape_harness.cli import main
from lape_harness.errors import InputError
from lape_harness.leaderboard import load_runs
from lape_harness.neurons import LanguageNeurons, NeuronSet

LANGUAGES = ["en", "de", "nl", "fr", "es", "ru", "zh", "ja"]
LAYERS, WIDTH = 6, 64


def synthetic_set(seed: int = 0) -> NeuronSet:
    """Related languages share a pool of deep neurons; each also has its own."""
    rng = random.Random(seed)
    pools = {}
    neurons = {}
    for code in LANGUAGES:
        family = plots.family_of(code)
        pool = pools.setdefault(family, {(rng.randrange(3, LAYERS), rng.randrange(WIDTH)) for _ in range(15)})
        own = {(rng.randrange(LAYERS), rng.randrange(WIDTH)) for _ in range(rng.randrange(5, 25))}
        ids = sorted(own | set(sorted(pool)[: rng.randrange(3, 12)]))
        n = len(ids)
        neurons[code] = LanguageNeurons(torch.tensor([l for l, _ in ids]), torch.tensor([i for _, i in ids]),
                                        torch.ones(n), torch.zeros(n), torch.ones(n))
    return NeuronSet(LANGUAGES, LAYERS, WIDTH, neurons, {"model": {"model_id": "synthetic/model"}})


def _image(path):
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.shape[0] >= 250 and image.shape[1] >= 350, image.shape
    assert float(image[..., :3].std()) > 0.05  # not blank
    return image


def test_language_order_groups_families():
    ordered = plots.order_by_family(LANGUAGES)
    families = [plots.family_of(code) for code in ordered]
    assert families[:3] == ["Germanic"] * 3  # the largest family first
    positions = {f: [i for i, x in enumerate(families) if x == f] for f in families}
    assert all(p == list(range(p[0], p[-1] + 1)) for p in positions.values())  # each family contiguous


def test_neuron_plots_report_what_plain_loops_count(tmp_path):
    neuron_set = synthetic_set()
    ids = {code: set(zip(neuron_set[code].layer.tolist(), neuron_set[code].index.tolist())) for code in LANGUAGES}

    per_layer = plots.plot_neurons_per_layer(neuron_set, tmp_path / "layers.png")
    for code in LANGUAGES:
        assert per_layer["counts"][code] == [sum(1 for layer, _ in ids[code] if layer == k) for k in range(LAYERS)]
    _image(tmp_path / "layers.png")

    overlap = plots.plot_overlap(neuron_set, tmp_path / "overlap.png")
    for a in LANGUAGES:
        for b in LANGUAGES:
            if a != b:
                assert overlap["shared"][(a, b)] == len(ids[a] & ids[b])
                assert overlap["jaccard"][(a, b)] == pytest.approx(len(ids[a] & ids[b]) / len(ids[a] | ids[b]))
    _image(tmp_path / "overlap.png")

    summary = plots.plot_specialization(neuron_set, tmp_path / "specialization.png")
    by_code = {row["code"]: row for row in summary["languages"]}
    for code in LANGUAGES:
        others = set().union(*(ids[c] for c in LANGUAGES if c != code))
        assert by_code[code]["unique_share"] == pytest.approx(len(ids[code] - others) / len(ids[code]))
        assert by_code[code]["mean_depth"] == pytest.approx(np.mean([l / (LAYERS - 1) for l, _ in ids[code]]))
    same = [len(ids[a] & ids[b]) / len(ids[a] | ids[b]) for i, a in enumerate(LANGUAGES) for b in LANGUAGES[i + 1:]
            if plots.family_of(a) == plots.family_of(b)]
    assert summary["jaccard_same_family"] == pytest.approx(np.mean(same))
    assert summary["jaccard_same_family"] > summary["jaccard_different_family"]  # built in by the shared pools
    assert any(line.startswith("Related languages overlap more? yes") for line in summary["lines"])
    _image(tmp_path / "specialization.png")


def _write_results(folder, name, plan, results):
    args = "pretrained=tiny/model,neurons=n.safetensors" + ("" if plan == "none" else f",steer={plan}")
    (folder / name).write_text(json.dumps({"results": results, "config": {"model_args": args}, "date": 1.0}))


def test_ppl_change_and_forcing_matrices(tmp_path):
    codes = ["en", "de", "ru"]
    base = {"en": 10.0, "de": 20.0, "ru": 40.0}
    off = {"de": {"en": 11.0, "de": 35.0, "ru": 41.0}, "ru": {"en": 10.5, "de": 20.0, "ru": 90.0}}
    _write_results(tmp_path, "none.json", "none", {f"lape_ppl_{c}": {"word_perplexity,none": base[c]} for c in codes})
    for language, values in off.items():
        _write_results(tmp_path, f"off_{language}.json", f"-{language}",
                       {f"lape_ppl_{c}": {"word_perplexity,none": v} for c, v in values.items()})
    rates = {(s, t): (i + 1) / 10 for i, (s, t) in enumerate((s, t) for s in codes for t in codes)}
    _write_results(tmp_path, "forcing.json", "auto",
                   {f"lape_forcing_{s}_to_{t}": {"target_rate,none": r, "clean_target_rate,none": r / 2} for (s, t), r in rates.items()})
    runs = load_runs([tmp_path])

    matrix = plots.ppl_change_matrix(runs, metric="word_perplexity")
    assert matrix.rows == ["-de", "-ru"] and set(matrix.columns) == set(codes)
    numbers = plots.plot_ppl_change(matrix, tmp_path / "ppl.png")
    for language, values in off.items():
        for code in codes:
            assert numbers[f"-{language}"][code] == pytest.approx(values[code] / base[code] - 1)
    _image(tmp_path / "ppl.png")

    forcing = plots.forcing_matrix(runs, metric="clean_target_rate")
    numbers = plots.plot_forcing(forcing, tmp_path / "forcing.png")
    assert {(s, t): numbers[s][t] for s in codes for t in codes} == pytest.approx({k: r / 2 for k, r in rates.items()})
    _image(tmp_path / "forcing.png")

    with pytest.raises(InputError, match="no forcing results for plan"):
        plots.forcing_matrix(runs, plan="none")
    _write_results(tmp_path, "other.json", "none", {"lape_ppl_en": {"word_perplexity,none": 1.0}})
    (tmp_path / "other.json").write_text((tmp_path / "other.json").read_text().replace("tiny/model", "other/model"))
    with pytest.raises(InputError, match="2 models"):
        plots.ppl_change_matrix(load_runs([tmp_path]), metric="word_perplexity")


def test_plot_cli(tmp_path, capsys):
    neurons = tmp_path / "lape-top1.safetensors"
    synthetic_set().save(neurons)
    assert main(["plot", "--neurons", str(neurons), "--out", str(tmp_path / "out")]) == 0
    assert "Deeper layers?" in capsys.readouterr().out
    for name in ("neurons_per_layer.png", "overlap.png", "specialization.png"):
        _image(tmp_path / "out" / name)
    assert "| en | Latn | Germanic |" in (tmp_path / "out" / "neurons.md").read_text()
    assert main(["plot"]) == 2
