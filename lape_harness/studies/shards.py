"""Where a sweep's results live on disk, and sharing a sweep's plan × task cells among jobs.

``lape-harness sweep --shard I/N`` runs the I-th of N shares of a sweep's cells (one cell: one
plan on one task), so that N jobs (a Slurm job array, say) given the same command split the
grid without talking to each other. Under the sweep's folder ``OUT``:

* ``OUT/<plan folder>/``: a plan evaluated on every task in one lm-eval run (an unsharded sweep);
* ``OUT/cells/<plan folder>/task=<task>/``: one cell (a sharded sweep, or an unsharded one that
  finishes a plan shards began); inside, what ``lm_eval --output_path`` writes, as in a plan folder;
* ``OUT/sweep.json`` (unsharded) or ``OUT/sweep-shard-I-of-N.json`` (share I of N): the settings.

No two shares write the same path: each owns its cells' folders and its own settings file, and
checks every other settings file it finds, so any share can start first and a share started with
other settings (model, tasks, limit, ...) is refused. Every results folder is built in a hidden
``.<name>.partial-*`` folder beside its place and renamed into place when complete, so a re-run
of a share skips its finished cells and redoes an interrupted one. A cell is finished when its
cell folder holds readable results, or when its plan's folder does (that holds every task: the
task list is pinned).

Which share owns a cell depends only on the cells: sorted by (plan folder, task), they are
dealt out in turn (share I gets the I-th, the (I+N)-th, ...), so shares differ by at most one
cell and the order of ``--plans`` does not matter. The leaderboard reads results by model,
plan and task, so the union of all shares gives the table one unsharded sweep gives.

Example:
    >>> shard = parse_shard("2/3")
    >>> shard.owns([("steer=none", "a"), ("steer=none", "b"), ("steer=-de", "a"), ("steer=-de", "b")])
    [('steer=-de', 'b')]
    >>> task_folder("lape_ppl_de"), shard.manifest
    ('task=lape_ppl_de', 'sweep-shard-2-of-3.json')
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lape_harness.errors import InputError

#: the settings of an unsharded sweep (a share writes ``sweep-shard-I-of-N.json`` instead)
MANIFEST = "sweep.json"
#: the folder (under the sweep's) holding one folder per plan with one folder per task
CELLS = "cells"
# Settings that change the numbers: a re-run into the same folder, and every share, must repeat them.
PINNED = ("engine", "model_args", "tasks", "limit", "num_fewshot", "gen_kwargs", "seed", "apply_chat_template",
          "system_instruction", "bootstrap_iters")
_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
_EXAMPLE = "e.g. --shard 1/4 ... --shard 4/4 (a Slurm job array: #SBATCH --array=1-4 and --shard $SLURM_ARRAY_TASK_ID/4)"


@dataclass(frozen=True)
class Shard:
    """Share ``index`` (from 1) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def manifest(self) -> str:
        return f"sweep-shard-{self.index}-of-{self.count}.json"

    def owns(self, cells: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """This share's ``(plan folder, task)`` cells: all of them sorted, then every N-th from the I-th."""
        return sorted(set(cells))[self.index - 1 :: self.count]


def parse_shard(text: str | Shard) -> Shard:
    """``"2/4"`` → ``Shard(2, 4)``; :class:`InputError` naming the fix for anything else."""
    if isinstance(text, Shard):
        text = str(text)
    match = _SHARD.fullmatch(str(text))
    if match is None:
        raise InputError(f"--shard {text!r} is not I/N (share I of N shares, whole numbers, 1 ≤ I ≤ N); {_EXAMPLE}")
    index, count = int(match[1]), int(match[2])
    if count < 1:
        raise InputError(f"--shard {text}: N, the number of shares, must be at least 1; {_EXAMPLE}")
    if not 1 <= index <= count:
        raise InputError(f"--shard {text}: shares are numbered 1 to {count} (I counts from 1, not 0): "
                         f"--shard 1/{count} ... --shard {count}/{count}")
    return Shard(index, count)


def task_folder(task: str) -> str:
    """A file-system-safe folder name for a task (``task=lape_ppl_de``; a YAML path gets a hash)."""
    name = f"task={task}"
    safe = re.sub(r"[^A-Za-z0-9=+\-.,@_]", "_", name)
    return safe if safe == name else f"{safe}-{hashlib.sha256(task.encode()).hexdigest()[:6]}"


def cell_folder(output: Path, plan_folder: str, task: str) -> Path:
    return output / CELLS / plan_folder / task_folder(task)


def finished_results(folder: Path, log: Callable[[str], None] | None = None) -> Path | None:
    """The results JSON of a finished plan or cell folder, or None (also when that file no longer
    reads as lm-eval results: it then runs again, and ``log`` says why)."""
    from lape_harness.analysis.results import read_run

    found = sorted(folder.glob("*/results_*.json")) if folder.is_dir() else []
    if not found:
        return None
    try:
        read_run(found[-1])
    except InputError as error:
        if log is not None:
            log(f"note: {str(error).split('; ')[0]}; its plan runs again")
        return None
    return found[-1]


@dataclass(frozen=True)
class Unit:
    """One lm-eval run of a sweep: a whole plan into its plan folder, or one cell into its cell folder."""

    position: int  # the plan's place in the sweep's (distinct) plans
    tasks: tuple[str, ...]
    folder: Path
    task: str | None = None  # the cell's task; None: the whole plan


def plan_units(output: Path, plan_folders: list[str], tasks: list[str], shard: Shard | None,
               log: Callable[[str], None]) -> tuple[list[tuple[Unit, Path]], list[Unit]]:
    """``(finished units with their results file, units to run)``. Unsharded, a plan with no
    finished cell runs whole; otherwise (and always for a share) each of its cells runs alone."""
    cell_tasks = list(dict.fromkeys(tasks))
    owned = None if shard is None else set(shard.owns([(f, t) for f in plan_folders for t in cell_tasks]))
    done: list[tuple[Unit, Path]] = []
    todo: list[Unit] = []
    for position, folder in enumerate(plan_folders):
        whole = Unit(position, tuple(tasks), output / folder)
        cells = [Unit(position, (task,), cell_folder(output, folder, task), task)
                 for task in cell_tasks if owned is None or (folder, task) in owned]
        if not cells and owned is not None:
            continue
        found = finished_results(whole.folder, log)
        if found is not None:  # a plan folder holds every task
            done += [(whole, found)] if shard is None else [(cell, found) for cell in cells]
            continue
        finished = [(cell, finished_results(cell.folder, log)) for cell in cells]
        if shard is None and not any(path for _cell, path in finished):
            todo.append(whole)
            continue
        done += [(cell, path) for cell, path in finished if path is not None]
        todo += [cell for cell, path in finished if path is None]
    return done, todo


def describe_share(shard: Shard, cells: list[tuple[str, str]], total: int) -> str:
    """``shard 1/2 owns 2 of 4 cells (plan × task): none × a; -de × b``."""
    if not cells:
        return f"shard {shard} owns none of the sweep's {total} cell(s): nothing to do (fewer cells than shares)"
    return (f"shard {shard} owns {len(cells)} of {total} cell(s) (plan × task): "
            + "; ".join(f"{plan} × {task}" for plan, task in cells))


def check_settings(output: Path, settings: dict[str, Any], own: str = MANIFEST) -> bool:
    """Refuse a folder whose sweep (or any share of it) was made with other settings; return whether
    ``own`` (this run's settings file) is still to be written (just before its first results appear)."""
    written = False
    for manifest in [output / MANIFEST, *sorted(output.glob("sweep-shard-*-of-*.json"))]:
        earlier = _read_settings(manifest)
        if earlier is None:
            continue
        written |= manifest.name == own
        earlier.setdefault("engine", "hf")  # sweeps from before --engine existed
        changed = [key for key in PINNED if earlier.get(key) != settings.get(key)]
        if changed:
            made_by = "a sweep" if manifest.name == MANIFEST else f"shard {earlier.get('shard', manifest.stem)} of a sweep"
            raise InputError(
                f"{output} holds {made_by} made with other settings ({', '.join(changed)} differ: e.g. "
                f"{changed[0]} was {earlier.get(changed[0])!r}, now {settings.get(changed[0])!r}; see {manifest.name}); "
                "use another --output folder, or delete that one to start over"
            )
    return not written


def _read_settings(manifest: Path) -> dict[str, Any] | None:
    if not manifest.is_file():
        return None
    try:
        earlier = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return earlier if isinstance(earlier, dict) else None
