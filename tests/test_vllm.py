"""``vllm-steered`` against ``hf-steered`` (the reference) and plain ``vllm`` on one tiny Llama.

One steered engine and one plain engine are shared by the module (each start costs about a
minute on CPU). Both engines and the HF reference run in float32, so they agree to float32
rounding: log-likelihoods within 1e-3 nats over a continuation (on Gemma-3-270m at most 3.3e-5,
BENCHMARKS.md) and the same greedy text. vLLM's prefix caching is on (block size 32, prompts longer than a block), so
a plan switch that served KV computed under the previous plan would break the parity.

The worker-side pieces (the two wrappers, shard slicing) are also tested without an engine.
"""

from __future__ import annotations

import json
import math
import os
from importlib.util import find_spec

import pytest
import torch
from builders import build_tiny_model, choice_task, random_neuron_set, require_vllm
from lm_eval.api.instance import Instance

from lape_harness.errors import HookNeverFiredError, InputError

require_vllm()

LANGUAGES = ["de", "fr", "en"]  # of the neuron sets
PLANS = ["none", "-de", "+2*de", "*0.5*de", "=de", "+de.diff", "-de=-1.5", "-de+fr"]
PREFIX = "Everyone has the right to life, liberty and security of person. " * 3  # longer than a cache block
CONTEXTS = [PREFIX + "The cat sits on the", PREFIX + "Die Katze sitzt auf der", PREFIX + "Le chat"]
CONTINUATIONS = [" warm mat.", " warmen Matte.", " est assis sur le tapis."]
GENERATION = {"until": ["\n\n"], "max_gen_toks": 8, "do_sample": False}
ENGINE = dict(dtype="float32", max_model_len=512, block_size=32, gpu_memory_utilization=0.3)


def requests(kind: str, task: str = "task_a") -> list[Instance]:
    if kind == "loglikelihood":
        arguments = list(zip(CONTEXTS, CONTINUATIONS))
    else:
        arguments = [(context, dict(GENERATION)) for context in CONTEXTS]
    return [Instance(kind, {}, args, i, (task, i, 1)) for i, args in enumerate(arguments)]


def scores(lm, kind: str, task: str = "task_a") -> list:
    return getattr(lm, kind)(requests(kind, task))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    # vLLM's CPU attention needs a head size of 32 or more
    return build_tiny_model(tmp_path_factory.mktemp("vllm") / "llama", arch="llama", hidden=128, heads=2)


@pytest.fixture(scope="module")
def engine(model_dir, neuron_file):
    from lape_harness.plugin.vllm_steered import VLLMSteeredLM

    neurons = neuron_file(model_dir, languages=LANGUAGES)
    return VLLMSteeredLM(pretrained=str(model_dir), neurons=str(neurons), steer="none", **ENGINE)


@pytest.fixture(scope="module")
def reference(model_dir, neuron_file):
    from lape_harness.plugin.hf_steered import HFSteeredLM

    neurons = neuron_file(model_dir, languages=LANGUAGES)
    return HFSteeredLM(pretrained=str(model_dir), neurons=str(neurons), steer="none", device="cpu",
                       dtype="float32", batch_size=4)


@pytest.fixture(scope="module")
def hf_results(reference):
    """Every plan's reference scores, computed once."""
    results = {}
    for plan in PLANS:
        reference.set_plan(plan)
        results[plan] = {kind: scores(reference, kind) for kind in ("loglikelihood", "generate_until")}
    reference.set_plan("none")
    return results


@pytest.mark.parametrize("plan", PLANS)
def test_parity_with_hf_steered(engine, hf_results, plan):
    engine.set_plan(plan)
    try:
        loglikelihoods = scores(engine, "loglikelihood")
        generations = scores(engine, "generate_until")
    finally:
        engine.set_plan("none")
    expected = hf_results[plan]
    for (value, greedy), (ref_value, ref_greedy) in zip(loglikelihoods, expected["loglikelihood"], strict=True):
        assert math.isclose(value, ref_value, abs_tol=1e-3), (plan, value, ref_value)
        assert greedy == ref_greedy
    assert _text(generations) == _text(expected["generate_until"]), plan


