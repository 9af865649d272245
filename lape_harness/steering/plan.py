"""The ``steer=`` language and its plans: what a plan means, with no model and no torch.

A plan edits the neuron activations ``a`` (the MLP activation output, see :mod:`lape_harness.sites`)
at the neurons of the named languages, at every layer that has such neurons and every token.
``μ_L`` is language L's mean activation at its neurons, ``p_L`` its activation probability,
``μ̄_¬L`` the mean of the other languages' means there (all stored in the neuron-set file).

Grammar (no commas, so it fits lm-eval's ``--model_args``)::

    spec   := "none" | "auto" [":" template] | plan | path/to/plan.yaml|.json
    plan   := term { term }                      the first term may omit its "+"
    term   := "+" [α ["*"]] LANG ["." value]     add         a ← a + α·v_L
            | "=" [α ["*"]] LANG ["." value]     replace     a ← α·v_L
            | "*" β ["*"] LANG                   multiply    a ← β·a
            | "-" LANG ["=" c]                   deactivate  a ← c          (c defaults to 0)
    value  := "mean" (default: v_L = μ_L) | "diff" (v_L = μ_L − μ̄_¬L) | "p" (v_L = p_L)

One example per method (each reads as the arithmetic it does)::

    de  or  +de             additive activation            a ← a + μ_de
    +2*de                   additive, strength α = 2       a ← a + 2·μ_de
    =de                     replacement                    a ← μ_de
    +de.diff                diffmean                       a ← a + (μ_de − μ̄_¬de)
    +de.p                   probability boost (paper code before Aug 2025)   a ← a + p_de
    *0.5*de                 multiplication                 a ← 0.5·a on de's neurons
    -de                     deactivation                   a ← 0
    -de=-1.5                deactivation with fill c       a ← −1.5
    -de+fr                  deactivate de, then activate fr (language forcing)
    -en-fr-es               deactivate three languages
    -en=-1.5+2*de.diff      combination with per-term strengths
    none                    no steering
    auto                    each request steered by its task's languages (below)
    auto:-src=-1+2*tgt      auto with a template: src/tgt stand for the task's languages

LANG is an ISO code (``de``) or a FLORES code (``deu_Latn``) of a language in the neuron file.

Order of operations (the paper's): all deactivations first, then multiplications, then the
activations (add/replace) in the order written, whatever order the terms are written in. Every
term is an affine update ``a ← s·a + b`` of its language's neurons; a neuron shared by several
terms gets all of them composed in that order. E.g. with ``-de+fr`` a neuron of both de and fr
ends at ``0 + μ_fr``; with ``+de+fr`` at ``a + μ_de + μ_fr``; with ``+de=fr`` at ``μ_fr``.

``auto`` steers each request by its task (:func:`lape_harness.task_support.task_languages.task_languages`):
monolingual task in L → ``+L``; language forcing S→T → ``-S+T``; translation into T → ``+T``;
a cross-lingual instruction (S prompt asking for an answer in T, the Language Confusion
Benchmark's cross-lingual set) → ``+T``.
``auto:<template>`` uses the template instead, with ``tgt`` = the task's (target) language and
``src`` = the source language of a forcing task; ``src`` terms are dropped for other tasks
(the paper never deactivates the input language of a translation or a monolingual task).

Numbers are decimals, optionally in exponent form (``-de=1e3``, ``+2.5e-1*fr``); a strength
must be finite. After ``-LANG=`` comes the fill (a number) or a known language code
(``-de=fr``: deactivate de, then replace with fr); anything else is an error.

Lm-eval turns the value ``none`` into ``None``; both mean no steering. A spec that names a
``.yaml``/``.yml``/``.json`` file is read from it (:mod:`lape_harness.steering.plan_file`).
:func:`lape_harness.steering.parse_steer` takes any of these;
:func:`lape_harness.steering.grammar.parse_text` takes the text forms only.

A plan is compiled into per-layer tensors by :mod:`lape_harness.steering.compiled` and
applied to a Hugging Face model by :mod:`lape_harness.steering.hooks`.

Example:
    >>> from lape_harness.steering.grammar import parse_text
    >>> plan = parse_text("+2*fr-de")
    >>> str(plan), plan.methods
    ('-de+2*fr', ['deactivate', 'additive'])
    >>> [term.describe() for term in plan.terms]
    [{'op': 'deactivate', 'language': 'de', 'fill': 0.0}, {'op': 'add', 'language': 'fr', 'alpha': 2.0, 'value': 'mean'}]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lape_harness.errors import InputError

OPS = ("deactivate", "multiply", "add", "replace")  # also the order in which they apply
VALUES = ("mean", "diff", "p")
SCOPES = ("all", "prompt", "generated")
PLACEHOLDERS = ("src", "tgt")
EXAMPLE = "steer=-de+2*fr  (deactivate de: a ← 0, then a ← a + 2·μ_fr)"
_SYMBOL = {"add": "+", "replace": "=", "multiply": "*", "deactivate": "-"}
#: Each op's strength under its own name, as :meth:`Term.describe` writes it (and plan files read it).
STRENGTH_NAMES = {"add": "alpha", "replace": "alpha", "multiply": "beta", "deactivate": "fill"}


class SteerSyntaxError(InputError):
    """A malformed ``steer=`` spec; the message shows the spec with a caret under the problem."""


# --------------------------------------------------------------------------------------------
# Plans


@dataclass(frozen=True)
class Term:
    """One operation on one language's neurons.

    ``strength`` is α for add/replace, β for multiply and the fill c for deactivate;
    ``value`` (add/replace only) picks v_L: ``mean`` μ_L, ``diff`` μ_L − μ̄_¬L, ``p`` p_L.
    """

    op: str
    language: str
    strength: float | None = None  # None: the op's default (fill 0 for deactivate, else 1)
    value: str = "mean"

    def __post_init__(self) -> None:
        if self.strength is None:
            object.__setattr__(self, "strength", 0.0 if self.op == "deactivate" else 1.0)

    def __str__(self) -> str:
        symbol = _SYMBOL[self.op]
        if self.op == "deactivate":
            return f"-{self.language}" + (f"={format_number(self.strength)}" if self.strength != 0 else "")
        if self.op == "multiply":
            return f"*{format_number(self.strength)}*{self.language}"
        strength = "" if self.strength == 1 else f"{format_number(self.strength)}*"
        value = "" if self.value == "mean" else f".{self.value}"
        return f"{symbol}{strength}{self.language}{value}"

    def describe(self) -> dict[str, Any]:
        """The term as a JSON-able dict with its strength under its own name (alpha/beta/fill)."""
        entry: dict[str, Any] = {"op": self.op, "language": self.language, STRENGTH_NAMES[self.op]: self.strength}
        if self.op in ("add", "replace"):
            entry["value"] = self.value
        return entry


@dataclass(frozen=True)
class SteeringPlan:
    """Terms in execution order: deactivations, multiplications, then activations as written."""

    terms: tuple[Term, ...] = ()

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.terms, key=lambda term: OPS.index(term.op) if term.op in OPS[:2] else 2))
        object.__setattr__(self, "terms", ordered)

    def __str__(self) -> str:
        return "".join(str(term) for term in self.terms) or "none"

    def __bool__(self) -> bool:
        return bool(self.terms)

    @property
    def languages(self) -> list[str]:
        return list(dict.fromkeys(term.language for term in self.terms))

    @property
    def methods(self) -> list[str]:
        """Method names as in the paper: additive, replacement, diffmean, probability, multiply, deactivate."""
        names = []
        for term in self.terms:
            if term.op == "add":
                names.append({"mean": "additive", "diff": "diffmean", "p": "probability"}[term.value])
            elif term.op == "replace":
                names.append("replacement" if term.value == "mean" else f"replacement-{term.value}")
            else:
                names.append(term.op)
        return list(dict.fromkeys(names))

    def check_languages(self, neurons) -> None:
        """Raise an :class:`InputError` when a language is missing from ``neurons`` (listing the file's
        languages) or has no neurons there (its terms would change nothing), and when an add or
        replace term needs values the set does not carry (:attr:`NeuronSet.has_means`)."""
        valued = [str(term) for term in self.terms if term.op in ("add", "replace")]
        if valued and not getattr(neurons, "has_means", True):
            raise InputError(
                f"steer={self}: {', '.join(valued)} add or replace activation values, but this neuron set has "
                "none (it was imported or drawn without statistics); use only deactivate/multiply terms "
                "(-de, *0.5*de), or re-create the set with --stats STATS"
            )
        for language in self.languages:
            if len(neurons[language]) == 0:
                rate = (getattr(neurons, "meta", None) or {}).get("thresholds", {}).get("top_rate")
                made = f" (made with top rate {rate:g})" if isinstance(rate, (int, float)) else ""
                raise InputError(
                    f"steer={self}: language {language!r} has no neurons in this neuron set{made}, so its terms "
                    "would change nothing; use a set with a higher top rate (e.g. lape-top3.safetensors from "
                    f"`lape-harness identify --top-rate 0.03`) or leave {language!r} out of the plan"
                )


NO_STEERING = SteeringPlan()


@dataclass(frozen=True)
class AutoPlan:
    """``steer=auto``: a plan per task, from its languages (``template`` None = the paper's defaults)."""

    template: SteeringPlan | None = None

    def __str__(self) -> str:
        return "auto" if self.template is None else f"auto:{self.template}"

    @property
    def methods(self) -> list[str]:
        if self.template is None:
            return ["additive", "deactivate"]
        return self.template.methods

    def for_task(self, languages) -> SteeringPlan:
        """The plan for a task whose :class:`~lape_harness.task_support.task_languages.TaskLanguages` are given."""
        forcing = languages.kind == "forcing"
        if self.template is None:
            terms = [Term("add", languages.target)]
            if forcing:
                terms.insert(0, Term("deactivate", languages.source))
            return SteeringPlan(tuple(terms))
        names = {"tgt": languages.target, "src": languages.source if forcing else None}
        return SteeringPlan(
            tuple(
                Term(term.op, names[term.language], term.strength, term.value)
                for term in self.template.terms
                if names[term.language] is not None
            )
        )


def format_number(value: float) -> str:
    """A strength as written in a spec: shortest ``:g`` form.

    >>> format_number(2.0), format_number(-1.5), format_number(0.25)
    ('2', '-1.5', '0.25')
    """
    return f"{value:g}"
