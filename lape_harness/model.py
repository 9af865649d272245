"""``hf-steered``: lm-eval's ``hf`` model with language arithmetics on the MLP neurons.

Every ``hf`` argument keeps working; four more select the steering::

    lm_eval --model hf-steered \\
        --model_args pretrained=meta-llama/Llama-3.1-8B,neurons=neuron_cache/llama-3.1-8b/lape-top1.safetensors,steer=-en+de \\
        --tasks belebele_deu_Latn,xnli_de

* ``neurons=``: a neuron-set file from ``lape-harness identify``;
* ``steer=``: a plan in the grammar of :mod:`lape_harness.steering` (``none``, ``auto``, ``-de+fr``, ...);
* ``steer_scope=all|prompt|generated``: which token positions are steered;
* ``steer_bos=true|false``: whether the start token's positions are steered too (default true,
  as the paper's code does; false leaves them as profiling does, which never counts them).

The spec and the neuron file are checked before any weights load; the file's layer count and
width are checked against the loaded model. Steering applies in ``loglikelihood``,
``loglikelihood_rolling``, ``generate_until`` (KV cache on) and batch-size auto-detection.
``steer=auto`` steers each request by its task's languages, grouping requests by plan.
The results JSON gets a ``steering`` entry (see :meth:`HFSteeredLM.steering_signature`), and
lm-eval's request cache (``--use_cache``) keeps one plan's answers apart from another's
(:mod:`lape_harness.request_cache`).

Example:
    >>> lm = HFSteeredLM(pretrained="lape:gemma-3-270m", neurons="lape-top1.safetensors", steer="de")  # doctest: +SKIP
    >>> lm.set_plan("-de+2*fr")            # no reload: swaps per-layer tensors       # doctest: +SKIP
    >>> lm.steering_signature()["signature"]                                           # doctest: +SKIP
    'lape-steer|plan:-de+2*fr|methods:deactivate,additive|scope:all|steer_bos:true|neurons:lape-top1.safetensors@3f2a9c1e0b7d|v:0.1.0'
"""

from __future__ import annotations

import logging
import sys
from functools import partial
from pathlib import Path
from typing import Any, Callable

from lm_eval.models.huggingface import HFLM

from lape_harness import __version__
from lape_harness.embedded import resolve_pretrained
from lape_harness.errors import InputError
from lape_harness.neurons import NeuronSet
from lape_harness.request_cache import key_by_plan, plan_namespace
from lape_harness.steering import NO_STEERING, SCOPES, AutoPlan, SteeringHooks, SteeringPlan, parse_steer

logger = logging.getLogger(__name__)


def pick_device(device: str | None = None) -> str:
    """``device`` when given, else ``cuda`` where there is one and ``cpu`` otherwise
    (lm-eval's ``hf`` alone asks for ``cuda`` even on a machine without it).

    >>> pick_device("cuda:1"), pick_device() in ("cuda", "cpu")
    ('cuda:1', True)
    """
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def default_task_languages(task_name: str | None):
    """The :class:`~lape_harness.task_languages.TaskLanguages` of an lm-eval task name, or None."""
    from lape_harness.task_languages import task_languages

    return task_languages(task_name) if task_name else None


