"""The demo's stages, timed: `lape-harness demo` (the default mode; `--quick` for a smoke run) on the
embedded Gemma-3-270m with hf-steered, in a fresh run folder with the starter corpus already built.

One row: the total seconds, with every stage's seconds in the details (profile, identify, load
model, held-out text, perplexity matrix, language forcing, report). No target: the row keeps the
times comparable from one change to the next; the README states the measured times of each mode
on a fresh clone (install included). Hub benchmarks are left out (`--benchmarks ppl,forcing`) so
the row does not depend on network access.
"""

from __future__ import annotations

import sys
import tempfile
import time


def run(quick: bool) -> list[dict]:
    from lape_harness.demo import run_demo

    mode = "quick" if quick else "default"
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        summary = run_demo(mode, out=tmp, benchmarks="ppl,forcing", log=lambda _line: None)
        total = time.perf_counter() - started
    stages = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in summary["timings"].items() if name != "total")
    return [{
        "benchmark": f"demo stages ({mode} mode, hf-steered, {summary['engine_args'].get('dtype', 'auto')})",
        "model": "gemma-3-270m", "value": round(total, 1), "unit": "s", "target": None, "passed": None,
        "details": f"{len(summary['languages'])} languages: {stages}",
    }]  # fmt: skip


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
