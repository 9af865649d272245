"""The steering side of ``lape-harness serve``, over vLLM's ``AsyncLLM`` engine client: the steerable
layout, the start-up check, the default plan in slot 0, and the plans requests ask for, compiled on
first use and written into a free plan slot of every rank (:mod:`lape_harness.plugin.vllm_serve_slots`).

The workers are :mod:`lape_harness.plugin.vllm_worker`'s (the engine's ``worker_extension_cls``);
this module drives them through ``AsyncLLM.collective_rpc`` as ``vllm-steered`` drives them through
``LLM.collective_rpc``. The start-up check is :func:`~lape_harness.plugin.vllm_startup_check.run_startup_check`
itself, run in a thread over :class:`_CheckAdapter`, which gives it the synchronous calls it
makes of a ``vllm-steered`` model.

Example (inside the server's event loop):
    >>> served = await ServedSteering.start(engine_client, steering_args, slots=16)   # doctest: +SKIP
    >>> slot = await served.acquire(served.request_plan({"steer": "-en+de"}))        # doctest: +SKIP
    >>> served.release(slot)                                                          # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from lape_harness.errors import HookNeverFiredError, InputError
from lape_harness.plugin.vllm_serve_plans import (
    MAX_PLAN_CHARS,
    PLAN_CACHE,
    CompiledPlans,
    Edits,
    parse_request_plan,
    request_plan_text,
)
from lape_harness.plugin.vllm_serve_slots import SlotPool
from lape_harness.plugin.vllm_steered import plan_edits
from lape_harness.steering.plan import SteeringPlan

logger = logging.getLogger(__name__)


class ServedSteering:
    """The server's plans and slots over ``engine`` (an ``AsyncLLM``); see the module docstring."""

    def __init__(self, engine, steering_args, layers: int, width: int, slots: int, plan_cache: int = PLAN_CACHE,
                 max_plan_chars: int = MAX_PLAN_CHARS) -> None:
        self.engine, self.args = engine, steering_args
        self.layers, self.width = layers, width
        self.default: SteeringPlan = steering_args.spec
        self.max_plan_chars = max_plan_chars
        self.pool = SlotPool(slots, pinned=str(self.default))
        self.compiled = CompiledPlans(lambda plan: plan_edits(plan, self.neuron_set, layers, width), plan_cache)
        self.load_seconds: list[float] = []  # each plan switch that needed a slot: compile + write
        self.startup_check: dict[str, Any] | None = None

    @property
    def neuron_set(self):
        return self.args.neuron_set

    @property
    def neurons_hash(self) -> str | None:
        return self.args.neurons_hash

    @classmethod
    async def start(cls, engine, steering_args, slots: int, plan_cache: int = PLAN_CACHE,
                    max_plan_chars: int = MAX_PLAN_CHARS, check: bool = True) -> ServedSteering:
        """Read the workers' layout, check the neuron file against it, route the slots, run the
        start-up check and write the default plan into slot 0."""
        from lape_harness.sites import UnsupportedArchitectureError

        layouts = await engine.collective_rpc("lape_layout")
        first = layouts[0]
        if first["layers"] == 0 or first["steered"] != first["layers"]:
            raise UnsupportedArchitectureError(
                f"lape-harness serve cannot steer this model: of its {first['layers']} decoder MLPs "
                f"({', '.join(first['forms']) or 'none found'}) {first['steered']} have a form it knows (a fused "
                "gate_up_proj with an act-and-mul op, or a non-gated MLP's act)")
        layers, width = first["layers"], sum(layout["width"] for layout in layouts)
        if steering_args.neuron_set is not None:
            steering_args.neuron_set.validate_for(layers, width)
        routed = min(await engine.collective_rpc("lape_route_slots"))
        if routed != slots:
            raise InputError(f"--plan-slots {slots}: the engine's workers hold {routed} plan slots")
        served = cls(engine, steering_args, layers, width, slots, plan_cache, max_plan_chars)
        if check:
            from lape_harness.plugin.vllm_startup_check import run_startup_check

            adapter = _CheckAdapter(served, asyncio.get_running_loop())
            served.startup_check = await asyncio.to_thread(run_startup_check, adapter)
        await served.write(0, served.compiled.get(served.default), f"--steer {served.default}")
        await engine.reset_prefix_cache()
        return served

    # ---------------------------------------------------------------- requests

    def request_plan(self, body: dict) -> SteeringPlan:
        """The plan a request body asks for (the default when it names none); an InputError otherwise."""
        text = request_plan_text(body)
        if text is None:
            return self.default
        return parse_request_plan(text, self.neuron_set, self.max_plan_chars)

    async def acquire(self, plan: SteeringPlan) -> int:
        """A plan slot holding ``plan`` for one request; :meth:`release` it when the response has ended."""
        return await self.pool.acquire(str(plan), lambda slot, _key: self._load(slot, plan))

    def release(self, slot: int) -> None:
        self.pool.release(slot)

    async def _load(self, slot: int, plan: SteeringPlan) -> None:
        started = time.perf_counter()
        await self.write(slot, self.compiled.get(plan), f"steer={plan}")
        self.load_seconds.append(time.perf_counter() - started)
        logger.info("lape-harness serve: plan %s in slot %d (%.3f s)", plan, slot, self.load_seconds[-1])

    async def write(self, slot: int, edits: Edits, label: str) -> None:
        """Write ``edits`` into ``slot`` of every rank's tables; the ranks together must edit every neuron."""
        written = sum(await self.engine.collective_rpc("lape_write_plan", args=(edits, slot)))
        expected = sum(len(index) for index, _scale, _shift in edits.values())
        if written != expected:
            raise HookNeverFiredError(f"{label}: the vLLM workers edit {written} neurons, the plan {expected}; "
                                      "the engine's layers do not match the neuron file")

    async def generate_all(self, prompts: list, params: list) -> list:
        """Every prompt's final output, all requests in flight at once (for the start-up check)."""

        async def one(prompt, param):
            final = None
            async for output in self.engine.generate(prompt, param, f"lape-check-{uuid.uuid4().hex}"):
                final = output
            return final

        return list(await asyncio.gather(*(one(prompt, param) for prompt, param in zip(prompts, params, strict=True))))


class _CheckAdapter:
    """What :func:`~lape_harness.plugin.vllm_startup_check.run_startup_check` calls on a ``vllm-steered``
    model (``model.collective_rpc``, ``model.reset_prefix_cache``, ``model.llm.generate``,
    ``write_slot_edits``, ``clear_slot``, ``tok_encode``, the layout), each run on the server's event
    loop from the check's thread."""

    def __init__(self, served: ServedSteering, loop: asyncio.AbstractEventLoop) -> None:
        self.served, self.loop = served, loop
        self.model = self.llm = self
        self.num_layers, self.width, self.plan_slots = served.layers, served.width, served.pool.slots
        self.tokenizer = served.engine.get_tokenizer()

    def _wait(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def collective_rpc(self, method: str, args: tuple = ()):
        return self._wait(self.served.engine.collective_rpc(method, args=args))

    def reset_prefix_cache(self):
        return self._wait(self.served.engine.reset_prefix_cache())

    def generate(self, prompts, params, use_tqdm: bool = False):
        return self._wait(self.served.generate_all(list(prompts), list(params)))

    def write_slot_edits(self, edits: Edits, slot: int, label: str = "the start-up check's probe") -> None:
        self._wait(self.served.write(slot, edits, label))

    def clear_slot(self, slot: int) -> None:
        self.write_slot_edits({}, slot)

    def tok_encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))
