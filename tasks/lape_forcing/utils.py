"""Language forcing: everyday questions in the source language; the output should come out in
the target language. The questions are the package's (questions.json) unless the run passes its
own file: ``lm_eval ... --metadata '{"questions": "/path/q.json"}'`` (lm-eval hands --metadata to
this loader as keyword arguments)."""

from pathlib import Path

import datasets

from lape_harness.errors import LapeError
from lape_harness.task_support.metrics import forcing_scores, language_counts  # noqa: F401 (language_counts: used by the YAML)
from lape_harness.task_support.task_data import read_questions

QUESTIONS = Path(__file__).with_name("questions.json")


def load_questions(languages, questions=None, **_metadata):
    """The source language's questions, each tagged with the task's source and target and the
    identity (name and SHA-256) of the question file."""
    source, target = languages["source"], languages["target"]
    question_file = read_questions(questions or QUESTIONS)
    rows = [
        {"question": question, "source_language": source, "target_language": target,
         "questions_file": question_file.identity}
        for question in question_file.for_language(source)
    ]
    return {"test": datasets.Dataset.from_list(rows)}


def process_results(doc, results):
    return {**forcing_scores(results[0], doc["source_language"], doc["target_language"]),
            "questions_file": doc["questions_file"]}


def question_file(identities):
    """Aggregate: the one question file a task's questions came from."""
    found = sorted(set(identities))
    if len(found) != 1:
        raise LapeError(f"one forcing task scored questions from several files ({', '.join(found)})")
    return found[0]
