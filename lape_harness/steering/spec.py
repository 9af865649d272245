"""A ``steer=`` value of any kind (text, a plan file, ``None``, a plan object) → a plan.

The grammar is :mod:`lape_harness.steering.plan`'s; plan files are
:mod:`lape_harness.steering.plan_file`'s.

Example:
    >>> str(parse_steer("+2*fr-de")), str(parse_steer(None))
    ('-de+2*fr', 'none')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lape_harness.steering.plan import EXAMPLE, NO_STEERING, AutoPlan, SteeringPlan, SteerSyntaxError, parse_text
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
