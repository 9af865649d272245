"""The ASGI middleware of ``lape-harness serve``: inside vLLM's own OpenAI-compatible app (after its
API-key check), it gives each ``/v1/completions`` and ``/v1/chat/completions`` request its plan.

Per request: read the body (at most ``max_body_bytes``, else 413); read the plan from its
``"steer"`` key or its model name ``"M:steer=<plan>"`` (none: the server's default), parse and check
it as the CLI does (a 400 with the CLI's message otherwise); take a plan slot holding it
(:class:`~lape_harness.plugin.vllm_serve_engine.ServedSteering`, which waits while every slot is in
use); rewrite the body for vLLM (model name ``M``, ``vllm_xargs`` naming the slot, a per-plan
``cache_salt``); add the provenance to the response (headers ``x-lape-steer`` and
``x-lape-neurons-sha256``, and ``system_fingerprint`` in the JSON body or in every streamed
chunk); release the slot when the response has ended, streaming included.

Other endpoints run under the default plan (slot 0); a body there that names a plan is a 400, so a
plan is never silently ignored. A body anywhere that sets the slot key itself is a 400: only this
middleware picks slots.

Example (what vLLM receives for a request naming ``"model": "tiny:steer=+de-en"``)::

    {"model": "tiny", "prompt": "...", "vllm_xargs": {"lape_plan_slot": 3}, "cache_salt": "lape-steer-1c0e..."}
"""

from __future__ import annotations

import json
import logging
from typing import Any

from lape_harness.errors import InputError
from lape_harness.plugin.vllm_serve_plans import (
    BODY_KEY,
    MAX_BODY_BYTES,
    MODEL_MARK,
    NEURONS_HEADER,
    PLAN_HEADER,
    cache_salt,
    fingerprint,
    split_model_name,
)
from lape_harness.plugin.vllm_slots import SLOT_KEY

logger = logging.getLogger(__name__)

#: the endpoints whose requests choose a plan
STEERED_PATHS = ("/v1/completions", "/v1/chat/completions")


