"""Which languages an lm-eval task is about: declared in its config's ``metadata.languages``,
else read from its name.

Used by ``steer=auto`` (steer towards the task's target language) and by the leaderboard
(group results by family). A task declares its languages in its YAML::

    metadata:
      languages: {source: de, target: fr, kind: forcing}   # or {target: de}, or just: de

``target`` is required; ``source`` and ``kind`` (monolingual, forcing or translation) are
optional: with a source the kind defaults to ``translation`` (steer towards the target only),
without one to ``monolingual``; ``forcing`` also deactivates the source. Codes are any the
language table knows (``de``, ``deu_Latn``, ``nb``...). Tasks lm-eval's ``TaskManager`` loads are
recorded here (:func:`record_loaded_task`, called by :mod:`lape_harness.plugin.registration`), so a
request's task name finds its declaration. Without one, the name decides: the lape task suite
and lm-eval's built-in multilingual families are understood; None when it does not tell
(callers warn).

Example:
    >>> task_languages("lape_forcing_de_to_fr")
    TaskLanguages(kind='forcing', source='de', target='fr')
    >>> task_languages("my_task", {"languages": {"source": "en", "target": "deu_Latn"}})
    TaskLanguages(kind='translation', source='en', target='de')
    >>> task_languages("belebele_deu_Latn")
    TaskLanguages(kind='monolingual', source=None, target='de')
    >>> task_family("lape_xnli_de")
    'lape_xnli'
    >>> task_languages("lape_lcb_crosslingual_okapi_ja")
    TaskLanguages(kind='crosslingual', source='en', target='ja')
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lape_harness.errors import InputError
from lape_harness.languages import normalize_code

# crosslingual: instructed in the source language to answer in the target (LCB's cross-lingual set)
KINDS = ("monolingual", "forcing", "translation", "crosslingual")


@dataclass(frozen=True)
class TaskLanguages:
    """``kind`` is one of :data:`KINDS`; ``source`` is None for monolingual tasks."""

    kind: str
    source: str | None
    target: str


_FLORES = r"[a-z]{3}_[A-Z][a-z]{3}"
_LANG = r"[a-z]{2,3}(?:_[A-Z][a-z]{3})?"

# lm-eval's built-in multilingual families whose task names put a language code right after
# the family prefix (``xnli_de``, ``global_mmlu_de_business``, ``truthfulqa_de_mc1`` ...).
# Longer prefixes first, so that "lambada_openai_mt_stablelm" wins over "lambada_openai_mt".
_BUILTIN_MONOLINGUAL = sorted(
    [
        "arc",
        "belebele",
        "global_mmlu",
        "global_mmlu_full",
        "hellaswag",
        "lambada_openai_mt",
        "lambada_openai_mt_stablelm",
        "m_mmlu",
        "mgsm_direct",
        "mgsm_native_cot",
        "mgsm_en_cot",
        "mmlu_prox",
        "mmlu_prox_lite",
        "paws",
        "truthfulqa",
        "xcopa",
        "xnli",
        "xquad",
        "xstorycloze",
        "xwinograd",
    ],
    key=len,
    reverse=True,
)
# The source language of names that do not spell it: LCB's cross-lingual prompts are English.
_IMPLIED_SOURCES = {"crosslingual": "en"}

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("forcing", re.compile(r"^(?P<family>lape_forcing)_(?P<source>[a-z]{2,3})_to_(?P<target>[a-z]{2,3})$")),
    ("translation", re.compile(r"^(?P<family>lape_flores)_(?P<source>[a-z]{2,3})-(?P<target>[a-z]{2,3})$")),
    ("monolingual", re.compile(r"^(?P<family>lape_(?:xquad|belebele|xnli|ppl))_(?P<target>[a-z]{2,3})$")),
    # Language Confusion Benchmark: lape_lcb[_base]_<setting>_<source dataset>_<lang> (base: the
    # base-model prompt form); the cross-lingual prompts are English instructions to answer in <lang>.
    (
        "monolingual",
        re.compile(r"^(?P<family>lape_lcb_(?:base_)?monolingual_(?:aya|dolly|okapi|native))_(?P<target>[a-z]{2,3})$"),
    ),
    (
        "crosslingual",
        re.compile(
            r"^(?P<family>lape_lcb_(?:base_)?crosslingual_(?:okapi|sharegpt|complex_prompts))_(?P<target>[a-z]{2,3})$"
        ),
    ),
    # lm-eval's own FLORES / WMT pairs: flores_deu_Latn-eng_Latn_prompt_1, wmt16-de-en.
    ("translation", re.compile(rf"^(?P<family>flores)_(?P<source>{_FLORES})-(?P<target>{_FLORES})(?:_.*)?$")),
    ("translation", re.compile(r"^(?P<family>wmt\d\d)-(?P<source>[a-z]{2})-(?P<target>[a-z]{2})(?:-.*)?$")),
    # MLQA with context and question in the same language: mlqa_de_de.
    ("monolingual", re.compile(r"^(?P<family>mlqa)_(?P<target>[a-z]{2})_(?P=target)$")),
    (
        "monolingual",
        re.compile(
            rf"^(?P<family>{'|'.join(map(re.escape, _BUILTIN_MONOLINGUAL))})_(?P<target>{_LANG})(?:_[a-z0-9_]+)?$"
        ),
    ),
]


def _code(name_part: str) -> str | None:
    try:
        return normalize_code(name_part)  # spellings such as jp and nb: lape_harness.languages.ALIASES
    except InputError:
        return None


def _match(task_name: str) -> tuple[str, re.Match[str]] | None:
    for kind, pattern in _PATTERNS:
        match = pattern.match(task_name)
        if match:
            return kind, match
    return None


class TaskLanguagesError(InputError):
    """A task's ``metadata.languages`` that cannot be read."""