def _text(generations: list[str]) -> list[str]:
    """Generated text without U+FFFD: the random model emits lone bytes of multi-byte characters,
    which HF decodes as U+FFFD while vLLM's incremental detokenizer holds them back."""
    return [text.replace("\ufffd", "") for text in generations]


def test_plans_change_the_output(hf_results):
    """The parity above is not vacuous: every steered plan scores differently from none."""
    for plan in PLANS[1:]:
        assert hf_results[plan]["loglikelihood"] != hf_results["none"]["loglikelihood"], plan


@pytest.fixture(scope="module")
def plain(model_dir, engine):
    from lape_harness.plugin.vllm_setup import lm_eval_vllm_class

    return lm_eval_vllm_class()(pretrained=str(model_dir), **ENGINE)


def test_none_is_plain_vllm_and_survives_a_plan_switch(engine, plain):
    expected = {kind: scores(plain, kind) for kind in ("loglikelihood", "generate_until")}
    assert {kind: scores(engine, kind) for kind in expected} == expected
    engine.set_plan("-de+fr")
    steered = scores(engine, "loglikelihood")
    engine.set_plan("none")
    assert steered != expected["loglikelihood"]
    assert {kind: scores(engine, kind) for kind in expected} == expected  # bit for bit, cache reset


TASK_CODES = {"task_de": "de", "task_fr": "fr", "task_en": "en"}
KINDS = ("loglikelihood", "generate_until")


def mixed_requests(kind: str) -> list[Instance]:
    """Every context under every task, tasks interleaved: the same prompt under three plans."""
    return [request for i in range(len(CONTEXTS)) for task in TASK_CODES for request in requests(kind, task)[i:i + 1]]


@pytest.fixture
def auto_engine(engine, monkeypatch):
    """The shared engine with a language per task, counting its calls of vLLM's ``generate``."""
    engine.task_languages = lambda task: _languages(TASK_CODES[task]) if task in TASK_CODES else None
    llm = engine.model.llm
    calls = []
    real = llm.generate
    monkeypatch.setattr(llm, "generate", lambda *args, **kwargs: calls.append(len(args[0])) or real(*args, **kwargs))
    engine.generate_calls = calls
    try:
        yield engine
    finally:
        del engine.task_languages, engine.generate_calls
        engine.set_plan("none")


def each_plan_alone(engine, template: str) -> dict:
    """What ``mixed_requests`` must give: each task's plan set alone (slot 0), request by request."""
    alone = {}
    for task, code in TASK_CODES.items():
        engine.set_plan(template.removeprefix("auto:").replace("tgt", code))
        alone[task] = {kind: scores(engine, kind, task) for kind in KINDS}
    return {kind: [alone[task][kind][i] for i in range(len(CONTEXTS)) for task in TASK_CODES] for kind in KINDS}


def test_auto_runs_every_task_plan_in_one_engine_call(auto_engine, hf_results):
    """Three tasks, three plans, one vLLM call per lm-eval method, each request under its own
    plan: the same scores and text as each plan alone. The second template rewrites the slots
    while the prefix cache still holds the first's prompts (block 32, the prompts share a
    prefix longer than a block, and identical prompts under different plans sit in one batch):
    each plan's cache salt keeps the KV apart."""
    engine = auto_engine
    mixed = {}
    for template in ("auto:-tgt", "auto:+2*tgt"):
        engine.set_plan(template)
        engine.generate_calls.clear()
        mixed[template] = {kind: getattr(engine, kind)(mixed_requests(kind)) for kind in KINDS}
        assert engine.generate_calls == [3 * len(CONTEXTS)] * 2  # one call per method, all nine requests
        assert engine.plans_by_task == {task: template.removeprefix("auto:").replace("tgt", code)
                                        for task, code in TASK_CODES.items()}
    for template, results in mixed.items():
        expected = each_plan_alone(engine, template)
        assert _text(results["generate_until"]) == _text(expected["generate_until"]), template
        for (value, greedy), (alone, alone_greedy) in zip(results["loglikelihood"], expected["loglikelihood"],
                                                          strict=True):
            assert math.isclose(value, alone, abs_tol=1e-4) and greedy == alone_greedy, (template, value, alone)
    minus_de = [value for value, _ in mixed["auto:-tgt"]["loglikelihood"][0::3]]
    assert minus_de == pytest.approx([value for value, _ in hf_results["-de"]["loglikelihood"]], abs=1e-3)


