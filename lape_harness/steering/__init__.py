"""Steering language neurons: the ``steer=`` plans, their compiled form, and the hooks that apply them.

* :mod:`~lape_harness.steering.plan`: the ``steer=`` grammar and the plan objects
  (:class:`Term`, :class:`SteeringPlan`, :class:`AutoPlan`); no torch, no model.
* :mod:`~lape_harness.steering.grammar`: reading ``steer=`` text into those objects
  (:func:`parse_text`), with a caret under the first bad token.
* :mod:`~lape_harness.steering.plan_file`: plans kept in YAML/JSON files, with a strict schema
  that also reads the results JSON's own term format.
* :mod:`~lape_harness.steering.spec`: :func:`parse_steer`, any ``steer=`` value (text, file,
  ``None``) → a plan.
* :mod:`~lape_harness.steering.compiled`: a plan compiled per layer into neuron indices, a scale
  and a shift (:func:`compile_plan`, :class:`LayerEdit`), engine-neutral, on the CPU.
* :mod:`~lape_harness.steering.hooks`: applying compiled plans to a Hugging Face model with
  forward hooks (:class:`SteeringHooks`).
* :mod:`~lape_harness.steering.bake`: folding a multiplicative / zeroing plan into a checkpoint's
  weights (the third applier, for engines lape-harness cannot steer).

May import the ground floor and the method (neuron files, model identity); never the plugin, task
support, analysis, studies or the CLI.

Importing this package (or :mod:`~lape_harness.steering.plan`) does not import torch; the names
of the other two modules load on first use.

Example:
    >>> from lape_harness.steering import parse_steer
    >>> str(parse_steer("+fr-de"))
    '-de+fr'
"""

from importlib import import_module
from typing import Any

from lape_harness.errors import HookNeverFiredError
from lape_harness.steering.plan import (
    EXAMPLE,
    NO_STEERING,
    OPS,
    PLACEHOLDERS,
    SCOPES,
    VALUES,
    AutoPlan,
    SteeringPlan,
    SteerSyntaxError,
    Term,
    format_number,
)
from lape_harness.steering.spec import parse_steer

# The torch-backed names load on first use, so parsing plans never imports torch.
_LAZY = {"LayerEdit": "compiled", "compile_plan": "compiled", "SteeringHooks": "hooks"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "EXAMPLE",
    "NO_STEERING",
    "OPS",
    "PLACEHOLDERS",
    "SCOPES",
    "VALUES",
    "AutoPlan",
    "HookNeverFiredError",
    "LayerEdit",
    "SteerSyntaxError",
    "SteeringHooks",
    "SteeringPlan",
    "Term",
    "compile_plan",
    "format_number",
    "parse_steer",
]
