"""``vllm-steered``'s data-parallel group (:mod:`lape_harness.plugin.vllm_data_parallel`) without engines:
fake actors stand in for the Ray actors, so the dealing, the agreement rule and the focus are
tested exactly. Two real CPU engines against one: tests/test_vllm.py."""

from __future__ import annotations

import os
from unittest import mock

import pytest

from lape_harness.errors import HookNeverFiredError, InputError
from lape_harness.plugin.vllm_data_parallel import DataParallelLLM, engine_environments


class _Method:
    def __init__(self, function) -> None:
        self.remote = function


class FakeEngine:
    """An actor handle whose ``.method.remote(...)`` answers at once (``get`` is then the identity)."""

    def __init__(self, number: int, tables: dict | None = None) -> None:
        self.number, self.calls = number, []
        self.tables = tables if tables is not None else {}
        self.generate = _Method(self._generate)
        self.collective_rpc = _Method(self._rpc)
        self.reset_prefix_cache = _Method(lambda: self.calls.append("reset") or True)

    def _generate(self, prompts, params, options):
        self.calls.append(("generate", list(prompts), list(params), options))
        return [(self.number, prompt, param) for prompt, param in zip(prompts, params, strict=True)]

    def _rpc(self, method, args):
        self.calls.append((method, args))
        return [self.tables.get(method, "same")]


def group(count: int, **tables) -> DataParallelLLM:
    return DataParallelLLM([FakeEngine(number, tables.get(str(number))) for number in range(count)],
                           get=lambda value: value, model_config="config")


@pytest.mark.parametrize("count, prompts", [(3, 7), (2, 2), (3, 1), (2, 0)])
def test_generate_deals_prompts_in_turn_and_keeps_their_order(count, prompts):
    llm = group(count)
    texts = [f"prompt {i}" for i in range(prompts)]
    params = [f"params {i}" for i in range(prompts)]
    outputs = llm.generate(texts, params, use_tqdm=False)
    assert [(prompt, param) for _engine, prompt, param in outputs] == list(zip(texts, params))
    assert [engine for engine, _prompt, _param in outputs] == [i % count for i in range(prompts)]
    idle = [engine for engine in llm.actors if not engine.calls]
    assert len(idle) == max(0, count - prompts)  # an engine with no share is not called
    assert all(call[3] == {"use_tqdm": False} for engine in llm.actors for call in engine.calls)


def test_one_sampling_params_object_goes_to_every_prompt():
    outputs = group(2).generate(["a", "b", "c"], "shared")
    assert [param for _engine, _prompt, param in outputs] == ["shared"] * 3


def test_rpcs_reach_every_engine_and_must_agree():
    llm = group(3)
    assert llm.collective_rpc("lape_layout") == ["same"]
    assert all(engine.calls == [("lape_layout", ())] for engine in llm.actors)
    assert llm.reset_prefix_cache() and all(engine.calls[-1] == "reset" for engine in llm.actors)
    assert llm.llm_engine.model_config == "config"

    differing = group(3, **{"2": {"lape_table_digest": "other"}})
    with pytest.raises(HookNeverFiredError, match=r"engine 2 answered lape_table_digest with \['other'\], engine 0 "
                                                  r"with \['same'\]: the engines no longer hold the same"):
        differing.collective_rpc("lape_table_digest", (1,))


def test_focus_narrows_every_call_to_one_engine():
    llm = group(3, **{"2": {"lape_table_digest": "other"}})
    with llm.focus(2):
        assert llm.collective_rpc("lape_table_digest", (1,)) == ["other"]  # no other engine to disagree with
        assert {engine for engine, _, _ in llm.generate(["a", "b", "c"], "p")} == {2}
        llm.reset_prefix_cache()
    assert llm.focused is None
    assert [len(engine.calls) for engine in llm.actors] == [0, 0, 3]
    with pytest.raises(RuntimeError), llm.focus(1):
        raise RuntimeError("a failed check")
    assert llm.focused is None


def test_each_engine_gets_cores_of_its_own_on_a_cpu():
    with mock.patch("os.sched_getaffinity", return_value=set(range(8))), \
            mock.patch.dict(os.environ, {"VLLM_CPU_KVCACHE_SPACE": "2"}, clear=True):
        two_by_two = engine_environments(2, ranks=2)
    assert [env["VLLM_CPU_OMP_THREADS_BIND"] for env in two_by_two] == ["0,1|2,3", "4,5|6,7"]
    assert all(env["VLLM_CPU_KVCACHE_SPACE"] == "2" for env in two_by_two)
    with mock.patch.dict(os.environ, {"VLLM_CPU_OMP_THREADS_BIND": "0-3|4-7"}, clear=True):
        assert engine_environments(2, ranks=1) == [{"VLLM_CPU_OMP_THREADS_BIND": "0-3|4-7"}] * 2  # the user's own
    with mock.patch("os.sched_getaffinity", return_value={0}), mock.patch.dict(os.environ, {}, clear=True), \
            pytest.raises(InputError, match=r"2 vLLM ranks \(tensor_parallel_size × data_parallel_size\) need at least 2 CPU cores"):
        engine_environments(2, ranks=1)


def test_data_parallel_without_ray_names_the_install(monkeypatch):
    from lape_harness.plugin import vllm_data_parallel

    monkeypatch.setattr(vllm_data_parallel, "find_spec", lambda name: None)
    with pytest.raises(InputError, match=r'Ray actors: pip install "lape-harness\[vllm\]"'):
        vllm_data_parallel.require_ray()
