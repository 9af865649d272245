"""``steer=auto``: one run, several tasks, each request under its own task's plan."""

from __future__ import annotations

import logging

import pytest
import torch
from builders import AUTO_TASK_PLANS, CONTEXTS, mixed_task_requests, set_with_an_empty_language
from lm_eval.api.instance import Instance

from lape_harness.plugin.hf_steered import HFSteeredLM

torch.set_num_threads(1)  # see test_hooks.py


@pytest.fixture(scope="module")
def auto_lm(tiny_llama, neuron_file):
    return HFSteeredLM(pretrained=str(tiny_llama), device="cpu", dtype="float32", batch_size=4,
                       neurons=str(neuron_file(tiny_llama)), steer="auto")


def fixed_plan_answers(lm, kind, spec):
    lm.set_plan(spec)
    try:
        return getattr(lm, kind)(mixed_task_requests(kind))
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
            got = getattr(auto_lm, kind)(mixed_task_requests(kind))
    finally:
        del auto_lm.steering.use
    # one group per plan, then back to no steering
    assert set(used) == {"+de", "+fr", "-de+fr", "none"} and used[-1] == "none"
    warnings = [record.getMessage() for record in caplog.records]
    assert sum("xnli_ru" in message and "lacks" in message for message in warnings) == 1
    assert sum("my_private_task" in message and "unknown" in message for message in warnings) == 1
    assert auto_lm.steering_signature()["plans_by_task"] == dict(sorted(AUTO_TASK_PLANS.items()))
    requests = mixed_task_requests(kind)
    for spec in set(AUTO_TASK_PLANS.values()):
        want = fixed_plan_answers(auto_lm, kind, spec)
        for request, answer, expected in zip(requests, got, want):
            if AUTO_TASK_PLANS[request.task_name] == spec:
                assert answer == expected, (request.task_name, spec)
    # and the plans really differ on the same text
    by_task = {task: [a for r, a in zip(requests, got) if r.task_name == task] for task in AUTO_TASK_PLANS}
    assert by_task["belebele_deu_Latn"] != by_task["xnli_fr"] != by_task["my_private_task"]


def test_auto_template(auto_lm):
    auto_lm.set_plan("auto:-src=-1.5+3*tgt")
    try:
        requests = [r for r in mixed_task_requests("loglikelihood") if r.task_name in ("lape_forcing_de_to_fr", "xnli_fr")]
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
    lm.generate_until(mixed_task_requests("generate_until"))
    lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (context,), i, (task, i, 1))
                              for i, (task, context) in enumerate(zip(AUTO_TASK_PLANS, CONTEXTS * 2))])
    assert len({plan for plan in AUTO_TASK_PLANS.values()}) > 1 and calls == [()]


def test_auto_steers_a_user_task_by_its_metadata(tiny_llama, neuron_file, tmp_path):
    """A task in the user's own --include_path folder, with a name no pattern knows, declares its
    language in metadata: steer=auto steers it exactly as the explicit plan does, and the
    leaderboard places it."""
    import json

    from builders import choice_task
    from lm_eval import simple_evaluate
    from lm_eval.utils import handle_non_serializable

    from lape_harness.analysis.leaderboard import build_leaderboard
    from lape_harness.analysis.results import classify_task, load_runs
    from lape_harness.task_support.task_languages import TaskLanguages, name_languages

    name = "quiz_of_mine"
    assert name_languages(name) is None
    neurons = neuron_file(tiny_llama)
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


# a language of the task without neurons in the set (issue 14, item 5)
def test_auto_leaves_out_languages_without_neurons(tiny_llama, tmp_path, caplog):
    from lape_harness.plugin.hf_steered import HFSteeredLM
    from lape_harness.task_support.task_languages import TaskLanguages

    path = tmp_path / "set.safetensors"
    set_with_an_empty_language().save(path)
    lm = HFSteeredLM(pretrained=str(tiny_llama), neurons=str(path), steer="auto", device="cpu", dtype="float32")
    lm.task_languages = lambda task: TaskLanguages("forcing", "de", "fr")
    with caplog.at_level("WARNING"):
        assert str(lm.plan_for("forcing_de_to_fr")) == "-de"
    assert "['fr']" in caplog.text and "no neurons" in caplog.text
