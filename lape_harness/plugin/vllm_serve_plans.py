"""The plan a request to ``lape-harness serve`` asks for: read from the request body (``"steer"``) or
the model name (``"M:steer=-en+de"``), in the ``steer=`` grammar only, checked as the CLI checks it;
its provenance (header and ``system_fingerprint``), its prefix-cache salt, and its compiled edits.

A request's plan is only ever grammar text: a file path is refused (plan files are server options,
``--steer plan.yaml``), and so is ``auto`` (a request has no task). Every other problem is the
:class:`~lape_harness.errors.InputError` the CLI gives for the same ``steer=`` (the server answers
400 with its message).

Example:
    >>> split_model_name("tiny:steer=+de-en")
    ('tiny', '+de-en')
    >>> str(parse_request_plan("+2*fr-de"))
    '-de+2*fr'
    >>> parse_request_plan("auto")
    Traceback (most recent call last):
    lape_harness.errors.InputError: steer=auto picks a plan per lm-eval task, but a request to the server has no task; ...
    >>> fingerprint("-de+2*fr", "3f2a")
    'lape-steer|plan:-de+2*fr|neurons:3f2a'
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

from lape_harness.errors import InputError
from lape_harness.steering.grammar import parse_text
from lape_harness.steering.plan import AutoPlan, SteeringPlan
from lape_harness.steering.plan_file import SUFFIXES

#: the model-name form of a plan: ``<served model>:steer=<plan>``
MODEL_MARK = ":steer="
#: the request-body key of a plan
BODY_KEY = "steer"
#: response headers carrying the provenance
PLAN_HEADER, NEURONS_HEADER = "x-lape-steer", "x-lape-neurons-sha256"
#: the server's limits: the longest plan text a request may send (a 21-language combination is under
#: 200 characters), the largest request body, plan slots (slot 0: the default plan), compiled plans kept
MAX_PLAN_CHARS = 1000
MAX_BODY_BYTES = 16 * 2**20
PLAN_SLOTS = 16
PLAN_CACHE = 64

Edits = dict[int, tuple[list[int], list[float], list[float]]]


def split_model_name(model: Any) -> tuple[Any, str | None]:
    """``(served model name, plan text or None)`` of a request's ``model`` field.

    >>> split_model_name("tiny"), split_model_name("org/m:steer=-de")
    (('tiny', None), ('org/m', '-de'))
    """
    if not isinstance(model, str) or MODEL_MARK not in model:
        return model, None
    name, _mark, plan = model.partition(MODEL_MARK)
    return name, plan


def request_plan_text(body: dict) -> str | None:
    """The plan text a request body names (its ``steer`` key or its model name), or None for the
    server's default; both at once must agree."""
    from_body = body.get(BODY_KEY)
    _name, from_model = split_model_name(body.get("model"))
    if from_body is not None and from_model is not None and str(from_body).strip() != from_model.strip():
        raise InputError(f'the request names two plans, "steer": {from_body!r} and model "...{MODEL_MARK}{from_model}"; '
                         "name it once")
    return from_body if from_body is not None else from_model


def parse_request_plan(text: Any, neuron_set=None, max_chars: int = MAX_PLAN_CHARS) -> SteeringPlan:
    """A request's plan: grammar text only (never a file), not ``auto``, at most ``max_chars``
    characters, and, with ``neuron_set``, every language in it with neurons (the CLI's messages)."""
    if not isinstance(text, str):
        raise InputError(f'"steer": {text!r} is not a plan; send the steer= grammar as a string, e.g. "steer": "-en+de"')
    if len(text) > max_chars:
        raise InputError(f"the request's plan has {len(text)} characters, more than this server takes ({max_chars}, "
                         "--max-plan-chars); shorten it")
    stripped = text.strip()
    if stripped.lower().endswith(SUFFIXES) or "/" in stripped or "\\" in stripped:
        raise InputError(f"steer={stripped!r} looks like a file path; a request sends its plan as steer= grammar text "
                         "(plan files are server options: lape-harness serve --steer plan.yaml)")
    plan = parse_text(stripped)
    if isinstance(plan, AutoPlan):
        raise InputError(f"steer={plan} picks a plan per lm-eval task, but a request to the server has no task; "
                         'name the plan, e.g. "steer": "-en+de"')
    if neuron_set is not None:
        plan.check_languages(neuron_set)
    return plan


def fingerprint(plan: Any, neurons_hash: str | None) -> str:
    """The ``system_fingerprint`` of a response: the plan's normalized form and the neuron file's sha256."""
    return f"lape-steer|plan:{plan}|neurons:{neurons_hash or 'none'}"


def cache_salt(plan: Any, neurons_hash: str | None, client_salt: str | None = None) -> str:
    """The prefix-cache salt of a request: one per plan (and client salt), so KV computed under one
    plan never serves another (vLLM takes at most 128 characters, no ``@ / \\``).

    >>> cache_salt("-de", "ab") == cache_salt("-de", "ab"), cache_salt("-de", "ab") == cache_salt("+de", "ab")
    (True, False)
    """
    digest = hashlib.sha256(f"{plan}|{neurons_hash}|{client_salt or ''}".encode()).hexdigest()
    return f"lape-steer-{digest[:40]}"


class CompiledPlans:
    """The compiled edits of the last ``size`` plans used (least recently used dropped first).

    >>> plans = CompiledPlans(lambda plan: {0: ([1], [0.0], [0.0])}, size=1)
    >>> plans.get("-de"), plans.compiled
    ({0: ([1], [0.0], [0.0])}, 1)
    >>> _ = plans.get("-de"); _ = plans.get("-fr"); plans.compiled, len(plans)
    (2, 1)
    """

    def __init__(self, compile_one, size: int) -> None:
        if size < 1:
            raise InputError(f"--plan-cache {size}: keep at least 1 compiled plan")
        self.compile_one, self.size = compile_one, size
        self._edits: OrderedDict[str, Edits] = OrderedDict()
        self.compiled = 0

    def get(self, plan) -> Edits:
        key = str(plan)
        if key in self._edits:
            self._edits.move_to_end(key)
            return self._edits[key]
        edits = self.compile_one(plan)
        self.compiled += 1
        self._edits[key] = edits
        while len(self._edits) > self.size:
            self._edits.popitem(last=False)
        return edits

    def __len__(self) -> int:
        return len(self._edits)
