"""Per-language text sources, tokenization and packing into fixed-length sequences.

A corpus is either

* a local folder with one ``<lang>.txt`` (documents separated by blank lines) or
  ``<lang>.jsonl`` (one JSON object per line with a ``text`` field) per language, or
* a Hugging Face dataset spec ``hf:NAME[:CONFIG[:SPLIT[:COLUMN]]]``, read in streaming mode;
  ``{lang}`` (ISO code) and ``{flores}`` (FLORES-200 code) in any part are filled in per
  language. Defaults: config ``{lang}``, split ``train``, column ``text``. Example:
  ``hf:uonlp/CulturaX:{lang}:train:text``.

Documents are tokenized with the model's tokenizer without special tokens and concatenated
in stream order with no separator (as the paper does), then cut into chunks of
``seq_len - len(prefix)`` tokens; :class:`Packing` puts the special tokens the model expects
at every sequence start (its BOS, when the tokenizer adds one) in front of each chunk.

Example:
    >>> sources = open_corpus("corpus/train", ["de", "fr"])           # doctest: +SKIP
    >>> packing = Packing.for_tokenizer(tokenizer, seq_len=512)        # doctest: +SKIP
    >>> for chunk in packing.chunks(sources["de"].documents(), tokenizer, max_tokens=10_000):  # doctest: +SKIP
    ...     row = packing.prefix + chunk                               # what the model sees
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from lape_harness.errors import InputError
from lape_harness.languages import get_language, normalize_code

logger = logging.getLogger(__name__)

HF_PREFIX = "hf:"
FILE_SUFFIXES = (".txt", ".jsonl")
# A paragraph longer than this many characters is handed to the tokenizer in pieces (at line
# boundaries), so a file without blank lines never becomes one giant in-memory document.
MAX_DOCUMENT_CHARS = 1_000_000
TOKENIZE_BATCH = 64


class TextSource:
    """One language's text: an iterable of documents with a description and a fingerprint."""

    language: str
    source: str  # human-readable: a file path or a dataset spec

    def documents(self) -> Iterator[str]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """sha256 identifying the input (file bytes, or the resolved dataset spec)."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise :class:`InputError` if the source visibly has no text (cheap: no full read)."""


