"""Hostile inputs (issue 14): no silent wrong results, and every error caught before the work starts.

One section per item of the issue; each error names the problem and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from steering_reference import CASES
from test_sweep import neurons_file, ppl_tasks, tasks_only  # noqa: F401 - fixtures

from lape_harness.errors import InputError
from lape_harness.steering import SteerSyntaxError, Term, parse_steer

FIXTURES = Path(__file__).parent / "fixtures" / "results"

# ---------------------------------------------------------------------------------------------
# 1 + 4 + 5: plan files are strict, read the results JSON's term format, refuse NaN/inf and []


def _plan_file(tmp_path, content, suffix=".yaml"):
    path = tmp_path / f"plan{suffix}"
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("spec", [spec for spec, _ in CASES] + ["-de=-1.5+2*fr.diff*0.5*en=es.p"])
def test_plan_file_replays_the_results_json_terms(tmp_path, spec):
    plan = parse_steer(spec)
    described = [term.describe() for term in plan.terms]  # what the results JSON records
    assert parse_steer(_plan_file(tmp_path, {"terms": described}, ".json")) == plan
    assert parse_steer(_plan_file(tmp_path, json.dumps({"terms": described}), ".yaml")) == plan


def test_plan_file_results_term_format_sets_the_strengths(tmp_path):
    path = _plan_file(tmp_path, "terms:\n  - {op: deactivate, language: de, fill: -1.5}\n"
                                "  - {op: add, language: fr, alpha: 3.0}\n  - {op: multiply, language: en, beta: 0.5}\n")
    assert list(parse_steer(path).terms) == [Term("deactivate", "de", -1.5), Term("multiply", "en", 0.5),
                                             Term("add", "fr", 3.0)]


@pytest.mark.parametrize(
    "content, words",
    [
        ("terms:\n  - {op: add, language: de, strenght: 2}\n", ["unknown key(s) 'strenght'", "'strength'", "alpha"]),
        ("terms:\n  - {op: add, language: de, scale: 2}\n", ["unknown key(s) 'scale'", "beta (multiply)"]),
        ("terms:\n  - {op: add, language: de, fill: 2}\n", ["'fill' is the strength of another op", "'alpha'"]),
        ("terms:\n  - {op: deactivate, language: de, alpha: 2}\n", ["another op", "'fill'"]),
        ("terms:\n  - {op: add, language: de, alpha: 2, strength: 3}\n", ["strength twice"]),
        ("terms:\n  - {op: multiply, language: de}\n", ["needs its factor"]),
        ("terms:\n  - {op: add, language: no}\n", ["quote it"]),
        ("terms:\n  - -de\nname: my plan\n", ["exactly one of the keys 'steer'", "'name'"]),
        ("term:\n  - -de\n", ["exactly one of the keys", "did you mean 'term' → 'terms'"]),
        ("steer: -de\nterms: [-fr]\n", ["exactly one of the keys"]),
        ("plan: -de\nmethods: [deactivate]\n", ["replay a run", "config.steering.terms"]),
        # 4: non-finite strengths
        ("terms:\n  - {op: add, language: de, strength: .nan}\n", ["finite"]),
        ("terms:\n  - {op: add, language: de, alpha: .inf}\n", ["finite"]),
        ("terms:\n  - {op: deactivate, language: de, fill: -.inf}\n", ["finite"]),
        ("terms:\n  - {op: multiply, language: de, beta: true}\n", ["must be a number"]),
        # 5: an empty plan is an error, as an empty steer= is
        ("terms: []\n", ["at least one term", "steer: none"]),
        ("terms:\n", ["at least one term"]),
        ("steer: ''\n", ["'steer' must be a spec"]),
    ],
)
def test_plan_file_schema_is_strict(tmp_path, content, words):
    with pytest.raises(SteerSyntaxError) as error:
        parse_steer(_plan_file(tmp_path, content))
    for word in words:
        assert word in str(error.value)
    assert "plan.yaml" in str(error.value)


def test_plan_file_json_nan_and_directory(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text('{"terms": [{"op": "add", "language": "de", "alpha": NaN}]}')
    with pytest.raises(SteerSyntaxError, match="finite"):
        parse_steer(str(path))
    folder = tmp_path / "plans.yaml"
    folder.mkdir()
    with pytest.raises(SteerSyntaxError, match="is a directory"):
        parse_steer(str(folder))
    with pytest.raises(SteerSyntaxError, match="is a directory"):
        parse_steer(str(tmp_path) + "/")
    latin1 = tmp_path / "latin.yaml"
    latin1.write_bytes("steer: -de  # Übung\n".encode("latin-1"))
    with pytest.raises(SteerSyntaxError, match="not UTF-8"):
        parse_steer(str(latin1))


def test_empty_steer_is_an_error_like_an_empty_plan_file():
    with pytest.raises(SteerSyntaxError, match="no terms"):
        parse_steer("")


# ---------------------------------------------------------------------------------------------
# 11: numbers in the grammar


@pytest.mark.parametrize(
    "spec, canonical",
    [("-de=1e3", "-de=1000"), ("+2.5e-1*fr", "+0.25*fr"), ("+1E2de", "+100*de"), ("-de=-1.5e0", "-de=-1.5"),
     ("+2en", "+2*en"), ("+2e-de", None), ("-de=fr", "-de=fr"), ("+1e20*de", "+1e+20*de")],
)
def test_numbers_in_exponent_form(spec, canonical):
    if canonical is None:  # 2·e then -de: 'e' is no number; it is left to the language check
        assert [t.op for t in parse_steer(spec).terms] == ["deactivate", "add"]
        return
    plan = parse_steer(spec)
    assert str(plan) == canonical
    assert parse_steer(str(plan)) == plan  # the canonical form reads back


@pytest.mark.parametrize(
    "spec, caret_at, words",
    [
        ("-de=abc", 4, ["expected a number after '='", "found 'abc'", "=abc-de"]),
        ("-de=x1", 4, ["found 'x1'"]),
        ("+1e400*de", 1, ["1e400 is not a finite number"]),
        ("-de=1e999", 4, ["1e999 is not a finite number"]),
        ("-de=-1e400", 4, ["not a finite number"]),
        ("*1e309*de", 1, ["not a finite number"]),
    ],
)
def test_number_errors_name_the_number(spec, caret_at, words):
    with pytest.raises(SteerSyntaxError) as error:
        parse_steer(spec)
    lines = str(error.value).splitlines()
    assert lines[1] == f"  {spec}" and lines[2] == "  " + " " * caret_at + "^"
    for word in words:
        assert word in str(error.value)
    assert "factor" not in lines[0]


def test_auto_template_fill_and_replace():
    assert str(parse_steer("auto:-src=tgt")) == "auto:-src=tgt"
    assert str(parse_steer("auto:-src=-1e0+2*tgt")) == "auto:-src=-1+2*tgt"
    with pytest.raises(SteerSyntaxError, match="found 'de'"):
        parse_steer("auto:-src=de+tgt")


# ---------------------------------------------------------------------------------------------
# 2: the leaderboard reports every results file it could not read


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


# ---------------------------------------------------------------------------------------------
# 3: a neuron set for another model (same layer count and width) is an error, unless on purpose


@pytest.fixture(scope="module")
def other_llama(tiny_llama, tmp_path_factory):
    """The tiny Llama's weights under another name with another configuration (same shapes)."""
    import shutil

    other = tmp_path_factory.mktemp("models") / "other-llama"
    shutil.copytree(tiny_llama, other)
    config = json.loads((other / "config.json").read_text())
    config["rms_norm_eps"] = 1e-5
    (other / "config.json").write_text(json.dumps(config))
    return other


