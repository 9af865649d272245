"""Language Confusion Benchmark: the benchmark's prompts of one setting, source dataset and
language (as they are for chat models, ``Q: {message}\nA:`` for base models); each completion
gets a verdict that the LPR/WPR/LCPR aggregations read."""

import datasets

from lape_harness.task_support.confusion import WPR_LANGUAGES, completion_verdict
from lape_harness.task_support.confusion import lcpr_aggregation as lcpr  # noqa: F401 (used by the YAML)
from lape_harness.task_support.confusion import lpr_aggregation as lpr  # noqa: F401 (used by the YAML)
from lape_harness.task_support.confusion import wpr_aggregation as wpr  # noqa: F401 (used by the YAML)
from lape_harness.task_support.lcb_prompt_forms import base_prompt as _base_prompt
from lape_harness.task_support.task_data import lcb_prompts


def load_test_set(languages, setting, source, **_metadata):
    """The test set's rows (the benchmark's columns) plus the language the answer should be in."""
    target = languages["target"]
    rows = [{**row, "expected_language": target} for row in lcb_prompts(setting, source, target)]
    return {"test": datasets.Dataset.from_list(rows)}


def base_prompt(doc):
    """The benchmark's base-model prompt of the row (the lape_lcb_base_* tasks' doc_to_text)."""
    return _base_prompt(doc["prompt"])


def process_results(doc, results):
    verdict = completion_verdict(results[0], doc["expected_language"])
    metrics = ("lpr", "wpr", "lcpr") if doc["expected_language"] in WPR_LANGUAGES else ("lpr", "lcpr")
    return {metric: verdict for metric in metrics}
