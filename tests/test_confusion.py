"""LPR / WPR / LCPR (lape_harness.task_support.confusion) on hand-computed cases, the benchmark's averages,
and the loader of the benchmark's test sets (local CSV folder, local zip, clear errors)."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
from references.language_confusion import compute_all_metrics, load_en_words

from lape_harness.errors import InputError
from lape_harness.task_support import task_data
from lape_harness.task_support.confusion import (
    benchmark_averages,
    completion_verdict,
    dataset_scores,
    english_words,
    lcpr,
    normalize,
    scores_from_results,
    tokenize,
)
from lape_harness.task_support.task_data import DATA_ENV, LCB_COMMIT, LCB_TEST_SETS, lcb_prompts

DATA = Path(__file__).resolve().parent / "fixtures" / "data"


def fake_identify(line: str) -> str:
    """A transparent stand-in for language ID: a line is German when it contains 'und'."""
    return "de" if "und" in line.split() else "en"


def verdict(text: str, language: str = "de", words=frozenset({"hello", "world"})):
    return completion_verdict(text, language, words=words, identify=fake_identify)


GERMAN = "eins zwei drei und vier"  # 5 tokens, German for fake_identify
ENGLISH = "one two three four five"  # 5 tokens, English


def test_normalize_cuts_at_the_next_question_and_drops_punctuation():
    assert normalize("  Hallo, Welt! (gut)\nQ: nächste Frage") == "Hallo Welt gut"
    assert normalize("a—b #c،d") == "a b cd"
    assert normalize("Q: bleibt\nA: ja") == "Q bleibt\nA ja"  # only a *new line* starting with Q: cuts


def test_short_lines_are_ignored_and_a_completion_without_long_lines_is_skipped():
    assert verdict("one two three four")["counted"] is False  # 4 tokens
    assert verdict("one two, three. four!")["counted"] is False  # punctuation is not a token
    mixed = verdict(f"{GERMAN}\nshort English line\n{GERMAN}")
    assert (mixed["counted"], mixed["line_pass"], mixed["lines"]) == (True, True, 2)


def test_one_wrong_line_fails_the_completion():
    failed = verdict(f"{GERMAN}\n{ENGLISH}\n{GERMAN}")
    assert (failed["line_pass"], failed["line_errors"], failed["lines"]) == (False, 1, 3)
    assert verdict(f"{GERMAN}\nQ: {ENGLISH}")["line_pass"] is True  # cut before the English line


def test_word_check_only_for_its_languages_and_only_after_a_line_pass():
    words = frozenset({"hello", "world"})
    ja = lambda text: completion_verdict(text, "ja", words=words, identify=lambda line: "ja")  # noqa: E731
    assert ja("これは 日本語 の 文章 hello です")["word_pass"] is False
    assert ja("これは 日本語 の 文章 Hello です")["word_pass"] is True  # the check is case-sensitive
    assert ja("これは 日本語 の 文章 です")["word_pass"] is True
    assert verdict(f"{GERMAN} hello")["word_pass"] is None  # German: no word check
    wrong_line = completion_verdict("one two three four hello", "ja", words=words, identify=lambda line: "en")
    assert (wrong_line["line_pass"], wrong_line["word_pass"]) == (False, None)


@pytest.fixture
def benchmark_data(monkeypatch):
    """$LAPE_HARNESS_DATA at the fixture copy of the benchmark's files (words, test sets, a sample
    of its released completions)."""
    monkeypatch.setenv(DATA_ENV, str(DATA))
    english_words.cache_clear()
    yield DATA / "for-ai" / "language-confusion"
    english_words.cache_clear()


def test_english_word_list_is_the_benchmarks_own(benchmark_data):
    """The benchmark's words file (its pinned sha256), read as compute_metrics.py reads it: lower-case
    words longer than 3 letters, with the plurals and inflections Webster's Second lacks."""
    assert hashlib.sha256((benchmark_data / "words").read_bytes()).hexdigest() == task_data.LCB_SHA256["words"]
    words = english_words()
    assert {"computer", "house", "with", "models", "using", "words"} <= words
    assert not {"the", "and", "era", "House"} & words  # 3 letters or fewer; capitalised
    assert len(words) == len(load_en_words()) == 81_995


