"""``vllm-steered``: lm-eval's ``vllm`` model with language arithmetics on the MLP neurons.

The same ``neurons=``, ``steer=`` (every method and combination, plan files, ``auto`` and
``auto:<template>`` grouped by task plan) as ``hf-steered``, the same steering signature in the
results JSON and the same per-plan request-cache keys (:mod:`lape_harness.plugin.steered_lm`); every
``vllm`` argument keeps working (``tensor_parallel_size``, ``dtype``, ``max_model_len``,
``gpu_memory_utilization``, ``enforce_eager``, ...)::

    lm_eval --model vllm-steered --tasks lape_forcing_de \\
        --model_args pretrained=meta-llama/Llama-3.1-8B,tensor_parallel_size=2,neurons=lape-top1.safetensors,steer=auto

How: vLLM imports :mod:`lape_harness.plugin.vllm_worker` in each worker process as the engine's
``worker_extension_cls``, which wraps every decoder MLP's activation while the model loads,
before vLLM compiles it or captures graphs. Each wrapper holds ``plan_slots`` plans (default
``auto``: as many as 256 MiB of tables per rank hold, at most 512): slot 0 is the plan set by
``steer=``/:meth:`set_plan` (switching it compiles the plan once, writes each layer's scale and
shift into the workers' tables, each tensor-parallel rank its shard of the neurons, and resets
vLLM's prefix cache); under ``steer=auto`` the task plans of
one lm-eval call go into the other slots and run side by side in ONE engine call
(:mod:`lape_harness.plugin.side_by_side`): each request carries its slot in
``SamplingParams.extra_args`` and a per-plan ``cache_salt``, so vLLM's continuous batching mixes
plans while its prefix cache never serves KV computed under one plan to another. More plans
than free slots run in chunks. With ``--use_cache`` lm-eval's cache splits the requests by plan
first, so the plans then run one after another.

``data_parallel_size=N`` runs N such engines as Ray actors behind one ``LLM`` interface
(:mod:`lape_harness.plugin.vllm_data_parallel`): every plan write reaches all of them, requests are
dealt out in turn, and the start-up check runs on each engine.

Checks: the model's MLPs must be of a form the workers could wrap and match the neuron file
(layers, width across ranks); at start-up :mod:`lape_harness.plugin.vllm_startup_check` proves that
every layer on every rank applies its scale and shift at its shard's neurons, on prefill and decode
steps, without leaking into a neighbour's slot (else :class:`~lape_harness.errors.HookNeverFiredError`
naming the layer and rank); each plan write must reach exactly the plan's neurons. Only
``steer_scope=all`` and ``steer_bos=true`` are supported; refused before the engine starts, with the
reason: pipeline parallel, speculative
decoding (its draft model would be wrapped too, and verification re-lays tokens), and, with more
than one plan slot, the features that re-lay a batch's tokens (dual-batch overlap, KV-sharing fast
prefill, prefill context parallel).

Example:
    >>> lm = VLLMSteeredLM(pretrained="lape:gemma-3-270m", neurons="lape-top2.safetensors", steer="auto")  # doctest: +SKIP
    >>> lm.set_plan("-de+2*fr")      # writes the workers' vectors: no reload, no recompilation      # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from lape_harness.errors import HookNeverFiredError, InputError
from lape_harness.plugin.error_display import plain_errors
from lape_harness.plugin.side_by_side import current_job, engine_call, run_side_by_side
from lape_harness.plugin.steered_lm import SteeredLM
from lape_harness.plugin.vllm_data_parallel import DataParallelLLM, require_ray
from lape_harness.plugin.vllm_setup import check_engine_keys, cpu_defaults, lm_eval_vllm_class
from lape_harness.plugin.vllm_slots import SLOT_KEY
from lape_harness.plugin.vllm_worker import SLOTS_CONFIG
from lape_harness.sites import UnsupportedArchitectureError
from lape_harness.steering.compiled import compile_plan
from lape_harness.steering.plan import SteeringPlan

logger = logging.getLogger(__name__)

VLLM = lm_eval_vllm_class()
WORKER_EXTENSION = "lape_harness.plugin.vllm_worker.SteeringWorkerExtension"
#: plan slots per layer: slot 0 for the ``steer=`` plan, the others for ``steer=auto``'s task plans;
#: "auto": as many as 256 MiB of tables per rank hold, up to 512 (lape_harness.plugin.vllm_worker.auto_slots).
PLAN_SLOTS = "auto"


class VLLMSteeredLM(SteeredLM, VLLM):
    """lm-eval's ``VLLM`` whose workers steer language neurons by a plan (see module docstring)."""

    model_name = "vllm-steered"
    supported_scopes = ("all",)
    supports_steer_bos_false = False

    @plain_errors
    def __init__(self, pretrained, plan_slots: int | str = PLAN_SLOTS, **kwargs) -> None:
        self._plan_slots = _slots(plan_slots)
        super().__init__(pretrained, **kwargs)

    def _engine_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Refuse what one steered engine cannot serve; add the worker extension, the slot count and
        the CPU build's defaults."""
        check_engine_keys(kwargs)
        if _whole_number("data_parallel_size", kwargs.get("data_parallel_size", 1)) > 1:
            require_ray()
        if _whole_number("pipeline_parallel_size", kwargs.get("pipeline_parallel_size", 1)) > 1:
            raise InputError("vllm-steered cannot steer pipeline_parallel_size>1 (each stage's workers hold only "
                             "their layers); use tensor_parallel_size=N instead")
        _whole_number("tensor_parallel_size", kwargs.get("tensor_parallel_size", 1))
        refuse_unsteerable_features(kwargs, self._plan_slots)
        extension = kwargs.setdefault("worker_extension_cls", WORKER_EXTENSION)
        if extension != WORKER_EXTENSION:
            raise InputError(f"vllm-steered needs worker_extension_cls={WORKER_EXTENSION}; remove "
                             f"worker_extension_cls={extension} from --model_args")
        kwargs["additional_config"] = {**config_dict(kwargs.get("additional_config")), SLOTS_CONFIG: self._plan_slots}
        cpu_defaults(kwargs)
        self._engine_start = time.perf_counter()
        return kwargs

    def _engine_started(self, pretrained) -> None:
        """Route engine calls through :class:`MergingLLM`; read the steerable layout and the slot count."""
        if self.data_parallel_size > 1:
            # the engines are ours; lm-eval's data_parallel_size stays 1 so that its own path, which
            # would start fresh unsteered engines on every call, is never taken
            self.model, self.data_parallel_size = DataParallelLLM.start(self.model_args, self.data_parallel_size), 1
        self._engine_start_seconds = time.perf_counter() - self._engine_start
        self.model = MergingLLM(self.model)
        self.num_layers, self.width = self._steerable_layout(pretrained)
        self.plan_slots = min(self.model.collective_rpc("lape_route_slots"))
        self._active: SteeringPlan | None = None
        self._slots: list[SteeringPlan | None] = [None] * self.plan_slots  # what each slot holds

    def _loaded_config(self):
        return self._config

    # ---------------------------------------------------------------- plans

    def _install_plan(self, plan: SteeringPlan) -> None:
        """Write ``plan`` into slot 0 (requests that name no slot) and reset the prefix cache."""
        if plan == self._active:
            return
        self._active = None
        self._write_slot(plan, 0)
        self.model.reset_prefix_cache()
        self._active = plan

    def _write_slot(self, plan: SteeringPlan, slot: int) -> None:
        """Write ``plan`` into every worker's tables at ``slot``; every neuron must reach a worker."""
        self.write_slot_edits(plan_edits(plan, self.neuron_set, self.num_layers, self.width), slot, str(plan))
        self._slots[slot] = plan

    def write_slot_edits(self, edits: dict[int, tuple[list[int], list[float], list[float]]], slot: int,
                         label: str = "the start-up check's probe") -> None:
        """Write per-layer ``(neuron indices, scale, shift)`` into ``slot`` of every rank's tables; the
        ranks together must edit every neuron listed."""
        self._slots[slot] = None
        if slot == 0:
            self._active = None
        written = sum(self.model.collective_rpc("lape_write_plan", args=(edits, slot)))
        expected = sum(len(index) for index, _scale, _shift in edits.values())
        if written != expected:
            raise HookNeverFiredError(f"steer={label}: the vLLM workers edit {written} neurons, the plan {expected}; "
                                      "the engine's layers do not match the neuron file")

    def clear_slot(self, slot: int) -> None:
        """Return ``slot`` to the unsteered rows (scale 1, shift 0) on every rank."""
        self.write_slot_edits({}, slot)

    def _install_neurons(self, neuron_set) -> None:
        """Check ``neuron_set`` against the engine's layers and width; the next plans are written anew."""
        if neuron_set is not None:
            neuron_set.validate_for(self.num_layers, self.width)
        self._active = None
        self._slots = [None] * self.plan_slots

    def run_plan_groups(self, run, groups: list[tuple[SteeringPlan, list]]) -> list[list]:
        """Every group's lm-eval method side by side, their engine calls merged into one (each group
        on a plan slot of its own); more groups than free slots run in chunks."""
        free = self.plan_slots - 1
        if free < 1:
            return super().run_plan_groups(run, groups)
        answers: list[list] = []
        for start in range(0, len(groups), free):
            chunk = groups[start:start + free]
            slots = []
            for slot, (plan, _requests) in enumerate(chunk, start=1):
                if self._slots[slot] != plan:
                    self._write_slot(plan, slot)
                slots.append((slot, self.cache_namespace(plan)))
            jobs = [lambda requests=requests: run(requests) for _plan, requests in chunk]
            answers += run_side_by_side(jobs, lambda calls, slots=slots: self._generate_merged(calls, slots))
        return answers

    def _generate_merged(self, calls: list[tuple[int, Any]], slots: list[tuple[int, str]]) -> list:
        """One ``LLM.generate`` for the waiting calls ``(group, payload)`` of several plan groups: each
        request on its group's slot, with the group's plan as cache salt. Returns each call's outputs."""
        from vllm import SamplingParams

        prompts, params, sizes = [], [], []
        options = calls[0][1][2]
        for group, (call_prompts, call_params, call_options) in calls:
            slot, salt = slots[group]
            if call_options != options:
                raise RuntimeError(f"vllm-steered: plan groups called the engine with different options "
                                   f"({call_options} and {options})")
            call_params = call_params if isinstance(call_params, list) else [call_params] * len(call_prompts)
            tagged: dict[int, SamplingParams] = {}  # lm-eval shares one SamplingParams among requests
            for prompt, param in zip(call_prompts, call_params, strict=True):
                if id(param) not in tagged:
                    tagged[id(param)] = copy = param.clone()
                    copy.extra_args = {**(param.extra_args or {}), SLOT_KEY: slot}
                prompts.append({**prompt, "cache_salt": f"lape-steer:{salt}"})
                params.append(tagged[id(param)])
            sizes.append(len(call_prompts))
        outputs = self.model.llm.generate(prompts, params, **options)
        answers, start = [], 0
        for size in sizes:
            answers.append(outputs[start:start + size])
            start += size
        return answers

    # ---------------------------------------------------------------- start-up checks

    def _steerable_layout(self, pretrained) -> tuple[int, int]:
        """``(layers, neurons per layer across tensor-parallel ranks)`` the workers can steer."""
        layouts = self.model.collective_rpc("lape_layout")
        first = layouts[0]
        if first["layers"] == 0 or first["steered"] != first["layers"]:
            raise UnsupportedArchitectureError(
                f"vllm-steered cannot steer {pretrained}: of its {first['layers']} decoder MLPs "
                f"({', '.join(first['forms']) or 'none found'}) {first['steered']} have a form it knows (a fused "
                "gate_up_proj with an act-and-mul op, or a non-gated MLP's act); use --model hf-steered for it"
            )
        return first["layers"], sum(layout["width"] for layout in layouts)

    def _check_steering_takes_effect(self) -> None:
        """The start-up check (:mod:`lape_harness.plugin.vllm_startup_check`): every layer on every rank,
        scale and shift, prefill and decode, no leak between slots; its cost is logged beside the
        engine start and kept in the results (``startup_check`` in the model info)."""
        from lape_harness.plugin.vllm_startup_check import run_startup_check

        if isinstance(self.model.llm, DataParallelLLM):
            reports = [self._check_engine(number, run_startup_check) for number in range(self.model.llm.engines)]
            report = {**reports[0], "engines": len(reports), "seconds": round(sum(r["seconds"] for r in reports), 3)}
        else:
            report = run_startup_check(self)
        self.startup_check = {**report, "engine_start_seconds": round(self._engine_start_seconds, 1)}
        logger.info("vllm-steered: start-up check %.1f s, engine start %.1f s", self.startup_check["seconds"],
                    self._engine_start_seconds)

    def _check_engine(self, number: int, check) -> dict:
        """``check(self)`` on data-parallel engine ``number`` alone; its errors name the engine."""
        with self.model.llm.focus(number):
            try:
                return check(self)
            except HookNeverFiredError as error:
                raise HookNeverFiredError(f"{error} (on data-parallel engine {number})") from None

    def get_model_info(self) -> dict:
        return {**super().get_model_info(), "startup_check": getattr(self, "startup_check", None)}


