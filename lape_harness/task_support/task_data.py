"""What the lape tasks read: datasets from the Hugging Face hub or local copies, held-out
text, the forcing questions, and the language names their prompts use.

Set ``LAPE_HARNESS_DATA=/dir`` and every family reads local files in the hub's schema
instead of downloading: ``/dir/<dataset>/<config>/<split>.parquet`` (or ``.jsonl``/``.json``),
e.g. ``/dir/facebook/belebele/deu_Latn/test.parquet``, the held-out perplexity text
``/dir/heldout/<lang>.txt``, and the Language Confusion Benchmark's test sets in its
repository's layout, ``/dir/for-ai/language-confusion/test_sets/<setting>/<source>/<lang>.csv``.
Without the setting, held-out text comes from the starter corpus
(``lape_harness.paths.corpus_dir() / "heldout"``) and the LCB test sets are downloaded once.

Example:
    >>> rows = load_split("facebook/xnli", "de", "test")        # doctest: +SKIP
    >>> rows[0]["premise"], rows[0]["label"]                     # doctest: +SKIP
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from lape_harness.errors import InputError
from lape_harness.languages import get_language
from lape_harness.paths import cache_dir, corpus_dir

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


# --------------------------------------------------------------------------------------------
# The Language Confusion Benchmark (github.com/for-ai/language-confusion): one CSV per setting,
# source dataset and language under test_sets/ (columns: prompt, source, language; the
# cross-lingual files add location and phrasing). The test sets are read from the repository's
# test_sets.zip at a fixed commit, so every run sees the same prompts.

LCB_REPOSITORY = "for-ai/language-confusion"
LCB_COMMIT = "94592802d5dd33e30af2fe57952254a89ab6f683"
#: sha256 of the benchmark's files at LCB_COMMIT (read from the repository at that commit).
LCB_SHA256 = {
    "test_sets.zip": "3425337489fa65ff15d977e981e9748c86ce8e88ef0f4457ecdb4a65d8702712",
    "words": "1ec8230beef2a7c955742b089fc3cea2833866cf5482bf018d7c4124eef104bd",
}
_LCB_CROSSLINGUAL = ("fr", "de", "es", "pt", "it", "ja", "ko", "zh", "ar", "tr", "hi", "ru", "id", "vi")
#: ``{setting: {source: languages}}``: the benchmark's CSV files.
LCB_TEST_SETS: dict[str, dict[str, tuple[str, ...]]] = {
    "monolingual": {
        "aya": ("en", "tr", "ar", "zh", "pt"),
        "dolly": ("hi", "ru", "fr", "ar", "es"),
        "okapi": ("en", "fr", "it", "de", "zh", "vi", "es", "id", "pt", "ar"),
        "native": ("es", "fr", "ja", "ko"),
    },
    "crosslingual": {source: _LCB_CROSSLINGUAL for source in ("okapi", "sharegpt", "complex_prompts")},
}


def _lcb_member(setting: str, source: str, language: str) -> str:
    if language not in LCB_TEST_SETS.get(setting, {}).get(source, ()):
        known = ", ".join(f"{s}/{src}" for s, sources in LCB_TEST_SETS.items() for src in sources)
        raise InputError(f"the Language Confusion Benchmark has no {setting}/{source} test set for {language!r} "
                         f"(its sets: {known}; languages per set in lape_harness.task_support.task_data.LCB_TEST_SETS)")
    return f"test_sets/{setting}/{source}/{language}.csv"


def lcb_file(name: str) -> Path:
    """A file of the benchmark's repository at :data:`LCB_COMMIT` (``test_sets.zip``, ``words``): the
    local copy under ``$LAPE_HARNESS_DATA/for-ai/language-confusion/``, else the download cached under
    the user cache, checked against its pinned sha256 before it is cached and whenever it is read."""
    root = local_root()
    if root is not None:
        return root / LCB_REPOSITORY / name
    path = cache_dir() / "lcb" / LCB_COMMIT / name
    url = f"https://github.com/{LCB_REPOSITORY}/raw/{LCB_COMMIT}/{name}"
    if not path.is_file():
        download_verified(url, path, LCB_SHA256[name], offline_hint=(
            f"offline, copy the repository's {name} (commit {LCB_COMMIT[:12]}) to "
            f"$LAPE_HARNESS_DATA/{LCB_REPOSITORY}/ and set {DATA_ENV}"))
    check_sha256(path, LCB_SHA256[name], fix=f"delete it to download it again: rm {path}")
    return path


def download_verified(url: str, path: Path, sha256: str, offline_hint: str = "") -> None:
    """Download ``url`` to ``path`` (atomically) only when its content has the ``sha256`` expected: an
    error page saved by a proxy or a truncated download is never cached."""
    import urllib.request

    from lape_harness.atomic import atomic_path

    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            content = response.read()
    except OSError as error:
        raise InputError(f"could not download {url} ({error}); {offline_hint}") from None
    digest = hashlib.sha256(content).hexdigest()
    if digest != sha256:
        raise InputError(f"the download of {url} is not the pinned file ({len(content):,} bytes, sha256 {digest[:12]}…, "
                         f"expected {sha256[:12]}…): a proxy's error page or a cut connection; nothing was cached. "
                         f"Try again, or {offline_hint}")
    with atomic_path(path) as temporary:
        temporary.write_bytes(content)


def check_sha256(path: Path, sha256: str, fix: str) -> None:
    """An :class:`InputError` naming ``path`` and the ``fix`` when the file's content is not the pinned one."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise InputError(f"{path} is corrupt (sha256 {digest[:12]}…, expected {sha256[:12]}… for "
                         f"{LCB_REPOSITORY}@{LCB_COMMIT[:12]}); {fix}")


