"""FLORES-200 translation: per-language parquet configs of facebook/flores joined by id."""

import datasets

from lape_harness.errors import InputError
from lape_harness.languages import get_language
from lape_harness.metrics import corpus_bleu, corpus_chrf_pp, paper_sentence_bleu, translation_signature  # noqa: F401
from lape_harness.task_data import load_split, prompt_name


def load_flores(languages, **_metadata):
    source, target = get_language(languages["source"]), get_language(languages["target"])
    source_rows = load_split("facebook/flores", source.flores, "devtest")
    target_rows = load_split("facebook/flores", target.flores, "devtest")
    references = {row["id"]: row["sentence"] for row in target_rows}
    missing = [row["id"] for row in source_rows if row["id"] not in references]
    if missing:
        raise InputError(
            f"FLORES {source.flores} and {target.flores} devtest rows do not align: ids {missing[:5]} have no "
            "translation; use the complete devtest split of both languages"
        )
    rows = [
        {
            "id": row["id"],
            "source": row["sentence"],
            "target": references[row["id"]],
            "source_name": prompt_name(source.code),
            "target_name": prompt_name(target.code),
            "target_language": target.code,
        }
        for row in source_rows
    ]
    return {"devtest": datasets.Dataset.from_list(rows)}


def process_results(doc, results):
    hypothesis = results[0].strip()
    return {
        "paper_sentence_bleu": paper_sentence_bleu(hypothesis, doc["target"]),
        "corpus_bleu": (hypothesis, doc["target"], doc["target_language"]),
        "corpus_chrf_pp": (hypothesis, doc["target"]),
        "signature": (hypothesis, doc["target"], doc["target_language"]),
    }
