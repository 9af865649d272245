"""`lape-harness leaderboard` on hand-written lm-eval results (tests/fixtures/results)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest

from lape_harness.analysis.leaderboard import build_leaderboard, parse_metric_overrides
from lape_harness.analysis.leaderboard_report import to_csv, to_markdown
from lape_harness.analysis.results import load_runs, read_run
from lape_harness.cli import main
from lape_harness.errors import InputError

FIXTURES = Path(__file__).parent / "fixtures" / "results"
GEMMA, LLAMA = "google/gemma-3-270m", "meta-llama/Llama-3.1-8B"
# Gemma's steered runs use two neuron files, so its plans are labelled with the file
OFF_DE, OFF_DE_TOP3, AUTO = "-de @lape-top1", "-de @lape-top3", "auto @lape-top1"


def _score(path: str, task: str, metric: str) -> tuple[float, float | None]:
    """Read a value straight from a fixture file (the independent reference)."""
    values = json.loads((FIXTURES / path).read_text())["results"][task]
    stderr = values.get(f"{metric}_stderr,none")
    return values[f"{metric},none"], (stderr if isinstance(stderr, float) else None)


def _rows(board):
    return {(r.model, r.task, r.plan): r for r in board.rows}


def test_plans_models_and_baselines_are_read_from_each_kind_of_file():
    runs = {run.path.relative_to(FIXTURES).as_posix(): run for run in load_runs([FIXTURES])}
    assert "not_results.json" not in runs  # a folder's other JSON files are skipped
    assert (runs["gemma/results_baseline.json"].model, runs["gemma/results_baseline.json"].plan) == (GEMMA, "none")
    assert runs["gemma/sweep/steer=-de/results.json"].plan == "-de"  # recorded by the sweep
    assert runs["gemma/sweep/steer=-de@lape-top3-abc123/results.json"].neurons.endswith("lape-top3.safetensors")
    assert runs["gemma/results_auto.json"].plan == "auto"  # steer= of a plain hf-steered run
    assert runs["llama/results_de.json"].model == LLAMA


def test_expected_table():
    board = build_leaderboard(load_runs([FIXTURES]))
    rows = _rows(board)
    base_de, base_de_se = _score("gemma/results_baseline.json", "lape_belebele_de", "acc")
    off_de, off_de_se = _score("gemma/sweep/steer=-de/results.json", "lape_belebele_de", "acc")
    row = rows[(GEMMA, "lape_belebele_de", OFF_DE)]
    assert (row.family, row.language, row.metric) == ("lape_belebele", "de", "acc")
    assert row.baseline == base_de and row.score == off_de
    assert row.delta == pytest.approx(off_de - base_de)
    assert row.delta_stderr == pytest.approx(math.hypot(off_de_se, base_de_se))
    # perplexity: bytes by default, lower is better, no stderr reported ("N/A"), relative change
    ppl = rows[(GEMMA, "lape_ppl_de", OFF_DE)]
    assert ppl.metric == "byte_perplexity" and ppl.higher_is_better is False and ppl.stderr is None
    steered = _score("gemma/sweep/steer=-de/results.json", "lape_ppl_de", "byte_perplexity")[0]
    base = _score("gemma/results_baseline.json", "lape_ppl_de", "byte_perplexity")[0]
    assert ppl.delta == pytest.approx(steered - base) and ppl.relative == pytest.approx(steered / base - 1)
    word = build_leaderboard(load_runs([FIXTURES / "gemma"]), metric={"lape_ppl": "word_perplexity"})
    assert {r.metric for r in word.rows if r.family == "lape_ppl"} == {"word_perplexity"}
    ppl_average = next(a for a in board.averages if a.family == "lape_ppl" and a.plan == "none")
    baselines = [_score("gemma/results_baseline.json", f"lape_ppl_{c}", "byte_perplexity")[0] for c in ("de", "fr")]
    assert ppl_average.score == pytest.approx(math.sqrt(baselines[0] * baselines[1]))  # geometric mean
    # the group row and the task with no language are not in the table
    assert not any(r.task in ("lape_belebele", "hellaswag") for r in board.rows)
    # averages: mean over languages; the difference only over languages with a comparable baseline
    averages = {(a.model, a.family, a.plan): a for a in board.averages}
    mean_off = (off_de + _score("gemma/sweep/steer=-de/results.json", "lape_belebele_fr", "acc")[0]) / 2
    assert averages[(GEMMA, "lape_belebele", OFF_DE)].score == pytest.approx(mean_off)
    auto = averages[(GEMMA, "lape_belebele", AUTO)]
    assert auto.delta == pytest.approx(_score("gemma/results_auto.json", "lape_belebele_de", "acc")[0] - base_de)
    assert board.plans[GEMMA] == ["none", OFF_DE, OFF_DE_TOP3, AUTO]
    top3 = rows[(GEMMA, "lape_belebele_de", OFF_DE_TOP3)]  # a sweep plan with its own neuron file
    assert top3.delta == pytest.approx(_score("gemma/sweep/steer=-de@lape-top3-abc123/results.json",
                                              "lape_belebele_de", "acc")[0] - base_de)


def test_problems_are_reported_not_guessed():
    board = build_leaderboard(load_runs([FIXTURES]))
    rows = _rows(board)
    notes = "\n".join(board.notes)
    # mixed models: each compared with its own baseline; Llama has none
    assert "2 models" in notes
    llama = rows[(LLAMA, "belebele_deu_Latn", "de")]
    assert llama.family == "belebele" and llama.baseline is None and llama.delta is None
    assert f"no baseline (plan 'none' or a plain hf run) for {LLAMA} on belebele_deu_Latn" in notes
    # unequal sample counts: no difference
    assert rows[(GEMMA, "lape_belebele_fr", AUTO)].delta is None
    assert f"plan '{AUTO}' scored 25 samples, the baseline 900" in notes
    assert "hellaswag" in notes
    # a metric the tasks do not report
    forced = build_leaderboard(load_runs([FIXTURES / "gemma"]), metric={"lape_belebele": "f1"})
    assert not any(r.family == "lape_belebele" for r in forced.rows)
    assert any("reports none of f1" in note for note in forced.notes)


def test_markdown_and_csv():
    board = build_leaderboard(load_runs([FIXTURES]))
    markdown = to_markdown(board)
    assert "## lape_belebele · acc (higher is better) · google/gemma-3-270m" in markdown
    assert f"| language | `none` | `{OFF_DE}` | `{OFF_DE_TOP3}` | `{AUTO}` |" in markdown
    assert "| de | 0.4000 ± 0.0200 | 0.2500 ± 0.0200 (-0.1500) | 0.2000 ± 0.0200 (-0.2000) | 0.4500 ± 0.0200 (+0.0500) |" in markdown
    assert "| fr | 0.3000 ± 0.0200 | 0.3100 ± 0.0200 (+0.0100) | – | 0.5000 ± 0.1000 |" in markdown
    assert "| de | 5.0000 | 8.0000 (+60.0%) |" in markdown  # perplexities: relative change
    assert "## Notes" in markdown
    table = list(csv.DictReader(io.StringIO(to_csv(board))))
    off_de = next(r for r in table if r["task"] == "lape_belebele_de" and r["plan"] == OFF_DE)
    assert float(off_de["delta"]) == pytest.approx(-0.15) and off_de["model"] == GEMMA


def test_cli_writes_three_files_and_prints_notes(tmp_path, capsys):
    assert main(["leaderboard", str(FIXTURES), "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "note: results from 2 models" in captured.err
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "leaderboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_runs([tmp_path / "missing"])
    with pytest.raises(InputError, match="no lm-eval results"):
        load_runs([tmp_path])
    (tmp_path / "x.json").write_text("{broken")
    with pytest.raises(InputError, match="not a readable JSON"):
        read_run(tmp_path / "x.json")
    assert parse_metric_overrides(["lape_forcing=clean_target_rate", "acc"]) == {"lape_forcing": "clean_target_rate", "*": "acc"}
    with pytest.raises(InputError, match="FAMILY=METRIC"):
        parse_metric_overrides(["forcing="])


def _one_task_results(path: Path, task: str, metadata: dict) -> Path:
    path.write_text(json.dumps({
        "results": {task: {"acc,none": 0.5, "acc_stderr,none": 0.1}},
        "configs": {task: {"task": task, "metadata": metadata}},
        "config": {"model_args": "pretrained=m"},
    }))
    return path


def test_declared_languages_come_before_the_name(tmp_path):
    # a task named like lm-eval's German XNLI that declares French: the declaration wins
    run = read_run(_one_task_results(tmp_path / "results.json", "xnli_de", {"version": 1, "languages": {"target": "fr"}}))
    assert [(row.family, row.language) for row in build_leaderboard([run]).rows] == [("xnli", "fr")]
    run = read_run(_one_task_results(tmp_path / "results.json", "xnli_de", {"version": 1}))
    assert [(row.family, row.language) for row in build_leaderboard([run]).rows] == [("xnli", "de")]


def test_a_bad_declaration_is_a_note_naming_the_file_and_the_task(tmp_path):
    """One task's bad metadata.languages does not drop the file: the task falls back to its name."""
    path = _one_task_results(tmp_path / "results.json", "xnli_de", {"languages": {"target": "xx"}})
    problems = []
    (run,) = load_runs([tmp_path], problems)
    assert run.declared == {} and [(row.family, row.language) for row in build_leaderboard([run]).rows] == [("xnli", "de")]
    assert len(problems) == 1 and f"{str(path)!r}, task 'xnli_de'" in problems[0]
    assert "unknown language 'xx'" in problems[0] and "read from its name" in problems[0]


