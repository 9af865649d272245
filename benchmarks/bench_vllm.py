"""``vllm-steered`` side by side with plain ``vllm`` and with ``hf-steered`` on generation.

1. Steering overhead on vLLM: the same greedy generations (forcing questions, 32 new tokens)
   on a plain ``vllm`` engine and on a ``vllm-steered`` engine holding a plan (``-de+2*fr``:
   every neuron of both languages edited), both alive in one process of their own, timed in
   interleaved rounds (each engine first every other round); the ratio of the medians. Target
   ≤ 1.03. The engines keep vLLM's one reserved core (``VLLM_CPU_NUM_OF_RESERVED_CPU=1`` unless
   set): on 2 cores, with every core computing, vLLM's own processes preempt the computing
   threads and two runs of the same engine differ by up to 20 %.
2. A language-forcing grid through lm-eval's evaluator: the same ``lape_forcing_<s>_to_<t>``
   tasks, plan (``auto:-src+2*tgt``), limit and token budget on ``hf-steered`` (batch 16, one plan
   group after another, in float32 and in bfloat16: the faster of the two is compared, since which
   is faster depends on the CPU) and on ``vllm-steered``
   (bfloat16, every cell's plan on a plan slot of its own, all cells in one continuous batch),
   models loaded beforehand; the ratio of the evaluation times. Target ≥ 2.5 on CPU. The details
   say how many engine calls vllm-steered made (one, where the plan slots hold every cell).
3. The start-up check's time (lape_harness.plugin.vllm_startup_check) against the engine start's,
   from the same vllm-steered engine.
4. ``lape-harness sweep --engine vllm`` (one engine, plan after plan) against one
   ``lm_eval --model vllm-steered`` run per plan (``bench_sweep``'s comparison on vLLM).

The model is the embedded Gemma-3-270m (``lape:gemma-3-270m``) with its committed 2 % neuron set
when its package is installed, else a tiny random Llama with a random neuron set (then the
numbers say little). Needs vLLM (``lape-harness[vllm-cpu]`` on CPUs).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_sweep import QUICK_PLANS, sweep_vs_separate

LANGUAGES = ["en", "de", "fr", "es"]
QUESTIONS = ["Q: Wie geht es dir heute? \nA:", "Q: Comment tu t'appelles ? \nA:", "Q: ¿De dónde eres? \nA:",
             "Q: What is your favourite colour? \nA:", "Q: Welches Jahr haben wir? \nA:", "Q: Quel temps fait-il ? \nA:"]
GENERATION = {"until": ["\nQ:", "\nA:"], "max_gen_toks": 32, "do_sample": False}
#: An engine's worker polls for new work for 1 s after its last step (vLLM's shared-memory queue,
#: ``busy_loop_s``); on a small machine that polling slows the other engine's run, so each timed
#: run waits it out.
ENGINE_SPIN_S = 1.5


def _model(tmp: Path) -> tuple[str, str, str]:
    """(pretrained, neuron file, label)."""
    from lape_harness.embedded import resolve_pretrained
    from lape_harness.errors import LapeError

    try:
        resolve_pretrained("lape:gemma-3-270m")
        root = Path(__file__).resolve().parents[1]
        return "lape:gemma-3-270m", str(root / "neuron_cache" / "gemma-3-270m" / "lape-top2.safetensors"), "gemma-3-270m"
    except (LapeError, ImportError, OSError):
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from builders import build_tiny_model, random_neuron_set

        path = build_tiny_model(tmp / "tiny", arch="llama", hidden=128, heads=2)
        neurons = tmp / "lape-top1.safetensors"
        random_neuron_set(2, 128, languages=LANGUAGES).save(neurons)
        return str(path), str(neurons), "tiny-llama"


def _requests(count: int):
    from lm_eval.api.instance import Instance

    return [Instance("generate_until", {}, (QUESTIONS[i % len(QUESTIONS)], dict(GENERATION)), i, ("bench", i, 1))
            for i in range(count)]


def overhead_once(pretrained: str, neurons: str, rounds: str, prompts: str) -> dict:
    """Plain ``vllm`` and ``vllm-steered`` (plan ``-de+2*fr``) both loaded, timed in interleaved rounds."""
    from lape_harness.plugin.vllm_setup import cpu_defaults, lm_eval_vllm_class
    from lape_harness.plugin.vllm_steered import VLLMSteeredLM

    rounds, prompts = int(rounds), int(prompts)
    engine = cpu_defaults(dict(dtype="bfloat16", max_model_len=1024, gpu_memory_utilization=0.3))  # two engines
    plain = lm_eval_vllm_class()(pretrained=_resolved(pretrained), **engine)
    steered = VLLMSteeredLM(pretrained=pretrained, neurons=neurons, steer="-de+2*fr", **engine)
    times = {"plain": [], "steered": []}
    engines = [("plain", plain), ("steered", steered)]
    for round_ in range(rounds + 1):  # the first round warms both up and is not counted
        for name, lm in engines if round_ % 2 else engines[::-1]:  # each goes first every other round
            time.sleep(ENGINE_SPIN_S)  # the other engine's processes stop polling
            started = time.perf_counter()
            lm.generate_until(_requests(prompts), disable_tqdm=True)
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(times[name][1:]) for name in times}


def _overhead(pretrained: str, neurons: str, rounds: int, prompts: int) -> tuple[float, str]:
    reserved = os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU", "1")
    seconds = _in_own_process("overhead_once", pretrained, neurons, str(rounds), str(prompts),
                              env={"VLLM_CPU_NUM_OF_RESERVED_CPU": reserved})
    return seconds["steered"] / seconds["plain"], (
        f"{prompts} prompts × 32 tokens, bf16, median of {rounds} interleaved rounds "
        f"(VLLM_CPU_NUM_OF_RESERVED_CPU={reserved}): plain vllm {seconds['plain']:.2f} s, "
        f"vllm-steered {seconds['steered']:.2f} s (plan -de+2*fr)")


def _resolved(pretrained: str) -> str:
    from lape_harness.embedded import resolve_pretrained

    return resolve_pretrained(pretrained)


def _in_own_process(function: str, *args: str, env: dict[str, str] | None = None) -> dict:
    """``function(*args)`` of this module run in a fresh process (with ``env`` added to the
    environment): a finished engine's processes and memory must not overlap the next measurement."""
    code = (f"import json, sys; from benchmarks.bench_vllm import {function}; "
            f"print('RESULT', json.dumps({function}(*sys.argv[1:])))")
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode:
        raise RuntimeError(f"{function}{args} failed:\n{done.stderr[-3000:]}")
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])


