"""Workflows over the rest: the paper's experiments as library functions.

* :mod:`~lape_harness.studies.sweep`: many plans, one model load, one results file per plan;
  :mod:`~lape_harness.studies.shards`: ``--shard I/N``, a sweep's plan × task cells shared out.
* :mod:`~lape_harness.studies.fallback`: cumulative deactivation, which language answers.
* :mod:`~lape_harness.studies.lens`: the logit lens by language, with and without plans.
* :mod:`~lape_harness.studies.finetune`: training only one language's neurons.

May import every wing below it (ground floor, method, steering, task support, plugin, analysis);
never the CLI or the demo.
"""
