"""The Language Confusion Benchmark tasks through lm_eval.simple_evaluate on a tiny steered model
with the fixture test sets: prompts and generation settings are the benchmark's, ``steer=auto``
steers toward the language the answer should be in, and LPR/WPR/LCPR equal a recount of the
logged completions by an independent reference (references/language_confusion.py)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from references.language_confusion import reference_rates

from lape_harness.task_support.task_data import DATA_ENV

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"
TEST_SETS = FIXTURES / "for-ai" / "language-confusion" / "test_sets"
# task -> (fixture file, expected answer language, the plan steer=auto must pick)
TASKS = {
    "lape_lcb_crosslingual_okapi_ja": ("crosslingual/okapi/ja.csv", "ja", "+ja"),
    "lape_lcb_monolingual_okapi_de": ("monolingual/okapi/de.csv", "de", "+de"),
}


@pytest.fixture(scope="module")
def evaluation(tiny_llama, neuron_file):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from lape_harness.plugin.hf_steered import HFSteeredLM

    neurons = neuron_file(tiny_llama, languages=["de", "ja", "en"])
    lm = HFSteeredLM(pretrained=str(tiny_llama), device="cpu", dtype="float32", batch_size=4,
                     neurons=str(neurons), steer="auto")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DATA_ENV, str(FIXTURES))
        return simple_evaluate(
            model=lm,
            tasks=list(TASKS),
            task_manager=TaskManager(include_path=str(REPO / "tasks"), include_defaults=False),
            log_samples=True,
        )


def _fixture_prompts(relative: str) -> list[str]:
    with open(TEST_SETS / relative, encoding="utf-8", newline="") as handle:
        return [row["prompt"] for row in csv.DictReader(handle)]


def test_auto_steers_toward_the_answer_language(evaluation):
    assert evaluation["config"]["steering"]["plans_by_task"] == {task: plan for task, (_, _, plan) in TASKS.items()}


def test_prompts_and_generation_settings_are_the_benchmarks(evaluation):
    for task, (relative, _, _) in TASKS.items():
        samples = sorted(evaluation["samples"][task], key=lambda sample: sample["doc_id"])
        assert [sample["arguments"][0][0] for sample in samples] == _fixture_prompts(relative)
        settings = samples[0]["arguments"][0][1]
        assert settings["max_gen_toks"] == 100 and settings["do_sample"] is True
        assert settings["temperature"] == 0.3 and settings["top_p"] == 0.75
        assert "\nQ:" in settings["until"]


def test_scores_equal_a_recount_of_the_completions(evaluation):
    for task, (_, language, _) in TASKS.items():
        outputs = [sample["filtered_resps"][0] for sample in evaluation["samples"][task]]
        lpr, wpr, scored = reference_rates(outputs, language)
        assert scored > 0, task  # the check below is not vacuous
        result = evaluation["results"][task]
        assert result["lpr,none"] == pytest.approx(lpr), task
        if language == "ja":
            assert result["wpr,none"] == pytest.approx(wpr), task
            assert result["lcpr,none"] == pytest.approx(0.0 if lpr + wpr == 0 else 2 * lpr * wpr / (lpr + wpr)), task
        else:  # Latin script: no word-level check, LCPR is LPR
            assert "wpr,none" not in result
            assert result["lcpr,none"] == pytest.approx(lpr), task
