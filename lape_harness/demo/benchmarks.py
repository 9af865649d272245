"""The study's benchmark families: which lm-eval tasks each runs for the study's languages, and
whether its data can load here (a family that cannot is skipped with one line saying why and how
to enable it, never a crash; a language whose data does not load is left out with one line).

``ppl`` (held-out text of the corpus) and ``forcing`` (questions shipped with the tasks) always
load. The hub families read datasets through :mod:`lape_harness.task_support.task_data`: from
local copies under ``$LAPE_HARNESS_DATA`` when it is set, else from the Hugging Face hub (the
Language Confusion Benchmark from GitHub, downloaded once). Whether a task loads is found by
building it with lm-eval, after a quick connection check (an unreachable hub would
otherwise cost half a minute of retries per family).

Example:
    >>> parse_benchmarks("ppl,forcing,xnli")
    ['ppl', 'forcing', 'xnli']
    >>> family_tasks("belebele", ["en", "de"], {"lape_belebele_de", "lape_belebele_en"})
    ['lape_belebele_en', 'lape_belebele_de']
    >>> family_tasks("flores", ["en", "de"], {"lape_flores_en-de"})
    ['lape_flores_en-de']
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable

from lape_harness.errors import InputError

#: every family, in the order a study runs them
FAMILIES = ("ppl", "forcing", "flores", "xquad", "belebele", "xnli", "lcb")
#: lm-eval family name of each study family (lape_harness.analysis.results families)
FAMILY_NAMES = {"ppl": "lape_ppl", "forcing": "lape_forcing", "flores": "lape_flores", "xquad": "lape_xquad",
                "belebele": "lape_belebele", "xnli": "lape_xnli", "lcb": "lape_lcb"}
#: where each hub family's data comes from, and how to make it load
SOURCES = {
    "flores": ("openlanguagedata/flores_plus (gated) on the Hugging Face hub",
               "accept FLORES+'s terms at https://huggingface.co/datasets/openlanguagedata/flores_plus and log in "
               "(`hf auth login`), or set LAPE_HARNESS_DATA=DIR holding openlanguagedata/flores_plus/<lang_Script>/devtest.parquet"),
    "xquad": ("google/xquad on the Hugging Face hub",
              "run with hub access, or set LAPE_HARNESS_DATA=DIR holding google/xquad/xquad.<lang>/validation.parquet"),
    "belebele": ("facebook/belebele on the Hugging Face hub",
                 "run with hub access, or set LAPE_HARNESS_DATA=DIR holding facebook/belebele/<lang_Script>/test.parquet"),
    "xnli": ("facebook/xnli on the Hugging Face hub",
             "run with hub access, or set LAPE_HARNESS_DATA=DIR holding facebook/xnli/<lang>/test.parquet"),
    "lcb": ("for-ai/language-confusion test sets from GitHub (downloaded once)",
            "run once with access to github.com, or set LAPE_HARNESS_DATA=DIR holding "
            "for-ai/language-confusion/test_sets/monolingual/<source>/<lang>.csv"),
}
#: the Language Confusion Benchmark's monolingual sources, preferred first
LCB_SOURCES = ("okapi", "aya", "dolly", "native")
_HOSTS = {"lcb": "github.com"}
_reachable: dict[str, bool] = {}


def parse_benchmarks(text: str | Iterable[str] | None) -> list[str]:
    """``"ppl,forcing"`` (or a list) → the families in study order; ``None``/``all``: every family;
    ``none``: no evaluation (profile and identify only)."""
    if text is None:
        return list(FAMILIES)
    items = [part.strip().lower() for chunk in ([text] if isinstance(text, str) else text)
             for part in str(chunk).split(",") if part.strip()]  # fmt: skip
    if items in (["all"], []):
        return list(FAMILIES)
    if items == ["none"]:
        return []
    unknown = [item for item in items if item not in FAMILIES]
    if unknown:
        raise InputError(f"--benchmarks: unknown {', '.join(unknown)}; choose from {','.join(FAMILIES)} (or all, none)")
    return [family for family in FAMILIES if family in items]


def family_tasks(family: str, languages: list[str], known: set[str]) -> list[str]:
    """The tasks of a hub family for ``languages`` (those lm-eval knows): flores translates English
    into each language, lcb takes each language's first monolingual test set (:data:`LCB_SOURCES`)
    in the benchmark's base-model prompt form (``lape_lcb_base_*``, the study applies no chat
    template) where that task exists, else the plain form."""
    if family == "flores":
        wanted = [f"lape_flores_en-{lang}" for lang in languages if lang != "en"]
    elif family == "lcb":
        wanted = []
        for lang in languages:
            for source in LCB_SOURCES:
                base, chat = f"lape_lcb_base_monolingual_{source}_{lang}", f"lape_lcb_monolingual_{source}_{lang}"
                if base in known or chat in known:
                    wanted.append(base if base in known else chat)
                    break
    else:
        wanted = [f"lape_{family}_{lang}" for lang in languages]
    return [task for task in wanted if task in known]


def loadable(family: str, tasks: list[str], task_manager) -> tuple[list[str], dict[str, str]]:
    """``(tasks whose data loads here, {task or family: why not, in one line})``."""
    from lape_harness.task_support.task_data import DATA_ENV, local_root

    if local_root() is None and not _offline() and not _lcb_cached(family):
        host = _HOSTS.get(family, "huggingface.co")
        if not reachable(host):
            return [], {family: f"{host} cannot be reached and {DATA_ENV} is not set"}
    ok, problems = [], {}
    for task in tasks:
        try:
            task_manager.load([task])
            ok.append(task)
        except Exception as error:  # noqa: BLE001 - any failure to load is reported, never raised
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            problems[task] = f"{type(error).__name__}: {first[:300]}"
    return ok, problems


def reachable(host: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host``:443 opens within ``timeout`` seconds (asked once per host)."""
    if host not in _reachable:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            _reachable[host] = True
        except OSError:
            _reachable[host] = False
    return _reachable[host]


def _offline() -> bool:
    """Hugging Face's offline switches: datasets then reads its local cache without asking the hub."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
               for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))  # fmt: skip


def _lcb_cached(family: str) -> bool:
    if family != "lcb":
        return False
    from lape_harness.paths import cache_dir
    from lape_harness.task_support.task_data import LCB_COMMIT

    return (cache_dir() / "lcb" / LCB_COMMIT / "test_sets.zip").is_file()
