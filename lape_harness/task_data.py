"""What the lape tasks read: datasets from the Hugging Face hub or local copies, held-out
text, the forcing questions, and the language names their prompts use.

Set ``LAPE_HARNESS_DATA=/dir`` and every family reads local files in the hub's schema
instead of downloading: ``/dir/<dataset>/<config>/<split>.parquet`` (or ``.jsonl``/``.json``),
e.g. ``/dir/facebook/belebele/deu_Latn/test.parquet``, and the held-out perplexity text
``/dir/heldout/<lang>.txt``. Without the setting, held-out text comes from the starter
corpus (``lape_harness.paths.corpus_dir() / "heldout"``).

Example:
    >>> rows = load_split("facebook/xnli", "de", "test")        # doctest: +SKIP
    >>> rows[0]["premise"], rows[0]["label"]                     # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from lape_harness.errors import InputError
from lape_harness.languages import get_language
from lape_harness.paths import corpus_dir

DATA_ENV = "LAPE_HARNESS_DATA"
_EXTENSIONS = ("parquet", "jsonl", "json")


def local_root() -> Path | None:
    """The folder named by ``$LAPE_HARNESS_DATA``, or None when it is not set."""
    value = os.environ.get(DATA_ENV)
    return Path(value).expanduser() if value else None


def _read_local(path: Path):
    import datasets

    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return datasets.Dataset(pq.read_table(path))
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{path} is not valid JSON ({error}); rewrite it, e.g. with Dataset.to_json") from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise InputError(f"{path} must hold a list of JSON objects (one row each); got {type(rows).__name__}")
    return datasets.Dataset.from_list(rows)


def local_split_path(dataset: str, config: str, split: str) -> Path | None:
    """The local copy of one split under ``$LAPE_HARNESS_DATA`` (``.parquet``, ``.jsonl`` or
    ``.json``), None when there is none or the setting is unset."""
    root = local_root()
    if root is None:
        return None
    for extension in _EXTENSIONS:
        path = root / dataset / config / f"{split}.{extension}"
        if path.is_file():
            return path
    return None


def load_split(dataset: str, config: str, split: str):
    """One split of a hub dataset as a ``datasets.Dataset``, from the local copy when
    ``$LAPE_HARNESS_DATA`` is set."""
    root = local_root()
    if root is None:
        import datasets

        return datasets.load_dataset(dataset, config, split=split)
    path = local_split_path(dataset, config, split)
    if path is not None:
        return _read_local(path)
    folder = root / dataset / config
    raise InputError(
        f"no local copy of {dataset} ({config}, split {split}): expected {folder}/{split}.parquet "
        f"(or .jsonl/.json) because {DATA_ENV}={root}; write it with "
        f"datasets.load_dataset({dataset!r}, {config!r}, split={split!r}).to_parquet(...) on a machine "
        f"with hub access, or unset {DATA_ENV} to read from the hub"
    )


def heldout_path(language: str) -> Path:
    """The held-out text of ``language`` used by the ``lape_ppl_<lang>`` tasks."""
    root = local_root()
    return (root if root is not None else corpus_dir()) / "heldout" / f"{language}.txt"


def heldout_documents(language: str) -> list[str]:
    """The paragraphs (separated by blank lines) of the held-out text of ``language``."""
    path = heldout_path(language)
    if not path.is_file():
        raise InputError(
            f"no held-out text for {language!r} at {path}; build the starter corpus with "
            f"`lape-harness corpus` or point {DATA_ENV} at a folder holding heldout/{language}.txt "
            "(paragraphs separated by blank lines)"
        )
    text = path.read_text(encoding="utf-8")
    documents = [part.strip() for part in re.split(r"\n\s*\n", text.replace("\r\n", "\n"))]
    documents = [document for document in documents if document]
    if not documents:
        raise InputError(f"held-out text {path} is empty; add paragraphs separated by blank lines")
    return documents


# The paper's prompts name Norwegian Bokmål just "Norwegian".
_PROMPT_NAMES = {"no": "Norwegian"}


def prompt_name(language: str) -> str:
    """The English language name the task prompts use (``"de"`` -> ``"German"``)."""
    code = get_language(language).code
    return _PROMPT_NAMES.get(code, get_language(code).name)


def forcing_questions(path: Path, language: str) -> list[str]:
    """The forcing questions of ``language`` from a JSON file ``{"<code>": ["question", ...]}``."""
    questions = json.loads(Path(path).read_text(encoding="utf-8"))
    if language not in questions or not questions[language]:
        raise InputError(
            f"{path} has no questions for {language!r} (it has: {', '.join(sorted(questions))}); "
            "add a list of questions under that code"
        )
    return list(questions[language])


class _LapeCustomDatasetNotice(logging.Filter):
    """lm-eval logs a notice about ``--metadata`` for every task with a custom loader; for the
    lape tasks (hundreds of them) it is noise, since their loaders take no user arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("lape_") and "Custom kwargs can be passed" in message)


logging.getLogger("lm_eval.api.task").addFilter(_LapeCustomDatasetNotice())