class LocalFile(TextSource):
    """A source read from one local file (``path``), fingerprinted by its bytes."""

    path: Path

    @property
    def source(self) -> str:
        return str(self.path)

    def fingerprint(self) -> str:
        return file_sha256(self.path)

    def check_utf8(self) -> None:
        """Raise :class:`InputError` naming the file, the byte and its line if the file is not UTF-8
        (one streaming pass over the bytes, before any model loads)."""
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = lines = 0
        with open(self.path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                pending = len(decoder.getstate()[0])
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as error:
                    raise self._not_utf8(error, offset - pending, lines, error.object) from None
                offset += len(block)
                lines += block.count(b"\n")
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError as error:
                raise self._not_utf8(error, offset - len(error.object), lines, error.object) from None

    def _not_utf8(self, error: UnicodeDecodeError, base: int, lines: int, data: bytes) -> InputError:
        line = lines + data[: error.start].count(b"\n") + 1
        return InputError(
            f"corpus file {self.source} for {self.language!r} is not UTF-8 text: byte 0x{data[error.start]:02x} at "
            f"offset {base + error.start} (line {line}) is {error.reason}; re-save it as UTF-8, e.g. "
            f"`iconv -f latin1 -t utf-8 {self.path.name} > utf8.txt` and put that file in its place"
        )

    def _lines(self) -> Iterator[str]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                yield from handle
        except UnicodeDecodeError:  # the file changed after its check
            self.check_utf8()
            raise


@dataclass(frozen=True)
class TextFile(LocalFile):
    """``<lang>.txt``: documents (paragraphs) separated by blank lines."""

    language: str
    path: Path

    def documents(self) -> Iterator[str]:
        lines: list[str] = []
        size = 0
        for line in self._lines():
            if line.strip():
                lines.append(line.rstrip("\n"))
                size += len(line)
                if size < MAX_DOCUMENT_CHARS:
                    continue
            if lines:
                yield "\n".join(lines)
                lines, size = [], 0
        if lines:
            yield "\n".join(lines)

    def check(self) -> None:
        self.check_utf8()
        for line in self._lines():
            if line.strip():
                return
        raise _empty(self)


@dataclass(frozen=True)
class JsonlFile(LocalFile):
    """``<lang>.jsonl``: one JSON object per line; the document is its ``text`` field."""

    language: str
    path: Path
    field: str = "text"

    def documents(self) -> Iterator[str]:
        for number, line in enumerate(self._lines(), 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)[self.field]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InputError(
                    f"{self.path}:{number} is not a JSON object with a {self.field!r} string field; "
                    f"fix that line (each line must look like {{\"{self.field}\": \"...\"}})"
                ) from None
            if not isinstance(text, str):
                raise InputError(f"{self.path}:{number}: field {self.field!r} is not a string; fix that line")
            if text.strip():
                yield text

    def check(self) -> None:
        self.check_utf8()
        for _ in islice(self.documents(), 1):
            return
        raise _empty(self)


@dataclass(frozen=True)
class HFDataset(TextSource):
    """A Hugging Face dataset read with ``datasets.load_dataset(..., streaming=True)``."""

    language: str
    name: str
    config: str | None
    split: str
    column: str

    @property
    def source(self) -> str:
        return f"{HF_PREFIX}{self.name}:{self.config or ''}:{self.split}:{self.column}"

    def documents(self) -> Iterator[str]:
        import datasets

        try:
            stream = datasets.load_dataset(self.name, self.config, split=self.split, streaming=True)
        except Exception as error:  # datasets raises many kinds; all mean "cannot open this spec"
            raise InputError(
                f"cannot open dataset {self.source} for {self.language!r}: {error}; check the name, "
                "config, split and your network or HF_DATASETS_OFFLINE setting"
            ) from None
        for row in stream:
            if self.column not in row:
                raise InputError(
                    f"dataset {self.source} has no column {self.column!r} (it has {', '.join(row)}); "
                    "name the text column as the last part of the spec"
                )
            text = row[self.column]
            if isinstance(text, str) and text.strip():
                yield text

    def fingerprint(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()


def _empty(source: TextSource) -> InputError:
    return InputError(
        f"corpus file {source.source} for {source.language!r} has no text; "
        f"add text to it, or leave {source.language!r} out of the languages asked for"
    )


def file_sha256(path: Path) -> str:
    """The sha256 of the file at ``path`` (hex), read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_hf_spec(corpus: str | os.PathLike) -> bool:
    return str(corpus).startswith(HF_PREFIX)


def folder_languages(folder: str | os.PathLike, report: Callable[[str], None] | None = None) -> list[str]:
    """The languages that have a ``<lang>.txt`` or ``<lang>.jsonl`` in ``folder`` (table order).

    A corpus file not named with a table code (``xx.txt``, ``deu_Latn.txt``) is left out and
    reported through ``report`` (default: a logged warning), never skipped without a word.
    """
    from lape_harness.languages import UnknownLanguageError, all_languages

    folder = _existing_folder(folder)
    files = sorted(path.name for path in folder.iterdir() if path.suffix in FILE_SUFFIXES)
    stems = {Path(name).stem for name in files}
    known = [language.code for language in all_languages() if language.code in stems]
    others = [name for name in files if Path(name).stem not in known]
    problems = []
    for name in others:
        stem, suffix = Path(name).stem, Path(name).suffix
        try:
            problems.append(f"{name} is named with {stem!r}, another spelling of {normalize_code(stem)!r}: "
                            f"rename it {normalize_code(stem)}{suffix} to use it")
        except UnknownLanguageError:
            problems.append(f"{name}: {stem!r} is not a language code lape-harness knows; rename it to an ISO "
                            "639-1 code such as de.txt to use it")
    if not known:
        raise InputError(
            f"corpus folder {str(folder)!r} has no <lang>.txt or <lang>.jsonl files with known language codes"
            + (f" ({'; '.join(problems)})" if problems else "") + "; add files such as de.txt, or pass --languages"
        )
    for problem in problems:
        (report or logger.warning)(f"corpus folder {str(folder)!r}: {problem}; it is left out")
    return known


def open_corpus(corpus: str | os.PathLike, languages: Iterable[str]) -> dict[str, TextSource]:
    """One :class:`TextSource` per language (normalized ISO codes, in the given order).

    Checks what can be checked without reading everything: known language codes, the folder
    and each file exist, no file is empty.
    """
    codes = [normalize_code(language) for language in languages]
    duplicates = sorted({code for code in codes if codes.count(code) > 1})
    if duplicates:
        raise InputError(f"languages listed twice: {', '.join(duplicates)}; list each language once")
    if not codes:
        raise InputError("no languages given; pass --languages (e.g. --languages de fr en)")
    if is_hf_spec(corpus):
        return {code: _hf_source(str(corpus), code) for code in codes}
    folder = _existing_folder(corpus)
    sources: dict[str, TextSource] = {}
    for code in codes:
        txt, jsonl = folder / f"{code}.txt", folder / f"{code}.jsonl"
        if txt.is_file() and jsonl.is_file():
            raise InputError(f"both {txt.name} and {jsonl.name} are in {str(folder)!r}; keep only one per language")
        if txt.is_file():
            sources[code] = TextFile(code, txt)
        elif jsonl.is_file():
            sources[code] = JsonlFile(code, jsonl)
        else:
            raise InputError(
                f"no corpus file for {code!r} in {str(folder)!r}: add {code}.txt or {code}.jsonl, "
                f"or leave {code!r} out of the languages asked for"
            )
        sources[code].check()
    return sources


def _existing_folder(corpus: str | os.PathLike) -> Path:
    folder = Path(corpus).expanduser()
    if folder.is_file():
        raise InputError(f"corpus folder {str(folder)!r} is a file; pass the folder that holds it (and the other "
                         "<lang>.txt / <lang>.jsonl files) with --corpus")
    if not folder.is_dir():
        raise InputError(
            f"corpus folder {str(folder)!r} does not exist; pass --corpus with a folder of <lang>.txt / "
            "<lang>.jsonl files or an hf:NAME:CONFIG:SPLIT:COLUMN dataset spec"
            + (" (or create the starter corpus with `lape-harness corpus`)" if "corpus" in str(folder) else "")
        )
    return folder


def _hf_source(spec: str, code: str) -> HFDataset:
    parts = spec[len(HF_PREFIX) :].split(":")
    if not parts[0] or len(parts) > 4:
        raise InputError(
            f"bad dataset spec {spec!r}; the form is hf:NAME[:CONFIG[:SPLIT[:COLUMN]]], "
            "e.g. hf:uonlp/CulturaX:{lang}:train:text"
        )
    name, config, split, column = (parts + ["{lang}", "train", "text"][len(parts) - 1 :])[:4]
    language = get_language(code)
    fill = lambda text: text.replace("{lang}", language.code).replace("{flores}", language.flores)  # noqa: E731
    return HFDataset(code, fill(name), fill(config) or None, fill(split) or "train", fill(column) or "text")


@dataclass(frozen=True)
class Packing:
    """How text becomes model input: ``seq_len`` tokens per row, starting with ``prefix``.

    ``prefix`` holds the special tokens the tokenizer itself puts before text (Llama and
    Gemma: their BOS; GPT-2: nothing). Those positions are never counted.
    """

    seq_len: int
    prefix: list[int]

    @classmethod
    def for_tokenizer(cls, tokenizer, seq_len: int) -> Packing:
        if seq_len <= 0:
            raise InputError(f"--seq-len must be positive, got {seq_len}")
        prefix = special_prefix(tokenizer)
        if seq_len <= len(prefix):
            raise InputError(f"--seq-len {seq_len} leaves no room for text after the {len(prefix)} start token(s)")
        return cls(seq_len, prefix)

    @property
    def chunk_len(self) -> int:
        return self.seq_len - len(self.prefix)

    def chunks(self, documents: Iterable[str], tokenizer, max_tokens: int | None = None) -> Iterator[list[int]]:
        """Content chunks of ``chunk_len`` tokens (the last may be shorter), ``max_tokens`` in all."""
        buffer: list[int] = []
        remaining = max_tokens if max_tokens is not None else float("inf")
        documents = iter(documents)
        while remaining > 0:
            batch = list(islice(documents, TOKENIZE_BATCH))
            if not batch:
                break
            for ids in tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]:
                buffer.extend(ids)
            start = 0  # chunks are cut at an offset; the buffer is shortened once per batch (linear time)
            while len(buffer) - start >= self.chunk_len and remaining > 0:
                take = int(min(self.chunk_len, remaining))
                yield buffer[start : start + take]
                start += take
                remaining -= take
            del buffer[:start]
        if buffer and remaining > 0:
            yield buffer[: int(min(len(buffer), remaining))]


def special_prefix(tokenizer) -> list[int]:
    """The special tokens ``tokenizer`` puts before a text when it adds special tokens.

    Found from the tokenizer's own behaviour: encode a probe text with and without special
    tokens and take what comes before the plain encoding.
    """
    probe = "Hello world. Hallo Welt."
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start])
    raise InputError(
        "cannot tell which special tokens this tokenizer adds before text (its encoding with special "
        "tokens does not contain the plain encoding); lape-harness needs a standard Hugging Face tokenizer"
    )
