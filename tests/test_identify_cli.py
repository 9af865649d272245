"""`lape-harness identify` end to end on a synthetic statistics file."""

from __future__ import annotations

import pytest
from builders import PLANTED_LANGUAGES, as_pairs, planted_stats
from references.lape import reference_lape

from lape_harness.cli import main
from lape_harness.lape import identify
from lape_harness.neurons import ActivationStats, NeuronFileError, NeuronSet


@pytest.fixture
def stats_file(tmp_path):
    stats, planted = planted_stats()
    path = tmp_path / "profile" / "stats.safetensors"
    stats.save(path)
    return path, stats, planted


def test_writes_one_file_per_top_rate(stats_file, capsys):
    path, stats, _ = stats_file
    assert main(["identify", str(path), "--top-rate", "0.05", "0.1", "0.005"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    names = ["lape-top5.safetensors", "lape-top10.safetensors", "lape-top0.5.safetensors"]
    assert [line.split(":")[0] for line in out] == [f"wrote {path.parent / name}" for name in names]
    for name, rate in zip(names, [0.05, 0.1, 0.005]):
        neuron_set = NeuronSet.load(path.parent / name)
        expected, _ = reference_lape(stats.over_zero.tolist(), stats.tokens.tolist(), stats.languages, rate)
        assert {lang: as_pairs(neuron_set[lang]) for lang in PLANTED_LANGUAGES} == expected
        assert neuron_set.meta["thresholds"]["top_rate"] == rate
        assert neuron_set.meta["stats_hash"] == ActivationStats.load(path).content_hash()


def test_languages_thresholds_and_out_dir(stats_file, tmp_path):
    path, stats, planted = stats_file
    out = tmp_path / "sets"
    argv = ["identify", str(path), "--top-rate", "0.2", "--languages", "ja,deu_Latn", "--filter-rate", "0.9",
            "--activation-bar-ratio", "0.85", "--out-dir", str(out)]  # fmt: skip
    assert main(argv) == 0
    neuron_set = NeuronSet.load(out / "lape-top20.safetensors")
    assert neuron_set.languages == ["ja", "de"]
    thresholds = neuron_set.meta["thresholds"]
    assert (thresholds["filter_rate"], thresholds["activation_bar_ratio"]) == (0.9, 0.85)
    assert set(planted["ja"]) <= set(as_pairs(neuron_set["ja"]))
    assert not (path.parent / "lape-top20.safetensors").exists()


def test_exclusive_keeps_only_unshared_neurons(stats_file):
    path, _, _ = stats_file
    assert main(["identify", str(path), "--top-rate", "0.2", "--exclusive"]) == 0
    full = NeuronSet.load(path.parent / "lape-top20.safetensors")
    exclusive = NeuronSet.load(path.parent / "lape-top20-exclusive.safetensors")
    pairs = {lang: set(as_pairs(full[lang])) for lang in PLANTED_LANGUAGES}
    for lang in PLANTED_LANGUAGES:
        others = set().union(*(pairs[other] for other in PLANTED_LANGUAGES if other != lang))
        assert set(as_pairs(exclusive[lang])) == pairs[lang] - others
        kept = [i for i, pair in enumerate(as_pairs(full[lang])) if pair not in others]
        assert exclusive[lang].mean.tolist() == full[lang].mean[kept].tolist()
    assert any(pairs[a] & pairs[b] for a in PLANTED_LANGUAGES for b in PLANTED_LANGUAGES if a != b), "the fixture must share neurons"
    assert exclusive.meta["exclusive"] is True and exclusive.languages == full.languages


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--top-rate", "0"], "outside (0, 1]"),
        (["--top-rate", "0.01", "2"], "outside (0, 1]"),
        (["--filter-rate", "1"], "filter rate"),
        (["--languages", "de", "xx"], "not in these statistics"),
        (["--seed", "3"], "--seed seeds the random controls only: add --random-control"),
        (["--random-control", "--seed", "-1"], "--seed -1: seeds are whole numbers from 0 up"),
    ],
)
def test_bad_arguments(stats_file, capsys, extra, message):
    path, _, _ = stats_file
    assert main(["identify", str(path), *extra]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error
    assert not list(path.parent.glob("lape-top*"))


def test_bad_files(stats_file, tmp_path, capsys):
    path, _, _ = stats_file
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:1000])
    assert main(["identify", str(truncated)]) == 2
    assert "corrupt or truncated" in capsys.readouterr().err
    assert main(["identify", str(tmp_path / "missing.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_neuron_set_passed_as_statistics(stats_file, capsys):
    path, _, _ = stats_file
    main(["identify", str(path), "--top-rate", "0.1"])
    capsys.readouterr()
    assert main(["identify", str(path.parent / "lape-top10.safetensors")]) == 2
    assert "pass a statistics file" in capsys.readouterr().err


def test_interrupted_write_leaves_no_loadable_file(stats_file, monkeypatch):
    path, stats, _ = stats_file
    from lape_harness.lape import identify

    target = path.parent / "lape-top1.safetensors"
    neuron_set = identify(stats, top_rate=0.1)

    class Interrupted(Exception):
        pass

    def save_then_crash(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise Interrupted

    monkeypatch.setattr("lape_harness.neurons.save_file", save_then_crash)
    with pytest.raises(Interrupted):
        neuron_set.save(target)
    assert not target.exists()
    assert list(path.parent.iterdir()) == [path]
    with pytest.raises(NeuronFileError):
        NeuronSet.load(target)


def test_identify_top_rate_with_no_neurons(tmp_path, capsys):
    from lape_harness.cli import main

    stats = tmp_path / "stats.safetensors"
    planted_stats()[0].save(stats)  # 3 layers × 40 neurons
    assert main(["identify", str(stats), "--top-rate", "0.05", "0.001"]) == 2
    err = capsys.readouterr().err
    assert "top rate 0.001 selects no neurons" in err and "higher --top-rate" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.safetensors"]  # nothing written, not even 0.05
    assert main(["identify", str(stats), "--top-rate", "0.005"]) == 0  # one candidate: most languages get none
    err = capsys.readouterr().err
    assert "warning: lape-top0.5.safetensors:" in err and "got no neurons at top rate 0.005" in err


def test_identify_never_replaces_another_models_set(stats_file, capsys):
    path, stats, _ = stats_file
    other = identify(stats, top_rate=0.3)
    other.meta["model"] = {"model_id": "org/another-model", "config_hash": "0" * 16}
    target = path.parent / "lape-top30.safetensors"
    other.save(target)
    before = target.read_bytes()
    assert main(["identify", str(path), "--top-rate", "0.3"]) == 2
    assert "holds the neuron set of another model" in capsys.readouterr().err
    assert target.read_bytes() == before
    same = identify(stats, top_rate=0.3)  # the same model's set is replaced as before
    same.save(target)
    assert main(["identify", str(path), "--top-rate", "0.3"]) == 0