def test_more_plans_than_slots_run_in_chunks(auto_engine):
    """Two free slots, three plans: two engine calls (two plans, then one), same results."""
    engine = auto_engine
    engine.set_plan("auto:-tgt")
    together = engine.loglikelihood(mixed_requests("loglikelihood"))
    slots = engine.plan_slots
    engine.plan_slots = 3
    try:
        engine.generate_calls.clear()
        chunked = engine.loglikelihood(mixed_requests("loglikelihood"))
    finally:
        engine.plan_slots = slots
    assert engine.generate_calls == [2 * len(CONTEXTS), len(CONTEXTS)]
    assert [value for value, _ in chunked] == pytest.approx([value for value, _ in together], abs=1e-4)
    assert [greedy for _, greedy in chunked] == [greedy for _, greedy in together]


def test_groups_with_different_numbers_of_engine_calls_keep_their_plans(auto_engine):
    """batch_size=1: lm-eval makes one engine call per request, so groups of 3, 1 and 2 requests
    leave the merged rounds at different times; every request still runs under its own plan."""
    engine = auto_engine
    keep = {"task_de": (0, 1, 2), "task_fr": (0,), "task_en": (1, 2)}
    positions = [i * 3 + t for i in range(len(CONTEXTS)) for t, task in enumerate(TASK_CODES) if i in keep[task]]
    engine.set_plan("auto:-tgt")
    batch_size = engine.batch_size
    engine.batch_size = 1
    try:
        engine.generate_calls.clear()
        results = engine.loglikelihood([mixed_requests("loglikelihood")[i] for i in positions])
    finally:
        engine.batch_size = batch_size
    assert engine.generate_calls == [3, 2, 1]  # rounds: every group, then de and en, then de
    expected = each_plan_alone(engine, "auto:-tgt")["loglikelihood"]
    assert [value for value, _ in results] == pytest.approx([expected[i][0] for i in positions], abs=1e-4)


def test_the_cache_salt_is_what_keeps_plans_apart(auto_engine, monkeypatch):
    """The isolation above is not vacuous: a request on slot 0 that shares a salt with a request
    run before under a strong plan reads that plan's prompt KV (its next-token log-probabilities
    move); under its own salt it does not. vllm-steered salts each plan with its cache namespace."""
    from vllm import SamplingParams, TokensPrompt

    engine = auto_engine
    llm = engine.model.llm
    tokens = engine.tok_encode(CONTEXTS[0])
    engine._write_slot(_plan("-de=-1.5"), 1)

    def next_token(slot: int, salt: str) -> dict:
        params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=5, extra_args={"lape_plan_slot": slot})
        output = llm.generate([TokensPrompt(prompt_token_ids=tokens, cache_salt=salt)], params, use_tqdm=False)[0]
        return {token: entry.logprob for token, entry in output.outputs[0].logprobs[0].items()}

    engine.model.reset_prefix_cache()
    fresh = next_token(0, "plain")
    next_token(1, "shared")          # caches the prompt's full blocks computed under -de=-1.5
    assert next_token(0, "shared") != fresh
    assert next_token(0, "plain") == fresh
    engine.model.reset_prefix_cache()
    engine.set_plan("auto:-tgt")
    salts = []
    counted = llm.generate
    monkeypatch.setattr(llm, "generate", lambda prompts, *args, **kwargs:
                        salts.extend(prompt["cache_salt"] for prompt in prompts) or counted(prompts, *args, **kwargs))
    engine.generate_until(mixed_requests("generate_until"))
    expected = {f"lape-steer:{engine.cache_namespace(_plan('-' + code))}" for code in TASK_CODES.values()}
    assert set(salts) == expected and all(salts.count(salt) == len(CONTEXTS) for salt in expected)


def _languages(code: str):
    from lape_harness.task_support.task_languages import TaskLanguages

    return TaskLanguages(kind="monolingual", source=None, target=code)