def _forcing_grid(pretrained: str, neurons: str, limit: int) -> tuple[float, str, dict]:
    """Each engine in a process of its own: model loaded first, then the evaluation timed. Returns
    the ratio, its details and vllm-steered's start-up check (its seconds, the engine start's)."""
    seconds, rates, found = {}, {}, {}
    for name in ("hf-steered:float32", "hf-steered:bfloat16", "vllm-steered"):
        result = _in_own_process("forcing_once", name, pretrained, neurons, str(limit))
        seconds[name], rates[name], found[name] = result["seconds"], result["target_rate"], result
    hf = min(("hf-steered:float32", "hf-steered:bfloat16"), key=seconds.get)  # the peer's best setting here
    vllm = found["vllm-steered"]
    details = (f"{len(FORCING_TASKS)} forcing tasks × {limit} prompts, 32 tokens, `auto:-src+2*tgt`: hf-steered batch 16 "
               f"fp32 {seconds['hf-steered:float32']:.1f} s, bf16 {seconds['hf-steered:bfloat16']:.1f} s (the faster, "
               f"{hf.split(':')[1]}, is compared; target_rate {rates[hf]:.2f}), vllm-steered bf16 "
               f"{seconds['vllm-steered']:.1f} s (target_rate {rates['vllm-steered']:.2f}; {vllm['engine_calls']} "
               f"engine call(s), {vllm['plan_slots']} plan slots)")
    return seconds[hf] / seconds["vllm-steered"], details, vllm["startup_check"]


