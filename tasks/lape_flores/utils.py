"""FLORES devtest translation: the source and target sentences of a pair joined by id, from
FLORES-200 (facebook/flores) or FLORES+ (see lape_harness.task_support.flores)."""

import datasets

from lape_harness.errors import InputError
from lape_harness.languages import get_language
from lape_harness.task_support.flores import load_pair
from lape_harness.task_support.metrics import corpus_bleu, corpus_chrf_pp, paper_sentence_bleu, translation_signature  # noqa: F401
from lape_harness.task_support.task_data import prompt_name


def load_flores(languages, **_metadata):
    source, target = get_language(languages["source"]), get_language(languages["target"])
    pair = load_pair(source.code, target.code)
    references = {row["id"]: row[pair.column] for row in pair.target_rows}
    missing = [row["id"] for row in pair.source_rows if row["id"] not in references]
    if missing:
        raise InputError(
            f"FLORES {source.code} and {target.code} devtest rows ({pair.provenance}) do not align: ids "
            f"{missing[:5]} have no translation; use the complete devtest split of both languages"
        )
    rows = [
        {
            "id": row["id"],
            "source": row[pair.column],
            "target": references[row["id"]],
            "source_name": prompt_name(source.code),
            "target_name": prompt_name(target.code),
            "target_language": target.code,
            "data_source": pair.provenance,
        }
        for row in pair.source_rows
    ]
    return {"devtest": datasets.Dataset.from_list(rows)}


def process_results(doc, results):
    hypothesis = results[0].strip()
    return {
        "paper_sentence_bleu": paper_sentence_bleu(hypothesis, doc["target"]),
        "corpus_bleu": (hypothesis, doc["target"], doc["target_language"]),
        "corpus_chrf_pp": (hypothesis, doc["target"]),
        "signature": (hypothesis, doc["target"], doc["target_language"], doc["data_source"]),
    }
