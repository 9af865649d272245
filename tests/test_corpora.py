"""Corpus sources (txt, jsonl, HF datasets), start tokens and packing."""

from __future__ import annotations

import json

import pytest
from builders import ModelLoadAttempted
from transformers import AutoTokenizer

from lape_harness.corpora import HFDataset, JsonlFile, Packing, TextFile, folder_languages, open_corpus, special_prefix
from lape_harness.errors import InputError


def test_txt_documents_are_blank_line_separated(tmp_path):
    (tmp_path / "de.txt").write_text("Erster Absatz,\nzweite Zeile.\n\n\n  \nZweiter Absatz.\n", encoding="utf-8")
    source = open_corpus(tmp_path, ["deu_Latn"])["de"]
    assert isinstance(source, TextFile)
    assert list(source.documents()) == ["Erster Absatz,\nzweite Zeile.", "Zweiter Absatz."]


def test_jsonl_documents_use_the_text_field(tmp_path):
    rows = [{"text": "Bonjour."}, {"text": "  "}, {"text": "Salut.", "id": 3}]
    (tmp_path / "fr.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n\n", encoding="utf-8")
    source = open_corpus(tmp_path, ["fr"])["fr"]
    assert isinstance(source, JsonlFile)
    assert list(source.documents()) == ["Bonjour.", "Salut."]
    (tmp_path / "fr.jsonl").write_text('{"text": "ok"}\n{"body": "no text"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"fr.jsonl:2 .*'text'"):
        list(open_corpus(tmp_path, ["fr"])["fr"].documents())


def test_folder_errors_name_the_problem_and_the_fix(tmp_path):
    (tmp_path / "de.txt").write_text("\n \n", encoding="utf-8")
    (tmp_path / "en.txt").write_text("Hello.\n", encoding="utf-8")
    (tmp_path / "en.jsonl").write_text('{"text": "Hello."}\n', encoding="utf-8")
    (tmp_path / "fr.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(InputError, match="does not exist"):
        open_corpus(tmp_path / "missing", ["de"])
    with pytest.raises(InputError, match="unknown language 'klingon'"):
        open_corpus(tmp_path, ["klingon"])
    with pytest.raises(InputError, match="de.txt for 'de' has no text"):
        open_corpus(tmp_path, ["de"])
    with pytest.raises(InputError, match="fr.jsonl for 'fr' has no text"):
        open_corpus(tmp_path, ["fr"])
    with pytest.raises(InputError, match="keep only one"):
        open_corpus(tmp_path, ["en"])
    with pytest.raises(InputError, match="no corpus file for 'it'.*add it.txt"):
        open_corpus(tmp_path, ["it"])
    with pytest.raises(InputError, match="listed twice"):
        open_corpus(tmp_path, ["de", "deu_Latn"])


def test_folder_languages_in_table_order(tmp_path):
    for name in ("en.txt", "de.jsonl", "bo.txt", "notes.md", "xx.txt"):
        (tmp_path / name).write_text("x\n", encoding="utf-8")
    assert folder_languages(tmp_path) == ["bo", "de", "en"]


def test_hf_spec_placeholders_and_defaults():
    spec = open_corpus("hf:uonlp/CulturaX:{lang}:train:text", ["deu_Latn", "fr"])
    assert spec["de"] == HFDataset("de", "uonlp/CulturaX", "de", "train", "text")
    assert open_corpus("hf:org/flores:{flores}", ["de"])["de"] == HFDataset("de", "org/flores", "deu_Latn", "train", "text")
    assert open_corpus("hf:org/data", ["fr"])["fr"].source == "hf:org/data:fr:train:text"
    with pytest.raises(InputError, match="hf:NAME"):
        open_corpus("hf:a:b:c:d:e", ["de"])


def test_hf_dataset_streams_a_local_dataset(tmp_path):
    """A local dataset folder with one config per language, read the way CulturaX is read."""
    (tmp_path / "README.md").write_text(
        "---\nconfigs:\n- config_name: de\n  data_files:\n  - split: train\n    path: de/train.jsonl\n---\n",
        encoding="utf-8",
    )
    (tmp_path / "de").mkdir()
    (tmp_path / "de" / "train.jsonl").write_text(
        "\n".join(json.dumps({"content": text, "n": i}) for i, text in enumerate(["Eins.", "", "Zwei."])) + "\n",
        encoding="utf-8",
    )
    source = open_corpus(f"hf:{tmp_path}:{{lang}}:train:content", ["de"])["de"]
    assert list(source.documents()) == ["Eins.", "Zwei."]
    with pytest.raises(InputError, match="no column 'text'"):
        list(open_corpus(f"hf:{tmp_path}:{{lang}}:train:text", ["de"])["de"].documents())


def test_start_tokens_come_from_the_tokenizer(tiny_llama, tiny_gpt2):
    llama, gpt2 = AutoTokenizer.from_pretrained(tiny_llama), AutoTokenizer.from_pretrained(tiny_gpt2)
    assert special_prefix(llama) == [llama.bos_token_id]
    assert special_prefix(gpt2) == []


def test_packing_concatenates_and_cuts(tiny_llama):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    documents = ["The cat sits on the warm mat.", "Everyone has the right to life.", "Die Katze."]
    stream = [t for doc in documents for t in tokenizer(doc, add_special_tokens=False)["input_ids"]]
    packing = Packing.for_tokenizer(tokenizer, seq_len=8)
    assert packing.prefix == [tokenizer.bos_token_id] and packing.chunk_len == 7
    chunks = list(packing.chunks(documents, tokenizer))
    assert [t for chunk in chunks for t in chunk] == stream
    assert all(len(chunk) == 7 for chunk in chunks[:-1]) and 0 < len(chunks[-1]) <= 7
    limited = list(packing.chunks(iter(documents), tokenizer, max_tokens=10))
    assert [len(chunk) for chunk in limited] == [7, 3] and limited[0] + limited[1] == stream[:10]
    with pytest.raises(InputError, match="no room"):
        Packing.for_tokenizer(tokenizer, seq_len=1)


def test_long_paragraphs_are_split_at_lines(tmp_path, monkeypatch):
    import lape_harness.corpora as corpora

    monkeypatch.setattr(corpora, "MAX_DOCUMENT_CHARS", 20)
    (tmp_path / "en.txt").write_text("line one is long\nline two is long\nthree\n", encoding="utf-8")
    documents = list(open_corpus(tmp_path, ["en"])["en"].documents())
    assert documents == ["line one is long\nline two is long", "three"]


class _CountingTokenizer:
    """Token ids 0, 1, 2, ... for each document, ``length`` of them (a stand-in for a tokenizer)."""

    def __init__(self, length: int):
        self.length = length

    def __call__(self, batch, add_special_tokens=False, verbose=False):
        return {"input_ids": [list(range(self.length)) for _ in batch]}


@pytest.mark.timeout(30)
def test_packing_a_long_paragraph_takes_linear_time():
    """One paragraph of 1 M tokens cut into 500 k two-token chunks: cutting each chunk off the front
    of the buffer (``del buffer[:take]``) moves the rest every time, ~10^12 element moves (many
    minutes); cutting at an offset is linear (well under a second)."""
    packing = Packing(seq_len=2, prefix=[])
    count = 0
    last = None
    for chunk in packing.chunks(["one long paragraph"], _CountingTokenizer(1_000_000)):
        count += 1
        last = chunk
    assert count == 500_000 and last == [999_998, 999_999]
    limited = list(Packing(seq_len=4, prefix=[1]).chunks(["a", "b"], _CountingTokenizer(5), max_tokens=8))
    assert limited == [[0, 1, 2], [3, 4, 0], [1, 2]]


# ---------------------------------------------------------------------------------------------
# Corpus files: unknown language codes reported, non-UTF-8 an error before the model loads (issue 14, items 6 and 9)


def test_corpus_file_with_an_unknown_language_code_is_reported(tmp_path, capsys, no_model_load, caplog):
    from lape_harness.cli import main
    from lape_harness.corpora import folder_languages

    for name in ("de.txt", "fr.txt", "xx.txt", "deu_Latn.jsonl", "notes.md"):
        (tmp_path / name).write_text("Text.\n", encoding="utf-8")
    reported = []
    assert folder_languages(tmp_path, report=reported.append) == ["de", "fr"]
    assert len(reported) == 2
    assert "xx.txt: 'xx' is not a language code" in reported[1] and "left out" in reported[1]
    assert "rename it de.jsonl" in reported[0]
    with caplog.at_level("WARNING"):
        folder_languages(tmp_path)
    assert "xx.txt" in caplog.text
    with pytest.raises(ModelLoadAttempted):
        main(["profile", "--model", "m", "--corpus", str(tmp_path), "--out", str(tmp_path / "out" / "s.safetensors")])
    assert "warning: corpus folder" in capsys.readouterr().err
    for name in ("de.txt", "fr.txt", "deu_Latn.jsonl"):
        (tmp_path / name).unlink()
    with pytest.raises(InputError, match="no <lang>.txt.*'xx' is not a language code"):
        folder_languages(tmp_path)


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_latin1_corpus_file_is_an_input_error_before_the_model_loads(tmp_path, capsys, no_model_load, suffix):
    from lape_harness.cli import main
    from lape_harness.corpora import open_corpus

    (tmp_path / "fr.txt").write_text("Bonjour.\n", encoding="utf-8")
    text = "Die Katze.\n\nÜbung macht den Meister.\n"
    if suffix == ".jsonl":
        text = json.dumps({"text": "Die Katze."}) + "\n" + '{"text": "Übung"}\n'
    (tmp_path / f"de{suffix}").write_bytes(text.encode("latin-1"))
    with pytest.raises(InputError) as error:
        open_corpus(tmp_path, ["fr", "de"])
    for word in (f"de{suffix}", "'de'", "not UTF-8", "byte 0xdc", "line 3" if suffix == ".txt" else "line 2", "iconv"):
        assert word in str(error.value)
    assert main(["profile", "--model", "m", "--corpus", str(tmp_path), "--languages", "de",
                 "--out", str(tmp_path / "s.safetensors")]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_utf8_split_across_read_blocks_is_fine(tmp_path, monkeypatch):
    from lape_harness.corpora import TextFile

    path = tmp_path / "de.txt"
    path.write_text("ä" * 10 + "\n", encoding="utf-8")
    import builtins

    real_open = builtins.open

    class Small:
        def __init__(self, handle):
            self.handle = handle

        def read(self, size=-1):
            return self.handle.read(3)  # splits the two-byte characters

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    monkeypatch.setattr(builtins, "open", lambda p, mode="r", *a, **k: Small(real_open(p, mode, *a, **k))
                        if mode == "rb" else real_open(p, mode, *a, **k))
    TextFile("de", path).check_utf8()
    path.write_bytes("ä".encode() * 5 + b"\xc3")  # cut in the middle of a character at the end
    with pytest.raises(InputError, match="offset 10 .line 1."):
        TextFile("de", path).check_utf8()
