"""``steer=auto``: one run, several tasks, each request under its own task's plan."""

from __future__ import annotations

import logging

import pytest
import torch
from lm_eval.api.instance import Instance
from steering_reference import make_neuron_set
from test_model import CONTEXTS, CONTINUATIONS, GENERATION

from lape_harness.plugin.hf_steered import HFSteeredLM

torch.set_num_threads(1)  # see test_hooks.py

# task name -> the plan auto must pick (the neuron set has de, fr, en, es)
TASKS = {
    "belebele_deu_Latn": "+de",
    "xnli_fr": "+fr",
    "lape_forcing_de_to_fr": "-de+fr",
    "xnli_ru": "none",  # ru has no neurons in this set: warned, unsteered
    "my_private_task": "none",  # language unknown: warned, unsteered
}


def mixed_requests(kind: str) -> list[Instance]:
    """The same texts under every task, interleaved (identical arguments, different plans)."""
    out = []
    for i, (context, continuation) in enumerate(zip(CONTEXTS, CONTINUATIONS)):
        for task in TASKS:
            arguments = (context, continuation) if kind == "loglikelihood" else (context, dict(GENERATION))
            out.append(Instance(kind, {}, arguments, len(out), (task, i, 1)))
    return out


@pytest.fixture(scope="module")
def auto_lm(tiny_llama, tmp_path_factory):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_llama)
    path = tmp_path_factory.mktemp("neurons") / "lape-top1.safetensors"
    make_neuron_set(config.num_hidden_layers, config.intermediate_size).save(path)
    return HFSteeredLM(pretrained=str(tiny_llama), device="cpu", dtype="float32", batch_size=4,
                       neurons=str(path), steer="auto")


def fixed_plan_answers(lm, kind, spec):
    lm.set_plan(spec)
    try:
        return getattr(lm, kind)(mixed_requests(kind))
    finally:
        lm.set_plan("auto")


@pytest.mark.parametrize("kind", ["loglikelihood", "generate_until"])
def test_auto_steers_each_task_with_its_own_plan(auto_lm, kind, caplog):
    auto_lm.set_plan("auto")
    used = []
    original_use = auto_lm.steering.use

    def recording_use(plan):
        used.append(str(plan))
        original_use(plan)

    auto_lm.steering.use = recording_use
    try:
        with caplog.at_level(logging.WARNING, logger="lape_harness.plugin.hf_steered"):
            got = getattr(auto_lm, kind)(mixed_requests(kind))
    finally:
        del auto_lm.steering.use
    # one group per plan, then back to no steering
    assert set(used) == {"+de", "+fr", "-de+fr", "none"} and used[-1] == "none"
    warnings = [record.getMessage() for record in caplog.records]
    assert sum("xnli_ru" in message and "lacks" in message for message in warnings) == 1
    assert sum("my_private_task" in message and "unknown" in message for message in warnings) == 1
    assert auto_lm.steering_signature()["plans_by_task"] == dict(sorted(TASKS.items()))
    requests = mixed_requests(kind)
    for spec in set(TASKS.values()):
        want = fixed_plan_answers(auto_lm, kind, spec)
        for request, answer, expected in zip(requests, got, want):
            if TASKS[request.task_name] == spec:
                assert answer == expected, (request.task_name, spec)
    # and the plans really differ on the same text
    by_task = {task: [a for r, a in zip(requests, got) if r.task_name == task] for task in TASKS}
    assert by_task["belebele_deu_Latn"] != by_task["xnli_fr"] != by_task["my_private_task"]