class HFSteeredLM(HFLM):
    """``HFLM`` whose forward passes steer language neurons by a plan (see module docstring)."""

    #: task name -> TaskLanguages | None, used by ``steer=auto`` (replaceable, e.g. in tests).
    task_languages: Callable[[str | None], Any] = staticmethod(default_task_languages)

    def __init__(self, pretrained, neurons: str | None = None, steer: Any = "none", steer_scope: str = "all",
                 steer_bos: Any = True, **kwargs) -> None:
        spec = parse_steer(steer)
        if steer_scope not in SCOPES:
            raise InputError(f"steer_scope={steer_scope!r} is not one of {', '.join(SCOPES)}; e.g. steer_scope=generated")
        self.steer_bos = _flag("steer_bos", steer_bos)
        neuron_set = self._load_neurons(neurons, spec)
        if isinstance(pretrained, str):
            pretrained = resolve_pretrained(pretrained)
        super().__init__(pretrained=pretrained, **kwargs)
        self._split_requests_across_cpu_processes()
        self.neurons_path = None if neurons is None else str(neurons)
        self.neurons_hash = None if neuron_set is None else neuron_set.content_hash()
        self.steering = SteeringHooks(self.model, neuron_set, scope=steer_scope, start_tokens=self._start_tokens())
        self.plans_by_task: dict[str, str] = {}
        self._warned_tasks: set[str | None] = set()
        self.set_plan(spec)

    def _split_requests_across_cpu_processes(self) -> None:
        """Data parallel on CPU as on GPUs: ``HFLM`` splits requests across launched processes only with >1 GPU.

        ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m lm_eval --model hf-steered ...``
        """
        accelerator = getattr(self, "accelerator", None)
        if accelerator is not None and accelerator.num_processes > 1 and self.world_size == 1 and self.device.type == "cpu":
            self._rank, self._world_size = accelerator.process_index, accelerator.num_processes

    def _start_tokens(self) -> tuple[int, ...]:
        """The token ids left unedited under ``steer_bos=false``: lm-eval's prefix token (BOS, or EOS
        for a model without one) and the special tokens the tokenizer puts before text (what
        profiling never counts)."""
        if self.steer_bos:
            return ()
        from lape_harness.corpora import special_prefix

        return tuple(dict.fromkeys([self.prefix_token_id, *special_prefix(self.tokenizer)]))

    # ---------------------------------------------------------------- plans

    def set_neurons(self, path: str) -> None:
        """Steer with another neuron set of the same model (e.g. another top rate) without reloading
        weights; the plan is reset to ``none``.

        >>> lm.set_neurons("neuron_cache/gemma-3-270m/lape-top3.safetensors")   # doctest: +SKIP
        """
        neuron_set = NeuronSet.load(path)
        neuron_set.validate_for(self.steering.num_layers, self.steering.width)
        scope, start_tokens = self.steering.scope, self.steering.start_tokens
        self.steering.remove()
        self.steering = SteeringHooks(self.model, neuron_set, scope=scope, start_tokens=start_tokens)
        self.neurons_path, self.neurons_hash = str(path), neuron_set.content_hash()
        self.set_plan("none")

    def set_plan(self, spec: Any) -> None:
        """Switch to another ``steer=`` spec without reloading the model (plan text, plan object or None)."""
        plan = parse_steer(spec)
        if plan and self.steering.neurons is None:
            raise InputError(f"steer={plan} needs a neuron set: add neurons=path/to/lape-top1.safetensors")
        self._spec = plan
        self.plans_by_task = {}
        self._warned_tasks = set()
        self.steering.use(plan if isinstance(plan, SteeringPlan) else NO_STEERING)

    def plan_for(self, task_name: str | None) -> SteeringPlan:
        """The plan a request of ``task_name`` runs under (the fixed plan, or auto's plan for the task)."""
        if isinstance(self._spec, SteeringPlan):
            return self._spec
        languages = self.task_languages(task_name)
        if languages is None:
            self._warn_once(task_name, f"steer=auto: the language of task {task_name!r} is unknown; "
                                       "it runs WITHOUT steering (name the plan explicitly with steer=...)")
            return NO_STEERING
        plan = self._spec.for_task(languages)
        missing = [language for language in plan.languages if language not in self.steering.neurons.neurons]
        if missing:
            self._warn_once(task_name, f"steer=auto: task {task_name!r} needs languages {missing} that the neuron "
                                       f"set lacks (it has {', '.join(self.steering.neurons.languages)}); "
                                       "those terms are left out")
            plan = SteeringPlan(tuple(term for term in plan.terms if term.language not in missing))
        return plan

    def _warn_once(self, task_name: str | None, message: str) -> None:
        if task_name not in self._warned_tasks:
            self._warned_tasks.add(task_name)
            logger.warning(message)

    def _group_by_plan(self, requests) -> list[tuple[SteeringPlan, list[int]]]:
        groups: dict[SteeringPlan, list[int]] = {}
        for position, request in enumerate(requests):
            plan = self.plan_for(request.task_name)
            if request.task_name is not None:
                self.plans_by_task[request.task_name] = str(plan)
            groups.setdefault(plan, []).append(position)
        return list(groups.items())

    def _run_by_plan(self, run: Callable[[list], list], requests: list) -> list:
        """Run ``requests`` one plan at a time (one group unless ``steer=auto``), results in request order."""
        if isinstance(self._spec, SteeringPlan):
            self._group_by_plan(requests)  # records the plan per task
            return run(requests)
        results: list[Any] = [None] * len(requests)
        try:
            for plan, positions in self._group_by_plan(requests):
                self.steering.use(plan)
                for position, result in zip(positions, run([requests[i] for i in positions]), strict=True):
                    results[position] = result
        finally:
            self.steering.use(NO_STEERING)
        return results

    # ---------------------------------------------------------------- lm-eval entry points

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        return self._run_by_plan(partial(HFLM.loglikelihood, self, disable_tqdm=disable_tqdm), requests)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        return self._run_by_plan(partial(HFLM.loglikelihood_rolling, self, disable_tqdm=disable_tqdm), requests)

    def generate_until(self, requests, disable_tqdm: bool = False):
        return self._run_by_plan(partial(HFLM.generate_until, self, disable_tqdm=disable_tqdm), requests)

    def _model_call(self, inps, attn_mask=None, labels=None):
        with self.steering.active(generating=False):
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)

    def _model_generate(self, context, max_length, stop, **generation_kwargs):
        with self.steering.active(generating=True):
            return super()._model_generate(context, max_length, stop, **generation_kwargs)

    # ---------------------------------------------------------------- provenance and cache

    def steering_signature(self) -> dict[str, Any]:
        """What steered this run: plan as given and normalized, methods, terms with strengths, scope,
        neuron file and its content hash, plus a sacrebleu-style one-line ``signature``."""
        spec = self._spec
        template = spec if isinstance(spec, SteeringPlan) else spec.template
        neurons = "none" if self.neurons_path is None else f"{Path(self.neurons_path).name}@{self.neurons_hash[:12]}"
        signature = "|".join([
            "lape-steer", f"plan:{spec}", f"methods:{','.join(spec.methods) or 'none'}",
            f"scope:{self.steering.scope}", f"steer_bos:{str(self.steer_bos).lower()}", f"neurons:{neurons}",
            f"v:{__version__}",
        ])
        return {
            "plan": str(spec),
            "methods": spec.methods,
            "terms": [] if template is None else [term.describe() for term in template.terms],
            "scope": self.steering.scope,
            "steer_bos": self.steer_bos,
            "neurons": self.neurons_path,
            "neurons_sha256": self.neurons_hash,
            "plans_by_task": dict(sorted(self.plans_by_task.items())),
            "signature": signature,
        }

    def get_model_info(self) -> dict:
        """lm-eval merges this into the results' ``config``: the ``hf`` info plus ``steering``."""
        return {**super().get_model_info(), "steering": self.steering_signature()}

    def cache_namespace(self, plan: SteeringPlan) -> str:
        """Prefix of this plan's keys in lm-eval's request cache: plan, scope (with steer_bos=false) and
        neuron file identity."""
        scope = self.steering.scope if self.steer_bos else f"{self.steering.scope}|steer_bos:false"
        return plan_namespace(plan, scope, self.neurons_hash)

    def set_cache_hook(self, cache_hook) -> None:
        """When lm-eval wraps this model in its request cache (``--use_cache``), key the cache by plan
        (see :mod:`lape_harness.request_cache`)."""
        key_by_plan(self, cache_hook, sys._getframe(1), self._group_by_plan, self.cache_namespace)
        super().set_cache_hook(cache_hook)

    @staticmethod
    def _load_neurons(neurons: str | None, spec) -> NeuronSet | None:
        if neurons is None:
            if spec:
                raise InputError(
                    f"steer={spec} needs a neuron set: add neurons=path/to/lape-top1.safetensors to --model_args "
                    "(made by `lape-harness identify`)"
                )
            return None
        neuron_set = NeuronSet.load(neurons)
        if isinstance(spec, SteeringPlan):
            spec.check_languages(neuron_set)
        return neuron_set


def _flag(name: str, value: Any) -> bool:
    """A boolean model argument: a bool, or true/false (lm-eval converts those) in any case."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    raise InputError(f"{name}={value!r} is not true or false; e.g. {name}=false")