class MergingLLM:
    """vLLM's ``LLM`` (as ``llm``, every attribute passed through) whose ``generate`` calls made
    inside a side-by-side job (:mod:`lape_harness.plugin.side_by_side`) wait to be merged into one."""

    def __init__(self, llm) -> None:
        self.llm = llm

    def __getattr__(self, name: str):
        return getattr(self.llm, name)

    def generate(self, prompts, sampling_params=None, **options):
        if current_job() is None:
            return self.llm.generate(prompts, sampling_params, **options)
        return engine_call((prompts, sampling_params, options))


def plan_edits(plan: SteeringPlan, neuron_set, layers: int, width: int) -> dict[int, tuple[list, list, list]]:
    """Per layer ``(neuron indices, scale, shift)`` of ``plan``: what the workers' ``lape_write_plan`` takes."""
    if not plan:
        return {}
    return {layer: (edit.index.tolist(), edit.scale.tolist(), edit.shift.tolist())
            for layer, edit in compile_plan(plan, neuron_set, layers, width).items()}


def config_dict(value) -> dict:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    raise InputError(f"additional_config={value!r} is not a JSON object; e.g. additional_config='{{\"key\": 1}}'")


#: engine options that re-lay a batch's tokens, so a token could read another request's plan slot
RELAYING = {"enable_dbo": "dual-batch overlap", "kv_sharing_fast_prefill": "KV-sharing fast prefill (Gemma-3n)",
            "prefill_context_parallel_size": "prefill context parallel"}
