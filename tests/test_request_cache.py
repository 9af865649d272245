"""lm-eval's request cache keyed by plan: the key format (existing cache files keep hitting), the
plan-keyed view with a weightless model, and ``hf-steered`` under a fixed plan and ``steer=auto``."""

from __future__ import annotations

import sys

import pytest
import torch
from builders import AUTO_TASK_PLANS, lm_requests, mixed_task_requests
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM, CachingLM, hash_args

from lape_harness.plugin.hf_steered import HFSteeredLM
from lape_harness.plugin.request_cache import PlanKeyedCache, key_by_plan, plan_namespace
from lape_harness.steering import parse_steer

torch.set_num_threads(1)  # see test_hooks.py


# ---------------------------------------------------------------------------------------------
# Keys and the plan-keyed view (no model)


def test_namespace_and_keys_are_those_of_existing_cache_files():
    # pinned values: a change here orphans every cache written before it
    assert plan_namespace(parse_steer("+fr-de"), "all", "0123abcd") == "6ee20a0a37ec0063"
    assert plan_namespace(parse_steer("none"), "all", None) == "5c6be198b71e9b13"
    store = PlanKeyedCache({})
    store.namespace = "6ee20a0a37ec0063"
    store["abc"] = 1
    assert store.dbdict == {"lape-steer:6ee20a0a37ec0063:abc": 1}
    assert "abc" in store and store["abc"] == 1
    store.namespace = "other"
    assert "abc" not in store
    assert store.keys() == {"lape-steer:6ee20a0a37ec0063:abc": 1}.keys()  # anything else reaches the database


class PlanEcho(LM):
    """A weightless model whose answer names the plan it ran under (one plan per task, as steer=auto)."""

    def __init__(self, plans: dict[str, str]) -> None:
        super().__init__()
        self.plans, self.ran = plans, []

    def group_by_plan(self, requests: list) -> list[tuple[str, list[int]]]:
        groups: dict[str, list[int]] = {}
        for position, request in enumerate(requests):
            groups.setdefault(self.plans[request.task_name], []).append(position)
        return list(groups.items())

    def set_cache_hook(self, cache_hook) -> None:
        key_by_plan(self, cache_hook, sys._getframe(1), self.group_by_plan, lambda plan: f"ns-{plan}")
        super().set_cache_hook(cache_hook)

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        self.ran.extend(request.task_name for request in requests)
        return [(self.plans[request.task_name], False) for request in requests]

    loglikelihood_rolling = generate_until = loglikelihood


def test_identical_requests_of_two_plans_get_their_own_answers(tmp_path):
    model = PlanEcho({"task_de": "+de", "task_fr": "+fr"})
    asked = [Instance("loglikelihood", {}, ("same text", " end"), i, (task, 0, 1))
             for i, task in enumerate(["task_de", "task_fr", "task_de"])]
    first = CachingLM(model, str(tmp_path / "cache.db"))
    assert first.loglikelihood(asked) == [("+de", False), ("+fr", False), ("+de", False)]
    assert sorted(first.dbdict.dbdict.keys()) == [
        f"lape-steer:ns-{plan}:{hash_args('loglikelihood', ('same text', ' end'))}" for plan in ("+de", "+fr")]
    model.ran.clear()
    second = CachingLM(model, str(tmp_path / "cache.db"))
    assert second.loglikelihood(asked) == [("+de", False), ("+fr", False), ("+de", False)]
    assert model.ran == []  # all served from the cache


def test_a_plain_set_cache_hook_call_changes_nothing():
    from lm_eval.api.model import CacheHook

    model = PlanEcho({})
    hook = CacheHook(None)
    model.set_cache_hook(hook)  # not called by a CachingLM constructor
    assert model.cache_hook is hook and hook.dbdict is None


def test_a_cache_that_cannot_be_keyed_by_plan_is_an_error():
    """A cache hook holding a database, set by something other than CachingLM's constructor
    (e.g. an lm-eval refactor): plans would share cached answers, so it fails loudly."""
    from lm_eval.api.model import CacheHook

    from lape_harness.plugin.request_cache import RequestCacheError

    class Wrapper:
        def __init__(self, model, dbdict):
            self.dbdict = dbdict
            hook = CacheHook(None)
            hook.dbdict = dbdict
            model.set_cache_hook(hook)

    with pytest.raises(RequestCacheError, match="--use_cache"):
        Wrapper(PlanEcho({}), {})


# ---------------------------------------------------------------------------------------------
# hf-steered


@pytest.fixture(scope="module")
def steered(tiny_llama, neuron_file):
    return HFSteeredLM(pretrained=str(tiny_llama), device="cpu", dtype="float32", batch_size=3,
                       neurons=str(neuron_file(tiny_llama)), steer="none")


@pytest.fixture(scope="module")
def auto_lm(tiny_llama, neuron_file):
    return HFSteeredLM(pretrained=str(tiny_llama), device="cpu", dtype="float32", batch_size=4,
                       neurons=str(neuron_file(tiny_llama)), steer="auto")


def test_use_cache_keeps_plans_apart(steered, tmp_path):
    lm = steered
    calls = []
    original = lm._model_call
    lm._model_call = lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs)
    try:
        answers = {}
        for spec in ("+3*de", "-fr=-2.5", "+3*de"):
            lm.set_plan(spec)
            calls.clear()
            cached = CachingLM(lm, str(tmp_path / "cache.db"))
            answers.setdefault(spec, []).append(cached.loglikelihood(lm_requests("loglikelihood")))
            answers.setdefault(spec + " calls", []).append(len(calls))
    finally:
        lm._model_call = original
        lm.set_plan("none")
    assert answers["+3*de"][0] != answers["-fr=-2.5"][0]
    assert answers["+3*de"][1] == answers["+3*de"][0]  # served from the cache ...
    assert answers["+3*de calls"] == [answers["+3*de calls"][0], 0]  # ... without running the model
    assert answers["-fr=-2.5 calls"][0] > 0


def test_auto_cache_never_serves_one_tasks_plan_to_another(auto_lm, tmp_path):
    auto_lm.set_plan("auto")
    requests = mixed_task_requests("loglikelihood")
    first = CachingLM(auto_lm, str(tmp_path / "cache.db")).loglikelihood(requests)
    second = CachingLM(auto_lm, str(tmp_path / "cache.db")).loglikelihood(mixed_task_requests("loglikelihood"))
    uncached = auto_lm.loglikelihood(mixed_task_requests("loglikelihood"))
    assert first == uncached and second == uncached
    by_task = {task: [a for r, a in zip(requests, second) if r.task_name == task] for task in AUTO_TASK_PLANS}
    assert by_task["belebele_deu_Latn"] != by_task["xnli_fr"]
