"""The faster dtype for evaluating on this CPU, measured once and kept in the cache.

On a CPU, bfloat16 is fast only where the hardware computes it (AVX-512 BF16 or AMX: 2.6× faster
than float32 for hf-steered's forcing grid on a 2-core Xeon, BENCHMARKS.md) and several times
slower where it is emulated. So the first study on a machine times a small MLP block (Gemma-3-270m's
width, a batch of 512 tokens) in both dtypes and keeps the faster one in
``<cache>/cpu-dtype/<key>.json``, keyed by the CPU model, its flags and the torch version; later
runs read it. The study uses it for ``hf-steered`` and ``vllm-steered`` on a CPU unless
``--engine-args dtype=...`` says otherwise (vLLM's CPU kernels follow the same hardware).

Example:
    >>> choice = cpu_dtype()                          # doctest: +SKIP
    >>> choice["dtype"], choice["seconds"]            # doctest: +SKIP
    ('bfloat16', {'float32': 0.41, 'bfloat16': 0.12})
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path
from typing import Any

from lape_harness.atomic import write_json_atomic
from lape_harness.paths import cache_dir

#: bfloat16 must be at least this much faster to be chosen (float32 is the exact reference)
MARGIN = 1.1


def cpu_key() -> str:
    """CPU model + flags + torch version, hashed (the measurement holds for exactly these)."""
    import torch

    model, flags = platform.processor(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model.strip():
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    text = f"{model}|{flags}|{platform.machine()}|torch {torch.__version__}|threads {torch.get_num_threads()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def measure(repeats: int = 3) -> dict[str, float]:
    """Seconds per forward of a gated MLP block (640 → 2048 → 640, 512 tokens) per dtype, best of ``repeats``."""
    import torch

    seconds = {}
    generator = torch.Generator().manual_seed(0)
    for name in ("float32", "bfloat16"):
        dtype = getattr(torch, name)
        gate, up = (torch.randn(640, 2048, generator=generator).to(dtype) for _ in range(2))
        down = torch.randn(2048, 640, generator=generator).to(dtype)
        tokens = torch.randn(512, 640, generator=generator).to(dtype)
        best = float("inf")
        with torch.inference_mode():
            for _ in range(repeats + 1):  # the first call warms up
                started = time.perf_counter()
                for _ in range(4):
                    (torch.nn.functional.gelu(tokens @ gate) * (tokens @ up)) @ down
                best = min(best, time.perf_counter() - started)
        seconds[name] = round(best, 4)
    return seconds


def cpu_dtype(refresh: bool = False) -> dict[str, Any]:
    """``{"dtype", "seconds", "key"}``: the faster dtype on this CPU (cached; ``refresh`` measures again)."""
    path = cache_dir() / "cpu-dtype" / f"{cpu_key()}.json"
    if path.is_file() and not refresh:
        try:
            kept = json.loads(path.read_text(encoding="utf-8"))
            if kept.get("dtype") in ("float32", "bfloat16"):
                return kept
        except (OSError, json.JSONDecodeError):
            pass
    seconds = measure()
    choice = "bfloat16" if seconds["float32"] > MARGIN * seconds["bfloat16"] else "float32"
    kept = {"dtype": choice, "seconds": seconds, "key": path.stem, "rule": f"bfloat16 when ≥ {MARGIN}× faster"}
    write_json_atomic(path, kept)
    return kept