def test_auto_template(auto_lm):
    auto_lm.set_plan("auto:-src=-1.5+3*tgt")
    try:
        requests = [r for r in mixed_requests("loglikelihood") if r.task_name in ("lape_forcing_de_to_fr", "xnli_fr")]
        got = auto_lm.loglikelihood(requests)
        assert auto_lm.steering_signature()["plans_by_task"] == {
            "lape_forcing_de_to_fr": "-de=-1.5+3*fr", "xnli_fr": "+3*fr"}
        auto_lm.set_plan("-de=-1.5+3*fr")
        forced = auto_lm.loglikelihood(requests)
        auto_lm.set_plan("+3*fr")
        monolingual = auto_lm.loglikelihood(requests)
    finally:
        auto_lm.set_plan("auto")
    for request, answer, a, b in zip(requests, got, forced, monolingual):
        assert answer == (a if request.task_name == "lape_forcing_de_to_fr" else b)


def test_batch_size_auto_is_detected_once_for_every_plan_group(tiny_llama, auto_lm, monkeypatch):
    """steer=auto with batch_size=auto: lm-eval's detection (full-length forward passes, a
    cross-rank all_gather) runs once, not once per plan group."""
    from lm_eval.models.huggingface import HFLM

    calls = []
    detect = HFLM._detect_batch_size
    monkeypatch.setattr(HFLM, "_detect_batch_size", lambda self, *args, **kwargs: calls.append(args) or detect(self, *args, **kwargs))
    lm = HFSteeredLM(pretrained=str(tiny_llama), device="cpu", dtype="float32", batch_size="auto", max_batch_size=4,
                     neurons=auto_lm.neurons_path, steer="auto")
    lm.generate_until(mixed_requests("generate_until"))
    lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (context,), i, (task, i, 1))
                              for i, (task, context) in enumerate(zip(TASKS, CONTEXTS * 2))])
    assert len({plan for plan in TASKS.values()}) > 1 and calls == [()]


def test_auto_steers_a_user_task_by_its_metadata(tiny_llama, tmp_path):
    """A task in the user's own --include_path folder, with a name no pattern knows, declares its
    language in metadata: steer=auto steers it exactly as the explicit plan does, and the
    leaderboard places it."""
    import json

    from lm_eval import simple_evaluate
    from lm_eval.utils import handle_non_serializable
    from local_task import choice_task
    from transformers import AutoConfig

    from lape_harness.analysis.leaderboard import build_leaderboard
    from lape_harness.analysis.results import classify_task, load_runs
    from lape_harness.task_support.task_languages import TaskLanguages, name_languages

    name = "quiz_of_mine"
    assert name_languages(name) is None
    neurons = tmp_path / "lape-top1.safetensors"
    config = AutoConfig.from_pretrained(tiny_llama)
    make_neuron_set(config.num_hidden_layers, config.intermediate_size).save(neurons)
    folder = tmp_path / "my_tasks"
    folder.mkdir()
    manager = choice_task(folder, name, list(CONTEXTS), metadata={"version": 1.0, "languages": {"target": "fra_Latn"}})

    def run(steer):
        return simple_evaluate(model="hf-steered", device="cpu", task_manager=manager, tasks=[name], log_samples=True,
                               model_args=f"pretrained={tiny_llama},dtype=float32,neurons={neurons},steer={steer}")

    def loglikelihoods(results):
        return [[response[0][0] for response in sample["resps"]] for sample in results["samples"][name]]

    auto, explicit, plain = run("auto"), run("+fr"), run("none")
    assert auto["config"]["steering"]["plans_by_task"] == {name: "+fr"}
    assert loglikelihoods(auto) == loglikelihoods(explicit)
    assert loglikelihoods(auto) != loglikelihoods(plain)

    path = tmp_path / "runs" / "results_auto.json"
    path.parent.mkdir()
    auto.pop("samples")
    path.write_text(json.dumps(auto, default=handle_non_serializable))
    [loaded] = load_runs([path])
    assert loaded.declared == {name: TaskLanguages("monolingual", None, "fr")}
    assert classify_task(name, loaded.declared[name]) == (name, "fr")
    rows = [row for row in build_leaderboard([loaded]).rows if row.task == name]
    assert [(row.family, row.language, row.plan) for row in rows] == [(name, "fr", "auto")]