def test_unfinished_sweep_plans_are_left_out_with_a_note(tmp_path):
    _results(tmp_path, "results_none.json", "none", None, {"lape_belebele_de": {"acc": 0.5}})
    hidden = tmp_path / ".steer=-de.partial-abc123" / "org__model"
    hidden.mkdir(parents=True)
    _results(hidden, "results_2026.json", "-de", "sets/lape-top3.safetensors", {"lape_belebele_de": {"acc": 0.1}})
    problems = []
    runs = load_runs([tmp_path], problems)
    assert [run.plan for run in runs] == ["none"]
    assert len(problems) == 1 and "unfinished sweep plan" in problems[0]


def test_language_confusion_tasks_are_a_family_with_lcpr_first(tmp_path):
    task = "lape_lcb_crosslingual_okapi_ja"
    for name, plan, lcpr in (("results_base.json", None, 0.40), ("results_auto.json", "auto", 0.70)):
        args = "pretrained=m" + (f",neurons=n.safetensors,steer={plan}" if plan else "")
        (tmp_path / name).write_text(json.dumps({
            "results": {task: {"lpr,none": 0.8, "wpr,none": lcpr / 0.8 / 2, "lcpr,none": lcpr}},
            "higher_is_better": {task: {"lpr": True, "wpr": True, "lcpr": True}},
            "n-samples": {task: {"original": 100, "effective": 100}},
            "config": {"model_args": args}, "date": 1.0,
        }))
    board = build_leaderboard(load_runs([tmp_path]))
    (row,) = [row for row in board.rows if row.plan == "auto"]
    assert (row.family, row.language, row.metric) == ("lape_lcb_crosslingual_okapi", "en→ja", "lcpr")
    assert row.score == 0.70 and row.baseline == 0.40 and row.delta == pytest.approx(0.30)


