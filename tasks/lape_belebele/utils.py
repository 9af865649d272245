"""Belebele reading comprehension (facebook/belebele, test) answered by generation."""

from lape_harness.languages import get_language
from lape_harness.task_support.metrics import extract_belebele_answer
from lape_harness.task_support.task_data import load_split, prompt_name


def load_belebele(languages, **_metadata):
    language = get_language(languages["target"])
    rows = load_split("facebook/belebele", language.flores, "test")
    return {"test": rows.add_column("language_name", [prompt_name(language.code)] * len(rows))}


def gold_letter(doc):
    return "ABCD"[int(doc["correct_answer_num"]) - 1]


def process_results(doc, results):
    return {"acc": float(extract_belebele_answer(results[0]) == gold_letter(doc))}
