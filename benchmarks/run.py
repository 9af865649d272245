"""Run every benchmark and print one table of results with the machine it ran on.

Each ``benchmarks/bench_<name>.py`` defines ``run(quick: bool) -> list[dict]``; each row is
``{"benchmark", "model", "value", "unit" ("ratio" | "s" | "MB"), "target", "passed"
(True | False | None when there is no target or it could not be measured), "details"}``.
Each benchmark runs in its own process; one that raises or crashes is reported as a failed
row, and the others still run.

Usage:
    python -m benchmarks.run                          # everything, full sizes
    python -m benchmarks.run --quick                  # small sizes (a smoke run)
    python -m benchmarks.run --only identify steering # some benchmarks
    python -m benchmarks.run --write BENCHMARKS.md    # refresh their tables in BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import pkgutil
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import benchmarks

COLUMNS = ("benchmark", "model", "value", "target", "passed", "details")


def discover() -> list[str]:
    """Names of the benchmark modules (``bench_identify`` → ``identify``), sorted."""
    return sorted(info.name[len("bench_"):] for info in pkgutil.iter_modules(benchmarks.__path__)
                  if info.name.startswith("bench_"))  # fmt: skip


def machine() -> dict[str, Any]:
    """CPU model, core count, memory, torch version and accelerator of this machine."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))  # fmt: skip
    except (OSError, StopIteration):
        pass
    memory_gb = None
    try:
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": memory_gb,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average": round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def run_benchmark(name: str, quick: bool) -> list[dict[str, Any]]:
    """The rows of one benchmark module, run in a fresh process so that benchmarks cannot
    disturb each other's memory or threads; a crash becomes one failed row."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lape-bench-rows-") as folder:
        rows_file = Path(folder) / "rows.json"
        code = "import sys; from benchmarks.run import _write_rows; _write_rows(*sys.argv[1:])"
        done = subprocess.run([sys.executable, "-c", code, name, "quick" if quick else "full", str(rows_file)],
                              cwd=Path(__file__).resolve().parents[1], check=False)  # fmt: skip
        if done.returncode == 0 and rows_file.exists():
            rows = json.loads(rows_file.read_text())
        else:
            rows = [_failed_row(name, f"the benchmark process exited with status {done.returncode}")]
    print(f"[{name}: {time.perf_counter() - started:.0f} s]", file=sys.stderr)
    return rows


def _write_rows(name: str, size: str, path: str) -> None:
    """Inside the benchmark's process: write its rows (or one failed row with the error) as JSON."""
    try:
        rows = importlib.import_module(f"benchmarks.bench_{name}").run(quick=size == "quick")
    except Exception as error:  # keep going: one broken benchmark must not hide the others
        traceback.print_exc()
        rows = [_failed_row(name, f"crashed: {type(error).__name__}: {error}")]
    with open(path, "w", encoding="utf-8") as handle:  # numpy/torch scalars become plain numbers
        json.dump(rows, handle, default=lambda value: value.item() if hasattr(value, "item") else str(value))


def _failed_row(name: str, details: str) -> dict[str, Any]:
    return {"benchmark": name, "model": "-", "value": None, "unit": "", "target": None, "passed": False,
            "details": details}  # fmt: skip


def format_value(value: Any, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "ratio":
        return f"{value:.2f}×"
    if unit == "s":
        return f"{value:.2f} s" if value < 100 else f"{value:.0f} s"
    if unit == "MB":
        return f"{value:,.0f} MB"
    return f"{value:g} {unit}".strip() if isinstance(value, (int, float)) else str(value)


def table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of the rows."""
    verdict = {True: "yes", False: "**NO**", None: "-"}
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [
            str(row.get("benchmark", "")),
            str(row.get("model", "")),
            format_value(row.get("value"), row.get("unit", "")),
            str(row.get("target") or "-"),
            verdict[row.get("passed")],
            str(row.get("details") or "").replace("|", "/").replace("\n", " "),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_line(info: dict[str, Any]) -> str:
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ", no GPU"
    return (f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB RAM{gpu}; "
            f"torch {info['torch']}, Python {info['python']}; load average {info['load_average']} "
            f"at the start; {info['date']}.")  # fmt: skip


def write_sections(path: Path, sections: dict[str, str]) -> None:
    """Replace (or append) each benchmark's section between its markers in ``path``."""
    from lape_harness.atomic import write_text_atomic

    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    for name, body in sections.items():
        start, end = f"<!-- benchmark:{name}:start -->", f"<!-- benchmark:{name}:end -->"
        block = f"{start}\n{body}\n{end}"
        pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
        text = pattern.sub(lambda _, block=block: block, text) if pattern.search(text) else text.rstrip("\n") + f"\n\n{block}\n"
    write_text_atomic(path, text)


def main(argv: list[str] | None = None) -> int:
    names = discover()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every benchmark")
    parser.add_argument("--only", nargs="+", choices=names, metavar="NAME",
                        help=f"run only these benchmarks, from: {', '.join(names)} (default: all)")  # fmt: skip
    parser.add_argument("--write", metavar="MARKDOWN", help="refresh these benchmarks' tables in this file")
    parser.add_argument("--json", metavar="PATH", help="also write the machine and rows as JSON")
    args = parser.parse_args(argv)

    info = machine()
    print(machine_line(info))
    command = "python -m benchmarks.run" + " ".join(
        [""] + (["--quick"] if args.quick else []) + (["--only", *args.only] if args.only else [])
    )  # fmt: skip
    results = {name: run_benchmark(name, args.quick) for name in (args.only or names)}
    rows = [row for name_rows in results.values() for row in name_rows]
    print(table(rows))
    if args.write:
        sections = {
            name: f"Measured with `{command}`.\n{machine_line(info)}\n\n{table(name_rows)}"
            for name, name_rows in results.items()
        }
        write_sections(Path(args.write), sections)
        print(f"wrote {len(sections)} table(s) to {args.write}")
    if args.json:
        from lape_harness.atomic import write_json_atomic

        write_json_atomic(args.json, {"machine": info, "command": command, "rows": rows})
    return 0 if all(row.get("passed") is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

