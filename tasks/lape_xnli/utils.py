"""XNLI (facebook/xnli, the first 1,000 test pairs) answered by generation."""

from lape_harness.languages import get_language
from lape_harness.task_support.metrics import extract_xnli_label
from lape_harness.task_support.task_data import load_split, prompt_name

FIRST = 1000  # the paper scores the first 1,000 test pairs


def load_xnli(languages, **_metadata):
    code = get_language(languages["target"]).code
    rows = load_split("facebook/xnli", code, "test")
    rows = rows.select(range(min(FIRST, len(rows))))
    return {"test": rows.add_column("language_name", [prompt_name(code)] * len(rows))}


def process_results(doc, results):
    return {"acc": float(extract_xnli_label(results[0]) == int(doc["label"]))}