def test_results_record_signature_and_cache_per_plan(engine, tmp_path):
    """The real evaluator path: a local multiple-choice task, --use_cache, two plans."""
    from lm_eval import simple_evaluate

    manager = choice_task(tmp_path, "lape_steer_probe", CONTEXTS)
    outputs = {}
    try:
        for spec in ("+3*de", "-de=-2.5", "+3*de"):
            engine.set_plan(spec)
            results = simple_evaluate(model=engine, tasks=["lape_steer_probe"], task_manager=manager,
                                      use_cache=str(tmp_path / "cache"), log_samples=True)
            steering = results["config"]["steering"]
            assert steering["plan"] == spec and steering["plans_by_task"] == {"lape_steer_probe": spec}
            assert steering["signature"].startswith(f"lape-steer|plan:{spec}|")
            outputs.setdefault(spec, []).append([sample["resps"] for sample in results["samples"]["lape_steer_probe"]])
    finally:
        engine.set_plan("none")
    assert outputs["+3*de"][0] != outputs["-de=-2.5"][0]
    assert outputs["+3*de"][0] == outputs["+3*de"][1]  # the second run is served from its own plan's cache


@pytest.fixture
def faulty(engine, monkeypatch):
    """``faulty(method=change, ...)``: the engine's ``collective_rpc`` with ``change(real, args)``
    answering each named method; the engine is restored to ``none`` afterwards."""
    llm = engine.model
    real = llm.collective_rpc

    def install(**changes):
        def rpc(name, *args, **kwargs):
            return changes[name](real, kwargs.get("args", ())) if name in changes else real(name, *args, **kwargs)

        monkeypatch.setattr(llm, "collective_rpc", rpc)

    yield install
    monkeypatch.setattr(llm, "collective_rpc", real)
    for slot in range(engine.plan_slots):
        engine.clear_slot(slot)
    engine.set_plan("none")


def test_the_startup_check_passes_and_reports_its_cost(engine):
    report = engine.startup_check
    assert (report["layers"], report["ranks"], report["probes"]) == (2, 1, 4)
    assert 0 < report["seconds"] and report["engine_start_seconds"] > 0
    assert engine.get_model_info()["startup_check"] == report


def test_a_rank_whose_table_is_never_written_is_caught(engine, faulty):
    faulty(lape_write_plan=lambda real, args: [sum(len(edit[0]) for edit in args[0].values())])  # says it wrote
    with pytest.raises(HookNeverFiredError, match=r"layer 0 on rank 0: plan slot \d+ holds other values than written"):
        engine._check_steering_takes_effect()


def test_a_wrong_shard_offset_is_caught(engine, faulty):
    def shifted(real, args):  # every neuron index off by one, as a wrong offset would place them
        edits, slot = args
        moved = {layer: ([(i + 1) % engine.width for i in index], scale, shift) for layer, (index, scale, shift) in edits.items()}
        return real("lape_write_plan", args=(moved, slot))

    faulty(lape_write_plan=shifted)
    with pytest.raises(HookNeverFiredError, match="layer 0 on rank 0: plan slot .* at the wrong neurons of its shard"):
        engine._check_steering_takes_effect()


def test_a_layer_the_compiled_engine_ignores_is_caught(engine, faulty):
    """Layer 1's table reported right (its digest) but never read by the engine: the probes see it."""
    from lape_harness.plugin.vllm_startup_check import expected_digests

    written = {}

    def without_layer_one(real, args):
        edits, slot = args
        written[slot] = edits
        real("lape_write_plan", args=({layer: edit for layer, edit in edits.items() if layer != 1}, slot))
        return [sum(len(edit[0]) for edit in edits.values())]

    def digest_as_written(real, args):
        (slot,) = args
        return [{"rank": 0, "digests": expected_digests(written.get(slot, {}), engine.num_layers, 0, engine.width)}]

    faulty(lape_write_plan=without_layer_one, lape_table_digest=digest_as_written)
    with pytest.raises(HookNeverFiredError, match=r"layer 1 on rank 0: its (scale|shift) .* moved the output by 0 nats"):
        engine._check_steering_takes_effect()


