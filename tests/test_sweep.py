"""`lape-harness sweep`: one model load, one lm-eval results JSON per plan, resumable."""

from __future__ import annotations

import json
import math

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
