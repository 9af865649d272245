"""Answer extraction and metrics: the paper's rules, table-driven, against plain references."""

from __future__ import annotations

import math

import pytest
import sacrebleu
from references.metrics import reference_paper_f1, reference_squad_f1

from lape_harness.task_support.metrics import (
    corpus_bleu,
    corpus_chrf_pp,
    degeneration,
    extract_belebele_answer,
    extract_xnli_label,
    forcing_scores,
    language_counts,
    paper_exact_match,
    paper_f1,
    paper_normalize,
    paper_sentence_bleu,
    squad_exact_match,
    squad_f1,
    squad_normalize,
    translation_signature,
)

# ---------------------------------------------------------------------------- Belebele


@pytest.mark.parametrize(
    "response, letter",
    [
        ("B) Gegen Mittag", "B"),
        ("c. Am Abend", "C"),  # upper-cased first
        ("D Am Sonntag", "D"),
        ("(A) Um sieben Uhr", "A"),
        ("  b  ", "B"),  # stripped, then "^([ABCD])$"
        ("The correct one. Answer: C", "C"),
        ("I think the answer is D", "D"),
        ("A woman sells bread", "A"),  # the paper's "first character" rule counts this as A
        ("Bread is sold", "B"),  # ... and this as B
        ("E) none", None),
        ("", None),
        ("1) Gegen Mittag", None),
        ("The market ends at noon", None),
    ],
)
def test_belebele_extraction_follows_the_paper(response, letter):
    assert extract_belebele_answer(response) == letter


# ---------------------------------------------------------------------------- XNLI


@pytest.mark.parametrize(
    "response, label",
    [
        ("1", 0),
        ("2. Neutral", 1),
        (" 3 Contradiction", 2),
        ("12", 0),  # the leading digit decides
        ("4", None),
        ("Entailment", 0),
        ("It is a contradiction, not neutral", 2),
        ("neutral or entailment?", 0),  # entailment has precedence over the others
        ("contradiction and neutral", 2),  # contradiction over neutral
        ("The relationship is NEUTRAL", 1),
        ("Yes, it follows.", 0),
        ("That is true", 0),
        ("No.", 2),
        ("This is false", 2),
        ("incorrect", 2),
        ("nothing to say", None),  # "no" must be a whole word
        ("", None),
        ("²", None),  # a digit that int() cannot read falls through to the text rules
    ],
)
def test_xnli_extraction_follows_the_paper(response, label):
    assert extract_xnli_label(response) == label


# ---------------------------------------------------------------------------- XQuAD


QA_CASES = [
    ("1852", ["1852", "Im Jahr 1852"]),
    ("im Jahr 1852.", ["1852", "Im Jahr 1852"]),
    ("The cat", ["cat"]),  # articles: kept by the paper, removed by SQuAD
    ("the the cat", ["the cat"]),  # duplicates: set overlap vs multiset overlap
    ("cat cat cat", ["cat"]),
    ("Anton", ["einem Schmied namens Anton Berger", "Anton Berger"]),
    ("", ["Anton Berger"]),
    ("!!!", [""]),
    ("eine Straßenbahn", ["eine Straßenbahn"]),
    ("Straßenbahn, Bus", ["eine Straßenbahn"]),
]


@pytest.mark.parametrize("prediction, golds", QA_CASES)
def test_qa_metrics_match_plain_references(prediction, golds):
    assert paper_f1(prediction, golds) == pytest.approx(max(reference_paper_f1(prediction, g) for g in golds))
    assert squad_f1(prediction, golds) == pytest.approx(max(reference_squad_f1(prediction, g) for g in golds))


def test_qa_metrics_differ_where_the_paper_differs():
    assert paper_exact_match("The cat", ["cat"]) == 0.0
    assert squad_exact_match("The cat", ["cat"]) == 1.0
    # "the the cat" vs "the cat": set overlap 2 over 3 predicted tokens -> P 2/3, R 1 -> 0.8
    assert paper_f1("the the cat", ["the cat"]) == pytest.approx(0.8)
    assert squad_f1("the the cat", ["the cat"]) == pytest.approx(1.0)
    assert paper_normalize("  Im   Jahr, 1852! ") == "im jahr 1852"
    assert squad_normalize("The year: an answer") == "year answer"
    assert paper_exact_match("im Jahr 1852.", ["1852", "Im Jahr 1852"]) == 1.0