class SteeringMiddleware:
    """Pure ASGI middleware over vLLM's app (see the module docstring)."""

    def __init__(self, app, served, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app, self.served, self.max_body_bytes = app, served, max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        path = scope["path"].removeprefix(scope.get("root_path") or "")
        body = await _read_body(scope, receive, self.max_body_bytes)
        if body is None:
            await _error(send, 413, f"the request body is larger than this server takes ({self.max_body_bytes} "
                                    "bytes, --max-request-bytes)", "body")
            return
        data = _json_object(body)
        try:
            if data is not None:
                _refuse_slot_key(data)
            if path not in STEERED_PATHS or data is None:
                if data is not None:
                    _refuse_plan_elsewhere(data, path)
                await self.app(scope, _replay(body, receive), send)
                return
            plan = self.served.request_plan(data)
        except InputError as error:
            await _error(send, 400, str(error), BODY_KEY)
            return
        slot = await self.served.acquire(plan)
        try:
            body = json.dumps(_rewrite(data, plan, slot, self.served.neurons_hash)).encode()
            await self.app(scope, _replay(body, receive), _Provenance(send, plan, self.served.neurons_hash))
        finally:
            self.served.release(slot)


def _rewrite(data: dict, plan, slot: int, neurons_hash: str | None) -> dict:
    """The body vLLM gets: the plain model name, the slot in ``vllm_xargs``, the plan's cache salt."""
    data = dict(data)
    data.pop(BODY_KEY, None)
    data["model"], _plan = split_model_name(data.get("model"))
    if data["model"] is None:
        data.pop("model")
    xargs = data.get("vllm_xargs")
    data["vllm_xargs"] = {**(xargs if isinstance(xargs, dict) else {}), SLOT_KEY: slot}
    client_salt = data.get("cache_salt")
    data["cache_salt"] = cache_salt(plan, neurons_hash, client_salt if isinstance(client_salt, str) else None)
    return data


def _refuse_slot_key(data: Any) -> None:
    """Only the server picks plan slots: a body that names the slot key anywhere is refused."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if SLOT_KEY in item:
                raise InputError(f"{SLOT_KEY} is set by the server from the request's plan; name the plan instead "
                                 '("steer": "-en+de" or model "M:steer=-en+de") and leave out ' + SLOT_KEY)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _refuse_plan_elsewhere(data: dict, path: str) -> None:
    _name, from_model = split_model_name(data.get("model"))
    if BODY_KEY in data or from_model is not None:
        raise InputError(f"{path} runs under the server's default plan; a plan per request (\"steer\" or model "
                         f"\"M{MODEL_MARK}...\") is taken on {' and '.join(STEERED_PATHS)} only")


def _json_object(body: bytes) -> dict | None:
    try:
        data = json.loads(body) if body else None
    except (ValueError, RecursionError):
        return None  # vLLM answers it
    return data if isinstance(data, dict) else None


async def _read_body(scope, receive, limit: int) -> bytes | None:
    """The whole request body, or None when it is longer than ``limit`` bytes."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            return None
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive):
    """A ``receive`` that gives ``body`` once, then waits on the client (for its disconnect)."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _error(send, status: int, message: str, param: str) -> None:
    """An error in vLLM's (OpenAI's) shape."""
    kind = "BadRequestError" if status == 400 else "RequestEntityTooLarge"
    body = json.dumps({"error": {"message": message, "type": kind, "param": param, "code": status}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class _Provenance:
    """A ``send`` that adds the plan and the neuron file's hash to a response: two headers, and
    ``system_fingerprint`` in a JSON body (held until complete) or in each server-sent event."""

    def __init__(self, send, plan, neurons_hash: str | None) -> None:
        self.send = send
        self.fingerprint = fingerprint(plan, neurons_hash)
        self.headers = [(PLAN_HEADER.encode(), str(plan).encode()), (NEURONS_HEADER.encode(), (neurons_hash or "").encode())]
        self.start: dict | None = None
        self.mode = "pass"
        self.held: list[bytes] = []

    async def __call__(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            headers = [(name, value) for name, value in message.get("headers", ())]
            kind = next((value for name, value in headers if name.lower() == b"content-type"), b"")
            if message.get("status") == 200 and kind.startswith(b"application/json"):
                self.mode = "json"
            elif message.get("status") == 200 and kind.startswith(b"text/event-stream"):
                self.mode = "events"
            self.start = {**message, "headers": headers + self.headers}
            if self.mode != "json":
                await self.send(self.start)
            return
        if message["type"] != "http.response.body" or self.mode == "pass":
            await self.send(message)
            return
        self.held.append(message.get("body", b""))
        more = message.get("more_body", False)
        if self.mode == "json":
            if not more:
                await self._send_json(b"".join(self.held))
            return
        text = b"".join(self.held)
        complete, separator, rest = text.rpartition(b"\n\n")
        self.held = [rest]
        out = self._events(complete + separator)
        if not more and self.held[0]:
            out += self.held[0]
            self.held = []
        await self.send({**message, "body": out})

    async def _send_json(self, body: bytes) -> None:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if _is_response(data):
            data["system_fingerprint"] = self.fingerprint
            body = json.dumps(data).encode()
        headers = [(name, value) for name, value in self.start["headers"] if name.lower() != b"content-length"]
        await self.send({**self.start, "headers": headers + [(b"content-length", str(len(body)).encode())]})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    def _events(self, text: bytes) -> bytes:
        """Every ``data: {...}`` event of ``text`` with the fingerprint set."""
        lines = []
        for line in text.split(b"\n"):
            if line.startswith(b"data: {"):
                try:
                    data = json.loads(line[6:])
                except ValueError:
                    data = None
                if _is_response(data):
                    data["system_fingerprint"] = self.fingerprint
                    line = b"data: " + json.dumps(data).encode()
            lines.append(line)
        return b"\n".join(lines)


def _is_response(data: Any) -> bool:
    """A completion or chat response, or a streamed chunk of one (not an error)."""
    return isinstance(data, dict) and ("choices" in data or "system_fingerprint" in data)
