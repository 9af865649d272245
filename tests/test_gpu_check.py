"""The GPU check script (benchmarks/gpu_check.py) in its CPU smoke mode: the same code path on a
tiny shape; and its message on a machine without CUDA."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
torch.set_num_threads(1)  # see test_hooks.py
CHECKS = {"profile_memory", "profile_throughput", "steering_bf16_vs_fp32", "no_host_sync_in_hooks",
          "decode_step_time", "two_device_split"}


def test_small_cpu_mode_runs_every_check(tmp_path, capsys):
    from benchmarks import gpu_check

    out = tmp_path / "summary.json"
    summary = gpu_check.main(["--device", "cpu", "--small", "--out", str(out)])
    printed = json.loads(capsys.readouterr().out)
    assert printed == summary == json.loads(out.read_text(encoding="utf-8"))
    assert set(summary["checks"]) == CHECKS and summary["passed"] is True
    assert all({"value", "target", "passed"} <= set(entry) for entry in summary["checks"].values())
    assert summary["checks"]["profile_throughput"]["tokens"] > 0
    steering = summary["checks"]["steering_bf16_vs_fp32"]
    assert steering["steering_effect"] > 0 and steering["argmax_agreement"] >= 0.5
    assert set(summary["checks"]["no_host_sync_in_hooks"]["cases"]) == {
        "hookless_forward", "profile", "steer_all", "steer_bos_false", "steer_generated_prefill"}
    assert summary["checks"]["two_device_split"]["counts_equal"] is True


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_says_so():
    result = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert "no CUDA device" in result.stderr and "--device cpu --small" in result.stderr
