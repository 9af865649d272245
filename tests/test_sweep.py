"""`lape-harness sweep`: one model load, one lm-eval results JSON per plan, resumable."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lape_harness.errors import InputError
from lape_harness.neurons import LanguageNeurons, NeuronSet
from lape_harness.studies.sweep import PlanEntry, parse_plan_entry, read_plans_file, run_sweep

TEXT = {
    "de": ["Die Katze sitzt auf der warmen Matte.", "Jeder hat das Recht auf Leben und Freiheit."],
    "fr": ["Le chat est assis sur le tapis chaud.", "Tout individu a droit à la vie et à la liberté."],
}


def tiny_neuron_set(layers: int = 2, width: int = 128, seed: int = 0) -> NeuronSet:
    """Two languages with 12 neurons each (4 shared), for the tiny test model."""
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(layers * width, generator=generator)[:20]
    ids = {"de": chosen[:12], "fr": torch.cat([chosen[8:12], chosen[12:20]])}
    neurons = {}
    for code, flat in ids.items():
        flat = flat.sort().values
        n = len(flat)
        neurons[code] = LanguageNeurons(flat // width, flat % width, torch.full((n,), 3.0), torch.zeros(n), torch.full((n,), 0.9))
    return NeuronSet(["de", "fr"], layers, width, neurons, {"model": {"model_id": "tiny"}})


@pytest.fixture(scope="module")
def ppl_tasks(tmp_path_factory):
    """A rolling-log-likelihood task per language over local JSON lines (no network)."""
    folder = tmp_path_factory.mktemp("tasks")
    for code, lines in TEXT.items():
        data = folder / f"{code}.jsonl"
        data.write_text("".join(json.dumps({"text": line}) + "\n" for line in lines), encoding="utf-8")
        (folder / f"tinyppl_{code}.yaml").write_text(
            f"task: tinyppl_{code}\n"
            "dataset_path: json\n"
            f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
            "test_split: test\n"
            "output_type: loglikelihood_rolling\n"
            "doc_to_text: ''\n"
            "doc_to_target: '{{text}}'\n"
            "metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n  - metric: bits_per_byte\n",
            encoding="utf-8",
        )
    return folder


@pytest.fixture(scope="module")
def tasks_only(ppl_tasks):
    """A TaskManager of the test tasks alone (indexing all of lm-eval's takes seconds)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(ppl_tasks), include_defaults=False)


@pytest.fixture(scope="module")
def neurons_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("neurons") / "lape-top1.safetensors"
    tiny_neuron_set().save(path)
    return path


def _rolling_loglikelihood(model_path, text: str, plan: str, neurons_file) -> float:
    """Independent reference: sum of token log-probs with the deactivation done by hand."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    neuron_set = NeuronSet.load(neurons_file)
    handles = []
    if plan != "none":
        entry = neuron_set[plan.lstrip("-")]
        for layer, mlp in enumerate(layer.mlp for layer in model.model.layers):
            index = entry.index[entry.layer == layer]

            def hook(module, inputs, output, index=index):
                output = output.clone()
                output[..., index] = 0.0
                return output

            handles.append(mlp.act_fn.register_forward_hook(hook))
    # lm-eval scores the tokenizer's own encoding (with its BOS) after one BOS prefix token
    ids = [tokenizer.bos_token_id] + tokenizer(text)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double().log_softmax(-1)
    for handle in handles:
        handle.remove()
    return float(sum(logits[i, ids[i + 1]] for i in range(len(ids) - 1)))


def test_sweep_two_plans_resumes_and_matches_a_manual_computation(tiny_llama, ppl_tasks, neurons_file, tmp_path, capsys):
    output = tmp_path / "sweep"
    model_args = f"pretrained={tiny_llama},neurons={neurons_file},dtype=float32"
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
    words = sum(len(line.split()) for line in TEXT["de"])
    for plan in ("none", "-de"):
        loglik = sum(_rolling_loglikelihood(tiny_llama, line, plan, neurons_file) for line in TEXT["de"])
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


def test_changed_settings_are_refused(tiny_llama, ppl_tasks, neurons_file, tmp_path):
    output = tmp_path / "sweep"
    (output).mkdir()
    (output / "sweep.json").write_text(json.dumps({"model_args": "pretrained=other", "tasks": ["x"]}))
    with pytest.raises(InputError, match="other settings"):
        run_sweep(f"pretrained={tiny_llama},neurons={neurons_file}", ["none"], ["tinyppl_de"], output,
                  include_path=str(ppl_tasks))


def test_plan_entries(tmp_path, neurons_file):
    assert parse_plan_entry("-de") == PlanEntry("-de")
    entry = parse_plan_entry(f"-de@{neurons_file}")
    assert entry.neurons == str(neurons_file) and entry.label == f"-de@{neurons_file}"
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


def test_unknown_task_fails_before_the_model_loads(tasks_only, neurons_file, tmp_path):
    with pytest.raises(InputError, match="unknown task.*tinyppl_xx"):
        run_sweep(f"pretrained=/nonexistent/model,neurons={neurons_file}", ["none"], ["tinyppl_xx"], tmp_path / "out",
                  task_manager=tasks_only)


def test_a_plan_with_its_own_neuron_set(tiny_llama, ppl_tasks, tasks_only, neurons_file, tmp_path):
    other = tmp_path / "lape-top3.safetensors"
    tiny_neuron_set(seed=7).save(other)
    model_args = f"pretrained={tiny_llama},neurons={neurons_file},dtype=float32"
    outcomes = run_sweep(model_args, ["-de", f"-de@{other}", "none"], ["tinyppl_de"], tmp_path / "out",
                         task_manager=tasks_only, device="cpu", bootstrap_iters=0, log=lambda _: None)
    data = [json.loads(o.path.read_text()) for o in outcomes]
    assert [d["lape_sweep"]["neurons"] for d in data] == [str(neurons_file), str(other), str(neurons_file)]
    hashes = [d["lape_sweep"]["signature"]["neurons_sha256"] for d in data]
    assert hashes[0] == NeuronSet.load(neurons_file).content_hash() == hashes[2]
    assert hashes[1] == NeuronSet.load(other).content_hash()
    perplexity = [d["results"]["tinyppl_de"]["word_perplexity,none"] for d in data]
    assert perplexity[0] != perplexity[1]  # other neurons, other numbers
    # switching the neuron set back and forth changes nothing: -de again after the other set
    again = run_sweep(model_args, ["-de"], ["tinyppl_de"], tmp_path / "again", task_manager=tasks_only,
                      device="cpu", bootstrap_iters=0, log=lambda _: None)
    assert json.loads(again[0].path.read_text())["results"]["tinyppl_de"]["word_perplexity,none"] == perplexity[0]


def test_a_passed_model_holding_another_set_is_given_the_model_arguments_set(
        tiny_llama, ppl_tasks, tasks_only, neurons_file, tmp_path):
    """A model reused across sweeps may still hold the set of an earlier sweep's last PLAN@FILE:
    plans without @FILE must use the set of the model arguments, and must not be merged with
    PLAN@FILE plans of that other set."""
    from lape_harness.plugin.hf_steered import HFSteeredLM

    other = tmp_path / "lape-top3.safetensors"
    tiny_neuron_set(seed=7).save(other)
    lm = HFSteeredLM.create_from_arg_obj({"pretrained": str(tiny_llama), "neurons": str(neurons_file),
                                          "steer": "none", "dtype": "float32"}, {"batch_size": 1, "device": "cpu"})
    lm.set_neurons(str(other))  # what an earlier sweep's last plan -de@other leaves behind
    model_args = f"pretrained={tiny_llama},neurons={neurons_file},dtype=float32"
    outcomes = run_sweep(model_args, ["-de", f"-de@{other}"], ["tinyppl_de"], tmp_path / "out", lm=lm,
                         task_manager=tasks_only, device="cpu", bootstrap_iters=0, log=lambda _: None)
    data = [json.loads(o.path.read_text()) for o in outcomes]
    hashes = [d["lape_sweep"]["signature"]["neurons_sha256"] for d in data]
    assert hashes == [NeuronSet.load(neurons_file).content_hash(), NeuronSet.load(other).content_hash()]


def test_a_language_missing_from_the_neuron_set_fails_before_the_model_loads(neurons_file, tmp_path):
    with pytest.raises(InputError, match="not in this neuron set"):
        run_sweep(f"pretrained=/nonexistent/model,neurons={neurons_file}", ["none", "-ko"], ["t"], tmp_path / "out")
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