FORCING_TASKS = [f"lape_forcing_{s}_to_{t}" for s in LANGUAGES for t in LANGUAGES if s != t]


def forcing_once(name: str, pretrained: str, neurons: str, limit: str) -> dict:
    """Load ``name``'s model, then time lm-eval's evaluation of the forcing grid under auto:-src+2*tgt."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    common = dict(pretrained=pretrained, neurons=neurons, steer="auto:-src+2*tgt")
    if name.startswith("hf-steered"):
        from lape_harness.plugin.hf_steered import HFSteeredLM

        dtype = name.partition(":")[2] or "float32"
        lm = HFSteeredLM(**common, device="cpu", dtype=dtype, batch_size=16)
    else:
        from lape_harness.plugin.vllm_steered import VLLMSteeredLM

        lm = VLLMSteeredLM(**common, dtype="bfloat16", max_model_len=1024)
    calls = []
    engine = getattr(getattr(lm, "model", None), "llm", None)
    if engine is not None:  # count the engine calls lm-eval's evaluation makes (plan slots merge them)
        generate = engine.generate
        engine.generate = lambda *args, **kwargs: (calls.append(1), generate(*args, **kwargs))[1]
    manager = TaskManager()
    started = time.perf_counter()
    results = simple_evaluate(model=lm, tasks=FORCING_TASKS, task_manager=manager, limit=int(limit),
                              gen_kwargs="max_gen_toks=32", bootstrap_iters=0)
    seconds = time.perf_counter() - started
    rate = statistics.mean(results["results"][task]["target_rate,none"] for task in FORCING_TASKS)
    return {"seconds": seconds, "target_rate": rate, "engine_calls": len(calls),
            "plan_slots": getattr(lm, "plan_slots", None), "startup_check": getattr(lm, "startup_check", None)}


def run(quick: bool) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        pretrained, neurons, label = _model(Path(tmp))
        overhead, overhead_details = _overhead(pretrained, neurons, rounds=2 if quick else 7, prompts=12 if quick else 48)
        speedup, grid_details, check = _forcing_grid(pretrained, neurons, limit=1 if quick else 6)
    return [
        {"benchmark": "vllm-steered / plain vllm, generation", "model": label, "value": round(overhead, 3),
         "unit": "ratio", "target": "≤ 1.03", "passed": overhead <= 1.03, "details": overhead_details},
        {"benchmark": "forcing grid: hf-steered time / vllm-steered time", "model": label, "value": round(speedup, 2),
         "unit": "ratio", "target": "≥ 2.5", "passed": speedup >= 2.5, "details": grid_details},
        _startup_row(check, label),
        sweep_vs_separate("vllm", QUICK_PLANS),  # 3 plans either way: each separate run starts an engine (minutes)
    ]


def grid_only(quick: bool) -> list[dict]:
    """Only the forcing-grid row and the start-up check's (``python -m benchmarks.bench_vllm grid``)."""
    with tempfile.TemporaryDirectory() as tmp:
        pretrained, neurons, label = _model(Path(tmp))
        speedup, details, check = _forcing_grid(pretrained, neurons, limit=1 if quick else 6)
    return [{"benchmark": "forcing grid: hf-steered time / vllm-steered time", "model": label,
             "value": round(speedup, 2), "target": "≥ 2.5", "passed": speedup >= 2.5, "details": details},
            _startup_row(check, label)]


def _startup_row(check: dict, label: str) -> dict:
    """vllm-steered's start-up check (lape_harness.plugin.vllm_startup_check) against its engine start."""
    share = check["seconds"] / check["engine_start_seconds"]
    return {"benchmark": "vllm-steered start-up check / engine start", "model": label, "value": round(share, 3),
            "unit": "ratio", "target": "reported", "passed": True,
            "details": f"{check['probes']} probes on {check['layers']} layers × {check['ranks']} rank(s), prefill and "
                       f"decode: {check['seconds']:.2f} s; engine start {check['engine_start_seconds']:.1f} s"}


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    for row in grid_only(quick) if "grid" in sys.argv else run(quick=quick):
        print(row)
