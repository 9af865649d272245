"""`lape-harness study`: the demo generalised to any model, engine, benchmarks and plans.

End to end on the tiny Llama of the test session with ``hf-steered`` (perplexity, forcing and the
five hub families read from the ``LAPE_HARNESS_DATA`` fixtures) and once with ``vllm-steered``;
families whose data cannot load are skipped with one line each; the CPU dtype is measured once.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from builders import write_study_corpus

from lape_harness.demo import Mode, Strength, run_study
from lape_harness.demo.benchmarks import family_tasks, parse_benchmarks
from lape_harness.errors import InputError

FIXTURES = Path(__file__).parent / "fixtures" / "data"
HUB = ("flores", "xquad", "belebele", "xnli", "lcb")
TINY = Mode(
    name="tiny", languages=("en", "de"), profile_tokens=200, seq_len=32, heldout_tokens=40, ppl_rate=0.1,
    forcing_languages=("en", "de"), forcing_prompts=1, forcing_rates=(0.1,), strengths=(Strength(2.0),),
    max_gen_toks=3, top_rates=(0.05, 0.1), bench_limit=4,
)  # fmt: skip


def test_benchmark_lists_and_tasks():
    assert parse_benchmarks(None) == ["ppl", "forcing", *HUB]
    assert parse_benchmarks("xnli, ppl") == ["ppl", "xnli"]
    assert parse_benchmarks("none") == []
    with pytest.raises(InputError, match="unknown bogus"):
        parse_benchmarks("ppl,bogus")
    known = {"lape_lcb_monolingual_aya_en", "lape_lcb_monolingual_okapi_en", "lape_lcb_monolingual_okapi_de",
             "lape_lcb_base_monolingual_okapi_de"}
    assert family_tasks("lcb", ["en", "de", "fr"], known) == ["lape_lcb_monolingual_okapi_en",
                                                              "lape_lcb_base_monolingual_okapi_de"]


def test_cpu_dtype_is_measured_once_and_cached(tmp_path, monkeypatch):
    from lape_harness.demo import cpu_dtype

    monkeypatch.setenv("LAPE_HARNESS_CACHE", str(tmp_path))
    calls = []
    monkeypatch.setattr(cpu_dtype, "measure", lambda: calls.append(1) or {"float32": 0.3, "bfloat16": 0.1})
    assert cpu_dtype.cpu_dtype()["dtype"] == "bfloat16"
    assert cpu_dtype.cpu_dtype()["dtype"] == "bfloat16" and len(calls) == 1  # read back from the cache
    monkeypatch.setattr(cpu_dtype, "measure", lambda: {"float32": 0.1, "bfloat16": 0.3})  # emulated bf16
    assert cpu_dtype.cpu_dtype(refresh=True)["dtype"] == "float32"


def _results(folder: Path, plan_folder_prefix: str) -> dict:
    (path,) = [path for path in folder.glob(f"{plan_folder_prefix}*/*/results_*.json")
               if "control" in plan_folder_prefix or "control" not in path.parent.parent.name]
    return json.loads(path.read_text())


def test_study_end_to_end_with_hub_fixtures(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("LAPE_HARNESS_DATA", str(FIXTURES))
    corpus = write_study_corpus(tmp_path / "corpus", languages=("en", "de"))
    out, lines = tmp_path / "run", []
    summary = run_study(str(tiny_llama), mode=TINY, corpus=corpus, out=out, languages=["en", "de"], device="cpu",
                        benchmarks=",".join(("ppl", *HUB)), engine_args="dtype=float32,batch_size=4",
                        log=lines.append)  # fmt: skip
    assert summary["engine"] == "hf-steered" and summary["engine_args"] == {"dtype": "float32"}
    assert set(summary["benchmarks"]) == set(HUB) and not summary["skipped"]
    # the fixtures hold German only: the English tasks are left out with one line each
    assert any(line.startswith("[study] xnli: lape_xnli_en left out") and "to enable" in line for line in lines)

    xnli = summary["benchmarks"]["xnli"]
    assert xnli["tasks"] == ["lape_xnli_de"]
    (row,) = xnli["comparison"]
    folder = out / "results" / f"xnli_top10_{TINY.bench_limit}ex"
    none = _results(folder, "steer=none")["results"]["lape_xnli_de"]
    plan = _results(folder, "steer=auto@lape-top10-")
    control = _results(folder, "steer=auto@lape-top10-control-s0-")["results"]["lape_xnli_de"]
    assert plan["lape_sweep"]["signature"]["plans_by_task"] == {"lape_xnli_de": "+de"}
    assert row["language"] == "de" and row["none"] == none["acc,none"]
    assert row["difference"] == pytest.approx(plan["results"]["lape_xnli_de"]["acc,none"] - control["acc,none"])
    se = math.sqrt(plan["results"]["lape_xnli_de"]["acc_stderr,none"] ** 2 + control["acc_stderr,none"] ** 2)
    assert row["difference_stderr"] == pytest.approx(se)

    report = (out / "report.md").read_text()
    for text in ("- model:", "- engine: `hf-steered` with `dtype=float32`", "- xnli data: local copies under",
                 "## xnli (lape_xnli, top10 set)", "| `auto @lape-top10` | de |", "lape-steer|plan:auto|",
                 "## Perplexity matrix"):  # fmt: skip
        assert text in report, text
    for family in HUB:
        assert (out / f"{family}.png").is_file(), family

    # a second run reuses every sweep and starts no engine
    lines.clear()
    again = run_study(str(tiny_llama), mode=TINY, corpus=corpus, out=out, languages=["en", "de"], device="cpu",
                      benchmarks=",".join(("ppl", *HUB)), engine_args="dtype=float32,batch_size=4",
                      log=lines.append)  # fmt: skip
    assert not any("load model" in line for line in lines)
    assert again["benchmarks"]["xnli"]["comparison"] == xnli["comparison"]


def test_unloadable_families_are_skipped_with_one_line_each(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("LAPE_HARNESS_DATA", str(tmp_path / "empty"))
    corpus = write_study_corpus(tmp_path / "corpus", languages=("en", "de"))
    lines = []
    summary = run_study(str(tiny_llama), mode=TINY, corpus=corpus, out=tmp_path / "run", languages=["en", "de"],
                        device="cpu", benchmarks=",".join(HUB), engine_args="dtype=float32", log=lines.append)
    assert set(summary["skipped"]) == set(HUB) and summary["benchmarks"] == {}
    for family in HUB:
        skipped = [line for line in lines if line.startswith(f"[study] {family}: skipped")]
        assert len(skipped) == 1 and "to enable:" in skipped[0], family
    assert not any("load model" in line for line in lines)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "- belebele: skipped (" in report


def test_bad_study_arguments_fail_before_any_work(tiny_llama, tmp_path):
    corpus = write_study_corpus(tmp_path / "corpus", languages=("en", "de"))
    common = dict(mode=TINY, corpus=corpus, out=tmp_path / "run")
    with pytest.raises(InputError, match="--engine"):
        run_study(str(tiny_llama), engine="tgi", **common)
    with pytest.raises(InputError, match="set by the study itself"):
        run_study(str(tiny_llama), engine_args="neurons=x.safetensors", **common)
    with pytest.raises(InputError, match="drop the '@FILE'"):
        run_study(str(tiny_llama), plans=["auto@x.safetensors"], **common)
    with pytest.raises(InputError, match="profile and identify first"):
        run_study(str(tiny_llama), shard="1/2", **common)
    from lape_harness.cli import main

    assert main(["study", "--model", str(tiny_llama), "--benchmarks", "bogus", "--out", str(tmp_path / "r"),
                 "--corpus", str(corpus)]) == 2


def test_study_with_vllm_end_to_end(tmp_path, monkeypatch):
    """One vllm-steered engine for the whole study: perplexity matrix, forcing and xnli."""
    pytest.importorskip("vllm")
    from builders import build_tiny_model

    monkeypatch.setenv("LAPE_HARNESS_DATA", str(FIXTURES))
    model = build_tiny_model(tmp_path / "llama", arch="llama", hidden=128, heads=2)  # vLLM CPU: head size ≥ 32
    corpus = write_study_corpus(tmp_path / "corpus", languages=("en", "de"))
    lines = []
    summary = run_study(str(model), mode=TINY, corpus=corpus, out=tmp_path / "run", languages=["en", "de"],
                        engine="vllm", benchmarks="ppl,forcing,xnli", log=lines.append,
                        engine_args="dtype=float32,max_model_len=512,block_size=32,gpu_memory_utilization=0.3")
    assert summary["engine"] == "vllm-steered"
    assert sum("load model (vllm-steered) ..." in line for line in lines) == 1  # one engine for every stage
    assert summary["perplexity"]["control"] and summary["forcing"]["pairs"] == 2
    assert summary["benchmarks"]["xnli"]["comparison"][0]["language"] == "de"
    for path in (tmp_path / "run" / "results").rglob("results_*.json"):
        assert json.loads(path.read_text())["config"]["model"] == "vllm-steered"
    assert "- engine: `vllm-steered`" in (tmp_path / "run" / "report.md").read_text()
