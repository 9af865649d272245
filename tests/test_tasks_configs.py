"""The task YAMLs: generated output is current, names and declared languages agree with the
resolver, lm-eval lists and builds them, the loaders read local copies and fail clearly."""

from __future__ import annotations

import json
import runpy
import shutil
from pathlib import Path

import pytest
import yaml

from lape_harness.errors import InputError
from lape_harness.languages import PAPER_CODES
from lape_harness.task_support import flores
from lape_harness.task_support.task_data import DATA_ENV, forcing_questions, heldout_documents, load_split
from lape_harness.task_support.task_languages import declared_languages, name_languages

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "tasks"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"
SIZES = {"lape_forcing": 441, "lape_flores": 40, "lape_xquad": 12, "lape_belebele": 21, "lape_xnli": 15, "lape_ppl": 21,
         "lape_lcb": 132, "lape_lcb_base": 66}  # lape_lcb_*: both prompt forms


def _task_yamls() -> dict[str, dict]:
    configs = {}
    for path in TASKS.glob("lape_*/lape_*.yaml"):
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        configs[config["task"]] = config
    return configs


@pytest.fixture(scope="module")
def task_manager():
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS), include_defaults=False)


def test_generated_yamls_are_current(tmp_path):
    copy = tmp_path / "tasks"
    shutil.copytree(TASKS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for path in copy.rglob("*lape_*.yaml"):
        path.unlink()
    runpy.run_path(str(copy / "_generate_configs.py"))["generate"]()
    written = {p.relative_to(copy): p.read_text(encoding="utf-8") for p in copy.rglob("*.yaml")}
    committed = {p.relative_to(TASKS): p.read_text(encoding="utf-8") for p in TASKS.rglob("*.yaml")}
    assert written == committed


def test_family_sizes_and_forcing_grid():
    configs = _task_yamls()
    for family, size in SIZES.items():
        assert sum(name.startswith(family + "_") for name in configs) == size, family
    forcing = {name for name in configs if name.startswith("lape_forcing_")}
    assert forcing == {f"lape_forcing_{s}_to_{t}" for s in PAPER_CODES for t in PAPER_CODES}
    flores = {name for name in configs if name.startswith("lape_flores_")}
    assert "lape_flores_en-de" in flores and "lape_flores_de-en" in flores and "lape_flores_en-en" not in flores


def test_declared_languages_agree_with_the_names():
    for name, config in _task_yamls().items():
        declared = declared_languages(config["metadata"])
        assert declared == name_languages(name), name
        assert declared.target == config["metadata"]["languages"]["target"], name
        assert declared.source == config["metadata"]["languages"].get("source"), name
        expected_kind = (
            "forcing" if name.startswith("lape_forcing_")
            else "translation" if name.startswith("lape_flores_")
            else "crosslingual" if name.startswith(("lape_lcb_crosslingual_", "lape_lcb_base_crosslingual_"))
            else "monolingual"
        )
        assert declared.kind == expected_kind, name


def test_lm_eval_finds_every_task_and_group(task_manager):
    names = list(_task_yamls())
    groups = ["lape", *SIZES, *(f"lape_forcing_{code}" for code in PAPER_CODES), "lape_lcb_monolingual",
              "lape_lcb_crosslingual", "lape_lcb_base_monolingual", "lape_lcb_base_crosslingual"]
    # What `lm_eval validate --tasks ... --include_path tasks` checks.
    assert sorted(task_manager.match_tasks(names + groups)) == sorted(names + groups)


def test_forcing_group_builds_with_its_questions(task_manager):
    tasks = task_manager.load(["lape_forcing_de"])["tasks"]
    assert sorted(tasks) == sorted(f"lape_forcing_de_to_{t}" for t in PAPER_CODES)
    task = tasks["lape_forcing_de_to_ja"]
    docs = list(task.test_docs())
    assert len(docs) >= 10
    assert task.doc_to_text(docs[0]) == f"Q: {docs[0]['question']} \nA:"
    assert docs[0]["source_language"] == "de" and docs[0]["target_language"] == "ja"
    assert task.config.generation_kwargs["max_gen_toks"] == 256


def test_every_paper_language_has_ten_distinct_questions():
    questions = json.loads((TASKS / "lape_forcing" / "questions.json").read_text(encoding="utf-8"))
    assert sorted(questions) == sorted(PAPER_CODES)
    for code, items in questions.items():
        assert len(set(items)) == len(items) >= 10, code
        assert all(item.strip() == item and item for item in items), code


# ------------------------------------------------------------------ scoring wiring per family


def _utils(family: str) -> dict:
    return runpy.run_path(str(TASKS / family / "utils.py"))


def test_process_results_score_known_answers():
    xquad = _utils("lape_xquad")["process_results"]
    doc = {"answers": {"text": ["Anton Berger", "einem Schmied namens Anton Berger"], "answer_start": [0, 0]}}
    assert xquad(doc, [" Anton Berger\n"]) == {"paper_exact_match": 1.0, "paper_f1": 1.0, "exact_match": 1.0, "f1": 1.0}
    assert xquad(doc, ["Berger"])["paper_f1"] == pytest.approx(2 / 3)

    belebele = _utils("lape_belebele")
    doc = {"correct_answer_num": "2"}
    assert belebele["gold_letter"](doc) == "B"
    assert belebele["process_results"](doc, [" B) Gegen Mittag"]) == {"acc": 1.0}
    assert belebele["process_results"](doc, ["C"]) == {"acc": 0.0}

    xnli = _utils("lape_xnli")["process_results"]
    assert xnli({"label": 2}, [" 3. Contradiction"]) == {"acc": 1.0}
    assert xnli({"label": 0}, ["Neutral"]) == {"acc": 0.0}

    forcing = _utils("lape_forcing")["process_results"]
    doc = {"source_language": "de", "target_language": "fr", "questions_file": "questions.json@sha256:ab"}
    scores = forcing(doc, [" Je viens de Lyon et je travaille à Paris."])
    assert scores["target_rate"] == 1 and scores["detected_language"] == "fr"
    assert scores["questions_file"] == "questions.json@sha256:ab"

    flores = _utils("lape_flores")["process_results"]
    doc = {"target": "Das Museum öffnet um neun Uhr.", "target_language": "de", "data_source": "facebook/flores@abc"}
    scores = flores(doc, [" Das Museum öffnet um neun Uhr.\n"])
    assert scores["paper_sentence_bleu"] == pytest.approx(1.0)
    assert scores["corpus_bleu"] == ("Das Museum öffnet um neun Uhr.", "Das Museum öffnet um neun Uhr.", "de")
    assert scores["signature"][3] == "facebook/flores@abc"


def test_flores_loader_joins_by_id_and_names_languages(monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(FIXTURES))
    monkeypatch.setattr(flores, "_chosen", None)
    rows = _utils("lape_flores")["load_flores"](languages={"source": "de", "target": "en"}, version=1.0)["devtest"]
    english = [json.loads(line)["sentence"] for line in (FIXTURES / "facebook/flores/eng_Latn/devtest.jsonl").open()]
    assert rows["target"] == english
    assert rows[0]["source_name"] == "German" and rows[0]["target_name"] == "English"


def test_xnli_keeps_the_first_thousand(monkeypatch, tmp_path):
    folder = tmp_path / "facebook" / "xnli" / "fr"
    folder.mkdir(parents=True)
    rows = [{"premise": f"p{i}", "hypothesis": f"h{i}", "label": i % 3} for i in range(1005)]
    (folder / "test.json").write_text(json.dumps(rows), encoding="utf-8")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    docs = _utils("lape_xnli")["load_xnli"](languages={"target": "fr"})["test"]
    assert len(docs) == 1000 and docs[999]["premise"] == "p999" and docs[0]["language_name"] == "French"


# ------------------------------------------------------------------ local copies and errors


def test_local_parquet_copy_is_read(monkeypatch, tmp_path):
    import datasets

    folder = tmp_path / "facebook" / "belebele" / "nob_Latn"
    folder.mkdir(parents=True)
    datasets.Dataset.from_list([{"question": "Hva?", "correct_answer_num": "1"}]).to_parquet(folder / "test.parquet")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    docs = _utils("lape_belebele")["load_belebele"](languages={"target": "no"})["test"]
    assert docs[0]["question"] == "Hva?" and docs[0]["language_name"] == "Norwegian"


def test_hub_is_used_without_the_setting(monkeypatch):
    import datasets

    calls = []
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: calls.append((args, kwargs)) or "rows")
    assert load_split("google/xquad", "xquad.de", "validation") == "rows"
    assert calls == [(("google/xquad", "xquad.de"), {"split": "validation"})]


