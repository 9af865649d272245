"""XQuAD extractive QA (google/xquad, validation) scored by the paper's and SQuAD's EM/F1."""

from lape_harness.languages import get_language
from lape_harness.task_support.metrics import paper_exact_match, paper_f1, squad_exact_match, squad_f1
from lape_harness.task_support.task_data import load_split, prompt_name


def load_xquad(languages, **_metadata):
    code = get_language(languages["target"]).code
    rows = load_split("google/xquad", f"xquad.{code}", "validation")
    return {"validation": rows.add_column("language_name", [prompt_name(code)] * len(rows))}


def process_results(doc, results):
    prediction, golds = results[0].strip(), list(doc["answers"]["text"])
    return {
        "paper_exact_match": paper_exact_match(prediction, golds),
        "paper_f1": paper_f1(prediction, golds),
        "exact_match": squad_exact_match(prediction, golds),
        "f1": squad_f1(prediction, golds),
    }
