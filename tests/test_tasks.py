"""Every task family runs through lm_eval.simple_evaluate on a tiny model with local fixture
data, and its scores equal what this test recomputes from the logged samples."""

from __future__ import annotations

import hashlib
import json
import math
import re
import string
from collections import Counter
from pathlib import Path

import pytest
import sacrebleu
import torch
from references.metrics import reference_paper_f1, reference_squad_f1

from lape_harness.langid import identify_language
from lape_harness.task_support import flores
from lape_harness.task_support.metrics import extract_belebele_answer, extract_xnli_label
from lape_harness.task_support.task_data import DATA_ENV

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"
TASKS = [
    "lape_forcing_de_to_fr",
    "lape_flores_en-de",
    "lape_xquad_de",
    "lape_belebele_de",
    "lape_xnli_de",
    "lape_ppl_de",
]
LIMIT = 3
MAX_GEN_TOKS = 24


def _rows(relative: str) -> list[dict]:
    lines = (FIXTURES / relative).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="module")
def evaluation(tiny_llama):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DATA_ENV, str(FIXTURES))
        patch.setattr(flores, "_chosen", None)  # FLORES: auto picks the local FLORES-200 copy
        results = simple_evaluate(
            model="hf",
            model_args=f"pretrained={tiny_llama},dtype=float32",
            device="cpu",
            tasks=TASKS,
            limit=LIMIT,
            gen_kwargs={"max_gen_toks": MAX_GEN_TOKS},
            task_manager=TaskManager(include_path=str(REPO / "tasks"), include_defaults=False),
            log_samples=True,
        )
    return results


def _outputs(samples) -> list[str]:
    return [sample["filtered_resps"][0] for sample in samples]


def _prompt(sample) -> str:
    return sample["arguments"][0][0]


def _gen_args(sample) -> dict:
    return sample["arguments"][0][1]


def test_every_family_scored_its_samples(evaluation):
    for task in TASKS:
        assert evaluation["results"][task]["sample_len"] == LIMIT, task
        assert len(evaluation["samples"][task]) == LIMIT, task


def test_forcing(evaluation):
    samples = evaluation["samples"]["lape_forcing_de_to_fr"]
    questions = json.loads((REPO / "tasks" / "lape_forcing" / "questions.json").read_text(encoding="utf-8"))["de"]
    assert [_prompt(s) for s in samples] == [f"Q: {q} \nA:" for q in questions[:LIMIT]]
    gen = _gen_args(samples[0])
    assert gen["until"] == ["\nQ:", "\nA:"] and gen["do_sample"] is False and gen["repetition_penalty"] == 1.1
    detected = [identify_language(output.strip()) for output in _outputs(samples)]
    assert [s["detected_language"] for s in samples] == detected
    degenerate = [s["degenerate_rate"] for s in samples]
    result = evaluation["results"]["lape_forcing_de_to_fr"]
    assert result["target_rate,none"] == pytest.approx(sum(d == "fr" for d in detected) / LIMIT)
    assert result["source_rate,none"] == pytest.approx(sum(d == "de" for d in detected) / LIMIT)
    assert result["unknown_rate,none"] == pytest.approx(sum(d == "unknown" for d in detected) / LIMIT)
    assert result["degenerate_rate,none"] == pytest.approx(sum(degenerate) / LIMIT)
    clean = sum(d == "fr" and not g for d, g in zip(detected, degenerate))
    assert result["clean_target_rate,none"] == pytest.approx(clean / LIMIT)
    counts = Counter(detected)
    assert sorted(result["detected_language,none"].split()) == sorted(f"{k}:{v}" for k, v in counts.items())
    package_questions = (REPO / "tasks" / "lape_forcing" / "questions.json").read_bytes()
    assert result["questions_file,none"] == f"questions.json@sha256:{hashlib.sha256(package_questions).hexdigest()}"


def test_flores(evaluation):
    samples = evaluation["samples"]["lape_flores_en-de"]
    english = [row["sentence"] for row in _rows("facebook/flores/eng_Latn/devtest.jsonl")][:LIMIT]
    german = [row["sentence"] for row in _rows("facebook/flores/deu_Latn/devtest.jsonl")][:LIMIT]
    assert [_prompt(s) for s in samples] == [
        f"Translate this English sentence into German: {sentence}. Translation:" for sentence in english
    ]
    assert _gen_args(samples[0])["until"] == ["\n\n", "Translation", "Translate", "Source:", "Target:"]
    hypotheses = [output.strip() for output in _outputs(samples)]
    result = evaluation["results"]["lape_flores_en-de"]
    paper = sum(sacrebleu.sentence_bleu(h, [r]).score / 100 for h, r in zip(hypotheses, german)) / LIMIT
    assert result["paper_sentence_bleu,none"] == pytest.approx(paper)
    assert result["corpus_bleu,none"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [german]).score)
    assert result["corpus_chrf_pp,none"] == pytest.approx(
        sacrebleu.corpus_chrf(hypotheses, [german], word_order=2).score
    )
    assert f"version:{sacrebleu.__version__}" in result["signature,none"]
    assert result["signature,none"].endswith(f"; data: facebook/flores@local:{FIXTURES}")


