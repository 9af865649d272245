"""What lm-eval sees: the ``hf-steered`` and ``vllm-steered`` models and their support.

* :mod:`~lape_harness.plugin.steered_lm`: :class:`SteeringArgs` (the steering ``model_args``,
  parsed and checked once) and :class:`SteeredLM`, the constructor sequence and request plumbing
  both engines share.
* :mod:`~lape_harness.plugin.hf_steered` / :mod:`~lape_harness.plugin.vllm_steered`: the two
  engines; :mod:`~lape_harness.plugin.vllm_worker` runs inside vLLM's workers,
  :mod:`~lape_harness.plugin.vllm_setup` prepares vLLM (CPU build, defaults, version checks).
* :mod:`~lape_harness.plugin.side_by_side`: ``steer=auto`` plan groups merged into one engine call.
* :mod:`~lape_harness.plugin.request_cache`: ``--use_cache`` keyed per plan.
* :mod:`~lape_harness.plugin.registration`: called by :mod:`lape_harness._boot` when lm-eval's
  registry or task manager loads; :mod:`~lape_harness.plugin.error_display`: one ``error:`` line
  instead of a traceback.

May import the ground floor, the method, :mod:`lape_harness.steering` and
:mod:`lape_harness.task_support`; never :mod:`lape_harness.analysis`, :mod:`lape_harness.studies`
or the CLI. Importing this package imports nothing (the start-up hook passes through it).
"""
