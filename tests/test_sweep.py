"""`lape-harness sweep`: one model load, one lm-eval results JSON per plan, resumable."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from builders import PPL_TEXT, random_neuron_set, set_with_an_empty_language, write_plan_file
from references.steering import rolling_loglikelihood_deactivated

from lape_harness.errors import InputError
from lape_harness.neurons import NeuronSet
from lape_harness.studies.sweep import PlanEntry, parse_plan_entry, read_plans_file, run_sweep


def test_sweep_two_plans_resumes_and_matches_a_manual_computation(tiny_llama, ppl_tasks, neuron_file, tmp_path, capsys):
    neurons_path = neuron_file(tiny_llama)
    output = tmp_path / "sweep"
    model_args = f"pretrained={tiny_llama},neurons={neurons_path},dtype=float32"
    log = []
    outcomes = run_sweep(model_args, ["none", "-de"], ["tinyppl_de"], output, include_path=str(ppl_tasks),
                         device="cpu", bootstrap_iters=0, log_samples=True, log=log.append)
    assert [o.skipped for o in outcomes] == [False, False]
    assert sum("model loaded once" in line for line in log) == 1
    results = {}
    for outcome in outcomes:
        data = json.loads(outcome.path.read_text())
        assert data["lape_sweep"]["plan"] == outcome.entry.steer
        assert data["lape_sweep"]["signature"]["plan"] == outcome.entry.steer
        assert f"steer={outcome.entry.steer}" in data["config"]["model_args"]
        assert data["config"]["model"] == "hf-steered"
        assert list(outcome.path.parent.glob("samples_tinyppl_de_*.jsonl"))  # --log-samples kept
        results[outcome.entry.steer] = data["results"]["tinyppl_de"]
    assert results["none"]["word_perplexity,none"] != results["-de"]["word_perplexity,none"]
    # word perplexity = exp(-Σ loglik / Σ words), computed by hand for each plan
    words = sum(len(line.split()) for line in PPL_TEXT["de"])
    for plan in ("none", "-de"):
        loglik = sum(rolling_loglikelihood_deactivated(tiny_llama, line, plan, neurons_path) for line in PPL_TEXT["de"])
        assert results[plan]["word_perplexity,none"] == pytest.approx(math.exp(-loglik / words), rel=1e-4)

    # a re-run skips both plans without loading the model; a third plan runs alone
    log.clear()
    again = run_sweep(model_args, ["none", "-de"], ["tinyppl_de"], output, include_path=str(ppl_tasks),
                      device="cpu", bootstrap_iters=0, log_samples=True, log=log.append)
    assert [o.skipped for o in again] == [True, True]
    assert not any("model loaded" in line for line in log)
    assert sorted(p.name for p in output.iterdir()) == ["steer=-de", "steer=none", "sweep.json"]

    # the command line: comma-separated plans (attached with '=' when the list starts with '-');
    # without --device it loads the model where this machine can (hf alone would ask for cuda)
    from lape_harness.cli import main

    assert main(["sweep", "--model-args", model_args, "--plans=-de,none,de", "--tasks", "tinyppl_de",
                 "--include-path", str(ppl_tasks), "--bootstrap-iters", "0", "--log-samples",
                 "--output", str(output)]) == 0
    assert "(1 run now, 2 finished earlier)" in capsys.readouterr().out


def test_changed_settings_are_refused(tiny_llama, ppl_tasks, neuron_file, tmp_path):
    neurons_path = neuron_file(tiny_llama)
    output = tmp_path / "sweep"
    (output).mkdir()
    (output / "sweep.json").write_text(json.dumps({"model_args": "pretrained=other", "tasks": ["x"]}))
    with pytest.raises(InputError, match="other settings"):
        run_sweep(f"pretrained={tiny_llama},neurons={neurons_path}", ["none"], ["tinyppl_de"], output,
                  include_path=str(ppl_tasks))


def test_plan_entries(tmp_path, neuron_file):
    neurons_path = neuron_file()
    assert parse_plan_entry("-de") == PlanEntry("-de")
    entry = parse_plan_entry(f"-de@{neurons_path}")
    assert entry.neurons == str(neurons_path) and entry.label == f"-de@{neurons_path}"
    assert entry.folder.startswith("steer=-de@lape-top1-")
    assert PlanEntry("+2*de").folder.startswith("steer=+2xde-")
    with pytest.raises(InputError):
        parse_plan_entry("-de@missing.safetensors")
    with pytest.raises(InputError):
        parse_plan_entry("+-")
    plans = tmp_path / "plans.txt"
    plans.write_text("# baseline\nnone\n\n-de  # off\n")
    assert read_plans_file(plans) == ["none", "-de"]
    # a plan listed twice is reported and runs once (issue 14; it used to be an error)
    log = []
    with pytest.raises(InputError, match="no neuron set is given"):
        run_sweep("pretrained=x", ["-de", "-de"], ["t"], tmp_path / "out", log=log.append)
    assert log == ["note: plan '-de' is listed twice; it runs once"]


def test_unknown_task_fails_before_the_model_loads(ppl_task_manager, neuron_file, tmp_path):
    neurons_path = neuron_file()
    with pytest.raises(InputError, match="unknown task.*tinyppl_xx"):
        run_sweep(f"pretrained=/nonexistent/model,neurons={neurons_path}", ["none"], ["tinyppl_xx"], tmp_path / "out",
                  task_manager=ppl_task_manager)


def test_a_plan_with_its_own_neuron_set(tiny_llama, ppl_tasks, ppl_task_manager, neuron_file, tmp_path):
    neurons_path = neuron_file(tiny_llama)
    other = tmp_path / "lape-top3.safetensors"
    random_neuron_set(seed=7).save(other)
    model_args = f"pretrained={tiny_llama},neurons={neurons_path},dtype=float32"
    outcomes = run_sweep(model_args, ["-de", f"-de@{other}", "none"], ["tinyppl_de"], tmp_path / "out",
                         task_manager=ppl_task_manager, device="cpu", bootstrap_iters=0, log=lambda _: None)
    data = [json.loads(o.path.read_text()) for o in outcomes]
    assert [d["lape_sweep"]["neurons"] for d in data] == [str(neurons_path), str(other), str(neurons_path)]
    hashes = [d["lape_sweep"]["signature"]["neurons_sha256"] for d in data]
    assert hashes[0] == NeuronSet.load(neurons_path).content_hash() == hashes[2]
    assert hashes[1] == NeuronSet.load(other).content_hash()
    perplexity = [d["results"]["tinyppl_de"]["word_perplexity,none"] for d in data]
    assert perplexity[0] != perplexity[1]  # other neurons, other numbers
    # switching the neuron set back and forth changes nothing: -de again after the other set
    again = run_sweep(model_args, ["-de"], ["tinyppl_de"], tmp_path / "again", task_manager=ppl_task_manager,
                      device="cpu", bootstrap_iters=0, log=lambda _: None)
    assert json.loads(again[0].path.read_text())["results"]["tinyppl_de"]["word_perplexity,none"] == perplexity[0]


def test_a_passed_model_holding_another_set_is_given_the_model_arguments_set(
        tiny_llama, ppl_tasks, ppl_task_manager, neuron_file, tmp_path):
    """A model reused across sweeps may still hold the set of an earlier sweep's last PLAN@FILE:
    plans without @FILE must use the set of the model arguments, and must not be merged with
    PLAN@FILE plans of that other set."""
    from lape_harness.plugin.hf_steered import HFSteeredLM

    neurons_path = neuron_file(tiny_llama)
    other = tmp_path / "lape-top3.safetensors"
    random_neuron_set(seed=7).save(other)
    lm = HFSteeredLM.create_from_arg_obj({"pretrained": str(tiny_llama), "neurons": str(neurons_path),
                                          "steer": "none", "dtype": "float32"}, {"batch_size": 1, "device": "cpu"})
    lm.set_neurons(str(other))  # what an earlier sweep's last plan -de@other leaves behind
    model_args = f"pretrained={tiny_llama},neurons={neurons_path},dtype=float32"
    outcomes = run_sweep(model_args, ["-de", f"-de@{other}"], ["tinyppl_de"], tmp_path / "out", lm=lm,
                         task_manager=ppl_task_manager, device="cpu", bootstrap_iters=0, log=lambda _: None)
    data = [json.loads(o.path.read_text()) for o in outcomes]
    hashes = [d["lape_sweep"]["signature"]["neurons_sha256"] for d in data]
    assert hashes == [NeuronSet.load(neurons_path).content_hash(), NeuronSet.load(other).content_hash()]


def test_a_language_missing_from_the_neuron_set_fails_before_the_model_loads(neuron_file, tmp_path):
    neurons_path = neuron_file()
    with pytest.raises(InputError, match="not in this neuron set"):
        run_sweep(f"pretrained=/nonexistent/model,neurons={neurons_path}", ["none", "-ko"], ["t"], tmp_path / "out")
    with pytest.raises(InputError, match="no neuron set is given"):
        run_sweep("pretrained=/nonexistent/model", ["-de"], ["t"], tmp_path / "out")


def test_only_rank_zero_touches_the_output_folder(tmp_path, monkeypatch):
    """Under accelerate/torchrun every rank runs the sweep; a non-zero rank must neither delete the
    partial folder rank 0 is writing (it used to clean up 'stale' ones) nor make one of its own."""
    import lm_eval

    from lape_harness.studies import sweep

    output = tmp_path / "out"
    output.mkdir()
    entry = PlanEntry("-en")
    writing = output / f".{entry.folder}.partial-rank0"  # rank 0's folder, being written
    writing.mkdir()
    (writing / "results.json").write_text("{}")
    calls = []
    monkeypatch.setattr(lm_eval, "simple_evaluate", lambda **kwargs: calls.append(kwargs) or None)

    class OtherRank:
        rank = 1

    assert sweep._evaluate_plan(OtherRank(), entry, {"steer": "-en"}, output, None, lambda: None, {"tasks": ["t"]}) is None
    assert len(calls) == 1 and calls[0]["tasks"] == ["t"]  # it still evaluates its share
    assert sorted(path.name for path in output.iterdir()) == [writing.name]
    assert (writing / "results.json").is_file()


# ---------------------------------------------------------------------------------------------
# Bad inputs (issue 14): equivalent plans run once (7), a failed start leaves a usable folder (10),
# directories where files belong (11)


def test_sweep_plans_are_compared_by_meaning(tmp_path):
    from lape_harness.studies.sweep import PlanEntry, parse_plan_entry, unique_plans

    top1, top3 = tmp_path / "lape-top1.safetensors", tmp_path / "lape-top3.safetensors"
    set_with_an_empty_language().save(top1)
    set_with_an_empty_language().save(top3)
    plan_file = write_plan_file(tmp_path, "terms:\n  - {op: add, language: fr}\n  - {op: deactivate, language: de, fill: 0}\n")
    given = ["de", "+de", "-de+fr", "+fr-de=0", plan_file, f"-de+fr@{top1}", f"-de+fr@{top3}", "deu_Latn",
             "none", "-de", f"+de@{tmp_path}/../{tmp_path.name}/lape-top1.safetensors", f"none@{top3}"]
    log = []
    kept = unique_plans([parse_plan_entry(text) for text in given], str(top1), log.append)
    assert [entry.label for entry in kept] == ["de", "-de+fr", f"-de+fr@{top3}", "none", "-de"]
    assert len(log) == 7
    assert "note: plan '+de' is the same plan as 'de' (+de); it runs once" in log
    assert "note: plan '+fr-de=0' is the same plan as '-de+fr' (-de+fr); it runs once" in log
    assert unique_plans([PlanEntry("-de"), PlanEntry("-de")], None, log.append) == [PlanEntry("-de")]


def test_sweep_runs_an_equivalent_plan_once(tiny_llama, ppl_task_manager, neuron_file, tmp_path):
    from lape_harness.studies.sweep import run_sweep

    neurons_path = neuron_file(tiny_llama)
    log = []
    outcomes = run_sweep(f"pretrained={tiny_llama},neurons={neurons_path},dtype=float32", ["de", "+de"],
                         ["tinyppl_de"], tmp_path / "out", task_manager=ppl_task_manager, device="cpu", bootstrap_iters=0,
                         log=log.append)
    assert len(outcomes) == 1 and outcomes[0].entry.steer == "de"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["steer=de", "sweep.json"]
    assert sum("same plan" in line for line in log) == 1


def test_failed_sweep_start_leaves_a_usable_folder(tiny_llama, ppl_task_manager, neuron_file, tmp_path):
    from lape_harness.studies.sweep import MANIFEST, run_sweep

    neurons_path = neuron_file(tiny_llama)
    out = tmp_path / "sweep"
    model_args = f"pretrained={tiny_llama},neurons={neurons_path},dtype=float32"
    options = dict(task_manager=ppl_task_manager, device="cpu", bootstrap_iters=0, log=lambda _: None)
    with pytest.raises(InputError, match="unknown task"):
        run_sweep(model_args, ["none"], ["tinyppl_dee"], out, **options)
    with pytest.raises(OSError):  # a misspelt model: lm-eval's own error, while loading
        run_sweep(f"pretrained={tmp_path / 'no-model'},neurons={neurons_path}", ["none"], ["tinyppl_de"], out, **options)
    assert not (out / MANIFEST).exists()
    outcomes = run_sweep(model_args, ["none"], ["tinyppl_de"], out, **options)
    assert outcomes[0].path.is_file() and json.loads((out / MANIFEST).read_text())["tasks"] == ["tinyppl_de"]
    with pytest.raises(InputError, match="other settings"):  # finished plans are still protected
        run_sweep(model_args, ["none", "-de"], ["tinyppl_fr"], out, **options)


def test_directories_passed_as_plan_files_and_neuron_files_in_a_sweep(tmp_path):
    from lape_harness.corpora import open_corpus
    from lape_harness.studies.sweep import parse_plan_entry, read_plans_file

    (tmp_path / "de.txt").write_text("Hallo.\n", encoding="utf-8")
    with pytest.raises(InputError, match="is a file; pass the folder that holds it"):
        open_corpus(tmp_path / "de.txt", ["de"])

    with pytest.raises(InputError, match="is a directory"):
        parse_plan_entry(f"-de@{tmp_path}")
    with pytest.raises(InputError, match="is a directory"):
        read_plans_file(tmp_path)


def test_a_finished_plan_whose_results_no_longer_read_runs_again(tmp_path):
    from lape_harness.studies.sweep import finished_results

    folder = tmp_path / "steer=-de" / "org__model"
    folder.mkdir(parents=True)
    results = folder / "results_2026-12-05.json"
    results.write_text(json.dumps({"results": {"lape_ppl_de": {"byte_perplexity,none": 3.0}}, "config": {}}))
    assert finished_results(tmp_path / "steer=-de") == results
    results.write_text('{"results": {"lape_ppl_de": {"byte_perpl')  # cut off, e.g. by a full disk
    said = []
    assert finished_results(tmp_path / "steer=-de", said.append) is None
    assert len(said) == 1 and "is not a readable JSON file" in said[0] and "runs again" in said[0]


# ---------------------------------------------------------------------------------------------
# Sharded sweeps (--shard I/N): shares of the plan × task cells for jobs sharing one output folder


def _files(folder):
    """Every file under ``folder``: relative path → (size, mtime in ns)."""
    return {str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in sorted(folder.rglob("*")) if path.is_file()}


def _board(folder):
    """The leaderboard of a folder as plain values, without the results files' paths."""
    import dataclasses

    from lape_harness.analysis.leaderboard import build_leaderboard
    from lape_harness.analysis.results import load_runs

    problems = []
    board = build_leaderboard(load_runs([folder], problems), notes=problems)
    rows = [{k: v for k, v in dataclasses.asdict(row).items() if k != "source"} for row in board.rows]
    averages = [dataclasses.asdict(row) for row in board.averages]
    return rows, averages, board.notes, board.plans


