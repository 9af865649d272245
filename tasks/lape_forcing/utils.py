"""Language forcing: the project's everyday questions (questions.json) in the source
language; the output should come out in the target language."""

from pathlib import Path

import datasets

from lape_harness.metrics import forcing_scores, language_counts  # noqa: F401 (language_counts: used by the YAML)
from lape_harness.task_data import forcing_questions

QUESTIONS = Path(__file__).with_name("questions.json")


def load_questions(languages, **_metadata):
    """The source language's questions, each tagged with the task's source and target."""
    source, target = languages["source"], languages["target"]
    rows = [
        {"question": question, "source_language": source, "target_language": target}
        for question in forcing_questions(QUESTIONS, source)
    ]
    return {"test": datasets.Dataset.from_list(rows)}


def process_results(doc, results):
    return forcing_scores(results[0], doc["source_language"], doc["target_language"])
