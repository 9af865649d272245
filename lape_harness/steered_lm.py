"""What every steered lm-eval model shares, whatever its engine: the ``neurons=``, ``steer=`` and
``steer_scope=`` arguments checked before any weights load, the plan each request runs under
(``steer=auto`` groups requests by their task's plan), the steering signature in the results
JSON, and one request-cache namespace per plan.

An engine (``hf-steered`` in :mod:`lape_harness.model`, ``vllm-steered`` in
:mod:`lape_harness.vllm_model`) mixes :class:`SteeredLM` in before lm-eval's model class and
implements :meth:`SteeredLM.apply_plan`, which makes its forward passes follow a plan.

Example:
    >>> class MySteeredLM(SteeredLM, HFLM):                       # doctest: +SKIP
    ...     def apply_plan(self, plan): self.hooks.use(plan)
    >>> lm.set_plan("-de+2*fr")                                  # doctest: +SKIP
    >>> lm.steering_signature()["signature"]                     # doctest: +SKIP
    'lape-steer|plan:-de+2*fr|methods:deactivate,additive|scope:all|neurons:lape-top1.safetensors@3f2a9c1e0b7d|v:0.1.0'
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Callable

from lape_harness import __version__
from lape_harness.error_display import plain_errors
from lape_harness.errors import InputError
from lape_harness.neurons import NeuronSet
from lape_harness.request_cache import key_by_plan, plan_namespace
from lape_harness.steering.plan import NO_STEERING, SCOPES, SteeringPlan
from lape_harness.steering.spec import parse_steer

logger = logging.getLogger(__name__)


def default_task_languages(task_name: str | None):
    """The :class:`~lape_harness.task_languages.TaskLanguages` of an lm-eval task (its config's
    ``metadata.languages``, else its name), or None."""
    from lape_harness.task_languages import task_languages

    return task_languages(task_name) if task_name else None


class SteeredLM:
    """The engine-neutral half of a steered lm-eval model (see the module docstring).

    Subclasses call :meth:`check_steering_args` before loading weights and :meth:`set_plan`
    once the engine can steer, and implement :meth:`apply_plan` and :meth:`use_neurons`.
    """

    #: task name -> TaskLanguages | None, used by ``steer=auto`` (replaceable, e.g. in tests).
    task_languages: Callable[[str | None], Any] = staticmethod(default_task_languages)
    #: the name lm-eval knows this model by (``--model``).
    model_name: str = ""
    #: the ``steer_scope`` values this engine can honour.
    supported_scopes: tuple[str, ...] = SCOPES
    #: whether this engine can leave the start token's positions unedited (``steer_bos=false``).
    supports_steer_bos_false: bool = True

    neuron_set: NeuronSet | None
    neurons_path: str | None
    neurons_hash: str | None
    steer_scope: str

    def check_steering_args(self, neurons: str | None, steer: Any, steer_scope: str, allow_other_model: bool = False,
                            steer_bos: Any = True):
        """Parse ``steer=``, check ``steer_scope=`` and ``steer_bos=`` and load the neuron file: every
        problem an :class:`InputError` before any weights load. Returns the parsed spec."""
        self.steer_bos = _flag("steer_bos", steer_bos)
        if not self.steer_bos and not self.supports_steer_bos_false:
            raise InputError("steer_bos=false is not supported by this engine (it steers every position); "
                             "use hf-steered for steer_bos=false")
        if not isinstance(allow_other_model, bool):
            raise InputError(f"allow_other_model={allow_other_model!r}: write allow_other_model=True or False")
        self.allow_other_model = allow_other_model
        self.identity: dict[str, Any] | None = None
        spec = parse_steer(steer)
        if steer_scope not in SCOPES:
            raise InputError(f"steer_scope={steer_scope!r} is not one of {', '.join(SCOPES)}; e.g. steer_scope=generated")
        if steer_scope not in self.supported_scopes:
            raise InputError(f"steer_scope={steer_scope} is not supported by this engine (it steers "
                             f"{' or '.join(self.supported_scopes)}); use hf-steered for steer_scope={steer_scope}")
        self.steer_scope = steer_scope
        self.neuron_set = _load_neurons(neurons, spec)
        self.neurons_path = None if neurons is None else str(neurons)
        self.neurons_hash = None if self.neuron_set is None else self.neuron_set.content_hash()
        self.plans_by_task: dict[str, str] = {}
        self._warned_tasks: set[str | None] = set()
        return spec

    def check_neurons_model(self, pretrained: str, model_args: dict[str, Any]) -> bool:
        """Before the weights load: the neuron set's recorded model against ``pretrained``'s
        configuration (an error for another model unless ``allow_other_model``). Returns whether
        the configuration could be read (else the engine checks after loading, where it can)."""
        from lape_harness.identity import pretrained_identity

        options = {key: model_args[key] for key in ("revision", "trust_remote_code") if model_args.get(key) is not None}
        self.identity = pretrained_identity(pretrained, **options)
        if self.identity is not None and self.neuron_set is not None:
            self.neuron_set.check_model(self.identity, self.allow_other_model, self.neurons_path)
        return self.identity is not None

    # ---------------------------------------------------------------- plans

    def apply_plan(self, plan: SteeringPlan) -> None:
        """Make the engine's forward passes follow ``plan`` (``NO_STEERING``: unsteered)."""
        raise NotImplementedError

    def use_neurons(self, neuron_set: NeuronSet) -> None:
        """Check ``neuron_set`` against the loaded model and make the engine ready to steer with it."""
        raise NotImplementedError

    @plain_errors
    def set_neurons(self, path: str) -> None:
        """Steer with another neuron set of the same model (e.g. another top rate) without reloading
        weights; the plan is reset to ``none``.

        >>> lm.set_neurons("neuron_cache/gemma-3-270m/lape-top3.safetensors")   # doctest: +SKIP
        """
        neuron_set = NeuronSet.load(path)
        if self.identity is not None:
            neuron_set.check_model(self.identity, self.allow_other_model, str(path))
        self.use_neurons(neuron_set)
        self.neuron_set, self.neurons_path, self.neurons_hash = neuron_set, str(path), neuron_set.content_hash()
        self.set_plan("none")

    @plain_errors
    def set_plan(self, spec: Any) -> None:
        """Switch to another ``steer=`` spec without reloading the model (plan text, plan object or None)."""
        plan = parse_steer(spec)
        if plan and self.neuron_set is None:
            raise InputError(f"steer={plan} needs a neuron set: add neurons=path/to/lape-top1.safetensors")
        self._spec = plan
        self.plans_by_task = {}
        self._warned_tasks = set()
        self.apply_plan(plan if isinstance(plan, SteeringPlan) else NO_STEERING)

    def plan_for(self, task_name: str | None) -> SteeringPlan:
        """The plan a request of ``task_name`` runs under (the fixed plan, or auto's plan for the task)."""
        if isinstance(self._spec, SteeringPlan):
            return self._spec
        languages = self.task_languages(task_name)
        if languages is None:
            self._warn_once(task_name, f"steer=auto: the language of task {task_name!r} is unknown; "
                                       "it runs WITHOUT steering (declare `metadata: languages: {target: <code>}` "
                                       "in its YAML, or name the plan explicitly with steer=...)")
            return NO_STEERING
        plan = self._spec.for_task(languages)
        neurons = self.neuron_set.neurons
        missing = [language for language in plan.languages if len(neurons.get(language, ())) == 0]
        if missing:
            with_neurons = ", ".join(language for language in self.neuron_set.languages if len(neurons[language]))
            self._warn_once(task_name, f"steer=auto: task {task_name!r} needs languages {missing} that the neuron "
                                       f"set lacks or has no neurons for (it has {with_neurons}); "
                                       "those terms are left out")
            plan = SteeringPlan(tuple(term for term in plan.terms if term.language not in missing))
        return plan

    def _warn_once(self, task_name: str | None, message: str) -> None:
        if task_name not in self._warned_tasks:
            self._warned_tasks.add(task_name)
            logger.warning(message)

    def group_by_plan(self, requests) -> list[tuple[SteeringPlan, list[int]]]:
        """``[(plan, positions of the requests under it), ...]``; records each task's plan."""
        groups: dict[SteeringPlan, list[int]] = {}
        for position, request in enumerate(requests):
            plan = self.plan_for(request.task_name)
            if request.task_name is not None:
                self.plans_by_task[request.task_name] = str(plan)
            groups.setdefault(plan, []).append(position)
        return list(groups.items())

    def run_by_plan(self, run: Callable[[list], list], requests: list) -> list:
        """Run ``requests`` under their plans (one group unless ``steer=auto``), results in request order."""
        if isinstance(self._spec, SteeringPlan):
            self.group_by_plan(requests)  # records the plan per task
            return run(requests)
        groups = self.group_by_plan(requests)
        results: list[Any] = [None] * len(requests)
        answers = self.run_plan_groups(run, [(plan, [requests[i] for i in positions]) for plan, positions in groups])
        for (_plan, positions), group_answers in zip(groups, answers, strict=True):
            for position, result in zip(positions, group_answers, strict=True):
                results[position] = result
        return results

    def run_plan_groups(self, run: Callable[[list], list], groups: list[tuple[SteeringPlan, list]]) -> list[list]:
        """``run`` each group's requests under its plan; one list of results per group. This
        engine-neutral version runs the groups one after another (an engine that can mix plans in
        one batch overrides it)."""
        answers = []
        try:
            for plan, group in groups:
                self.apply_plan(plan)
                answers.append(run(group))
        finally:
            self.apply_plan(NO_STEERING)
        return answers

    # ---------------------------------------------------------------- lm-eval entry points

    @plain_errors
    def loglikelihood(self, requests, disable_tqdm: bool = False):
        return self.run_by_plan(lambda batch: super(SteeredLM, self).loglikelihood(batch, disable_tqdm=disable_tqdm),
                                requests)

    @plain_errors
    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        return self.run_by_plan(
            lambda batch: super(SteeredLM, self).loglikelihood_rolling(batch, disable_tqdm=disable_tqdm), requests)

    @plain_errors
    def generate_until(self, requests, disable_tqdm: bool = False):
        return self.run_by_plan(lambda batch: super(SteeredLM, self).generate_until(batch, disable_tqdm=disable_tqdm),
                                requests)

    # ---------------------------------------------------------------- provenance and cache

    def steering_signature(self) -> dict[str, Any]:
        """What steered this run: plan as given and normalized, methods, terms with strengths, scope,
        neuron file and its content hash, plus a sacrebleu-style one-line ``signature``."""
        spec = self._spec
        template = spec if isinstance(spec, SteeringPlan) else spec.template
        neurons = "none" if self.neurons_path is None else f"{Path(self.neurons_path).name}@{self.neurons_hash[:12]}"
        signature = "|".join([
            "lape-steer", f"plan:{spec}", f"methods:{','.join(spec.methods) or 'none'}",
            f"scope:{self.steer_scope}", f"steer_bos:{str(self.steer_bos).lower()}", f"neurons:{neurons}",
            f"v:{__version__}",
        ])
        return {
            "plan": str(spec),
            "methods": spec.methods,
            "terms": [] if template is None else [term.describe() for term in template.terms],
            "scope": self.steer_scope,
            "steer_bos": self.steer_bos,
            "neurons": self.neurons_path,
            "neurons_sha256": self.neurons_hash,
            "plans_by_task": dict(sorted(self.plans_by_task.items())),
            "signature": signature,
        }

    def get_model_info(self) -> dict:
        """lm-eval merges this into the results' ``config``: the engine's info plus ``steering``."""
        engine_info = getattr(super(), "get_model_info", None)
        return {**(engine_info() if engine_info else {}), "steering": self.steering_signature()}

    def cache_namespace(self, plan: SteeringPlan) -> str:
        """Prefix of this plan's keys in lm-eval's request cache: plan, scope (with steer_bos=false) and
        neuron file identity."""
        scope = self.steer_scope if self.steer_bos else f"{self.steer_scope}|steer_bos:false"
        return plan_namespace(plan, scope, self.neurons_hash)

    def set_cache_hook(self, cache_hook) -> None:
        """When lm-eval wraps this model in its request cache (``--use_cache``), key the cache by plan
        (see :mod:`lape_harness.request_cache`)."""
        key_by_plan(self, cache_hook, sys._getframe(1), self.group_by_plan, self.cache_namespace)
        super().set_cache_hook(cache_hook)


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