def test_a_sweep_in_two_shards_gives_the_leaderboard_of_one_unsharded_sweep(tiny_llama, neuron_file, tmp_path, capsys):
    from builders import write_perplexity_tasks
    from lm_eval.tasks import TaskManager

    from lape_harness.cli import main

    folder = tmp_path / "tasks"
    folder.mkdir()
    write_perplexity_tasks(folder)
    for code in PPL_TEXT:  # declared languages: the leaderboard places the tasks by them
        with open(folder / f"tinyppl_{code}.yaml", "a", encoding="utf-8") as yaml:
            yaml.write(f"metadata:\n  languages: {code}\n")
    manager = TaskManager(include_path=str(folder), include_defaults=False)
    neurons_path = neuron_file(tiny_llama)
    model_args = f"pretrained={tiny_llama},neurons={neurons_path},dtype=float32"
    plans, tasks = ["none", "-de"], ["tinyppl_de", "tinyppl_fr"]

    def sweep(output, shard=None):
        log = []
        outcomes = run_sweep(model_args, plans, tasks, output, task_manager=manager, device="cpu", bootstrap_iters=0,
                             shard=shard, log=log.append)
        return outcomes, log

    whole, _ = sweep(tmp_path / "whole")
    assert [(o.entry.steer, o.task) for o in whole] == [("none", None), ("-de", None)]

    sharded = tmp_path / "sharded"
    first, log = sweep(sharded, "1/2")
    # cells sorted by (plan folder, task), dealt in turn: steer=-de sorts before steer=none
    assert [(o.entry.steer, o.task, o.skipped) for o in first] == [("none", "tinyppl_de", False), ("-de", "tinyppl_de", False)]
    assert log[0] == "shard 1/2 owns 2 of 4 cell(s) (plan × task): none × tinyppl_de; -de × tinyppl_de"
    written_by_first = _files(sharded)
    assert sorted(written_by_first) == sorted(str(o.path.relative_to(sharded)) for o in first) + ["sweep-shard-1-of-2.json"]
    assert all(o.path.parent.parent.parent.parent == sharded / "cells" for o in first)  # cells/<plan>/task=<t>/<model>/
    second, log = sweep(sharded, "2/2")
    assert [(o.entry.steer, o.task) for o in second] == [("none", "tinyppl_fr"), ("-de", "tinyppl_fr")]
    after = _files(sharded)
    assert {path: after[path] for path in written_by_first} == written_by_first  # shard 2 touched none of shard 1's files
    assert "sweep.json" not in after and "sweep-shard-2-of-2.json" in after
    assert _board(sharded) == _board(tmp_path / "whole")
    board_rows = _board(sharded)[0]
    assert {(row["plan"], row["task"]) for row in board_rows} == {(p, t) for p in plans for t in tasks}
    assert all(row["delta"] is not None for row in board_rows if row["plan"] == "-de")

    # a re-run of a share skips its finished cells without loading the model
    again, log = sweep(sharded, "1/2")
    assert all(o.skipped for o in again) and not any("model loaded" in line for line in log)
    # an interrupted cell runs again alone; an unsharded run finishes it as a cell, not as a plan folder
    lost = first[0].path.parent.parent
    shutil.rmtree(lost)
    finished, log = sweep(sharded)
    assert [(o.entry.steer, o.task, o.skipped) for o in finished] == [
        ("none", "tinyppl_de", False), ("none", "tinyppl_fr", True), ("-de", "tinyppl_de", True), ("-de", "tinyppl_fr", True)]
    assert sorted(p.name for p in sharded.iterdir()) == ["cells", "sweep-shard-1-of-2.json", "sweep-shard-2-of-2.json",
                                                           "sweep.json"]
    assert _board(sharded)[0] == board_rows
    # shares of a folder an unsharded sweep finished: nothing left to run
    for index in (1, 2):
        outcomes, log = sweep(tmp_path / "whole", f"{index}/2")
        assert len(outcomes) == 2 and all(o.skipped for o in outcomes) and not any("model loaded" in line for line in log)
    # a share with other settings is refused by the other shares' settings files
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(sharded / "sweep-shard-1-of-2.json", other)
    with pytest.raises(InputError, match="shard 1/2 of a sweep made with other settings .*limit"):
        run_sweep(model_args, plans, tasks, other, task_manager=manager, shard="2/2", limit=1, log=lambda _: None)

    # the command line prints the share's cells; more shares than cells leave some with nothing to do
    assert main(["sweep", "--model-args", model_args, "--plans", ",".join(plans), "--tasks", ",".join(tasks),
                 "--include-path", str(folder), "--bootstrap-iters", "0", "--output", str(sharded), "--shard", "2/2"]) == 0
    out = capsys.readouterr().out
    assert "shard 2/2 owns 2 of 4 cell(s) (plan × task): none × tinyppl_fr; -de × tinyppl_fr" in out
    assert "shard 2/2 of the sweep: 2 cell(s) (0 run now, 2 finished earlier)" in out
    nothing, log = sweep(sharded, "5/5")
    assert nothing == [] and "owns none of the sweep's 4 cell(s)" in log[0]