def test_xquad(evaluation):
    samples = evaluation["samples"]["lape_xquad_de"]
    rows = _rows("google/xquad/xquad.de/validation.jsonl")[:LIMIT]
    assert [_prompt(s) for s in samples] == [
        "Answer the question based on the German context provided. Extract the exact answer from the context."
        f"\n\nContext: {row['context']}\n\nQuestion: {row['question']}\n\nAnswer:"
        for row in rows
    ]
    predictions = [output.strip() for output in _outputs(samples)]
    golds = [row["answers"]["text"] for row in rows]
    result = evaluation["results"]["lape_xquad_de"]

    def mean(values):
        return sum(values) / len(values)

    def paper_norm(text):
        return " ".join("".join(c for c in text.lower() if c not in string.punctuation).split())

    def squad_norm(text):
        return " ".join(re.sub(r"\b(a|an|the)\b", " ", paper_norm(text)).split())

    for name, norm in (("paper_exact_match", paper_norm), ("exact_match", squad_norm)):
        expected = mean([float(any(norm(p) == norm(g) for g in gs)) for p, gs in zip(predictions, golds)])
        assert result[f"{name},none"] == pytest.approx(expected)
    assert result["paper_f1,none"] == pytest.approx(
        mean([max(reference_paper_f1(p, g) for g in gs) for p, gs in zip(predictions, golds)])
    )
    assert result["f1,none"] == pytest.approx(
        mean([max(reference_squad_f1(p, g) for g in gs) for p, gs in zip(predictions, golds)])
    )


def test_belebele(evaluation):
    samples = evaluation["samples"]["lape_belebele_de"]
    rows = _rows("facebook/belebele/deu_Latn/test.jsonl")[:LIMIT]
    assert [_prompt(s) for s in samples] == [
        f"Read the following German passage and answer the question.\n\nPassage: {r['flores_passage']}\n\n"
        f"Question: {r['question']}\n\nA) {r['mc_answer1']}\nB) {r['mc_answer2']}\nC) {r['mc_answer3']}\n"
        f"D) {r['mc_answer4']}\n\nAnswer:"
        for r in rows
    ]
    assert [s["target"] for s in samples] == ["B", "C", "A"]
    correct = [extract_belebele_answer(o) == "ABCD"[int(r["correct_answer_num"]) - 1] for o, r in zip(_outputs(samples), rows)]
    assert evaluation["results"]["lape_belebele_de"]["acc,none"] == pytest.approx(sum(correct) / LIMIT)


def test_xnli(evaluation):
    samples = evaluation["samples"]["lape_xnli_de"]
    rows = _rows("facebook/xnli/de/test.jsonl")[:LIMIT]
    assert [_prompt(s) for s in samples] == [
        "Given the following German premise and hypothesis, determine the relationship between them.\n\n"
        f"Premise: {r['premise']}\n\nHypothesis: {r['hypothesis']}\n\n"
        "Options:\n1. Entailment\n2. Neutral\n3. Contradiction\n\nAnswer:"
        for r in rows
    ]
    assert _gen_args(samples[0])["until"] == ["\n\n", "Premise:", "Hypothesis:", "Answer:", "The relationship"]
    correct = [extract_xnli_label(o) == r["label"] for o, r in zip(_outputs(samples), rows)]
    assert evaluation["results"]["lape_xnli_de"]["acc,none"] == pytest.approx(sum(correct) / LIMIT)


def test_heldout_perplexity_matches_a_direct_forward_pass(evaluation, tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = (FIXTURES / "heldout" / "de.txt").read_text(encoding="utf-8")
    documents = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    samples = evaluation["samples"]["lape_ppl_de"]
    assert [s["doc"]["text"] for s in samples] == documents

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    total = 0.0
    for document in documents:
        # lm-eval's rolling windows: the text as the tokenizer encodes it (here with its BOS),
        # every token predicted, the first one after a BOS prefix.
        ids = tokenizer(document)["input_ids"]
        inputs = torch.tensor([[tokenizer.bos_token_id] + ids])
        with torch.no_grad():
            logprobs = model(inputs).logits.log_softmax(-1)[0, :-1]
        total += logprobs.gather(1, torch.tensor(ids)[:, None]).sum().item()
    words = sum(len(re.split(r"\s+", d)) for d in documents)
    nbytes = sum(len(d.encode("utf-8")) for d in documents)
    result = evaluation["results"]["lape_ppl_de"]
    assert result["word_perplexity,none"] == pytest.approx(math.exp(-total / words), rel=1e-3)
    assert result["byte_perplexity,none"] == pytest.approx(math.exp(-total / nbytes), rel=1e-3)
    assert result["bits_per_byte,none"] == pytest.approx(-total / nbytes / math.log(2), rel=1e-3)
