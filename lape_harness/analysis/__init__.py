"""Reading what runs produced: lm-eval results, leaderboards, matrices, figures, inspection.

* :mod:`~lape_harness.analysis.results`: lm-eval results JSON files and their steering signature.
* :mod:`~lape_harness.analysis.leaderboard` (+ ``leaderboard_report``): each plan against the
  unsteered baseline per task family and language, with controls and specificity.
* :mod:`~lape_harness.analysis.result_matrices` (+ ``result_figures``): perplexity-change and
  forcing matrices; :mod:`~lape_harness.analysis.neuron_analysis` (+ ``neuron_figures``):
  neurons per layer, overlaps, scripts; :mod:`~lape_harness.analysis.figures`: shared plotting.
* :mod:`~lape_harness.analysis.inspection`: ``lape-harness inspect``'s summaries of files.

May import the ground floor, the method, :mod:`lape_harness.steering` and
:mod:`lape_harness.task_support`; never the plugin's engines, the studies or the CLI.
"""
