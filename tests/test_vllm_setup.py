"""The CPU engine settings ``vllm-steered`` chooses when the user did not (no engine is built)."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("vllm")
from vllm.platforms import current_platform  # noqa: E402

from lape_harness.plugin.vllm_setup import cpu_defaults  # noqa: E402

if not current_platform.is_cpu():
    pytest.skip("these are the CPU build's defaults", allow_module_level=True)

SETTINGS = ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_NUM_OF_RESERVED_CPU", "VLLM_CPU_OMP_THREADS_BIND")


@pytest.fixture
def machine(monkeypatch):
    """A machine with a chosen number of cores, one NUMA node and none of the settings made."""
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("lape_harness.plugin.vllm_setup._numa_nodes", lambda: 1)

    def cores(count: int) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(count)))

    return cores


@pytest.mark.parametrize("cores, ranks, reserved", [(2, 1, "0"), (3, 1, "0"), (4, 1, None), (4, 2, "0"), (16, 2, None)])
def test_small_machines_reserve_no_core(machine, cores, ranks, reserved):
    machine(cores)
    args = cpu_defaults({"tensor_parallel_size": ranks})
    assert os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU") == reserved
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "2" and args["gpu_memory_utilization"] == 0.5


def test_the_users_choices_stay(machine, monkeypatch):
    machine(2)
    monkeypatch.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "1")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "8")
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0|1")
    args = cpu_defaults({"tensor_parallel_size": 2, "gpu_memory_utilization": 0.9})
    assert [os.environ[name] for name in SETTINGS] == ["8", "1", "0|1"]
    assert args["gpu_memory_utilization"] == 0.9


def test_several_ranks_get_a_core_group_each(machine):
    machine(4)
    cpu_defaults({"tensor_parallel_size": 2})
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0,1|2,3"
