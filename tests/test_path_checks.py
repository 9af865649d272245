"""Outputs that cannot be written are refused before any work (``lape_harness.path_checks``; issue 14,
item 8): ``profile --out``, and the outputs of sweep, leaderboard, plot, identify and bake."""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import planted_stats, set_with_an_empty_language

from lape_harness.errors import InputError

FIXTURES = Path(__file__).parent / "fixtures" / "results"


def _occupied(tmp_path):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder").mkdir()
    return tmp_path / "a-file", tmp_path / "a-folder"


@pytest.mark.parametrize(
    "out, words",
    [
        ("a-folder", ["is a directory", "a-folder/stats.safetensors"]),
        ("a-file/stats.safetensors", ["lies under", "which is a file"]),
        ("a-file/deeper/stats.safetensors", ["lies under", "a-file"]),
    ],
)
def test_profile_out_is_checked_before_the_model_loads(tmp_path, capsys, no_model_load, out, words):
    from lape_harness.cli import main

    _occupied(tmp_path)
    assert main(["profile", "--model", "m", "--corpus", str(tmp_path / "nowhere"), "--out", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err
    for word in ["--out", *words]:
        assert word in err


def test_profile_out_in_an_unwritable_folder(tmp_path, capsys, no_model_load, monkeypatch):
    import os

    from lape_harness.cli import main

    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: os.path.abspath(path) != str(locked))  # root ignores modes
    assert main(["profile", "--model", "m", "--out", str(locked / "new" / "stats.safetensors")]) == 2
    assert "cannot write in" in capsys.readouterr().err
    (tmp_path / "stats.partial").write_text("x")  # the checkpoint folder's place is taken by a file
    assert main(["profile", "--model", "m", "--out", str(tmp_path / "stats.safetensors")]) == 2
    assert "checkpoint folder" in capsys.readouterr().err


def test_sweep_leaderboard_identify_plot_and_bake_outputs_naming_a_file(tmp_path, capsys):
    from lape_harness.cli import main
    from lape_harness.steering.bake import bake_checkpoint
    from lape_harness.studies.sweep import run_sweep

    a_file, _ = _occupied(tmp_path)
    with pytest.raises(InputError, match="--output .*is a file, not a folder"):
        run_sweep("pretrained=x", ["none"], ["t"], a_file)
    with pytest.raises(InputError, match="lies under"):
        run_sweep("pretrained=x", ["none"], ["t"], a_file / "sweep")
    assert main(["leaderboard", str(FIXTURES), "--out", str(a_file)]) == 2
    assert "--out" in capsys.readouterr().err and a_file.read_text() == "x"
    assert main(["plot", "--results", str(FIXTURES), "--out", str(a_file)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    stats = tmp_path / "stats.safetensors"
    planted_stats()[0].save(stats)
    assert main(["identify", str(stats), "--out-dir", str(a_file)]) == 2
    assert "--out-dir" in capsys.readouterr().err
    neurons = tmp_path / "set.safetensors"
    set_with_an_empty_language().save(neurons)
    with pytest.raises(InputError, match="--out .*is a file"):
        bake_checkpoint("no-model", neurons, "-de", a_file)
