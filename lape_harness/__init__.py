"""lape-harness: find language-specific neurons (LAPE) and steer them inside lm-evaluation-harness.

The front door: the names below are the stable import path, each loaded on first use (importing
``lape_harness`` imports neither torch nor lm_eval; ``lape_harness._boot`` runs at every start-up).

==================  ==================================================  ====================================
name                what                                                home
==================  ==================================================  ====================================
``ActivationStats``  per-language activation statistics (profile's file)  :mod:`lape_harness.neurons`
``NeuronSet``        language-specific neurons (identify's file)          :mod:`lape_harness.neurons`
``profile_model``    record the statistics of a model over corpora        :mod:`lape_harness.profile`
``identify``         LAPE selection at one top rate                       :mod:`lape_harness.lape`
``parse_steer``      a ``steer=`` value → a plan                          :mod:`lape_harness.steering.spec`
``SteeringHooks``    apply plans to a Hugging Face model                  :mod:`lape_harness.steering.hooks`
``HFSteeredLM``      lm-eval's ``hf-steered``                             :mod:`lape_harness.plugin.hf_steered`
``VLLMSteeredLM``    lm-eval's ``vllm-steered``                           :mod:`lape_harness.plugin.vllm_steered`
``run_sweep``        many plans, one model load                           :mod:`lape_harness.studies.sweep`
``LapeError``        every lape-harness error; ``InputError``: bad input  :mod:`lape_harness.errors`
==================  ==================================================  ====================================

The package by wing (each imports only the wings above it in this list): the ground floor and the
method (modules at this level: errors, atomic writes, paths, languages, language ID, sites,
embedded models, HF loading; corpora, ``starter_corpus/``, profile, LAPE selection, neuron files,
model identity, random controls, published masks), then ``steering/``, ``task_support/``,
``plugin/``, ``analysis/``, ``studies/``, and the faces ``demo/`` and ``cli/``. The map, module by
module: ``docs/architecture.md``.

Example:
    >>> import lape_harness
    >>> str(lape_harness.parse_steer("+fr-de"))
    '-de+fr'
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_FRONT_DOOR = {
    "ActivationStats": "lape_harness.neurons",
    "NeuronSet": "lape_harness.neurons",
    "profile_model": "lape_harness.profile",
    "identify": "lape_harness.lape",
    "parse_steer": "lape_harness.steering.spec",
    "SteeringHooks": "lape_harness.steering.hooks",
    "HFSteeredLM": "lape_harness.plugin.hf_steered",
    "VLLMSteeredLM": "lape_harness.plugin.vllm_steered",
    "run_sweep": "lape_harness.studies.sweep",
    "LapeError": "lape_harness.errors",
    "InputError": "lape_harness.errors",
}

__all__ = [*_FRONT_DOOR, "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _FRONT_DOOR:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_FRONT_DOOR[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_FRONT_DOOR))