def test_missing_local_copy_names_the_file_and_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(InputError, match=r"facebook/xnli/de/test\.parquet.*unset LAPE_HARNESS_DATA"):
        load_split("facebook/xnli", "de", "test")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x").mkdir()
    (tmp_path / "bad" / "x" / "test.json").write_text('{"not": "a list"}', encoding="utf-8")
    with pytest.raises(InputError, match="list of JSON objects"):
        load_split("bad", "x", "test")


def test_heldout_text(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(FIXTURES))
    assert heldout_documents("de")[0] == "Am Morgen war der Himmel über der Stadt noch grau.\nDann kam die Sonne heraus."
    assert len(heldout_documents("de")) == 3
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(InputError, match=r"heldout/fr\.txt.*lape-harness corpus"):
        heldout_documents("fr")
    (tmp_path / "heldout").mkdir()
    (tmp_path / "heldout" / "fr.txt").write_text("\n \n\n", encoding="utf-8")
    with pytest.raises(InputError, match="empty"):
        heldout_documents("fr")


def test_heldout_defaults_to_the_starter_corpus(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.setenv("LAPE_HARNESS_CACHE", str(tmp_path))
    (tmp_path / "corpus" / "heldout").mkdir(parents=True)
    (tmp_path / "corpus" / "heldout" / "sv.txt").write_text("Hej.\n\nHej då.\n", encoding="utf-8")
    assert heldout_documents("sv") == ["Hej.", "Hej då."]


def test_questions_for_an_unknown_language(tmp_path):
    path = tmp_path / "q.json"
    path.write_text(json.dumps({"de": ["Wie geht's?"]}), encoding="utf-8")
    assert forcing_questions(path, "de") == ["Wie geht's?"]
    with pytest.raises(InputError, match="no questions for 'xx'.*de"):
        forcing_questions(path, "xx")


def test_broken_local_json_is_one_clear_error(monkeypatch, tmp_path):
    folder = tmp_path / "facebook" / "xnli" / "de"
    folder.mkdir(parents=True)
    (folder / "test.jsonl").write_text('{"premise": "a"}\n{"premise": \n', encoding="utf-8")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(InputError, match=r"test\.jsonl is not valid JSON"):
        load_split("facebook/xnli", "de", "test")
