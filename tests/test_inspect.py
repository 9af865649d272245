"""`lape-harness inspect` on statistics and neuron-set files: text, JSON, and bad files."""

from __future__ import annotations

import json

import pytest
import torch
from builders import PLANTED_LANGUAGES, planted_stats
from safetensors.torch import save_file

from lape_harness.cli import main
from lape_harness.lape import identify
from lape_harness.neurons import LanguageNeurons, NeuronSet


@pytest.fixture
def files(tmp_path):
    stats, _ = planted_stats()
    stats.save(tmp_path / "stats.safetensors")
    neuron_set = identify(stats, top_rate=0.2, filter_rate=0.9, activation_bar_ratio=0.6)
    neuron_set.save(tmp_path / "lape-top20.safetensors")
    return tmp_path, stats, neuron_set


def inspect_json(path, capsys):
    assert main(["inspect", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_neuron_set_json_counts_layers_and_overlap(files, capsys):
    folder, _, neuron_set = files
    summary = inspect_json(folder / "lape-top20.safetensors", capsys)
    assert summary["kind"] == "neuron_set" and summary["languages"] == PLANTED_LANGUAGES
    sets = {lang: set(zip(neuron_set[lang].layer.tolist(), neuron_set[lang].index.tolist())) for lang in PLANTED_LANGUAGES}
    assert any(len(sets[a] & sets[b]) for a in PLANTED_LANGUAGES for b in PLANTED_LANGUAGES if a != b), "fixture should share neurons"
    for lang in PLANTED_LANGUAGES:
        row = summary["per_language"][lang]
        assert row["neurons"] == len(sets[lang])
        assert row["per_layer"] == [sum(1 for layer, _ in sets[lang] if layer == l) for l in range(3)]
    order = summary["overlap"]["languages"]
    assert sorted(order) == sorted(PLANTED_LANGUAGES)
    for i, a in enumerate(order):
        for j, b in enumerate(order):
            assert summary["overlap"]["shared"][i][j] == len(sets[a] & sets[b])
            union = len(sets[a] | sets[b])
            assert summary["overlap"]["jaccard"][i][j] == pytest.approx(len(sets[a] & sets[b]) / union if union else 0, abs=1e-4)
    assert summary["distinct_neurons"] == len(set().union(*sets.values()))
    assert summary["thresholds"]["top_rate"] == 0.2


def test_neuron_set_text(files, capsys):
    folder, _, neuron_set = files
    assert main(["inspect", str(folder / "lape-top20.safetensors")]) == 0
    text = capsys.readouterr().out
    assert "neuron set:" in text and "tiny/test" in text and "LAPE top 20%" in text
    assert "Jaccard" in text and "shared neurons" in text
    table = text.split("shared neurons")[0].splitlines()
    for lang in PLANTED_LANGUAGES:
        line = next(line for line in table if line.startswith(f"{lang} "))
        assert line.split()[2] == str(len(neuron_set[lang]))


def test_statistics_json_and_text(files, capsys):
    folder, stats, _ = files
    summary = inspect_json(folder / "stats.safetensors", capsys)
    assert summary["kind"] == "activation_stats" and summary["stats_hash"] == stats.content_hash()
    de = summary["per_language"]["de"]
    assert de["tokens"] == 1500
    assert de["mean_probability"] == pytest.approx((stats.over_zero[1].double() / 1500).mean().item())
    assert de["never_active"] == pytest.approx(1 / 120)
    assert len(de["probability_per_layer"]) == 3
    assert main(["inspect", str(folder / "stats.safetensors")]) == 0
    text = capsys.readouterr().out
    assert "activation statistics:" in text and "1,500" in text


def test_empty_language_in_neuron_set(tmp_path, capsys):
    empty = LanguageNeurons(*(torch.zeros(0, dtype=torch.long),) * 2, *(torch.zeros(0),) * 3)
    one = LanguageNeurons(torch.tensor([1]), torch.tensor([5]), torch.ones(1), torch.zeros(1), torch.ones(1))
    NeuronSet(["de", "en"], 2, 8, {"de": one, "en": empty}, {}).save(tmp_path / "set.safetensors")
    summary = inspect_json(tmp_path / "set.safetensors", capsys)
    assert summary["per_language"]["en"]["neurons"] == 0
    assert summary["per_language"]["de"]["per_layer"] == [0, 1]
    assert main(["inspect", str(tmp_path / "set.safetensors")]) == 0


@pytest.mark.parametrize("content, message", [
    (b"not a safetensors file at all", "corrupt or truncated"),
    (None, "no lape-harness metadata"),
])  # fmt: skip
def test_bad_files(tmp_path, capsys, content, message):
    path = tmp_path / "bad.safetensors"
    if content is None:
        save_file({"x": torch.zeros(2)}, str(path))
    else:
        path.write_bytes(content)
    assert main(["inspect", str(path)]) == 2
    assert message in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "missing.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_truncated_neuron_set(files, capsys):
    folder, _, _ = files
    data = (folder / "lape-top20.safetensors").read_bytes()
    (folder / "cut.safetensors").write_bytes(data[: len(data) - 10])
    assert main(["inspect", str(folder / "cut.safetensors")]) == 2
    assert "error:" in capsys.readouterr().err
