"""The whole study on one model, end to end: corpus → profile → identify → evaluate → report.

``lape-harness study`` runs it on any model with either engine (``hf-steered`` or
``vllm-steered``), corpus, languages, neuron rates, benchmark families and plans
(:func:`run_study`); ``lape-harness demo`` is the study on the embedded Gemma-3-270m
(``lape:gemma-3-270m``) with a mode's sizes (:func:`run_demo`):

1. the starter corpus (:mod:`lape_harness.starter_corpus`), built once into the cache;
2. activation statistics of every language with text (:mod:`lape_harness.profile`);
3. LAPE neuron sets at the top rates 1%…5% (:mod:`lape_harness.lape`);
4. lm-eval with the ``hf-steered`` model, all plans on one model load (:mod:`lape_harness.studies.sweep`):
   the perplexity matrix (plan ``-L`` for each language L on every ``lape_ppl_<M>`` task,
   relative to no steering) and language forcing (``lape_forcing_<S>_to_<T>``, plans
   ``none``, ``auto:-src=c+α*tgt`` and ``auto:+α*tgt``, swept over ratios and strengths one at a time);
   and the hub families flores, xquad, belebele, xnli and lcb (``none``, ``auto`` and its random
   control per language; :mod:`lape_harness.demo.benchmarks`, skipped with one line when their data
   cannot load);
5. a report folder: ``report.md`` with the tables, PNG plots, the lm-eval results JSONs.

Modes trade coverage for time (:data:`MODES`); each stage keeps its output in the run
folder, so a second run reuses what the first computed, and an interrupted one resumes.

The package, by concern: :mod:`~lape_harness.demo.modes` (what each mode runs),
:mod:`~lape_harness.demo.pipeline` (the stages, :func:`run_study` and :func:`run_demo`),
:mod:`~lape_harness.demo.evaluation` (the evaluation sweeps), :mod:`~lape_harness.demo.benchmarks`
(families, tasks, whether data loads), :mod:`~lape_harness.demo.cpu_dtype` (the faster CPU dtype),
:mod:`~lape_harness.demo.analysis` (the numbers, from the shared results rooms) and
:mod:`~lape_harness.demo.report` (headline and ``report.md``).

Example:
    >>> summary = run_demo(mode="quick")                     # doctest: +SKIP
    >>> summary["perplexity"]["row_dominance_rate"]          # doctest: +SKIP
    0.83
"""

from lape_harness.demo.analysis import forcing_means
from lape_harness.demo.modes import DEFAULT_MODEL, MODES, Mode, Strength, rate_tag
from lape_harness.demo.pipeline import run_demo, run_study
from lape_harness.demo.report import headline

__all__ = ["DEFAULT_MODEL", "MODES", "Mode", "Strength", "forcing_means", "headline", "rate_tag", "run_demo", "run_study"]
