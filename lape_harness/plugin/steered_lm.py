"""What every steered lm-eval model shares, whatever its engine: the steering ``model_args``
parsed and checked once (:class:`SteeringArgs`) before any weights load, one constructor sequence,
the plan each request runs under (``steer=auto`` groups requests by their task's plan), the
steering signature in the results JSON, and one request-cache namespace per plan.

An engine (``hf-steered`` in :mod:`lape_harness.plugin.hf_steered`, ``vllm-steered`` in
:mod:`lape_harness.plugin.vllm_steered`) mixes :class:`SteeredLM` in before lm-eval's model class
and supplies only what differs: :meth:`~SteeredLM._engine_kwargs` (its own refusals and settings),
:meth:`~SteeredLM._engine_started`, :meth:`~SteeredLM._install_neurons` and
:meth:`~SteeredLM._install_plan` (how its forward passes follow a plan), and the scopes it supports.

Example:
    >>> class MySteeredLM(SteeredLM, HFLM):                       # doctest: +SKIP
    ...     def _install_plan(self, plan): self.hooks.use(plan)
    >>> lm.set_plan("-de+2*fr")                                  # doctest: +SKIP
    >>> lm.steering_signature()["signature"]                     # doctest: +SKIP
    'lape-steer|plan:-de+2*fr|methods:deactivate,additive|scope:all|steer_bos:true|neurons:lape-top1.safetensors@3f2a9c1e0b7d|v:0.1.0'
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lape_harness import __version__
from lape_harness.embedded import resolve_pretrained
from lape_harness.errors import InputError
from lape_harness.neurons import NeuronSet
from lape_harness.plugin.error_display import plain_errors
from lape_harness.plugin.request_cache import key_by_plan, plan_namespace
from lape_harness.steering.plan import NO_STEERING, SCOPES, AutoPlan, SteeringPlan
from lape_harness.steering.spec import check_scope, parse_steer, require_neurons

logger = logging.getLogger(__name__)


def default_task_languages(task_name: str | None):
    """The :class:`~lape_harness.task_support.task_languages.TaskLanguages` of an lm-eval task (its config's
    ``metadata.languages``, else its name), or None."""
    from lape_harness.task_support.task_languages import task_languages

    return task_languages(task_name) if task_name else None


@dataclasses.dataclass(frozen=True)
class SteeringArgs:
    """The steering ``model_args`` of a steered model, parsed and checked once, before any weights load.

    >>> args = SteeringArgs.parse(steer="none", steer_scope="generated", steer_bos="false")
    >>> str(args.spec), args.scope, args.steer_bos, args.neuron_set
    ('none', 'generated', False, None)
    >>> SteeringArgs.parse(steer="-de")
    Traceback (most recent call last):
    lape_harness.errors.InputError: steer=-de needs a neuron set: add neurons=path/to/lape-top1.safetensors ...
    """

    spec: SteeringPlan | AutoPlan
    scope: str = "all"
    steer_bos: bool = True
    allow_other_model: bool = False
    neuron_set: NeuronSet | None = None
    neurons_path: str | None = None
    neurons_hash: str | None = None

    @classmethod
    def parse(cls, neurons: Any = None, steer: Any = "none", steer_scope: Any = "all", steer_bos: Any = True,
              allow_other_model: Any = False, *, scopes: tuple[str, ...] = SCOPES,
              steer_bos_false: bool = True) -> SteeringArgs:
        """Every problem an :class:`InputError`: the spec, the scope (among the engine's ``scopes``),
        ``steer_bos`` (``false`` only where ``steer_bos_false``), ``allow_other_model``, the neuron file
        and the plan's languages in it."""
        bos = _flag("steer_bos", steer_bos)
        if not bos and not steer_bos_false:
            raise InputError("steer_bos=false is not supported by this engine (it steers every position); "
                             "use hf-steered for steer_bos=false")
        if not isinstance(allow_other_model, bool):
            raise InputError(f"allow_other_model={allow_other_model!r}: write allow_other_model=True or False")
        spec = parse_steer(steer)
        scope = check_scope(steer_scope, scopes)
        require_neurons(spec, neurons)
        args = cls(spec, scope, bos, allow_other_model)
        return args.with_neurons(neurons) if neurons is not None else args

    def with_neurons(self, path: Any) -> SteeringArgs:
        """These arguments with the neuron set at ``path`` (loaded; the plan's languages checked in it)."""
        neuron_set = NeuronSet.load(path)
        if isinstance(self.spec, SteeringPlan):
            self.spec.check_languages(neuron_set)
        return dataclasses.replace(self, neuron_set=neuron_set, neurons_path=str(path),
                                   neurons_hash=neuron_set.content_hash())


class SteeredLM:
    """The engine-neutral half of a steered lm-eval model (see the module docstring).

    The constructor runs one sequence for every engine: parse the steering arguments; check the
    neuron set against the model's configuration (before the weights load); the engine's own
    keyword arguments (:meth:`_engine_kwargs`); start the engine (lm-eval's constructor);
    :meth:`_engine_started`; the identity check from the loaded model where the configuration could
    not be read before; :meth:`_install_neurons`; :meth:`_check_steering_takes_effect`;
    :meth:`set_plan`.
    """

    #: task name -> TaskLanguages | None, used by ``steer=auto`` (replaceable, e.g. in tests).
    task_languages: Callable[[str | None], Any] = staticmethod(default_task_languages)
    #: the name lm-eval knows this model by (``--model``).
    model_name: str = ""
    #: the ``steer_scope`` values this engine can honour.
    supported_scopes: tuple[str, ...] = SCOPES
    #: whether this engine can leave the start token's positions unedited (``steer_bos=false``).
    supports_steer_bos_false: bool = True

    steering_args: SteeringArgs

    @plain_errors
    def __init__(self, pretrained, neurons: str | None = None, steer: Any = "none", steer_scope: str = "all",
                 allow_other_model: bool = False, steer_bos: Any = True, **kwargs) -> None:
        self.steering_args = SteeringArgs.parse(neurons, steer, steer_scope, steer_bos, allow_other_model,
                                                scopes=self.supported_scopes,
                                                steer_bos_false=self.supports_steer_bos_false)
        self.plans_by_task: dict[str, str] = {}
        self._warned_tasks: set[str | None] = set()
        self.identity = self._identity_before_load(pretrained, kwargs)
        kwargs = self._engine_kwargs(kwargs)
        if isinstance(pretrained, str):
            pretrained = resolve_pretrained(pretrained)
        super().__init__(pretrained=pretrained, **kwargs)
        self._engine_started(pretrained)
        if self.identity is None:  # a model object, or a configuration that could not be read before loading
            self.identity = self._identity_after_load()
            if self.neuron_set is not None:
                self.neuron_set.check_model(self.identity, self.steering_args.allow_other_model, self.neurons_path)
        self._install_neurons(self.neuron_set)
        self._check_steering_takes_effect()
        self.set_plan(self.steering_args.spec)

    # ---------------------------------------------------------------- what the steering arguments hold

    @property
    def neuron_set(self) -> NeuronSet | None:
        return self.steering_args.neuron_set

    @property
    def neurons_path(self) -> str | None:
        return self.steering_args.neurons_path

    @property
    def neurons_hash(self) -> str | None:
        return self.steering_args.neurons_hash

    @property
    def steer_scope(self) -> str:
        return self.steering_args.scope

    @property
    def steer_bos(self) -> bool:
        return self.steering_args.steer_bos

    # ---------------------------------------------------------------- the constructor's steps

    def _identity_before_load(self, pretrained: Any, model_args: dict[str, Any]) -> dict[str, Any] | None:
        """The identity of ``pretrained`` read from its configuration, checked against the neuron set's
        recorded model (an error for another model unless ``allow_other_model``); None where it
        could not be read (a model object, a configuration only the engine can read)."""
        if not isinstance(pretrained, str):
            return None
        from lape_harness.identity import pretrained_identity

        options = {key: model_args[key] for key in ("revision", "trust_remote_code") if model_args.get(key) is not None}
        identity = pretrained_identity(pretrained, **options)
        if identity is not None and self.neuron_set is not None:
            self.neuron_set.check_model(identity, self.steering_args.allow_other_model, self.neurons_path)
        return identity

    def _identity_after_load(self) -> dict[str, Any]:
        """The loaded model's identity (its configuration's name and hash)."""
        from lape_harness.identity import config_hash

        config = self._loaded_config()
        return {"model_id": str(getattr(config, "_name_or_path", "") or ""), "config_hash": config_hash(config)}

    def _loaded_config(self):
        """The loaded model's Hugging Face configuration."""
        return self.config

    def _engine_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The engine's own checks and settings of the remaining ``model_args``, before it starts."""
        return kwargs

    def _engine_started(self, pretrained: Any) -> None:
        """Set-up once lm-eval's constructor has loaded the weights (before any neuron set is installed)."""

    def _install_neurons(self, neuron_set: NeuronSet | None) -> None:
        """Check ``neuron_set`` against the loaded model and make the engine ready to steer with it."""
        raise NotImplementedError

    def _install_plan(self, plan: SteeringPlan) -> None:
        """Make the engine's forward passes follow ``plan`` (``NO_STEERING``: unsteered)."""
        raise NotImplementedError

    def _check_steering_takes_effect(self) -> None:
        """An engine whose steering could silently not apply proves here that it does."""

    # ---------------------------------------------------------------- plans

    @plain_errors
    def set_neurons(self, path: str) -> None:
        """Steer with another neuron set of the same model (e.g. another top rate) without reloading
        weights; the plan is reset to ``none``.

        >>> lm.set_neurons("neuron_cache/gemma-3-270m/lape-top3.safetensors")   # doctest: +SKIP
        """
        args = dataclasses.replace(self.steering_args, spec=NO_STEERING).with_neurons(path)
        if self.identity is not None:
            args.neuron_set.check_model(self.identity, args.allow_other_model, str(path))
        self._install_neurons(args.neuron_set)
        self.steering_args = args
        self.set_plan("none")

    @plain_errors
    def set_plan(self, spec: Any) -> None:
        """Switch to another ``steer=`` spec without reloading the model (plan text, plan object or None)."""
        plan = parse_steer(spec)
        require_neurons(plan, self.neuron_set)
        self._spec = plan
        self.plans_by_task = {}
        self._warned_tasks = set()
        self._install_plan(plan if isinstance(plan, SteeringPlan) else NO_STEERING)

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
                self._install_plan(plan)
                answers.append(run(group))
        finally:
            self._install_plan(NO_STEERING)
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
        self._warn_lcb_prompt_forms(requests)
        return self.run_by_plan(lambda batch: super(SteeredLM, self).generate_until(batch, disable_tqdm=disable_tqdm),
                                requests)

    def _warn_lcb_prompt_forms(self, requests) -> None:
        """Warn once per LCB task whose prompt form does not fit the run (:mod:`lape_harness.plugin.lcb_prompt_check`)."""
        from lape_harness.plugin.lcb_prompt_check import prompt_form_warnings

        tokenizer = getattr(self, "tokenizer", None)
        has_template = None if tokenizer is None else bool(getattr(tokenizer, "chat_template", None))
        for task, message in prompt_form_warnings(requests, has_template).items():
            self._warn_once(f"{task} (prompt form)", message)

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
        (see :mod:`lape_harness.plugin.request_cache`)."""
        key_by_plan(self, cache_hook, sys._getframe(1), self.group_by_plan, self.cache_namespace)
        super().set_cache_hook(cache_hook)


def _flag(name: str, value: Any) -> bool:
    """A boolean model argument: a bool, or true/false (lm-eval converts those) in any case."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    raise InputError(f"{name}={value!r} is not true or false; e.g. {name}=false")
