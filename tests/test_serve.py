"""``lape-harness serve`` (vLLM's OpenAI-compatible server, steered per request) on one tiny Llama.

One server (a subprocess on 127.0.0.1, with ``--api-key``) and one in-process ``vllm-steered``
engine are shared by the module; both start at once (about a minute each on CPU), in float32
with the same engine settings, so lm-eval's ``local-completions`` against the server and
``vllm-steered`` in process agree to float32 rounding. The server has 3 plan slots (slot 0: the
default ``-de``), fewer than the plans the load test mixes, so requests wait for slots and idle
slots are reloaded while other plans run.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from builders import build_tiny_model, require_vllm
from lm_eval.api.instance import Instance

from lape_harness.errors import InputError

require_vllm()

LANGUAGES = ["de", "fr", "en"]
KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ENGINE = dict(dtype="float32", max_model_len=512, block_size=32)
PREFIX = "Everyone has the right to life, liberty and security of person. " * 3  # longer than a cache block
CONTEXTS = [PREFIX + "The cat sits on the", PREFIX + "Die Katze sitzt auf der", PREFIX + "Le chat"]
CONTINUATIONS = [" warm mat.", " warmen Matte.", " est assis sur le tapis."]
GENERATION = {"until": ["\n\n"], "max_gen_toks": 8, "do_sample": False}
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("serve") / "llama", arch="llama", hidden=128, heads=2)


@pytest.fixture(scope="module")
def neurons(model_dir, neuron_file):
    return str(neuron_file(model_dir, languages=LANGUAGES))


@pytest.fixture(scope="module")
def started(model_dir, neurons, tmp_path_factory):
    """The server's process, started first so that it loads while the in-process engine does."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    command = [sys.executable, "-m", "lape_harness", "serve", "--model", str(model_dir), "--neurons", neurons,
               "--steer=-de", "--plan-slots", "3", "--max-request-bytes", "100000", "--port", str(port),
               "--api-key", KEY, "--chat-template", CHAT_TEMPLATE, "--dtype", "float32", "--max-model-len", "512",
               "--block-size", "32", "--uvicorn-log-level", "warning", "--disable-uvicorn-access-log"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})
    yield process, f"http://127.0.0.1:{port}", log
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def engine(model_dir, neurons, started):
    from lape_harness.plugin.vllm_steered import VLLMSteeredLM

    return VLLMSteeredLM(pretrained=str(model_dir), neurons=neurons, steer="none", gpu_memory_utilization=0.3,
                         **ENGINE)


@pytest.fixture(scope="module")
def server(started, engine):
    import httpx

    process, url, log = started
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server stopped:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"the server did not start in 600 s:\n{log.read_text()[-4000:]}")


def post(url: str, body, path: str = "/v1/completions", headers=AUTH, **options):
    import httpx

    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(url + path, content=content, headers={"Content-Type": "application/json", **headers},
                      timeout=120, **options)


def requests(kind: str) -> list[Instance]:
    if kind == "loglikelihood":
        arguments = list(zip(CONTEXTS, CONTINUATIONS))
    else:
        arguments = [(context, dict(GENERATION)) for context in CONTEXTS]
    return [Instance(kind, {}, args, i, ("task", i, 1)) for i, args in enumerate(arguments)]


def test_local_completions_matches_in_process_vllm_steered(server, engine, model_dir, monkeypatch):
    """lm-eval's local-completions, the plan in the model name: the same log-likelihoods and greedy text."""
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    for plan, name in (("-de", str(model_dir)), ("-de+fr", f"{model_dir}:steer=-de+fr"),
                       ("+2*de", f"{model_dir}:steer=+2*de"), ("none", f"{model_dir}:steer=none")):
        client = LocalCompletionsAPI(base_url=f"{server}/v1/completions", model=name, tokenizer=str(model_dir),
                                     tokenizer_backend="huggingface", header=AUTH, max_length=512,
                                     add_bos_token=True)  # as lm-eval's vllm model tokenizes
        engine.set_plan(plan)
        try:
            for kind in ("loglikelihood", "generate_until"):
                served, local = getattr(client, kind)(requests(kind)), getattr(engine, kind)(requests(kind))
                if kind == "generate_until":
                    assert served == local, plan
                    continue
                for (value, greedy), (expected, expected_greedy) in zip(served, local, strict=True):
                    assert math.isclose(value, expected, abs_tol=1e-4) and greedy == expected_greedy, (plan, value)
        finally:
            engine.set_plan("none")


