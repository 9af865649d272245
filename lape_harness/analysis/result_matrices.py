"""Matrices built from lm-eval results, and what they say about the neurons' specificity.

* :func:`ppl_change_matrix`: deactivate language L (plan ``-L``) and the relative
  perplexity change in every evaluated language (tasks ``lape_ppl_<lang>``); :func:`ppl_change`
  is the same computation on perplexities already in hand;
* :func:`dominance`: row and column dominance and the own/other ratio of such a matrix;
* :func:`forcing_matrix`: source × target success rate of the language-forcing tasks under
  one plan.

:mod:`lape_harness.analysis.result_figures` draws them; the demo reports them.

Example:
    >>> change = ppl_change({"de": 10.0, "en": 8.0}, {"-de": {"de": 15.0, "en": 10.0}})
    >>> change.as_dict()
    {'-de': {'de': 0.5, 'en': 0.25}}
    >>> dominance(change)["row_dominance"]
    {'de': True}
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lape_harness.analysis.results import BASELINE, deactivated_language, family_scores, plan_labels, select_model
from lape_harness.errors import InputError
from lape_harness.languages import order_by_family


@dataclass
class Matrix:
    """A labelled matrix; NaN where nothing was measured."""

    rows: list[str]
    columns: list[str]
    values: np.ndarray
    model: str
    title: str = ""

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {r: {c: float(self.values[i, j]) for j, c in enumerate(self.columns) if np.isfinite(self.values[i, j])}
                for i, r in enumerate(self.rows)}

    def take(self, rows: Sequence[str], columns: Sequence[str]) -> Matrix:
        """The sub-matrix of ``rows`` × ``columns``, in that order."""
        values = self.values[np.ix_([self.rows.index(r) for r in rows], [self.columns.index(c) for c in columns])]
        return Matrix(list(rows), list(columns), values, self.model, self.title)


def ppl_change_matrix(runs, model: str | None = None, metric: str = "byte_perplexity") -> Matrix:
    """Relative perplexity change (plan / baseline − 1) of every held-out language (columns,
    tasks ``lape_ppl_<lang>``) under each single-language deactivation plan (rows, ``-L``).

    ``runs`` are :func:`lape_harness.analysis.results.load_runs` results of one model (or pick
    ``model``); the baseline is its plan ``none``. Rows are labelled by plan, so the same
    language deactivated with two fill values gives two rows.
    """
    runs, model = select_model(runs, model)
    labels = plan_labels(runs)
    baseline: dict[str, float] = {}
    per_plan: dict[str, dict[str, float]] = {}
    for position, run in enumerate(runs):
        scores = family_scores(run, "lape_ppl", metric)
        if not scores:
            continue
        if run.plan == BASELINE:
            baseline.update(scores)
        elif deactivated_language(run.plan) is not None:
            per_plan.setdefault(labels[position], {}).update(scores)
    if not baseline:
        raise InputError(f"no baseline perplexities (plan 'none', tasks lape_ppl_*) for {model}; "
                         "include the unsteered run, e.g. sweep --plans=none,-en,-de --tasks lape_ppl")
    if not per_plan:
        raise InputError(f"no single-language deactivation plans (e.g. '-de') with lape_ppl_* results for {model}; "
                         "run e.g. sweep --plans=none,-en,-de,-fr --tasks lape_ppl")
    return ppl_change(baseline, per_plan, model, f"relative {metric} change")


def ppl_change(baseline: dict[str, float], per_plan: dict[str, dict[str, float]], model: str = "",
               title: str = "relative perplexity change") -> Matrix:
    """``values[i, j]`` = ppl(language j | plan i) / ppl(j | no steering) − 1.

    ``baseline`` maps each evaluated language to its unsteered perplexity, ``per_plan`` each
    single-language deactivation plan (``-L``, ``-L=c``) to ``{language: perplexity}``. Rows and
    columns are in family order (:func:`lape_harness.languages.order_by_family`).
    """
    deactivated = {plan: deactivated_language(plan) for plan in per_plan}
    if None in deactivated.values():
        wrong = [plan for plan, language in deactivated.items() if language is None]
        raise InputError(f"plans {wrong} do not deactivate exactly one language; the perplexity-change matrix "
                         "takes plans such as '-de' or '-de=-1.5'")
    columns = order_by_family(baseline)
    position = {code: i for i, code in enumerate(order_by_family(list(deactivated.values()) + columns))}
    rows = sorted(per_plan, key=lambda plan: (position[deactivated[plan]], plan))
    values = np.full((len(rows), len(columns)), np.nan)
    for i, plan in enumerate(rows):
        for j, code in enumerate(columns):
            if code in per_plan[plan] and baseline[code] > 0:
                values[i, j] = per_plan[plan][code] / baseline[code] - 1
    return Matrix(rows, columns, values, model, title)


def dominance(matrix: Matrix, languages: Sequence[str] | None = None) -> dict[str, Any]:
    """How specific the deactivations of a :func:`ppl_change` matrix are, over ``languages``
    (default: every evaluated language that also has a deactivation row).

    * row dominance of L: deactivating L raises L's perplexity more than any other language's;
    * column dominance of M: M's perplexity rises more when M is deactivated than any other L;
    * own/other ratio of L: the change in L divided by the mean change in the other languages
      (``inf`` when that mean is ≤ 0 and the own change is positive).
    """
    row_of = {deactivated_language(plan): plan for plan in matrix.rows}
    languages = list(languages or [code for code in matrix.columns if code in row_of])
    change = matrix.take([row_of[code] for code in languages], languages).values.tolist()
    n = len(languages)
    rows = {lang: all(change[i][i] > change[i][j] for j in range(n) if j != i) for i, lang in enumerate(languages)}
    cols = {lang: all(change[j][j] > change[i][j] for i in range(n) if i != j) for j, lang in enumerate(languages)}
    ratios = {}
    for i, lang in enumerate(languages):
        others = [change[i][j] for j in range(n) if j != i]
        mean_other = sum(others) / len(others) if others else 0.0
        ratios[lang] = effect_ratio(change[i][i], mean_other)
    return {
        "row_dominance": rows,
        "column_dominance": cols,
        "own_other_ratio": ratios,
        "row_dominance_rate": sum(rows.values()) / n if n else 0.0,
        "column_dominance_rate": sum(cols.values()) / n if n else 0.0,
        "median_own_other_ratio": statistics.median(ratios.values()) if ratios else 0.0,
    }


def effect_ratio(effect: float, reference: float) -> float:
    """``effect / reference``; ``inf`` when the reference is ≤ 0 and the effect positive, else 0 there.

    >>> effect_ratio(2.0, 0.5), effect_ratio(0.3, -0.1), effect_ratio(-0.2, 0.0)
    (4.0, inf, 0.0)
    """
    return effect / reference if reference > 0 else (math.inf if effect > 0 else 0.0)


def control_specificity(real: Matrix, control: Matrix, languages: Sequence[str] | None = None) -> dict[str, Any]:
    """Own-language change of each deactivation ``-L`` with the neuron set (``real``) and with its
    random control (``control``, :mod:`lape_harness.controls`), both :func:`ppl_change` matrices;
    the specificity of L is their ratio, defined only where the control raised L's perplexity
    (the languages where it did not are listed in ``undefined``), summarized by its median (None
    when no language has one).

    >>> real = ppl_change({"de": 10.0, "fr": 10.0}, {"-de": {"de": 30.0, "fr": 11.0}, "-fr": {"de": 10.0, "fr": 15.0}})
    >>> control = ppl_change({"de": 10.0, "fr": 10.0}, {"-de": {"de": 12.5, "fr": 10.0}, "-fr": {"de": 10.0, "fr": 12.0}})
    >>> {code: round(ratio, 6) for code, ratio in control_specificity(real, control)["specificity"].items()}
    {'de': 8.0, 'fr': 2.5}
    """
    def own(matrix: Matrix) -> dict[str, float]:
        row_of = {deactivated_language(plan): plan for plan in matrix.rows}
        return {code: float(matrix.take([row_of[code]], [code]).values[0, 0]) for code in languages}

    languages = list(languages or [code for code in real.columns if f"-{code}" in real.rows])
    real_own, control_own = own(real), own(control)
    ratios = {code: real_own[code] / control_own[code] for code in languages if control_own[code] > 0}
    return {
        "own_change": real_own,
        "control_own_change": control_own,
        "specificity": ratios,
        "undefined": [code for code in languages if code not in ratios],
        "median_specificity": statistics.median(ratios.values()) if ratios else None,
    }


def forcing_matrix(runs, plan: str | None = None, model: str | None = None, metric: str = "target_rate") -> Matrix:
    """Language-forcing success (``metric`` of tasks ``lape_forcing_<src>_to_<tgt>``) under
    one plan: rows = source (prompt) language, columns = target language.

    ``plan`` defaults to the only plan with forcing results (pass it when there are several,
    e.g. ``auto`` and ``none``).
    """
    runs, model = select_model(runs, model)
    labels = plan_labels(runs)
    per_plan: dict[str, dict[str, float]] = {}
    for position, run in enumerate(runs):
        scores = family_scores(run, "lape_forcing", metric)
        if scores:
            per_plan.setdefault(labels[position], {}).update(scores)
    if not per_plan:
        raise InputError(f"no lape_forcing_* results reporting {metric} for {model}; "
                         "run e.g. sweep --plans auto --tasks lape_forcing")
    if plan is None:
        if len(per_plan) > 1:
            raise InputError(f"forcing results exist for several plans ({', '.join(sorted(per_plan))}); choose one with --plan")
        plan = next(iter(per_plan))
    if plan not in per_plan:
        raise InputError(f"no forcing results for plan {plan!r}; there are: {', '.join(sorted(per_plan))}")
    pairs = [label.split("→") for label in per_plan[plan]]
    sources = order_by_family({pair[0] for pair in pairs})
    targets = order_by_family({pair[1] for pair in pairs})
    values = np.full((len(sources), len(targets)), np.nan)
    for label, score in per_plan[plan].items():
        source, target = label.split("→")
        values[sources.index(source), targets.index(target)] = score
    return Matrix(sources, targets, values, model, f"{metric} under steer={plan}")
