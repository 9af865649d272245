"""Checking the tasks a run asks for before any weights load.

lm-eval builds the model first and loads the tasks after it, so a task's own errors (a forcing
question file that is missing or lacks a language, ``$LAPE_HARNESS_FLORES=bogus``, a
``metadata.languages`` with a typo) would surface minutes later, as the last line of a long
traceback, or in a sweep only after earlier plans ran. lm-eval's command line matches the task
names (``TaskManager.match_tasks``) before it builds the model; :mod:`lape_harness.plugin.registration`
runs :func:`check_tasks` there (and ``lape-harness sweep`` before its model loads). The checks read
only the task configs lm-eval already indexed and the files they name: no dataset is downloaded.

* every task that declares ``metadata.languages`` (ours and the user's): the declaration;
* ``lape_forcing_*``: the question file (``--metadata '{"questions": ...}'``) has the source language;
* ``lape_flores_*``: ``$LAPE_HARNESS_FLORES`` names a source;
* ``lape_lcb_*`` with ``$LAPE_HARNESS_DATA``: the benchmark's files are there.

Example:
    >>> from lm_eval.tasks import TaskManager                        # doctest: +SKIP
    >>> check_tasks(TaskManager(), ["lape_forcing_de"])             # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from lape_harness.errors import InputError

#: how deep groups may nest before the walk stops (lm-eval's own groups nest 3 deep at most)
MAX_DEPTH = 8


def check_tasks(manager: Any, names: Iterable[str]) -> None:
    """Check the leaf tasks behind ``names`` (tasks, groups or tags in ``manager``'s index)."""
    metadata = getattr(manager, "metadata", None) or {}
    seen: set[str] = set()
    for name, config in _leaf_configs(manager.task_index, names, seen, depth=0):
        check_task_config(name, config, metadata)


def check_task_config(name: str, config: dict[str, Any], run_metadata: dict[str, Any]) -> None:
    """The checks of one task (see the module docstring); ``run_metadata``: lm-eval's ``--metadata``."""
    from lape_harness.task_support.task_languages import TaskLanguagesError, declared_languages

    task_metadata = config.get("metadata")
    try:
        languages = declared_languages(task_metadata)
    except TaskLanguagesError as error:
        raise InputError(f"task {name}: {error} (in its YAML's metadata)") from None
    if name.startswith("lape_forcing_") and languages is not None and run_metadata.get("questions"):
        from lape_harness.task_support.task_data import read_questions

        read_questions(run_metadata["questions"]).for_language(languages.source)
    if name.startswith("lape_flores_"):
        from lape_harness.task_support.flores import requested_source

        requested_source()
    if name.startswith("lape_lcb_"):
        _check_lcb_files(name)


def _leaf_configs(index: dict[str, Any], names: Iterable[str], seen: set[str], depth: int) -> Iterator[tuple[str, dict]]:
    """``(task name, config)`` of every leaf task behind ``names``; unknown names are lm-eval's to report."""
    for item in names:
        name = item.get("task") if isinstance(item, dict) else item
        if not isinstance(name, str) or name in seen or depth > MAX_DEPTH:
            continue
        seen.add(name)
        entry = index.get(name)
        if entry is None:
            continue
        kind = getattr(entry.kind, "name", str(entry.kind))
        config = entry.cfg or {}
        if kind == "GROUP":
            children = config.get("task") or []
            yield from _leaf_configs(index, children if isinstance(children, list) else [children], seen, depth + 1)
        elif kind == "TAG":
            tagged = [other for other, candidate in index.items() if name in (candidate.tags or ())]
            yield from _leaf_configs(index, tagged, seen, depth + 1)
        elif kind == "TASK":
            yield name, config


def _check_lcb_files(name: str) -> None:
    from lape_harness.task_support.task_data import LCB_REPOSITORY, local_root

    root = local_root()
    if root is None:
        return  # downloaded (and checked) when the task loads
    folder = root / LCB_REPOSITORY
    if not (folder / "test_sets").is_dir() and not (folder / "test_sets.zip").is_file():
        raise InputError(f"task {name}: LAPE_HARNESS_DATA={root} has no Language Confusion Benchmark test sets; "
                         f"copy the repository's test_sets folder (or test_sets.zip) to {folder}, or unset "
                         "LAPE_HARNESS_DATA to download them")