def _results(folder, name, plan, neurons, scores):
    """A minimal lm-eval results file: ``scores`` = {task: {metric: value}}."""
    args = "pretrained=org/model" + (f",neurons={neurons},steer={plan}" if plan != "none" else "")
    data = {"results": {task: {f"{m},none": v for m, v in metrics.items()} for task, metrics in scores.items()},
            "config": {"model_args": args}, "date": 1.0}  # fmt: skip
    (folder / name).write_text(json.dumps(data))


def _results_with_stderr(folder, name, plan, neurons, accuracies, stderr=0.02):
    """A results file of belebele tasks: ``accuracies`` = {language: accuracy}, each with ``stderr``."""
    _results(folder, name, plan, neurons, {f"lape_belebele_{language}": {"acc": value, "acc_stderr": stderr}
                                           for language, value in accuracies.items()})


# plan -> (accuracies with the set, with its control); the baseline is de 0.60, fr 0.70, en 0.80 (SE 0.02 each)
SPECIFICITY_CASES = {
    "-de": ({"de": 0.30}, {"de": 0.58}),
    "-de-fr": ({"de": 0.30, "fr": 0.40}, {"de": 0.50, "fr": 0.60}),
    "*0.5*de": ({"de": 0.40}, {"de": 0.50}),
    "*2*de": ({"de": 0.75}, {"de": 0.62}),
    "+de": ({"de": 0.80}, {"de": 0.70}),
    "-en+de": ({"en": 0.50, "de": 0.75}, {"en": 0.78, "de": 0.70}),
}