def _lcb_text(member: str) -> str:
    root = local_root()
    if root is not None and (root / LCB_REPOSITORY / member).is_file():
        return (root / LCB_REPOSITORY / member).read_text(encoding="utf-8")
    archive = lcb_file("test_sets.zip")
    if not archive.is_file():
        raise InputError(f"no local copy of the Language Confusion Benchmark's {member}: expected "
                         f"{root / LCB_REPOSITORY / member} (or {archive}) because {DATA_ENV}={root}; copy the "
                         f"repository's test_sets folder there, or unset {DATA_ENV} to download it")
    try:
        with zipfile.ZipFile(archive) as bundle:
            # match <setting>/<source>/<lang>.csv whatever folder the archive puts it in
            tail = "/" + member.removeprefix("test_sets/")
            names = [name for name in bundle.namelist() if ("/" + name).endswith(tail) and "__MACOSX" not in name]
            if not names:
                raise InputError(f"{archive} holds no {member}; replace it with the repository's test_sets.zip "
                                 f"(commit {LCB_COMMIT[:12]})")
            return bundle.read(names[0]).decode("utf-8")
    except (zipfile.BadZipFile, EOFError) as error:
        raise InputError(f"{archive} is not a readable zip file ({error}); replace it with the repository's "
                         f"test_sets.zip (commit {LCB_COMMIT[:12]})") from None


def lcb_prompts(setting: str, source: str, language: str) -> list[dict[str, str]]:
    """The rows of one test set of the Language Confusion Benchmark (columns as in its CSV).

    >>> rows = lcb_prompts("crosslingual", "okapi", "ja")    # doctest: +SKIP
    >>> rows[0]["prompt"], rows[0]["language"]               # doctest: +SKIP
    ('Reply in Japanese. Explain ...', 'ja')
    """
    member = _lcb_member(setting, source, language)
    rows = list(csv.DictReader(io.StringIO(_lcb_text(member))))
    if not rows or "prompt" not in rows[0]:
        raise InputError(f"the Language Confusion Benchmark's {member} has no 'prompt' column or no rows; "
                         "replace it with the repository's file")
    return rows


# The paper's prompts name Norwegian Bokmål just "Norwegian".
_PROMPT_NAMES = {"no": "Norwegian"}


def prompt_name(language: str) -> str:
    """The English language name the task prompts use (``"de"`` -> ``"German"``)."""
    code = get_language(language).code
    return _PROMPT_NAMES.get(code, get_language(code).name)


@dataclass(frozen=True)
class QuestionFile:
    """A forcing question file ``{"<code>": ["question", ...]}``: questions by table code, and the
    file's identity as results record it (``"<name>@sha256:<hex>"``)."""

    path: Path
    questions: dict[str, list[str]]
    sha256: str

    @property
    def identity(self) -> str:
        return f"{self.path.name}@sha256:{self.sha256}"

    def for_language(self, language: str) -> list[str]:
        """The questions of ``language`` (any code the language table knows)."""
        try:
            code = get_language(language).code
        except InputError:
            code = language
        if not self.questions.get(code):
            raise InputError(
                f"{self.path} has no questions for {language!r} (it has: {', '.join(sorted(self.questions))}); "
                "add a list of questions under that code, or run only the forcing tasks of the languages it has"
            )
        return list(self.questions[code])


def read_questions(path: str | os.PathLike) -> QuestionFile:
    """Read and check a forcing question file; language keys may be any code the table knows
    (``"deu_Latn"``, ``"nb"``) and are stored under the table's code."""
    path = Path(path).expanduser()
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise InputError(f"cannot read the forcing question file {path} ({error.strerror or error}); "
                         'pass an existing JSON file {"de": ["question", ...], ...}') from None
    try:
        content = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path} is not UTF-8 JSON ({error}); write it as {{\"de\": [\"question\", ...]}}") from None
    if not isinstance(content, dict):
        raise InputError(f"{path} must hold a JSON object {{language code: [questions]}}; got {type(content).__name__}")
    questions: dict[str, list[str]] = {}
    for key, items in content.items():
        if not isinstance(items, list) or not all(isinstance(item, str) and item.strip() for item in items):
            raise InputError(f"{path}: the value of {key!r} must be a list of non-empty question strings")
        try:
            code = get_language(key).code
        except InputError as error:
            raise InputError(f"{path}: {error}") from None
        if code in questions:
            raise InputError(f"{path}: {key!r} and another key both name {code!r}; merge their questions")
        questions[code] = items
    return QuestionFile(path, questions, hashlib.sha256(raw).hexdigest())


def forcing_questions(path: Path, language: str) -> list[str]:
    """The forcing questions of ``language`` from a JSON file ``{"<code>": ["question", ...]}``."""
    return read_questions(path).for_language(language)


class _LapeCustomDatasetNotice(logging.Filter):
    """lm-eval logs a notice about ``--metadata`` for every task with a custom loader; for the
    lape tasks (hundreds of them) it is noise: the one user argument (the forcing ``questions``
    file) is documented in docs/tasks.md."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("lape_") and "Custom kwargs can be passed" in message)


logging.getLogger("lm_eval.api.task").addFilter(_LapeCustomDatasetNotice())