def test_a_plan_that_reaches_other_requests_of_its_batch_is_an_error(engine, faulty):
    """What a model runner that ordered tokens differently would look like: a plan written to
    one slot also steers requests on slot 0. The start-up check refuses it."""
    def leaking(real, args):
        edits, slot = args
        real("lape_write_plan", args=(edits, 0))
        return real("lape_write_plan", args=(edits, slot))

    faulty(lape_write_plan=leaking)
    with pytest.raises(HookNeverFiredError, match="leak between requests"):
        engine._check_steering_takes_effect()


def test_a_plan_write_that_misses_neurons_is_an_error(engine, faulty):
    faulty(lape_write_plan=lambda real, args: [0])
    with pytest.raises(HookNeverFiredError, match="edit 0 neurons"):
        engine._install_plan(_plan("-de"))


def _plan(spec: str):
    from lape_harness.steering import parse_steer

    return parse_steer(spec)


def test_registered_and_bad_arguments_fail_before_loading(model_dir, neuron_file):
    from lm_eval.api.registry import get_model

    from lape_harness.plugin.vllm_steered import VLLMSteeredLM

    assert get_model("vllm-steered") is VLLMSteeredLM
    neurons = neuron_file(model_dir, languages=LANGUAGES)
    for arguments, match in [
        ({"steer_scope": "generated"}, "not supported by this engine"),
        ({"data_parallel_size": "two"}, "data_parallel_size='two' is not a whole number"),
        ({"worker_extension_cls": "my.Extension"}, "worker_extension_cls"),
        ({"steer": "-xx"}, "xx"),
        ({"plan_slots": 0}, "plan_slots"),
        ({"additional_config": "[1]"}, "additional_config"),
    ]:
        with pytest.raises(InputError, match=match):
            VLLMSteeredLM(pretrained=str(model_dir), neurons=str(neurons), **{"steer": "-de", **arguments})


# ------------------------------------------------------------------- the worker side, without an engine


def test_wrappers_compute_the_edited_activation():
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.model_executor.layers.activation import GeluAndMul, MulAndSilu, SiluAndMul

    from lape_harness.plugin.vllm_worker import SteeredActAndMul, SteeredActivation

    torch.manual_seed(0)
    width = 6
    x = torch.randn(3, 2 * width)
    scale, shift = torch.randn(3, width), torch.randn(3, width)  # plan slots 0, 1, 2
    slot_index = torch.tensor([2, 0, 1, 0])  # token t runs on slot slot_index[t]; longer than the batch
    rows = slot_index[:3]
    with set_current_vllm_config(VllmConfig()):  # vLLM's ops read it when built
        ops = (SiluAndMul(), GeluAndMul(), MulAndSilu())
    for op, act, up_first in ((ops[0], torch.nn.functional.silu, False),
                              (ops[1], torch.nn.functional.gelu, False),
                              (ops[2], torch.nn.functional.silu, True)):
        gate, up = (x[:, width:], x[:, :width]) if up_first else (x[:, :width], x[:, width:])
        wrapper = SteeredActAndMul(op, width, up_first, torch.float32, "cpu", slot_index.clone(), slots=3)
        assert torch.allclose(wrapper(x), act(gate) * up, atol=1e-6)  # identity until a plan is written
        wrapper.lape_scale.copy_(scale)
        wrapper.lape_shift.copy_(shift)
        expected = torch.stack([(scale[s] * act(gate[t]) + shift[s]) * up[t] for t, s in enumerate(rows.tolist())])
        assert torch.allclose(wrapper(x), expected, atol=1e-5)
    plain = SteeredActivation(torch.nn.GELU(), width, torch.float32, "cpu", slot_index.clone(), slots=3)
    plain.lape_scale.copy_(scale)
    plain.lape_shift.copy_(shift)
    h = x[:, :width]
    expected = torch.stack([scale[s] * torch.nn.functional.gelu(h[t]) + shift[s] for t, s in enumerate(rows.tolist())])
    assert torch.allclose(plain(h), expected, atol=1e-6)