def test_specificity_counts_each_effect_in_the_direction_its_plan_means(tmp_path):
    """Hand-computed: harm (deactivation, factor < 1) counts a drop as the effect, a push (addition,
    factor > 1) a rise; -en+de scores en as harmed and de as pushed. SE of one difference from the
    baseline: sqrt(0.02² + 0.02²) = 0.0283; a ratio only where the control effect exceeds 2 SE."""
    baseline = {"de": 0.60, "fr": 0.70, "en": 0.80}
    _results_with_stderr(tmp_path, "none.json", "none", None, baseline)
    for number, (plan, (real, control)) in enumerate(SPECIFICITY_CASES.items()):
        _results_with_stderr(tmp_path, f"real{number}.json", plan, "sets/lape-top3.safetensors", real)
        _results_with_stderr(tmp_path, f"control{number}.json", plan, "sets/lape-top3-control-s0.safetensors", control)
    board = build_leaderboard(load_runs([tmp_path]))
    found = {item.plan.split(" @")[0]: item for item in board.specificity}
    assert set(found) == set(SPECIFICITY_CASES)
    one, two = math.sqrt(2) * 0.02, math.sqrt(2 * 2 * 0.02 ** 2) / 2  # SE of one difference; of a mean of two
    expected = {  # plan: (language, effect, control effect, ratio)
        "-de": ("de", 0.30, 0.02, None),                 # control effect 0.02 ≤ 2·0.0283: within the noise
        "-de-fr": ("average", 0.30, 0.10, 3.0),          # both harmed; noise 2·0.02 = 0.04
        "*0.5*de": ("de", 0.20, 0.10, 2.0),
        "*2*de": ("de", 0.15, 0.02, None),
        "+de": ("de", 0.20, 0.10, 2.0),
        "-en+de": ("average", (0.30 + 0.15) / 2, (0.02 + 0.10) / 2, 0.225 / 0.06),
    }
    for plan, (language, effect, control_effect, ratio) in expected.items():
        item = found[plan]
        assert (item.language, item.effect, item.control_effect) == (language, pytest.approx(effect),
                                                                      pytest.approx(control_effect)), plan
        assert item.difference == pytest.approx(effect - control_effect), plan
        assert item.difference_stderr == pytest.approx(one if language != "average" else two), plan
        assert item.ratio == (None if ratio is None else pytest.approx(ratio)), plan
        assert ("within the noise" in item.note) == (ratio is None), plan


def test_specificity_without_a_standard_error_gives_no_ratio_and_a_lone_control_gets_a_note(tmp_path):
    real, control = "sets/lape-top3.safetensors", "sets/lape-top3-control-s0.safetensors"
    ppl = {"none": 10.0, "real": 30.0, "control": 12.5}  # byte perplexity of de: no standard error
    for key, neurons in (("none", None), ("real", real), ("control", control)):
        _results(tmp_path, f"ppl_{key}.json", "-de" if key != "none" else "none", neurons,
                 {"lape_ppl_de": {"byte_perplexity": ppl[key]}})
    _results(tmp_path, "lonely.json", "-fr", "sets/lape-top3-control-s0.safetensors",
             {"lape_ppl_de": {"byte_perplexity": 11.0}})  # a control run of -fr; -fr never ran with the set
    board = build_leaderboard(load_runs([tmp_path]))
    (item,) = board.specificity
    assert (item.language, item.effect, item.control_effect) == ("de", pytest.approx(2.0), pytest.approx(0.25))
    assert item.ratio is None and "no standard error" in item.note
    assert any("control run '-fr @lape-top3-control-s0'" in note and "has no pair" in note for note in board.notes)
    markdown = to_markdown(board)
    assert "## Specificity" in markdown and "| +200.0% | +25.0% | +175.0% | — (no standard error" in markdown


# ---------------------------------------------------------------------------------------------
# Unreadable results files are reported; equivalent plans share a column (issue 14, items 2 and 7)


