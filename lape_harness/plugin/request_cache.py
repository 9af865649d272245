"""lm-eval's request cache (``--use_cache``) with one namespace per steering plan.

lm-eval's ``CachingLM`` keys its entries by the request arguments only, so without help a
cached answer under one plan would be served to the same prompt under another. When
``CachingLM`` wraps an ``hf-steered`` or ``vllm-steered`` model (any
:class:`~lape_harness.plugin.steered_lm.SteeredLM`), its constructor calls the model's
``set_cache_hook``; :func:`key_by_plan` then puts the cache database behind a
:class:`PlanKeyedCache` view and makes ``CachingLM``'s request methods split requests by plan
(several plans under ``steer=auto``), so every lookup and every store uses the key prefix
``lape-steer:<namespace>:`` of its own plan, where the namespace (:func:`plan_namespace`)
hashes the plan, the scope and the neuron file's content hash.

Example:
    >>> plan_namespace("-de+fr", scope="all", neurons_hash=None)
    'f0763875666e648b'
    >>> store = PlanKeyedCache({})
    >>> store.namespace = plan_namespace("-de+fr", scope="all", neurons_hash=None)
    >>> store["request"] = 0.5
    >>> store.dbdict
    {'lape-steer:f0763875666e648b:request': 0.5}
    >>> caching = CachingLM(lm, "cache/run.db")   # calls lm.set_cache_hook -> key_by_plan  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import partial
from types import FrameType
from typing import Any

from lm_eval.api.model import CachingLM

from lape_harness.errors import LapeError

REQUEST_METHODS = ("loglikelihood", "loglikelihood_rolling", "generate_until")


class RequestCacheError(LapeError):
    """A request cache is in use that lape-harness cannot key by plan."""

#: ``requests -> [(plan, positions of the requests under that plan), ...]``
GroupByPlan = Callable[[list], list[tuple[Any, list[int]]]]


def plan_namespace(plan: Any, scope: str, neurons_hash: str | None) -> str:
    """The key prefix of one plan's entries: a hash of the plan text, the scope and the neuron file."""
    identity = f"{plan}|{scope}|{neurons_hash}"
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


class PlanKeyedCache:
    """A view of lm-eval's cache database whose keys are prefixed by the active plan's namespace."""

    def __init__(self, dbdict) -> None:
        self.dbdict = dbdict
        self.namespace = "none"

    def _key(self, key: str) -> str:
        return f"lape-steer:{self.namespace}:{key}"

    def __contains__(self, key: str) -> bool:
        return self._key(key) in self.dbdict

    def __getitem__(self, key: str):
        return self.dbdict[self._key(key)]

    def __setitem__(self, key: str, value) -> None:
        self.dbdict[self._key(key)] = value

    def __getattr__(self, name: str):
        return getattr(self.dbdict, name)


def key_by_plan(model: Any, cache_hook: Any, caller: FrameType | None, group_by_plan: GroupByPlan,
                namespace: Callable[[Any], str]) -> PlanKeyedCache | None:
    """Key the request cache of ``model`` by plan, if ``caller`` (the frame that called the model's
    ``set_cache_hook``) is the constructor of a ``CachingLM`` wrapping ``model``.

    ``group_by_plan`` splits requests by plan; ``namespace`` names a plan's key prefix. Returns
    the :class:`PlanKeyedCache` now between ``CachingLM`` (and ``cache_hook``) and the database,
    or None when the model is not being wrapped (a plain ``set_cache_hook`` call). A hook that
    carries a cache database from a caller that is not a ``CachingLM`` (a subclass or an lm-eval
    refactor that calls differently) is a :class:`RequestCacheError`: never a silently shared cache.
    """
    caching = _caching_lm(caller, model)
    if caching is None:
        if getattr(cache_hook, "dbdict", None) is not None:
            raise RequestCacheError(
                "lm-eval's request cache (--use_cache) is in use, but lape-harness cannot find the CachingLM "
                "that holds it, so one plan's cached answers could be served to another: run without --use_cache "
                "(or with a cache folder per plan) and report your lm-eval version"
            )
        return None
    store = PlanKeyedCache(caching.dbdict)
    caching.dbdict = store
    cache_hook.dbdict = store
    for name in REQUEST_METHODS:
        setattr(caching, name, partial(_cached_requests, caching, store, name, group_by_plan, namespace))
    return store


def _cached_requests(caching: CachingLM, store: PlanKeyedCache, name: str, group_by_plan: GroupByPlan,
                     namespace: Callable[[Any], str], requests: list) -> list:
    """``CachingLM``'s request method ``name``, run one plan at a time under that plan's namespace."""
    results: list[Any] = [None] * len(requests)
    for plan, positions in group_by_plan(requests):
        store.namespace = namespace(plan)
        answers = CachingLM.__getattr__(caching, name)([requests[i] for i in positions])
        for position, answer in zip(positions, answers, strict=True):
            results[position] = answer
    return results


def _caching_lm(frame: FrameType | None, model: Any) -> CachingLM | None:
    """The ``CachingLM`` whose method runs in ``frame``, if it wraps ``model``."""
    caller = frame.f_locals.get("self") if frame is not None else None
    if isinstance(caller, CachingLM) and caller.lm is model:
        return caller
    return None