#: engine options that start speculative decoding
SPECULATIVE = ("speculative_config", "spec_method", "spec_model", "spec_tokens")


def refuse_unsteerable_features(kwargs: dict, plan_slots: int | str) -> None:
    """Speculative decoding always; token re-laying features when plans share a batch (plan_slots > 1)."""
    speculative = [key for key in SPECULATIVE if kwargs.get(key) not in (None, False, "", 0, {}, "None")]
    if speculative:
        raise InputError(f"vllm-steered cannot steer with speculative decoding ({', '.join(speculative)}): the draft "
                         "model's MLPs would be steered too and verification re-lays tokens across requests; remove it")
    def switched_on(key: str) -> bool:
        value = kwargs.get(key)
        if value is None:
            return False
        return _whole_number(key, value) > 1 if key.endswith("_size") else str(value).strip().lower() in ("true", "1")

    relaying = [name for key, name in RELAYING.items() if switched_on(key)]
    if relaying and plan_slots != 1:
        raise InputError(f"vllm-steered cannot keep plans apart with {', '.join(relaying)}: it re-lays a batch's "
                         "tokens, so a token could read another request's plan; pass plan_slots=1 (plans then run "
                         "one after another) or turn it off")


def _whole_number(name: str, value) -> int:
    """A whole-number model argument (lm-eval passes ``8`` as an int, ``abc`` as text)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}={value!r} is not a whole number; e.g. {name}=1") from None


def _slots(value) -> int | str:
    if str(value).strip().lower() == "auto":
        return "auto"
    try:
        slots = int(value)
    except (TypeError, ValueError):
        slots = 0
    if slots < 1:
        raise InputError(f"plan_slots={value!r}: give a whole number of plan slots, at least 1, or auto (the default; "
                         "1 runs steer=auto's plans one after another)")
    return slots
