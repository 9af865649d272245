"""Register lape-harness with lm-eval: the ``hf-steered`` and ``vllm-steered`` models and this project's task folder.

:mod:`lape_harness._boot` calls :func:`on_registry` right after ``lm_eval.api.registry`` executes and
:func:`on_task_manager` right after ``lm_eval.tasks.manager`` executes, so a plain ``lm_eval`` CLI
(or ``accelerate launch -m lm_eval``) finds both with no ``--include_path`` and no import. Both
functions are idempotent and may also be called by hand on the imported modules.

Example::

    >>> from lm_eval.api.registry import get_model
    >>> get_model("hf-steered").__name__
    'HFSteeredLM'
    >>> from lape_harness.plugin.registration import task_folder
    >>> task_folder().name
    'tasks'
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

from lape_harness.errors import LapeError

#: lm-eval model name -> its class, registered lazily: torch, transformers or vLLM load on first use.
MODELS = {
    "hf-steered": "lape_harness.plugin.hf_steered:HFSteeredLM",
    "vllm-steered": "lape_harness.plugin.vllm_steered:VLLMSteeredLM",
}


def task_folder() -> Path:
    """The folder of lape-harness task YAMLs.

    An installed wheel ships it as ``lape_harness/tasks``; a source checkout (and an editable
    install, whose package is the checkout's) keeps it as ``tasks/`` beside ``pyproject.toml``.
    """
    package = Path(__file__).resolve().parents[1]  # lape_harness/ (this file is lape_harness/plugin/)
    if (package / "tasks").is_dir():
        return package / "tasks"
    checkout = package.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "tasks").is_dir():
        return checkout / "tasks"
    raise LapeError(f"lape-harness task folder not found (looked for {package / 'tasks'} and "
                    f"{checkout / 'tasks'}); reinstall lape-harness.")


def on_registry(registry) -> None:
    """Register ``hf-steered`` and ``vllm-steered`` lazily in ``registry`` (the executed ``lm_eval.api.registry`` module).

    lm-eval's ``get_model()`` registers its built-in models only while the registry is empty, so
    they are registered first here; otherwise ``--model hf`` would stop working.
    """
    import lm_eval.models  # noqa: F401  (registers the built-ins, lazily and cheaply)

    for name, target in MODELS.items():
        if name not in registry.model_registry:
            registry.model_registry.register(name, target=target)


def on_task_manager(manager) -> None:
    """Make every ``TaskManager`` in ``manager`` (the executed ``lm_eval.tasks.manager``) index our
    tasks, and record the metadata of every task it loads (``steer=auto`` reads the languages there).

    The task folder goes after lm-eval's own tasks and before the user's ``include_path``, so a
    user's folder can still override a task; ``include_defaults=False`` leaves it out as well.
    """
    task_manager = manager.TaskManager
    _record_loaded_tasks(task_manager)
    _check_matched_tasks(task_manager)
    original = task_manager.__init__
    if getattr(original, "_lape_harness", False):
        return
    ours = task_folder()
    signature = inspect.signature(original)
    if not {"include_path", "include_defaults"} <= set(signature.parameters):
        import warnings

        warnings.warn(f"lape-harness: this lm-eval's TaskManager{signature} takes no include_path/include_defaults, "
                      f"so the lape_ tasks are not added to it; pass --include_path {ours} (hf-steered and "
                      "vllm-steered are unaffected)", RuntimeWarning, stacklevel=2)
        return

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        call = signature.bind(self, *args, **kwargs)
        call.apply_defaults()
        if call.arguments["include_defaults"]:
            call.arguments["include_path"] = _with_folder(call.arguments["include_path"], ours)
        original(*call.args, **call.kwargs)

    __init__._lape_harness = True
    task_manager.__init__ = __init__


def _record_loaded_tasks(task_manager) -> None:
    """Wrap ``TaskManager.load`` so that each loaded task's ``metadata`` is recorded under the name its
    requests carry (:func:`lape_harness.task_support.task_languages.record_loaded_task`)."""
    original = getattr(task_manager, "load", None)
    if original is None:
        import warnings

        warnings.warn("lape-harness: this lm-eval's TaskManager has no load(); steer=auto and the leaderboard "
                      "read task languages from task names only", RuntimeWarning, stacklevel=2)
        return
    if getattr(original, "_lape_harness", False):
        return

    @functools.wraps(original)
    def load(self, *args, **kwargs):
        from lape_harness.task_support.task_languages import record_loaded_task

        loaded = original(self, *args, **kwargs)
        for name, task in (loaded.get("tasks") or {}).items():
            config = getattr(task, "config", None)
            record_loaded_task(getattr(config, "task", None) or name, getattr(config, "metadata", None))
        return loaded

    load._lape_harness = True
    task_manager.load = load


def _check_matched_tasks(task_manager) -> None:
    """Wrap ``TaskManager.match_tasks`` (which lm-eval's command line calls before it builds the model)
    so that the matched tasks are checked then (:mod:`lape_harness.plugin.task_checks`)."""
    original = getattr(task_manager, "match_tasks", None)
    if original is None or getattr(original, "_lape_harness", False) or not hasattr(task_manager, "task_index"):
        return

    @functools.wraps(original)
    def match_tasks(self, *args, **kwargs):
        from lape_harness.plugin.error_display import plain_errors
        from lape_harness.plugin.task_checks import check_tasks

        matched = original(self, *args, **kwargs)
        plain_errors(check_tasks)(self, matched)
        return matched

    match_tasks._lape_harness = True
    task_manager.match_tasks = match_tasks


def _with_folder(include_path, folder: Path) -> list:
    """``include_path`` (None, one path or a list) as a list that starts with ``folder``."""
    if include_path is None:
        paths = []
    elif isinstance(include_path, (list, tuple)):
        paths = list(include_path)
    else:
        paths = [include_path]
    if any(Path(path).resolve() == folder for path in paths):
        return paths
    return [folder, *paths]
