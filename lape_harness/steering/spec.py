"""A ``steer=`` value of any kind (text, a plan file, ``None``, a plan object) → a plan, and the
two checks every engine makes on it: the ``steer_scope=`` it runs under, and that a plan which
steers anything has a neuron set.

The grammar is :mod:`lape_harness.steering.plan`'s; plan files are
:mod:`lape_harness.steering.plan_file`'s.

Example:
    >>> str(parse_steer("+2*fr-de")), str(parse_steer(None))
    ('-de+2*fr', 'none')
    >>> check_scope("prompt", supported=("all",))
    Traceback (most recent call last):
    lape_harness.errors.InputError: steer_scope=prompt is not supported by this engine (it steers all); ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lape_harness.errors import InputError
from lape_harness.steering.grammar import parse_text
from lape_harness.steering.plan import (
    EXAMPLE,
    NO_STEERING,
    SCOPES,
    AutoPlan,
    SteeringPlan,
    SteerSyntaxError,
)
from lape_harness.steering.plan_file import looks_like_file, read_plan_file


def parse_steer(spec: Any) -> SteeringPlan | AutoPlan:
    """Parse a ``steer=`` value (string, ``None`` from lm-eval's ``none``, or a plan file path).

    >>> str(parse_steer("-en=-1.5-fr+de"))
    '-en=-1.5-fr+de'
    >>> str(parse_steer("+de-en"))
    '-en+de'
    """
    if spec is None or spec is False:
        return NO_STEERING
    if isinstance(spec, (SteeringPlan, AutoPlan)):
        return spec
    if not isinstance(spec, str):
        raise SteerSyntaxError(f"steer={spec!r} is not a steering spec; valid example: {EXAMPLE}")
    text = spec.strip()
    if looks_like_file(text):
        return read_plan_file(Path(text))
    return parse_text(text)


def check_scope(scope: Any, supported: tuple[str, ...] = SCOPES) -> str:
    """``scope`` when it is a ``steer_scope=`` value the engine (steering ``supported``) honours."""
    if scope not in SCOPES:
        raise InputError(f"steer_scope={scope!r} is not one of {', '.join(SCOPES)}; e.g. steer_scope=generated")
    if scope not in supported:
        raise InputError(f"steer_scope={scope} is not supported by this engine (it steers "
                         f"{' or '.join(supported)}); use hf-steered for steer_scope={scope}")
    return scope


def require_neurons(spec: Any, neurons: Any) -> None:
    """A plan that steers anything (or ``auto``) needs a neuron set: an :class:`InputError` without one."""
    if spec and neurons is None:
        raise InputError(f"steer={spec} needs a neuron set: add neurons=path/to/lape-top1.safetensors to "
                         "--model_args (made by `lape-harness identify`)")