# ---------------------------------------------------------------------------- translation


def test_paper_sentence_bleu_is_sacrebleu_sentence_bleu_over_100():
    hypothesis, reference = "Die Brücke wurde gesperrt.", "Die alte Brücke wurde im Frühjahr gesperrt."
    assert paper_sentence_bleu(hypothesis, reference) == pytest.approx(
        sacrebleu.sentence_bleu(hypothesis, [reference]).score / 100
    )
    assert paper_sentence_bleu(reference, reference) == pytest.approx(1.0)


def test_corpus_scores_match_sacrebleu_and_pick_a_tokenizer_per_target():
    hyps = ["Die Brücke wurde gesperrt.", "Das Museum öffnet um neun."]
    refs = ["Die alte Brücke wurde gesperrt.", "Das Museum öffnet um neun Uhr."]
    items = [(h, r, "de") for h, r in zip(hyps, refs)]
    assert corpus_bleu(items) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert corpus_chrf_pp(items) == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs], word_order=2).score)
    zh = [("我今天很好", "我今天很好。", "zh")]
    assert corpus_bleu(zh) == pytest.approx(sacrebleu.corpus_bleu(["我今天很好"], [["我今天很好。"]], tokenize="zh").score)
    signature = translation_signature(items)
    assert "paper_sentence_bleu: nrefs:1|case:mixed|eff:yes|tok:13a" in signature
    assert "corpus_bleu: nrefs:1|case:mixed|eff:no|tok:13a" in signature
    assert "corpus_chrf_pp: nrefs:1|case:mixed|eff:yes|nc:6|nw:2" in signature
    assert "tok:zh" in translation_signature(zh)


# ---------------------------------------------------------------------------- forcing


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("... !!! ???", "no letters"),
        ("ich bin und und und", "repeated n-gram"),
        ("Ich bin hier. Ich bin hier. Ich bin hier.", "repeated n-gram"),
        ("好的好的好的", "repeated n-gram"),  # character units for scripts without spaces
        ("a b a c a b a c b a c a b c a b", "low diversity"),
        ("Ich komme aus Berlin und arbeite dort als Lehrerin.", None),
        ("1990", None),
        ("Ja, ja. Das ist gut.", None),  # two repeats are not a loop
        ("我来自一个靠近海边的小城市。", None),
    ],
)
def test_degeneration_detector(text, reason):
    assert degeneration(text) == reason


def test_forcing_scores_combine_language_and_degeneration():
    german = forcing_scores(" Ich komme aus Berlin und arbeite dort als Lehrerin.\n", "en", "de")
    assert german == {
        "target_rate": 1,
        "source_rate": 0,
        "unknown_rate": 0,
        "degenerate_rate": 0,
        "clean_target_rate": 1,
        "detected_language": "de",
    }
    looping = forcing_scores("Ich bin müde und und und und und", "en", "de")
    assert looping["target_rate"] == 1 and looping["degenerate_rate"] == 1 and looping["clean_target_rate"] == 0
    empty = forcing_scores("", "de", "de")
    assert empty["unknown_rate"] == 1 and empty["target_rate"] == 0 and empty["degenerate_rate"] == 1
    english = forcing_scores("I come from a small town near the sea.", "en", "fr")
    assert english["source_rate"] == 1 and english["target_rate"] == 0


def test_language_counts_orders_by_frequency_then_code():
    assert language_counts(["de", "en", "de", "unknown", "en", "de"]) == "de:3 en:2 unknown:1"
    assert language_counts(["fr", "de"]) == "de:1 fr:1"


def test_paper_sentence_bleu_of_an_empty_output_is_zero():
    assert paper_sentence_bleu("", "Die Brücke.") == 0.0
    assert not math.isnan(paper_sentence_bleu("", ""))