def _complete(server: str, name: str, prompt: str, plan: str | None) -> tuple[str, list[float], str]:
    body = {"model": name, "prompt": prompt, "max_tokens": 4, "temperature": 0, "logprobs": 1}
    response = post(server, {**body, **({"steer": plan} if plan else {})})
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    return choice["text"], choice["logprobs"]["token_logprobs"], response.headers["x-lape-steer"]


def test_concurrent_clients_with_mixed_plans_get_what_each_gets_alone(server, model_dir, started):
    """4 clients × 20 requests, 6 plans on 3 slots (slot 0: the default): each answer as alone."""
    plans = [None, "none", "+fr", "-en+de", "*0.5*fr", "=de"]
    cases = [(CONTEXTS[i % 3] + " " * (i % 2), plans[(i * 7 + i // 6) % len(plans)]) for i in range(80)]
    alone = {case: _complete(server, str(model_dir), *case) for case in dict.fromkeys(cases)}
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda case: _complete(server, str(model_dir), *case), cases))
    assert len({plan for _prompt, plan in cases}) == len(plans)
    for case, (text, logprobs, plan) in zip(cases, together, strict=True):
        expected_text, expected_logprobs, expected_plan = alone[case]
        assert (text, plan) == (expected_text, expected_plan), case
        assert logprobs == pytest.approx(expected_logprobs, abs=1e-4), case
    distinct = {(text, tuple(round(value, 3) for value in logprobs)) for (prompt, _), (text, logprobs, _) in alone.items()
                if prompt == CONTEXTS[0]}
    assert len(distinct) == len(plans)  # every plan answers differently
    loads = started[2].read_text().count("lape-harness serve: plan ")
    assert loads > len(plans)  # 5 plans on 2 free slots: slots were reloaded again and again


def test_responses_carry_the_plan_and_the_neuron_hash(server, neurons, model_dir):
    from lape_harness.neurons import NeuronSet

    digest = NeuronSet.load(neurons).content_hash()
    name = str(model_dir)
    response = post(server, {"model": name, "prompt": "Le chat", "max_tokens": 2, "steer": "+fr-en"})
    assert response.headers["x-lape-steer"] == "-en+fr" and response.headers["x-lape-neurons-sha256"] == digest
    assert response.json()["system_fingerprint"] == f"lape-steer|plan:-en+fr|neurons:{digest}"
    streamed = post(server, {"model": f"{name}:steer=+fr-en", "prompt": "Le chat", "max_tokens": 3, "stream": True})
    events = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")]
    assert events and {event["system_fingerprint"] for event in events} == {f"lape-steer|plan:-en+fr|neurons:{digest}"}
    chat = post(server, {"model": name, "messages": [{"role": "user", "content": "Le chat"}], "max_tokens": 2,
                         "steer": "=de"}, path="/v1/chat/completions")
    assert chat.status_code == 200, chat.text
    assert chat.json()["system_fingerprint"].startswith("lape-steer|plan:=de|") and chat.headers["x-lape-steer"] == "=de"


def _cli_message(plan: str, neurons: str) -> str:
    from lape_harness.plugin.steered_lm import SteeringArgs

    with pytest.raises(InputError) as error:
        SteeringArgs.parse(neurons, plan)
    return str(error.value)


def test_bad_requests_are_400s_with_the_cli_message_and_the_server_keeps_serving(server, neurons, model_dir):
    name = str(model_dir)
    for plan in ("+de+", "-de=abc", "+es", "+xx"):  # malformed; a language the neuron set lacks; unknown
        response = post(server, {"model": name, "prompt": "x", "max_tokens": 1, "steer": plan})
        assert response.status_code == 400 and response.json()["error"]["message"] == _cli_message(plan, neurons), plan
    refused = {
        "auto": {"steer": "auto"},
        "file path": {"steer": "plans/plan.yaml"},
        "too long": {"steer": "+de" * 400},
        "two plans": {"steer": "-de", "model": f"{name}:steer=-fr"},
        "slot chosen by the client": {"vllm_xargs": {"lape_plan_slot": 7}},
        "not a string": {"steer": ["-de"]},
    }
    for what, fields in refused.items():
        response = post(server, {"model": name, "prompt": "x", "max_tokens": 1, **fields})
        assert response.status_code == 400, (what, response.text)
    assert post(server, {"model": name, "prompt": "x" * 200_000}).status_code == 413
    assert post(server, {"model": name, "input": "x", "steer": "-de"}, path="/v1/responses").status_code == 400
    assert post(server, {"model": name, "prompt": "x", "max_tokens": 1}, headers={}).status_code == 401
    assert post(server, {"model": name, "prompt": "x", "max_tokens": 1, "steer": "-fr"}).status_code == 200


# ------------------------------------------------------------------- without an engine


def test_the_server_refuses_what_it_cannot_steer(model_dir, neurons):
    from lape_harness.plugin.vllm_serve import ServeOptions, steering_args, vllm_args

    options = ServeOptions(model=str(model_dir), neurons=neurons)
    args = vllm_args(options, ["--max-model-len", "512"])
    assert args.host == "127.0.0.1" and args.additional_config == {"lape_plan_slots": 16}
    assert args.worker_extension_cls.endswith("SteeringWorkerExtension")
    assert vllm_args(options, ["--host", "0.0.0.0"]).host == "0.0.0.0"
    for refused in (["--data-parallel-size", "2"], ["--api-server-count", "2"], ["--headless"],
                    ["--enable-dbo"], ["--worker-extension-cls", "x.Y"], ["--model", "other"]):
        with pytest.raises(InputError):
            vllm_args(options, refused)
    for bad in (dict(steer="auto"), dict(plan_slots=1), dict(steer="+es")):
        with pytest.raises(InputError):
            steering_args(ServeOptions(model=str(model_dir), neurons=neurons, **bad))


def test_a_slot_in_use_is_never_reloaded_and_requests_wait_for_one():
    from lape_harness.plugin.vllm_serve_slots import SlotPool

    async def scenario():
        pool, loads = SlotPool(3, pinned="-de"), []

        async def load(slot, plan):
            await asyncio.sleep(0.01)
            loads.append((slot, plan))

        a, b = await pool.acquire("+fr", load), await pool.acquire("-en", load)
        waiting = asyncio.ensure_future(pool.acquire("=de", load))
        await asyncio.sleep(0.05)
        assert not waiting.done() and pool.acquire_nowait("-de") == 0  # the default never waits
        pool.release(b)
        c = await waiting
        pool.release(a)
        again = await pool.acquire("+fr", load)  # still in its slot: no load
        return a, b, c, again, loads

    a, b, c, again, loads = asyncio.run(scenario())
    assert (a, b, c, again) == (1, 2, 2, 1)
    assert loads == [(1, "+fr"), (2, "-en"), (2, "=de")]


def test_the_cli_passes_vllm_options_through():
    from lape_harness.cli import build_parser

    args = build_parser().parse_args(["serve", "--model", "m", "--neurons", "n", "--steer=-de", "--port", "9000",
                                      "--max-model-len", "512"])
    assert (args.model, args.steer, args.vllm_args) == ("m", "-de", ["--port", "9000", "--max-model-len", "512"])