def test_the_self_test_names_an_unwrapped_layer_and_swapped_halves():
    """Part 1 of the start-up check on a stand-in model (no engine): every layer's wrapper is found,
    and the half its shift multiplies is the half the op itself is linear in."""
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.model_executor.layers.activation import SiluAndMul

    from lape_harness.plugin.vllm_worker import SteeredActAndMul, wrapper_self_test

    width = 8
    with set_current_vllm_config(VllmConfig()):
        ops = [SiluAndMul() for _ in range(3)]
    layers = torch.nn.ModuleList()
    for op in ops:
        mlp = torch.nn.Module()
        mlp.gate_up_proj, mlp.act_fn = torch.nn.Identity(), op
        layers.append(torch.nn.Module())
        layers[-1].mlp = mlp
    model = torch.nn.Module()
    model.layers = layers
    slot_index = torch.zeros(16, dtype=torch.long)
    for layer in layers:
        layer.mlp.act_fn = SteeredActAndMul(layer.mlp.act_fn, width, False, torch.float32, "cpu", slot_index, slots=2)
    assert wrapper_self_test(model, rank=0) == {"rank": 0, "layers": 3, "failures": []}
    layers[1].mlp.act_fn = layers[1].mlp.act_fn.act_and_mul  # left unwrapped
    layers[2].mlp.act_fn.up_first = True  # shift multiplied by the gate half
    failures = wrapper_self_test(model, rank=3)["failures"]
    assert failures[0] == "layer 1 on rank 3: it has no steering wrapper"
    assert failures[1].startswith("layer 2 on rank 3: it multiplies the shift by the first half of the op's input, "
                                  "but the op's up projection is the second half")
    assert slot_index.eq(0).all()  # the scratch slot and the slot index are left as they were


def test_the_router_lays_slots_out_in_batch_order():
    """Requests learnt from the scheduler's output; tokens in the runner's order; finished requests forgotten."""
    from types import SimpleNamespace

    from lape_harness.plugin.vllm_slots import SLOT_KEY, SlotRouter

    def new(req_id, extra):
        return SimpleNamespace(req_id=req_id, sampling_params=SimpleNamespace(extra_args=extra))

    router = SlotRouter(torch.full((8,), 7), slots=4)
    router.learn(SimpleNamespace(scheduled_new_reqs=[new("a", {SLOT_KEY: 3}), new("b", None), new("c", {SLOT_KEY: 1})],
                                 finished_req_ids=set()))
    router.fill(["c", "a", "b"], [1, 3, 2])  # e.g. a decode first, then two prefills
    assert router.slot_index.tolist() == [1, 3, 3, 3, 0, 0, 7, 7]
    router.learn(SimpleNamespace(scheduled_new_reqs=[], finished_req_ids={"a"}))
    router.fill(["c", "a"], [1, 1])  # a finished: its slot is forgotten; stale tokens reset to slot 0
    assert router.slot_index.tolist() == [1, 0, 0, 0, 0, 0, 7, 7]
    router.learn(SimpleNamespace(scheduled_new_reqs=[], finished_req_ids={"c"}))
    router.fill(["b"], [2])
    assert router.slot_index.tolist() == [0, 0, 0, 0, 0, 0, 7, 7]
    with pytest.raises(ValueError, match="4 plan slots"):
        router.learn(SimpleNamespace(scheduled_new_reqs=[new("d", {SLOT_KEY: 4})], finished_req_ids=set()))


