"""Where the FLORES sentences of a translation pair come from: ``facebook/flores`` (FLORES-200,
per-language parquet configs, column ``sentence``) or its maintained successor FLORES+
(``openlanguagedata/flores_plus``, gated, column ``text``, a few configs relabelled such as
``cmn_Hans`` for Chinese).

``$LAPE_HARNESS_FLORES`` picks the source: ``flores``, ``flores_plus`` or ``auto`` (the default:
FLORES-200 when it loads, else FLORES+). Both sides of a pair always come from one source, and
once ``auto`` has chosen a source in a process every later pair uses the same one, so one run
never mixes the two. Each pair carries its :attr:`FloresPair.provenance` (dataset and hub
revision, or the local copy), which the FLORES tasks put into their ``signature``.

Example:
    >>> flores_plus_config("zh"), flores_plus_config("de")
    ('cmn_Hans', 'deu_Latn')
    >>> pair = load_pair("en", "de")                      # doctest: +SKIP
    >>> pair.provenance                                   # doctest: +SKIP
    'facebook/flores@2db78afdeaccaedc3b33a95442a4e55766887e17'
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from lape_harness.errors import InputError
from lape_harness.languages import get_language
from lape_harness.task_support.task_data import DATA_ENV, load_split, local_root, local_split_path

SOURCE_ENV = "LAPE_HARNESS_FLORES"
SPLIT = "devtest"


@dataclass(frozen=True)
class FloresSource:
    """One FLORES distribution on the hub: its dataset id and the column holding the sentence."""

    key: str  # the $LAPE_HARNESS_FLORES value that selects it
    dataset: str
    column: str

    def config(self, language: str) -> str:
        """The dataset config of ``language`` (any code the language table knows)."""
        code = get_language(language).flores
        return FLORES_PLUS_RELABELS.get(code, code) if self is FLORES_PLUS else code


FLORES_200 = FloresSource("flores", "facebook/flores", "sentence")
FLORES_PLUS = FloresSource("flores_plus", "openlanguagedata/flores_plus", "text")
SOURCES = {source.key: source for source in (FLORES_200, FLORES_PLUS)}

# FLORES-200 codes that FLORES+ 2.0 relabelled (openlanguagedata/flores CHANGELOG.md, 2.0-rc.1 and rc.2).
FLORES_PLUS_RELABELS = {
    "zho_Hans": "cmn_Hans",
    "zho_Hant": "cmn_Hant",
    "tgl_Latn": "fil_Latn",
    "tzm_Tfng": "zgh_Tfng",
    "est_Latn": "ekk_Latn",
    "grn_Latn": "gug_Latn",
    "kon_Latn": "ktu_Latn",
}

ACCESS_HELP = (
    "FLORES+ is gated: accept its terms at https://huggingface.co/datasets/openlanguagedata/flores_plus, "
    "then run `huggingface-cli login` (or set HF_TOKEN) on this machine; or point "
    f"{DATA_ENV} at local copies (<dir>/facebook/flores/<code>/devtest.parquet or "
    "<dir>/openlanguagedata/flores_plus/<code>/devtest.parquet, see docs/tasks.md)"
)

_chosen: FloresSource | None = None  # the source `auto` settled on in this process


def flores_plus_config(language: str) -> str:
    """The FLORES+ config of ``language`` (``"zh"`` → ``"cmn_Hans"``)."""
    return FLORES_PLUS.config(language)


@dataclass(frozen=True)
class FloresPair:
    """The devtest rows of a source and a target language, from one source."""

    source_rows: list[dict]
    target_rows: list[dict]
    source: FloresSource
    provenance: str  # "<dataset>@<revision>" or "<dataset>@local:<folder>"

    @property
    def column(self) -> str:
        """The column holding the sentences (``sentence`` or ``text``)."""
        return self.source.column


def requested_source() -> FloresSource | None:
    """The source ``$LAPE_HARNESS_FLORES`` asks for; None for ``auto`` (or unset)."""
    value = os.environ.get(SOURCE_ENV, "auto").strip().lower() or "auto"
    if value == "auto":
        return None
    if value not in SOURCES:
        raise InputError(f"{SOURCE_ENV}={value!r} is not a FLORES source; use flores, flores_plus or auto")
    return SOURCES[value]


def load_pair(source_language: str, target_language: str) -> FloresPair:
    """The devtest rows of both languages from the source ``$LAPE_HARNESS_FLORES`` selects (see the module)."""
    global _chosen
    requested = requested_source()
    if requested is not None:
        return _load(requested, source_language, target_language)
    if _chosen is not None:
        return _load_chosen(_chosen, source_language, target_language)
    root = local_root()
    if root is not None:
        pair = _load(_local_source(root, source_language, target_language), source_language, target_language)
    else:
        pair = _load_from_hub(source_language, target_language)
    _chosen = pair.source
    return pair


def _load(source: FloresSource, source_language: str, target_language: str) -> FloresPair:
    languages = (source_language, target_language)
    rows = [load_split(source.dataset, source.config(language), SPLIT) for language in languages]
    for language, split in zip(languages, rows):
        if not {"id", source.column} <= set(split.column_names):
            raise InputError(
                f"{source.dataset} {source.config(language)} {SPLIT} has columns {split.column_names}, not "
                f"'id' and {source.column!r}; FLORES-200 copies (column sentence) belong under facebook/flores/, "
                "FLORES+ copies (column text) under openlanguagedata/flores_plus/"
            )
    return FloresPair(rows[0].to_list(), rows[1].to_list(), source, _provenance(source, rows[0]))


def _load_chosen(chosen: FloresSource, source_language: str, target_language: str) -> FloresPair:
    try:
        return _load(chosen, source_language, target_language)
    except InputError:
        raise
    except Exception as error:
        raise InputError(
            f"FLORES {source_language}-{target_language} does not load from {chosen.dataset} "
            f"({type(error).__name__}: {error}), the source this run already used for other pairs; rerun with "
            f"{SOURCE_ENV}=flores or {SOURCE_ENV}=flores_plus so that every pair comes from one source"
        ) from error


def _local_source(root: Path, source_language: str, target_language: str) -> FloresSource:
    """The first source with local copies of both languages under ``root``."""
    expected = []
    for source in (FLORES_200, FLORES_PLUS):
        configs = [source.config(language) for language in (source_language, target_language)]
        if all(local_split_path(source.dataset, config, SPLIT) for config in configs):
            return source
        expected.append(" and ".join(f"{root / source.dataset / config / SPLIT}.parquet" for config in configs))
    raise InputError(
        f"no local copy of FLORES {source_language}-{target_language} under {DATA_ENV}={root}: expected "
        f"{expected[0]} (FLORES-200, column sentence) or {expected[1]} (FLORES+, column text), "
        ".jsonl/.json work too; write them as docs/tasks.md shows, or unset "
        f"{DATA_ENV} to read from the hub"
    )


def hub_unavailable(error: BaseException) -> bool:
    """Whether ``error`` from ``datasets.load_dataset`` means "this dataset does not serve that config
    here" (so the other FLORES source is worth trying) rather than a bug.

    datasets 5.x raises ``RuntimeError("Dataset scripts are no longer supported ...")`` for a
    script repository, ``DatasetNotFoundError`` (a ``FileNotFoundError``) for gated, missing or
    unreachable repositories, ``ValueError("BuilderConfig '...' not found ...")`` for a missing
    config; huggingface_hub's ``GatedRepoError``/``HfHubHTTPError`` and ``ConnectionError`` are ``OSError``s.

    >>> hub_unavailable(RuntimeError("Dataset scripts are no longer supported, but found flores.py"))
    True
    >>> hub_unavailable(ValueError("BuilderConfig 'xx' not found. Available: ['deu_Latn']"))
    True
    >>> hub_unavailable(KeyError("sentence"))
    False
    """
    if isinstance(error, OSError):
        return True
    if isinstance(error, RuntimeError):
        return "Dataset scripts are no longer supported" in str(error)
    if isinstance(error, ValueError):
        return "BuilderConfig" in str(error) or "Config name is missing" in str(error)
    return False


def _load_from_hub(source_language: str, target_language: str) -> FloresPair:
    failures = []
    for source in (FLORES_200, FLORES_PLUS):
        try:
            return _load(source, source_language, target_language)
        except Exception as error:
            if not hub_unavailable(error):
                raise
            failures.append(f"{source.dataset}: {type(error).__name__}: {str(error).splitlines()[0][:300]}")
    raise InputError(
        f"FLORES {source_language}-{target_language} loads from neither source ({'; '.join(failures)}). "
        f"{ACCESS_HELP}. Choose a source with {SOURCE_ENV}=flores|flores_plus"
    )


_COMMIT = re.compile(r"[0-9a-f]{40}")


def hub_revision(dataset) -> str:
    """The hub commit a loaded ``datasets.Dataset`` came from, read from its cache folder
    (``.../<config>/0.0.0/<commit>/...arrow``, as datasets names it); ``"unknown"`` when none.

    >>> class Loaded: cache_files = [{"filename": "/c/facebook___flores/deu_Latn/0.0.0/" + "a" * 40 + "/x.arrow"}]
    >>> hub_revision(Loaded())[:8]
    'aaaaaaaa'
    """
    for entry in getattr(dataset, "cache_files", None) or []:
        folder = Path(entry["filename"]).parent.name
        if _COMMIT.fullmatch(folder):
            return folder
    return "unknown"


def _provenance(source: FloresSource, rows) -> str:
    root = local_root()
    revision = hub_revision(rows) if root is None else f"local:{root}"
    return f"{source.dataset}@{revision}"
