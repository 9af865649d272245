"""Held-out perplexity: one document per paragraph of heldout/<lang>.txt."""

import datasets

from lape_harness.task_support.task_data import heldout_documents


def load_heldout(languages, **_metadata):
    documents = heldout_documents(languages["target"])
    return {"test": datasets.Dataset.from_list([{"text": text} for text in documents])}