def test_scores_on_released_completions_equal_the_benchmarks_scorer(benchmark_data):
    """396 completions llama-3-instruct released with the benchmark (6 per test set, 66 sets), scored
    per set, per source, per language and overall by lape-harness and by the port of
    compute_metrics.py, both with the same line identifier: LPR and WPR equal everywhere, LCPR the
    harmonic mean of the averaged LPR and WPR."""
    import csv

    from lape_harness.langid import identify_language

    with open(benchmark_data / "outputs" / "llama-3-instruct.sample.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 396
    words = english_words()
    for setting in ("monolingual", "crosslingual"):
        outputs = [row for row in rows if row["task"] == setting]
        reference = compute_all_metrics(outputs, identify_language, load_en_words())
        verdicts = {}
        for row in outputs:
            verdicts.setdefault((row["source"], row["language"]), []).append(
                completion_verdict(row["completion"], row["language"], words=words))
        ours = benchmark_averages({key: dataset_scores(found) for key, found in verdicts.items()})
        assert set(ours) == set(reference), setting
        checked_wpr = 0
        for key, expected in reference.items():
            assert ours[key]["lpr"] == pytest.approx(expected["lpr"]), (setting, key)
            assert ours[key]["wpr"] == (pytest.approx(expected["wpr"]) if "wpr" in expected else None), (setting, key)
            checked_wpr += "wpr" in expected
            if "wpr" in expected:
                lpr_, wpr_ = expected["lpr"], expected["wpr"]
                assert ours[key]["lcpr"] == pytest.approx(0.0 if lpr_ + wpr_ == 0 else 2 * lpr_ * wpr_ / (lpr_ + wpr_))
        assert checked_wpr >= 10, setting  # not vacuous: WPR sets, their sources and languages


def test_tokenizers_segment_chinese_and_japanese():
    assert len(tokenize("我们今天去公园散步", "zh")) >= 4
    assert "".join(tokenize("今日はいい天気です", "ja")) == "今日はいい天気です"
    assert len(tokenize("今日はいい天気です", "ja")) >= 4


def test_dataset_scores_match_a_hand_count():
    # ja, 6 completions: 1 skipped, 2 with a wrong line, 3 passing lines of which 1 has English words
    words = frozenset({"hello"})
    identify = lambda line: "en" if "EN" in line else "ja"  # noqa: E731
    texts = ["短い", "a b c d EN", "a b c d EN", "a b c d e", "a b c d e", "a b c d hello"]
    verdicts = [completion_verdict(text, "ja", words=words, identify=identify) for text in texts]
    scores = dataset_scores(verdicts)
    lpr, wpr = 1 - 2 / 5, 1 - 1 / 3
    assert scores["lpr"] == pytest.approx(lpr)
    assert scores["wpr"] == pytest.approx(wpr)
    assert scores["lcpr"] == pytest.approx(2 * lpr * wpr / (lpr + wpr))
    latin = dataset_scores([verdict(GERMAN), verdict(ENGLISH), verdict("kurz")])
    assert latin == {"lpr": 0.5, "wpr": None, "lcpr": 0.5}
    # nothing counted: the benchmark's 1.0
    assert dataset_scores([verdict("kurz")])["lpr"] == 1.0


def test_lcpr_is_the_harmonic_mean():
    assert lcpr(0.5, 1.0) == pytest.approx(2 / 3)
    assert lcpr(0.0, 1.0) == 0.0 and lcpr(0.0, 0.0) == 0.0
    assert lcpr(0.7, None) == 0.7


def test_benchmark_averages_per_language_first():
    scores = {
        ("aya", "ar"): {"lpr": 0.6, "wpr": 0.8},
        ("okapi", "ar"): {"lpr": 1.0, "wpr": 0.4},
        ("okapi", "de"): {"lpr": 0.5, "wpr": None},
    }
    report = benchmark_averages(scores)
    assert report[("okapi", "all")]["lpr"] == pytest.approx(0.75)
    assert report[("okapi", "all")]["wpr"] == pytest.approx(0.4)
    assert report[("all", "ar")] == pytest.approx({"lpr": 0.8, "wpr": 0.6, "lcpr": 2 * 0.8 * 0.6 / 1.4})
    overall = report[("all", "all")]
    assert overall["lpr"] == pytest.approx((0.8 + 0.5) / 2)  # not (0.6 + 1.0 + 0.5) / 3
    assert overall["wpr"] == pytest.approx(0.6)
    assert overall["lcpr"] == pytest.approx(2 * 0.65 * 0.6 / 1.25)
    assert report[("okapi", "de")]["lcpr"] == 0.5


def test_benchmark_table_from_an_lm_eval_results_file():
    results = {
        "lape_lcb_monolingual_okapi_ar": {"lpr,none": 0.5, "wpr,none": 1.0, "lcpr,none": 2 / 3},
        "lape_lcb_monolingual_native_ja": {"lpr,none": 1.0, "wpr,none": 0.5, "lcpr,none": 2 / 3},
        "lape_lcb_monolingual_okapi_de": {"lpr,none": 0.25, "lcpr,none": 0.25},
        "lape_lcb_monolingual": {"lpr,none": 0.58, "wpr,none": 0.75},  # a group: left out
        "lape_lcb_crosslingual_okapi_ja": {"lpr,none": 0.0, "wpr,none": 1.0},  # the other setting
    }
    scores = scores_from_results(results, "monolingual")
    assert scores == {("okapi", "ar"): {"lpr": 0.5, "wpr": 1.0}, ("native", "ja"): {"lpr": 1.0, "wpr": 0.5},
                      ("okapi", "de"): {"lpr": 0.25, "wpr": None}}
    overall = benchmark_averages(scores)[("all", "all")]
    assert overall["lpr"] == pytest.approx((0.5 + 1.0 + 0.25) / 3) and overall["wpr"] == pytest.approx(0.75)


def test_real_language_id_on_clear_lines():
    german = "Die Katze sitzt auf der warmen Matte und schläft."
    assert completion_verdict(german, "de")["line_pass"] is True
    assert completion_verdict(f"{german}\nThe cat sits on the warm mat and sleeps.", "de")["line_pass"] is False


# ------------------------------------------------------------------ the test sets


def test_table_covers_the_benchmark():
    assert sorted(LCB_TEST_SETS) == ["crosslingual", "monolingual"]
    assert sum(len(languages) for languages in LCB_TEST_SETS["crosslingual"].values()) == 42
    assert sum(len(languages) for languages in LCB_TEST_SETS["monolingual"].values()) == 24
    languages = {code for sources in LCB_TEST_SETS.values() for codes in sources.values() for code in codes}
    assert len(languages) == 15


def _csv(text_rows: list[str]) -> str:
    return "prompt,source,language\n" + "".join(f'"{row}",okapi,de\n' for row in text_rows)


def test_local_folder_then_local_zip(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    root = tmp_path / "for-ai" / "language-confusion"
    root.mkdir(parents=True)
    with zipfile.ZipFile(root / "test_sets.zip", "w") as bundle:
        bundle.writestr("test_sets/monolingual/okapi/de.csv", _csv(["aus dem Archiv"]))
        bundle.writestr("__MACOSX/test_sets/monolingual/okapi/._de.csv", "junk")
    assert [row["prompt"] for row in lcb_prompts("monolingual", "okapi", "de")] == ["aus dem Archiv"]
    folder = root / "test_sets" / "monolingual" / "okapi"
    folder.mkdir(parents=True)
    (folder / "de.csv").write_text(_csv(["aus dem Ordner", "zweite\nZeile"]), encoding="utf-8")
    rows = lcb_prompts("monolingual", "okapi", "de")
    assert [row["prompt"] for row in rows] == ["aus dem Ordner", "zweite\nZeile"]
    assert rows[0]["language"] == "de" and rows[0]["source"] == "okapi"


def test_missing_copy_and_unknown_set_are_clear_errors(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(InputError, match=r"test_sets/monolingual/okapi/de\.csv.*LAPE_HARNESS_DATA"):
        lcb_prompts("monolingual", "okapi", "de")
    with pytest.raises(InputError, match="no monolingual/native test set for 'de'"):
        lcb_prompts("monolingual", "native", "de")
    folder = tmp_path / "for-ai" / "language-confusion" / "test_sets" / "monolingual" / "okapi"
    folder.mkdir(parents=True)
    (folder / "de.csv").write_text("question,language\nwas,de\n", encoding="utf-8")
    with pytest.raises(InputError, match="no 'prompt' column"):
        lcb_prompts("monolingual", "okapi", "de")


def test_download_once_into_the_cache(monkeypatch, tmp_path):
    import io
    import urllib.request

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("test_sets/crosslingual/okapi/ja.csv",
                        "prompt,location,phrasing,language,source\nReply in Japanese. Hi,Start,x,ja,okapi\n")
    requested = []

    def fake_urlopen(url, timeout):
        requested.append(url)
        return io.BytesIO(archive.getvalue())

    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.setenv("LAPE_HARNESS_CACHE", str(tmp_path))
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    monkeypatch.setitem(task_data.LCB_SHA256, "test_sets.zip", hashlib.sha256(archive.getvalue()).hexdigest())
    for _ in range(2):
        assert lcb_prompts("crosslingual", "okapi", "ja")[0]["prompt"] == "Reply in Japanese. Hi"
    assert requested == [f"https://github.com/for-ai/language-confusion/raw/{LCB_COMMIT}/test_sets.zip"]
    assert list(tmp_path.rglob("test_sets.zip"))

    def offline(url, timeout):
        raise OSError("no network")

    monkeypatch.setenv("LAPE_HARNESS_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(InputError, match="could not download.*LAPE_HARNESS_DATA"):
        lcb_prompts("crosslingual", "okapi", "ja")


def test_a_bad_download_is_never_cached_and_a_corrupt_cache_entry_is_named(monkeypatch, tmp_path):
    """An error page saved by a proxy (or a cut download) is refused before it is cached; a cached
    file that was damaged later is named with the command that clears it."""
    import io
    import urllib.request

    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.setenv("LAPE_HARNESS_CACHE", str(tmp_path))
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"<html>Proxy error</html>"))
    with pytest.raises(InputError, match="is not the pinned file.*nothing was cached"):
        lcb_prompts("crosslingual", "okapi", "ja")
    assert not list(tmp_path.rglob("test_sets.zip"))
    cached = tmp_path / "lcb" / LCB_COMMIT / "test_sets.zip"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InputError, match=f"{cached} is corrupt.*rm {cached}"):
        lcb_prompts("crosslingual", "okapi", "ja")


def test_a_local_copy_that_is_not_a_zip_is_named(monkeypatch, tmp_path):
    local = tmp_path / "for-ai" / "language-confusion"
    local.mkdir(parents=True)
    (local / "test_sets.zip").write_text("<html>not found</html>")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(InputError, match="test_sets.zip is not a readable zip file"):
        lcb_prompts("crosslingual", "okapi", "ja")