def declared_languages(metadata) -> TaskLanguages | None:
    """The languages a task config's ``metadata`` declares, None when it declares none.

    >>> declared_languages({"languages": "nb"})
    TaskLanguages(kind='monolingual', source=None, target='no')
    >>> declared_languages({"version": 1.0}) is None
    True
    """
    if not isinstance(metadata, dict) or metadata.get("languages") is None:
        return None
    declared = metadata["languages"]
    if isinstance(declared, str):
        declared = {"target": declared}
    if not isinstance(declared, dict) or not declared.get("target") or set(declared) - {"source", "target", "kind"}:
        raise TaskLanguagesError(
            f"metadata.languages {declared!r} is not understood; write {{target: de}} for a monolingual task or "
            "{source: de, target: fr, kind: forcing|translation|crosslingual} (kind optional; default translation)"
        )
    source = declared.get("source")
    kind = declared.get("kind") or ("translation" if source else "monolingual")
    if kind not in KINDS or (kind == "monolingual") != (not source):
        raise TaskLanguagesError(
            f"metadata.languages {declared!r}: kind {kind!r} does not fit; use monolingual (target only), "
            "or forcing/translation/crosslingual (source and target)"
        )
    try:
        return TaskLanguages(kind, normalize_code(str(source)) if source else None, normalize_code(str(declared["target"])))
    except InputError as error:
        raise TaskLanguagesError(f"metadata.languages {declared!r}: {error}") from None


#: task name -> the ``metadata`` of the task lm-eval loaded under that name in this process.
_LOADED: dict[str, dict] = {}


def record_loaded_task(task_name: str, metadata) -> None:
    """Remember the metadata of a task lm-eval loaded (its languages are read when asked for)."""
    _LOADED[task_name] = metadata if isinstance(metadata, dict) else {}


def task_languages(task_name: str, metadata=None) -> TaskLanguages | None:
    """The languages of ``task_name``: from ``metadata`` (else the metadata lm-eval loaded the task
    with), else from the name; None when neither tells.

    >>> task_languages("lape_flores_en-de")
    TaskLanguages(kind='translation', source='en', target='de')
    >>> task_languages("xwinograd_jp")
    TaskLanguages(kind='monolingual', source=None, target='ja')
    >>> task_languages("hellaswag") is None
    True
    """
    if metadata is None:
        metadata = _LOADED.get(task_name)
    try:
        declared = declared_languages(metadata)
    except TaskLanguagesError as error:
        raise TaskLanguagesError(f"task {task_name!r}: {error}") from None
    return declared or name_languages(task_name)


def name_languages(task_name: str) -> TaskLanguages | None:
    """The languages the name ``task_name`` tells (metadata aside), or None.

    >>> name_languages("lape_xnli_de")
    TaskLanguages(kind='monolingual', source=None, target='de')
    """
    found = _match(task_name)
    if found is None:
        return None
    kind, match = found
    target = _code(match["target"])
    source = _code(match["source"]) if "source" in match.groupdict() else _IMPLIED_SOURCES.get(kind)
    if target is None or (kind != "monolingual" and source is None):
        return None
    return TaskLanguages(kind, source, target)


def task_family(task_name: str) -> str:
    """The family a task belongs to (``lape_forcing_de_to_fr`` -> ``lape_forcing``,
    ``xnli_de`` -> ``xnli``); the name itself when it is not a known per-language task."""
    found = _match(task_name)
    return found[1]["family"] if found else task_name
