"""What the task YAMLs in ``tasks/`` call: task languages, task data, and the metrics.

* :mod:`~lape_harness.task_support.task_languages`: a task's source and target languages (its
  ``metadata.languages``, else its name), used by ``steer=auto`` and the leaderboard.
* :mod:`~lape_harness.task_support.task_data`: the tasks' datasets (hub, ``LAPE_HARNESS_DATA``
  folders, forcing questions, the Language Confusion Benchmark's test sets);
  :mod:`~lape_harness.task_support.flores`: FLORES-200 / FLORES+ pairs.
* :mod:`~lape_harness.task_support.metrics`: forcing rates, BLEU/chrF++, EM/F1, answer extraction;
  :mod:`~lape_harness.task_support.confusion`: the Language Confusion Benchmark's LPR/WPR/LCPR;
  :mod:`~lape_harness.task_support.lcb_prompt_forms`: its chat and base-model (``Q:``/``A:``) prompt
  forms and which tasks to run (``lcb_tasks_for``).
* :mod:`~lape_harness.task_support.vocab_languages`: which language each vocabulary token belongs to.

May import the ground floor only (no model, no steering), so a task's ``utils.py`` loads fast.
"""