def test_both_model_runners_fill_the_slot_index_before_preparing_inputs():
    """route_slots hooks model runner V1's ``_prepare_inputs(scheduler_output, num_scheduled_tokens)``
    (tokens in ``input_batch.req_ids`` order) and V2's ``prepare_inputs(scheduler_output,
    batch_req_state, ...)`` (``batch_req_state.req_ids`` order), the signatures of vLLM 0.32's
    ``gpu_model_runner.py`` and ``gpu/model_runner.py``; V2 runs on GPUs only, so here it is a stand-in."""
    from types import SimpleNamespace

    import numpy as np

    from lape_harness.plugin.vllm_slots import SLOT_KEY, route_slots
    from lape_harness.plugin.vllm_worker import SteeredActAndMul, steered_modules

    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList([torch.nn.Module()])
    model.layers[0].mlp = torch.nn.Module()
    model.layers[0].mlp.act_fn = SteeredActAndMul(torch.nn.Identity(), 4, False, torch.float32, "cpu", slots=3)
    slot_index = model.layers[0].mlp.act_fn.lape_slot
    output = SimpleNamespace(finished_req_ids=set(), scheduled_new_reqs=[
        SimpleNamespace(req_id=name, sampling_params=SimpleNamespace(extra_args={SLOT_KEY: slot}))
        for name, slot in (("a", 1), ("b", 2))])
    seen = []

    class V1:
        input_batch = SimpleNamespace(req_ids=["b", "a"])

        def _prepare_inputs(self, scheduler_output, num_scheduled_tokens):
            seen.append(slot_index[:4].tolist())

    class V2:
        def gather_batch_req_state(self, scheduler_output, dummy_run):
            raise AssertionError("not called here")

        def prepare_inputs(self, scheduler_output, batch_req_state, batch_desc, num_active_loras):
            seen.append(slot_index[:4].tolist())

    runner = V1()
    modules = steered_modules(model)
    assert route_slots(runner, modules) == 3 and route_slots(runner, modules) == 3  # hooked once
    runner._prepare_inputs(output, np.array([1, 3]))
    runner = V2()
    route_slots(runner, modules)
    runner.prepare_inputs(output, SimpleNamespace(req_ids=["a", "b"], num_scheduled_tokens=np.array([2, 2])), None, 0)
    assert seen == [[2, 1, 1, 1], [1, 1, 2, 2]]
    with pytest.raises(RuntimeError, match="neither _prepare_inputs"):
        route_slots(SimpleNamespace(), modules)


def test_each_tensor_parallel_rank_writes_its_shard(monkeypatch):
    """A layer of 8 neurons over 2 ranks: rank r holds neurons 4r..4r+3 at local positions 0..3,
    written into the plan slot asked for."""
    from lape_harness.plugin import vllm_worker
    from lape_harness.plugin.vllm_worker import SteeredActAndMul, write_plan

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([torch.nn.Module() for _ in range(2)])
            for layer in self.layers:
                layer.mlp = torch.nn.Module()
                layer.mlp.act_fn = SteeredActAndMul(torch.nn.Identity(), 4, False, torch.float32, "cpu", slots=2)

    edits = {1: ([1, 5, 6], [0.0, 2.0, 1.0], [3.0, 4.0, 5.0])}
    for rank, (scale, shift, written) in enumerate([([1, 0, 1, 1], [0, 3, 0, 0], 1),
                                                    ([1, 2, 1, 1], [0, 4, 5, 0], 2)]):
        monkeypatch.setattr(vllm_worker, "_rank", lambda rank=rank: rank)
        model = Model()
        assert write_plan(model, edits, slot=1) == written
        assert model.layers[1].mlp.act_fn.lape_scale[1].tolist() == scale
        assert model.layers[1].mlp.act_fn.lape_shift[1].tolist() == shift
        assert model.layers[1].mlp.act_fn.lape_scale[0].tolist() == [1, 1, 1, 1]  # other slot: identity
        assert model.layers[0].mlp.act_fn.lape_scale[1].tolist() == [1, 1, 1, 1]  # untouched layer: identity


def test_sweep_runs_every_plan_on_one_engine(engine, model_dir, tmp_path):
    """`lape-harness sweep --engine vllm` reuses one engine; PLAN@FILE switches neuron sets on it."""
    from lape_harness.analysis.results import load_runs
    from lape_harness.studies.sweep import run_sweep

    other = tmp_path / "lape-top2.safetensors"
    random_neuron_set(num_layers=2, width=128, languages=LANGUAGES, seed=1).save(other)
    manager = choice_task(tmp_path, "lape_sweep_probe", CONTEXTS)
    first_neurons = engine.neurons_path
    try:
        outcomes = run_sweep(f"pretrained={model_dir},neurons={first_neurons}", ["none", "-de", f"-de@{other}"],
                             ["lape_sweep_probe"], tmp_path / "sweep", engine="vllm", lm=engine,
                             task_manager=manager, log=lambda message: None)
    finally:
        engine.set_neurons(first_neurons)
    runs = {run.plan + ("@2" if run.neurons == str(other) else ""): run for run in load_runs([tmp_path / "sweep"])}
    assert sorted(runs) == ["-de", "-de@2", "none"] and len(outcomes) == 3
    config = json.loads(outcomes[1].path.read_text())["config"]
    assert config["model"] == "vllm-steered" and config["steering"]["plan"] == "-de"