def test_leaderboard_reports_unreadable_results_files(tmp_path, capsys):
    import shutil

    from lape_harness.analysis.results import load_runs
    from lape_harness.cli import main

    results = tmp_path / "results"
    shutil.copytree(FIXTURES, results)
    plan_folder = results / "gemma" / "sweep" / "steer=-fr" / "google__gemma"
    plan_folder.mkdir(parents=True)
    (plan_folder / "results_2026-01-01.json").write_text('{"results": {"lape_belebele_de": {"acc,none": 0.')
    (plan_folder / "results_2026-01-02.json").write_text("[1, 2]")
    (results / "sweep.json").write_text(json.dumps({"tasks": ["x"]}))  # not results, not reported
    assert main(["leaderboard", str(results), "--out", str(tmp_path / "board")]) == 0
    captured = capsys.readouterr()
    for name, why in (("results_2026-01-01.json", "not a readable JSON"), ("results_2026-01-02.json", "no 'results'")):
        assert name in captured.err and why in captured.err
        assert name in (tmp_path / "board" / "leaderboard.md").read_text()  # a note of the leaderboard
    assert "sweep.json" not in captured.err and "not_results.json" not in captured.err
    assert "2 results file(s) could not" not in captured.out  # the summary counts them as notes
    problems = []
    assert len(load_runs([results], problems=problems)) == len(load_runs([FIXTURES]))
    assert len(problems) == 2
    # nothing readable at all: an error that lists what could not be read
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "results_x.json").write_text("{")
    with pytest.raises(InputError, match="no lm-eval results JSON.*results_x.json"):
        load_runs([only_bad])


def test_leaderboard_puts_equivalent_plans_in_one_column():
    from lape_harness.analysis.leaderboard import build_leaderboard
    from lape_harness.analysis.results import Run

    def run(plan, score, date):
        return Run(path=FIXTURES / f"{plan}.json", model="m", plan=plan, neurons="n.safetensors", date=date,
                   metrics={"lape_belebele_de": {"acc,none": score}}, higher_is_better={}, n_samples={})

    board = build_leaderboard([run("none", 0.5, 1), run("de", 0.6, 2), run("+de", 0.7, 3), run("-de+fr", 0.1, 4),
                               run("+fr-de=0", 0.2, 5)])
    assert sorted(board.plans["m"]) == ["-de+fr", "de", "none"]
    scores = {row.plan: row.score for row in board.rows}
    assert scores == {"none": 0.5, "de": 0.7, "-de+fr": 0.2}  # the newer run of each plan
    assert sum("appears in" in note for note in board.notes) == 2


def test_language_confusion_families_are_averaged_as_the_benchmark_averages(tmp_path):
    """A source's average: LPR and WPR each over its languages (WPR over those with WPR), LCPR the
    harmonic mean of those averages: equal to confusion.benchmark_averages on the same scores."""
    from lape_harness.task_support.confusion import benchmark_averages

    scores = {"none": {"ja": (0.5, 0.9), "ar": (0.7, 0.6), "fr": (0.4, None)},
              "auto": {"ja": (0.9, 0.8), "ar": (0.8, 1.0), "fr": (0.9, None)}}
    for plan, per_language in scores.items():
        results = {}
        for language, (lpr, wpr) in per_language.items():
            values = {"lpr": lpr, "lcpr": lpr if wpr is None else 2 * lpr * wpr / (lpr + wpr)}
            if wpr is not None:
                values["wpr"] = wpr
            results[f"lape_lcb_crosslingual_okapi_{language}"] = values
        _results(tmp_path, f"{plan}.json", plan, None if plan == "none" else "sets/lape-top2.safetensors", results)
    board = build_leaderboard(load_runs([tmp_path]))
    averages = {(row.plan, row.metric): row for row in board.averages if row.family == "lape_lcb_crosslingual_okapi"}
    for plan, per_language in scores.items():
        expected = benchmark_averages({("okapi", language): {"lpr": lpr, "wpr": wpr}
                                       for language, (lpr, wpr) in per_language.items()})[("okapi", "all")]
        label = "none" if plan == "none" else next(p for p, _ in averages if p != "none")
        assert averages[(label, "lcpr")].score == pytest.approx(expected["lcpr"])
        mean_of_lcprs = sum(r.score for r in board.rows if r.plan == label and r.metric == "lcpr") / 3
        assert averages[(label, "lcpr")].score != pytest.approx(mean_of_lcprs)  # not the plain mean
    base, steered = averages[("none", "lcpr")], next(r for (p, m), r in averages.items() if p != "none" and m == "lcpr")
    assert steered.delta == pytest.approx(steered.score - base.score) and "harmonic mean" in steered.task