@pytest.mark.parametrize(("text", "message"), [
    ("3/2", "shares are numbered 1 to 2"),
    ("0/2", r"shares are numbered 1 to 2 \(I counts from 1, not 0\): --shard 1/2 ... --shard 2/2"),
    ("a/b", "'a/b' is not I/N"),
    ("2", "'2' is not I/N"),
    ("1/0", "N, the number of shares, must be at least 1"),
])
def test_bad_shards_are_refused_with_the_fix(text, message, tmp_path, capsys):
    from lape_harness.cli import main
    from lape_harness.studies.shards import parse_shard

    with pytest.raises(InputError, match=message):
        parse_shard(text)
    with pytest.raises(InputError, match=message):  # before anything else is checked
        run_sweep("pretrained=x", ["none"], ["t"], tmp_path / "out", shard=text)
    with pytest.raises(SystemExit):
        main(["sweep", "--model-args", "pretrained=x", "--plans", "none", "--tasks", "t", "--output",
              str(tmp_path / "out"), "--shard", text])
    assert "argument --shard:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_shares_cover_every_cell_once_whatever_the_plan_order():
    from lape_harness.studies.shards import Shard, task_folder

    cells = [(f"steer={plan}", task) for plan in ("none", "-de", "+fr", "-en") for task in ("a", "b", "c")]
    shares = [Shard(index, 5).owns(cells) for index in range(1, 6)]
    assert sorted(cell for share in shares for cell in share) == sorted(cells)
    assert {len(share) for share in shares} == {2, 3}
    assert Shard(2, 5).owns(list(reversed(cells))) == shares[1]
    assert task_folder("lape_ppl_de") == "task=lape_ppl_de"
    assert task_folder("my tasks/x.yaml").startswith("task=my_tasks_x.yaml-")