def assert_engines_agree(engine, other, plans, template: str, tolerance: float) -> None:
    """``other`` gives ``engine``'s log-likelihoods (within ``tolerance`` nats) and greedy text under
    each fixed plan, and under ``template``'s three task plans side by side in one engine call."""
    def outcome(lm, plan: str, requests_of):
        lm.set_plan(plan)
        return lm.loglikelihood(requests_of("loglikelihood")), _text(lm.generate_until(requests_of("generate_until")))

    for lm in (engine, other):
        lm.task_languages = lambda task: _languages(TASK_CODES[task]) if task in TASK_CODES else None
    cases = [(plan, requests) for plan in plans] + [(template, mixed_requests)]
    for plan, requests_of in cases:
        (one, one_text), (two, two_text) = outcome(engine, plan, requests_of), outcome(other, plan, requests_of)
        for (a, _), (b, _) in zip(one, two, strict=True):
            assert math.isclose(a, b, abs_tol=tolerance), (plan, a, b)
        assert one_text == two_text, plan


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="tensor_parallel_size=2 on CPU needs two cores")
def test_tensor_parallel_ranks_agree_with_one_rank(engine, model_dir, neuron_file):
    """Two CPU ranks (vLLM's multi-process engine, one core each) steer their halves of every
    layer's neurons; scores equal the single-rank engine's to float32 rounding."""
    import gc

    from lape_harness.plugin.vllm_steered import VLLMSteeredLM

    neurons = neuron_file(model_dir, languages=LANGUAGES)
    parallel = VLLMSteeredLM(pretrained=str(model_dir), neurons=str(neurons), steer="none",
                             tensor_parallel_size=2, **ENGINE)
    try:
        assert [layout["offset"] for layout in parallel.model.collective_rpc("lape_layout")] == [0, 64]
        assert_engines_agree(engine, parallel, ("none", "-de", "+2*de", "-de+fr"), "auto:-tgt", tolerance=1e-3)
    finally:
        for lm in (engine, parallel):
            lm.__dict__.pop("task_languages", None)
        engine.set_plan("none")
        del parallel
        gc.collect()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 or find_spec("ray") is None,
                    reason="data_parallel_size=2 on CPU needs two cores and Ray")
def test_data_parallel_engines_agree_with_one_engine(engine, model_dir, neuron_file, monkeypatch):
    """Two steered CPU engines as Ray actors (one core each), every plan and ``steer=auto``'s mixed
    plans: the same scores and text as the single engine; the start-up check ran on each engine,
    and a fault on the second engine alone is caught and named."""
    import ray

    from lape_harness.plugin.vllm_data_parallel import DataParallelLLM
    from lape_harness.plugin.vllm_steered import VLLMSteeredLM

    neurons = neuron_file(model_dir, languages=LANGUAGES)
    parallel = VLLMSteeredLM(pretrained=str(model_dir), neurons=str(neurons), steer="none", data_parallel_size=2,
                             **ENGINE)
    try:
        assert isinstance(parallel.model.llm, DataParallelLLM) and parallel.model.llm.engines == 2
        assert (parallel.startup_check["engines"], parallel.startup_check["probes"]) == (2, 4)
        assert_engines_agree(engine, parallel, ("none", "-de", "*0.5*de", "-de+fr"), "auto:+2*tgt", tolerance=1e-5)

        real = DataParallelLLM.collective_rpc

        def second_engine_misplaces(self, method, args=()):  # engine 1 writes every neuron one place over
            if method == "lape_write_plan" and self.focused == 1:
                edits, slot = args
                args = ({layer: ([(i + 1) % parallel.width for i in index], scale, shift)
                         for layer, (index, scale, shift) in edits.items()}, slot)
            return real(self, method, args)

        monkeypatch.setattr(DataParallelLLM, "collective_rpc", second_engine_misplaces)
        with pytest.raises(HookNeverFiredError, match=r"layer 0 on rank 0: plan slot .* wrong neurons of its shard "
                                                      r"\(on data-parallel engine 1\)"):
            parallel._check_steering_takes_effect()
    finally:
        for lm in (engine, parallel):
            lm.__dict__.pop("task_languages", None)
        engine.set_plan("none")
        ray.shutdown()