@pytest.fixture(scope="module")
def tiny_llama_neurons(tiny_llama, tmp_path_factory):
    """A neuron file recording the tiny Llama as its model, as `lape-harness profile` does."""
    from steering_reference import make_neuron_set
    from transformers import AutoModelForCausalLM

    from lape_harness.identity import model_identity

    neurons = make_neuron_set(2, 128)
    neurons.meta = {"model": {**model_identity(AutoModelForCausalLM.from_pretrained(tiny_llama)),
                              "model_id": str(tiny_llama)}}
    path = tmp_path_factory.mktemp("neurons") / "lape-top1.safetensors"
    neurons.save(path)
    return path


def test_neuron_set_for_another_model_is_refused_before_the_weights_load(tiny_llama, other_llama,
                                                                           tiny_llama_neurons, tmp_path, caplog):
    import shutil

    from lape_harness.neurons import NeuronFileError
    from lape_harness.plugin.hf_steered import HFSteeredLM

    config_only = tmp_path / "other-llama"  # no weights: only a check before the load can answer
    shutil.copytree(other_llama, config_only, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(NeuronFileError) as error:
        HFSteeredLM(pretrained=str(config_only), neurons=str(tiny_llama_neurons), steer="-de", device="cpu")
    message = str(error.value)
    for word in ("made for another model", str(tiny_llama), str(config_only), "config hash", "allow_other_model=True"):
        assert word in message
    with pytest.raises(InputError, match="allow_other_model=True or False"):
        HFSteeredLM(pretrained=str(config_only), neurons=str(tiny_llama_neurons), allow_other_model="yes")
    # on purpose: it runs, with a warning that names both models
    with caplog.at_level("WARNING"):
        lm = HFSteeredLM(pretrained=str(other_llama), neurons=str(tiny_llama_neurons), steer="-de", device="cpu",
                         dtype="float32", allow_other_model=True)
    assert "used anyway" in caplog.text and str(other_llama) in caplog.text
    # the same model: no word; a file for another model switched in later: the same error
    caplog.clear()
    with caplog.at_level("WARNING"):
        right = HFSteeredLM(pretrained=str(tiny_llama), neurons=str(tiny_llama_neurons), steer="-de", device="cpu",
                            dtype="float32")
    assert "another model" not in caplog.text
    other_neurons = tmp_path / "other.safetensors"
    from lape_harness.neurons import NeuronSet

    moved = NeuronSet.load(tiny_llama_neurons)
    moved.meta["model"] = {**moved.meta["model"], "model_id": "org/another-model", "config_hash": "0" * 16}
    moved.save(other_neurons)
    with pytest.raises(NeuronFileError, match="another model"):
        right.set_neurons(str(other_neurons))
    lm.set_neurons(str(other_neurons))  # allowed on purpose


def test_same_configuration_under_another_name_is_a_warning(tiny_llama, tiny_llama_neurons, tmp_path, caplog):
    import shutil

    from lape_harness.plugin.hf_steered import HFSteeredLM

    copy = tmp_path / "my-llama-copy"
    shutil.copytree(tiny_llama, copy)
    with caplog.at_level("WARNING"):
        HFSteeredLM(pretrained=str(copy), neurons=str(tiny_llama_neurons), steer="-de", device="cpu", dtype="float32")
    assert "may be for another model" in caplog.text and "my-llama-copy" in caplog.text


def test_bake_and_sweep_refuse_a_neuron_set_for_another_model(other_llama, tiny_llama_neurons, tmp_path, capsys):
    from lape_harness.cli import main
    from lape_harness.studies.sweep import run_sweep

    argv = ["bake", "--model", str(other_llama), "--neurons", str(tiny_llama_neurons), "--steer=-de",
            "--out", str(tmp_path / "baked")]
    assert main(argv) == 2
    assert "made for another model" in capsys.readouterr().err and not (tmp_path / "baked").exists()
    assert main(argv + ["--allow-other-model"]) == 0
    with pytest.raises(InputError, match="made for another model"):
        run_sweep(f"pretrained={other_llama},neurons={tiny_llama_neurons}", ["-de"], ["t"], tmp_path / "sweep")
    with pytest.raises(InputError, match="made for another model"):  # a PLAN@FILE set, before the model loads
        run_sweep(f"pretrained={other_llama}", [f"-de@{tiny_llama_neurons}"], ["t"], tmp_path / "sweep")
    assert not (tmp_path / "sweep").exists()


# ---------------------------------------------------------------------------------------------
# 5: empty neuron sets and languages without neurons


def _set_with_empty_language():
    import torch

    from lape_harness.neurons import LanguageNeurons, NeuronSet

    def entry(n):
        return LanguageNeurons(torch.zeros(n, dtype=torch.long), torch.arange(n), torch.ones(n), torch.zeros(n),
                               torch.ones(n))

    return NeuronSet(["de", "fr"], 2, 128, {"de": entry(3), "fr": entry(0)},
                     {"model": {"model_id": "tiny"}, "thresholds": {"top_rate": 0.001}})


@pytest.mark.parametrize("spec", ["-fr", "+de-fr", "*0.5*fr", "=fr.diff"])
def test_steering_a_language_without_neurons_is_an_error(spec):
    from lape_harness.steering import compile_plan

    with pytest.raises(InputError) as error:
        compile_plan(parse_steer(spec), _set_with_empty_language(), 2, 128)
    for word in ("'fr' has no neurons", "top rate 0.001", "higher top rate"):
        assert word in str(error.value)
    compile_plan(parse_steer("-de"), _set_with_empty_language(), 2, 128)


def test_hf_steered_and_sweep_refuse_languages_without_neurons_before_loading(tmp_path):
    from lape_harness.plugin.hf_steered import HFSteeredLM
    from lape_harness.studies.sweep import run_sweep

    path = tmp_path / "lape-top0.1.safetensors"
    _set_with_empty_language().save(path)
    with pytest.raises(InputError, match="'fr' has no neurons"):
        HFSteeredLM(pretrained=str(tmp_path / "no-model"), neurons=str(path), steer="-de+fr")
    with pytest.raises(InputError, match="'fr' has no neurons"):
        run_sweep(f"pretrained={tmp_path / 'no-model'},neurons={path}", ["none", "-fr"], ["t"], tmp_path / "out")


def test_auto_leaves_out_languages_without_neurons(tiny_llama, tmp_path, caplog):
    from lape_harness.plugin.hf_steered import HFSteeredLM
    from lape_harness.task_support.task_languages import TaskLanguages

    path = tmp_path / "set.safetensors"
    _set_with_empty_language().save(path)
    lm = HFSteeredLM(pretrained=str(tiny_llama), neurons=str(path), steer="auto", device="cpu", dtype="float32")
    lm.task_languages = lambda task: TaskLanguages("forcing", "de", "fr")
    with caplog.at_level("WARNING"):
        assert str(lm.plan_for("forcing_de_to_fr")) == "-de"
    assert "['fr']" in caplog.text and "no neurons" in caplog.text


def test_identify_top_rate_with_no_neurons(tmp_path, capsys):
    from test_lape import planted_stats

    from lape_harness.cli import main

    stats = tmp_path / "stats.safetensors"
    planted_stats()[0].save(stats)  # 3 layers × 40 neurons
    assert main(["identify", str(stats), "--top-rate", "0.05", "0.001"]) == 2
    err = capsys.readouterr().err
    assert "top rate 0.001 selects no neurons" in err and "higher --top-rate" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.safetensors"]  # nothing written, not even 0.05
    assert main(["identify", str(stats), "--top-rate", "0.005"]) == 0  # one candidate: most languages get none
    err = capsys.readouterr().err
    assert "warning: lape-top0.5.safetensors:" in err and "got no neurons at top rate 0.005" in err


# ---------------------------------------------------------------------------------------------
# 6 + 9: corpus files: an unknown language code is reported; a non-UTF-8 file is an error, early


class _Loaded(Exception):
    """Raised in place of loading a model: whatever is reported before it came before the load."""


@pytest.fixture
def no_model_load(monkeypatch):
    import lape_harness.model_loading as model_loading

    def refuse(*args, **kwargs):
        raise _Loaded

    monkeypatch.setattr(model_loading, "load_model", refuse)


def test_corpus_file_with_an_unknown_language_code_is_reported(tmp_path, capsys, no_model_load, caplog):
    from lape_harness.cli import main
    from lape_harness.corpora import folder_languages

    for name in ("de.txt", "fr.txt", "xx.txt", "deu_Latn.jsonl", "notes.md"):
        (tmp_path / name).write_text("Text.\n", encoding="utf-8")
    reported = []
    assert folder_languages(tmp_path, report=reported.append) == ["de", "fr"]
    assert len(reported) == 2
    assert "xx.txt: 'xx' is not a language code" in reported[1] and "left out" in reported[1]
    assert "rename it de.jsonl" in reported[0]
    with caplog.at_level("WARNING"):
        folder_languages(tmp_path)
    assert "xx.txt" in caplog.text
    with pytest.raises(_Loaded):
        main(["profile", "--model", "m", "--corpus", str(tmp_path), "--out", str(tmp_path / "out" / "s.safetensors")])
    assert "warning: corpus folder" in capsys.readouterr().err
    for name in ("de.txt", "fr.txt", "deu_Latn.jsonl"):
        (tmp_path / name).unlink()
    with pytest.raises(InputError, match="no <lang>.txt.*'xx' is not a language code"):
        folder_languages(tmp_path)


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_latin1_corpus_file_is_an_input_error_before_the_model_loads(tmp_path, capsys, no_model_load, suffix):
    from lape_harness.cli import main
    from lape_harness.corpora import open_corpus

    (tmp_path / "fr.txt").write_text("Bonjour.\n", encoding="utf-8")
    text = "Die Katze.\n\nÜbung macht den Meister.\n"
    if suffix == ".jsonl":
        text = json.dumps({"text": "Die Katze."}) + "\n" + '{"text": "Übung"}\n'
    (tmp_path / f"de{suffix}").write_bytes(text.encode("latin-1"))
    with pytest.raises(InputError) as error:
        open_corpus(tmp_path, ["fr", "de"])
    for word in (f"de{suffix}", "'de'", "not UTF-8", "byte 0xdc", "line 3" if suffix == ".txt" else "line 2", "iconv"):
        assert word in str(error.value)
    assert main(["profile", "--model", "m", "--corpus", str(tmp_path), "--languages", "de",
                 "--out", str(tmp_path / "s.safetensors")]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_utf8_split_across_read_blocks_is_fine(tmp_path, monkeypatch):
    from lape_harness.corpora import TextFile

    path = tmp_path / "de.txt"
    path.write_text("ä" * 10 + "\n", encoding="utf-8")
    import builtins

    real_open = builtins.open

    class Small:
        def __init__(self, handle):
            self.handle = handle

        def read(self, size=-1):
            return self.handle.read(3)  # splits the two-byte characters

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    monkeypatch.setattr(builtins, "open", lambda p, mode="r", *a, **k: Small(real_open(p, mode, *a, **k))
                        if mode == "rb" else real_open(p, mode, *a, **k))
    TextFile("de", path).check_utf8()
    path.write_bytes("ä".encode() * 5 + b"\xc3")  # cut in the middle of a character at the end
    with pytest.raises(InputError, match="offset 10 .line 1."):
        TextFile("de", path).check_utf8()


# ---------------------------------------------------------------------------------------------
# 7: equivalent plans in a sweep run once; in a leaderboard they share a column


def test_sweep_plans_are_compared_by_meaning(tmp_path):
    from lape_harness.studies.sweep import PlanEntry, parse_plan_entry, unique_plans

    top1, top3 = tmp_path / "lape-top1.safetensors", tmp_path / "lape-top3.safetensors"
    _set_with_empty_language().save(top1)
    _set_with_empty_language().save(top3)
    plan_file = _plan_file(tmp_path, "terms:\n  - {op: add, language: fr}\n  - {op: deactivate, language: de, fill: 0}\n")
    given = ["de", "+de", "-de+fr", "+fr-de=0", plan_file, f"-de+fr@{top1}", f"-de+fr@{top3}", "deu_Latn",
             "none", "-de", f"+de@{tmp_path}/../{tmp_path.name}/lape-top1.safetensors", f"none@{top3}"]
    log = []
    kept = unique_plans([parse_plan_entry(text) for text in given], str(top1), log.append)
    assert [entry.label for entry in kept] == ["de", "-de+fr", f"-de+fr@{top3}", "none", "-de"]
    assert len(log) == 7
    assert "note: plan '+de' is the same plan as 'de' (+de); it runs once" in log
    assert "note: plan '+fr-de=0' is the same plan as '-de+fr' (-de+fr); it runs once" in log
    assert unique_plans([PlanEntry("-de"), PlanEntry("-de")], None, log.append) == [PlanEntry("-de")]


def test_sweep_runs_an_equivalent_plan_once(tiny_llama, tasks_only, neurons_file, tmp_path):
    from lape_harness.studies.sweep import run_sweep

    log = []
    outcomes = run_sweep(f"pretrained={tiny_llama},neurons={neurons_file},dtype=float32", ["de", "+de"],
                         ["tinyppl_de"], tmp_path / "out", task_manager=tasks_only, device="cpu", bootstrap_iters=0,
                         log=log.append)
    assert len(outcomes) == 1 and outcomes[0].entry.steer == "de"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["steer=de", "sweep.json"]
    assert sum("same plan" in line for line in log) == 1


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


# ---------------------------------------------------------------------------------------------
# 8: outputs that cannot be written are refused before any work


def _occupied(tmp_path):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder").mkdir()
    return tmp_path / "a-file", tmp_path / "a-folder"


@pytest.mark.parametrize(
    "out, words",
    [
        ("a-folder", ["is a directory", "a-folder/stats.safetensors"]),
        ("a-file/stats.safetensors", ["lies under", "which is a file"]),
        ("a-file/deeper/stats.safetensors", ["lies under", "a-file"]),
    ],
)
def test_profile_out_is_checked_before_the_model_loads(tmp_path, capsys, no_model_load, out, words):
    from lape_harness.cli import main

    _occupied(tmp_path)
    assert main(["profile", "--model", "m", "--corpus", str(tmp_path / "nowhere"), "--out", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err
    for word in ["--out", *words]:
        assert word in err


def test_profile_out_in_an_unwritable_folder(tmp_path, capsys, no_model_load, monkeypatch):
    import os

    from lape_harness.cli import main

    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: os.path.abspath(path) != str(locked))  # root ignores modes
    assert main(["profile", "--model", "m", "--out", str(locked / "new" / "stats.safetensors")]) == 2
    assert "cannot write in" in capsys.readouterr().err
    (tmp_path / "stats.partial").write_text("x")  # the checkpoint folder's place is taken by a file
    assert main(["profile", "--model", "m", "--out", str(tmp_path / "stats.safetensors")]) == 2
    assert "checkpoint folder" in capsys.readouterr().err


def test_sweep_leaderboard_identify_plot_and_bake_outputs_naming_a_file(tmp_path, capsys):
    from lape_harness.cli import main
    from lape_harness.steering.bake import bake_checkpoint
    from lape_harness.studies.sweep import run_sweep

    a_file, _ = _occupied(tmp_path)
    with pytest.raises(InputError, match="--output .*is a file, not a folder"):
        run_sweep("pretrained=x", ["none"], ["t"], a_file)
    with pytest.raises(InputError, match="lies under"):
        run_sweep("pretrained=x", ["none"], ["t"], a_file / "sweep")
    assert main(["leaderboard", str(FIXTURES), "--out", str(a_file)]) == 2
    assert "--out" in capsys.readouterr().err and a_file.read_text() == "x"
    assert main(["plot", "--results", str(FIXTURES), "--out", str(a_file)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    stats = tmp_path / "stats.safetensors"
    from test_lape import planted_stats

    planted_stats()[0].save(stats)
    assert main(["identify", str(stats), "--out-dir", str(a_file)]) == 2
    assert "--out-dir" in capsys.readouterr().err
    neurons = tmp_path / "set.safetensors"
    _set_with_empty_language().save(neurons)
    with pytest.raises(InputError, match="--out .*is a file"):
        bake_checkpoint("no-model", neurons, "-de", a_file)


# ---------------------------------------------------------------------------------------------
# 10: a sweep whose start failed leaves a folder the corrected command can use


def test_failed_sweep_start_leaves_a_usable_folder(tiny_llama, tasks_only, neurons_file, tmp_path):
    from lape_harness.studies.sweep import MANIFEST, run_sweep

    out = tmp_path / "sweep"
    model_args = f"pretrained={tiny_llama},neurons={neurons_file},dtype=float32"
    options = dict(task_manager=tasks_only, device="cpu", bootstrap_iters=0, log=lambda _: None)
    with pytest.raises(InputError, match="unknown task"):
        run_sweep(model_args, ["none"], ["tinyppl_dee"], out, **options)
    with pytest.raises(OSError):  # a misspelt model: lm-eval's own error, while loading
        run_sweep(f"pretrained={tmp_path / 'no-model'},neurons={neurons_file}", ["none"], ["tinyppl_de"], out, **options)
    assert not (out / MANIFEST).exists()
    outcomes = run_sweep(model_args, ["none"], ["tinyppl_de"], out, **options)
    assert outcomes[0].path.is_file() and json.loads((out / MANIFEST).read_text())["tasks"] == ["tinyppl_de"]
    with pytest.raises(InputError, match="other settings"):  # finished plans are still protected
        run_sweep(model_args, ["none", "-de"], ["tinyppl_fr"], out, **options)


# ---------------------------------------------------------------------------------------------
# 11: files: a torch file, a directory


def test_neuron_file_errors_say_what_the_file_is(tmp_path):
    import torch

    from lape_harness.neurons import ActivationStats, NeuronFileError, NeuronSet

    torch.save({"de": torch.arange(3)}, tmp_path / "neurons.pt")
    with pytest.raises(NeuronFileError) as error:
        NeuronSet.load(tmp_path / "neurons.pt")
    assert "not a safetensors file written by lape-harness" in str(error.value)
    assert "corrupt" not in str(error.value) and "delete" not in str(error.value) and "zip" in str(error.value)
    (tmp_path / "legacy.pt").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(NeuronFileError, match="Python pickle"):
        ActivationStats.load(tmp_path / "legacy.pt")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(NeuronFileError, match="it is empty"):
        NeuronSet.load(tmp_path / "empty.safetensors")
    folder = tmp_path / "neuron_cache"
    folder.mkdir()
    _set_with_empty_language().save(folder / "lape-top1.safetensors")
    with pytest.raises(NeuronFileError, match="is a directory; pass a file inside it .it has: lape-top1.safetensors"):
        NeuronSet.load(folder)


def test_directories_passed_as_plan_files_and_neuron_files_in_a_sweep(tmp_path):
    from lape_harness.corpora import open_corpus
    from lape_harness.studies.sweep import parse_plan_entry, read_plans_file

    (tmp_path / "de.txt").write_text("Hallo.\n", encoding="utf-8")
    with pytest.raises(InputError, match="is a file; pass the folder that holds it"):
        open_corpus(tmp_path / "de.txt", ["de"])

    with pytest.raises(InputError, match="is a directory"):
        parse_plan_entry(f"-de@{tmp_path}")
    with pytest.raises(InputError, match="is a directory"):
        read_plans_file(tmp_path)


# ---------------------------------------------------------------------------------------------
# 12: orphan temporary files of checkpoints; bake's folder permissions


def test_successful_profile_removes_orphan_checkpoint_temporaries(tiny_llama, tmp_path, capsys):
    from tiny_models import SAMPLE_TEXT

    from lape_harness.cli import main

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for language in ("de", "fr"):
        (corpus / f"{language}.txt").write_text(SAMPLE_TEXT[language] + "\n", encoding="utf-8")
    partial = tmp_path / "stats.partial"
    partial.mkdir()
    (partial / ".de.rank0-of-1.safetensors.k3j2h1.tmp").write_bytes(b"half a checkpoint")  # after a SIGKILL
    assert main(["profile", "--model", str(tiny_llama), "--corpus", str(corpus), "--seq-len", "16", "--no-progress",
                 "--device", "cpu", "--out", str(tmp_path / "stats.safetensors")]) == 0
    assert not partial.exists()


def test_baked_checkpoint_folder_follows_the_umask(tiny_llama, tmp_path):
    import os

    from steering_reference import make_neuron_set

    from lape_harness.neurons import NeuronSet
    from lape_harness.steering.bake import bake_checkpoint

    neurons = tmp_path / "set.safetensors"
    make_neuron_set(2, 128).save(neurons)
    old = os.umask(0o022)
    try:
        bake_checkpoint(str(tiny_llama), neurons, "-de", tmp_path / "baked")
    finally:
        os.umask(old)
    assert (tmp_path / "baked").stat().st_mode & 0o777 == 0o755
    assert NeuronSet.load(neurons)  # untouched


# ---------------------------------------------------------------------------------------------
# 13: under lm_eval, an hf-steered error is its message, not a traceback


def test_lm_eval_prints_an_hf_steered_error_plainly(tiny_llama, ppl_tasks, tmp_path):
    import os
    import subprocess
    import sys

    command = [sys.executable, "-m", "lm_eval", "--model", "hf-steered", "--model_args",
               f"pretrained={tiny_llama},steer=-de", "--tasks", "tinyppl_de", "--include_path", str(ppl_tasks),
               "--device", "cpu"]
    env = {key: value for key, value in os.environ.items() if key != "LAPE_HARNESS_TRACEBACK"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "error: steer=-de needs a neuron set: add neurons=" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("(from lm-eval's model hf-steered")


def test_marked_errors_print_plainly_and_others_keep_their_traceback(capsys, monkeypatch):
    import sys

    from lape_harness.plugin import error_display
    from lape_harness.plugin.error_display import plain_errors

    seen = []
    monkeypatch.setattr(error_display, "_previous", error_display._previous)  # restored afterwards
    monkeypatch.setattr(sys, "excepthook", lambda *args: seen.append(args[1]))

    @plain_errors
    def fails(error):
        raise error

    for error in (InputError("bad steer=; write steer=-de"), RuntimeError("a bug")):
        try:
            fails(error)
        except Exception as caught:  # noqa: BLE001
            sys.excepthook(type(caught), caught, caught.__traceback__)
    assert [str(error) for error in seen] == ["a bug"]
    assert "error: bad steer=; write steer=-de" in capsys.readouterr().err
    monkeypatch.setenv("LAPE_HARNESS_TRACEBACK", "1")
    try:
        fails(InputError("again"))
    except InputError as caught:
        sys.excepthook(type(caught), caught, caught.__traceback__)
    assert [str(error) for error in seen] == ["a bug", "again"]


def test_a_plain_error_names_the_model_it_came_from(capsys, monkeypatch):
    import sys

    from lape_harness.plugin import error_display
    from lape_harness.plugin.error_display import plain_errors

    monkeypatch.setattr(error_display, "_previous", error_display._previous)
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    monkeypatch.delenv("LAPE_HARNESS_TRACEBACK", raising=False)

    class Engine:
        model_name = "vllm-steered"

        @plain_errors
        def start(self):
            return self.check()

        @plain_errors
        def check(self):
            raise InputError("plan_slots=0: give at least 1")

    try:
        Engine().start()
    except InputError as caught:
        sys.excepthook(type(caught), caught, caught.__traceback__)
    assert capsys.readouterr().err.rstrip().splitlines()[-1].startswith("(from lm-eval's model vllm-steered;")
