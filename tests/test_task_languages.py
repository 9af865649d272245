"""Task languages: declared in metadata.languages, else from the name (the lape suite, lm-eval's
multilingual families, and unknown names)."""

from __future__ import annotations

import dataclasses

import pytest

from lape_harness.task_support import task_languages as task_languages_module
from lape_harness.task_support.task_languages import (
    TaskLanguages,
    TaskLanguagesError,
    declared_languages,
    record_loaded_task,
    task_family,
    task_languages,
)

M, F, T, C = "monolingual", "forcing", "translation", "crosslingual"


@pytest.mark.parametrize(
    "name, expected, family",
    [
        ("lape_forcing_de_to_fr", (F, "de", "fr"), "lape_forcing"),
        ("lape_forcing_en_to_en", (F, "en", "en"), "lape_forcing"),
        ("lape_forcing_no_to_da", (F, "no", "da"), "lape_forcing"),
        ("lape_flores_en-de", (T, "en", "de"), "lape_flores"),
        ("lape_flores_bo-en", (T, "bo", "en"), "lape_flores"),
        ("lape_xquad_de", (M, None, "de"), "lape_xquad"),
        ("lape_xquad_th", (M, None, "th"), "lape_xquad"),
        ("lape_belebele_mt", (M, None, "mt"), "lape_belebele"),
        ("lape_xnli_sw", (M, None, "sw"), "lape_xnli"),
        ("lape_ppl_ja", (M, None, "ja"), "lape_ppl"),
        ("lape_lcb_monolingual_okapi_de", (M, None, "de"), "lape_lcb_monolingual_okapi"),
        ("lape_lcb_monolingual_native_ja", (M, None, "ja"), "lape_lcb_monolingual_native"),
        ("lape_lcb_monolingual_okapi_id", (M, None, "id"), "lape_lcb_monolingual_okapi"),
        ("lape_lcb_crosslingual_okapi_ja", (C, "en", "ja"), "lape_lcb_crosslingual_okapi"),
        ("lape_lcb_crosslingual_complex_prompts_zh", (C, "en", "zh"), "lape_lcb_crosslingual_complex_prompts"),
        ("lape_lcb_crosslingual_sharegpt_vi", (C, "en", "vi"), "lape_lcb_crosslingual_sharegpt"),
        # lm-eval's built-in families
        ("belebele_deu_Latn", (M, None, "de"), "belebele"),
        ("belebele_nob_Latn", (M, None, "no"), "belebele"),
        ("belebele_zho_Hans", (M, None, "zh"), "belebele"),
        ("xnli_de", (M, None, "de"), "xnli"),
        ("xnli_es_spanish_bench", (M, None, "es"), "xnli"),
        ("xquad_de", (M, None, "de"), "xquad"),
        ("arc_de", (M, None, "de"), "arc"),
        ("hellaswag_de", (M, None, "de"), "hellaswag"),
        ("m_mmlu_de", (M, None, "de"), "m_mmlu"),
        ("truthfulqa_de_mc1", (M, None, "de"), "truthfulqa"),
        ("paws_de", (M, None, "de"), "paws"),
        ("xcopa_it", (M, None, "it"), "xcopa"),
        ("xstorycloze_ru", (M, None, "ru"), "xstorycloze"),
        ("xwinograd_fr", (M, None, "fr"), "xwinograd"),
        ("xwinograd_jp", (M, None, "ja"), "xwinograd"),
        ("mgsm_direct_de", (M, None, "de"), "mgsm_direct"),
        ("mgsm_native_cot_ja", (M, None, "ja"), "mgsm_native_cot"),
        ("lambada_openai_mt_de", (M, None, "de"), "lambada_openai_mt"),
        ("lambada_openai_mt_stablelm_it", (M, None, "it"), "lambada_openai_mt_stablelm"),
        ("global_mmlu_de", (M, None, "de"), "global_mmlu"),
        ("global_mmlu_full_de_anatomy", (M, None, "de"), "global_mmlu_full"),
        ("mmlu_prox_lite_af_biology", (M, None, "af"), "mmlu_prox_lite"),
        ("mlqa_de_de", (M, None, "de"), "mlqa"),
        ("flores_deu_Latn-eng_Latn_prompt_1", (T, "de", "en"), "flores"),
        ("wmt16-de-en", (T, "de", "en"), "wmt16"),
        ("wmt14-en-fr", (T, "en", "fr"), "wmt14"),
    ],
)
def test_known_names_resolve(name, expected, family):
    assert task_languages(name) == TaskLanguages(*expected)
    assert task_family(name) == family


@pytest.mark.parametrize(
    "name, family",
    [
        ("hellaswag", "hellaswag"),
        ("arc_challenge", "arc_challenge"),
        ("wikitext", "wikitext"),
        ("", ""),
        # the family is recognised, the language is not in the language table
        ("arc_ca_challenge", "arc"),
        ("xcopa_qu", "xcopa"),
        ("belebele_afr_prompt_1", "belebele"),
        ("lape_forcing_de_to_xx", "lape_forcing"),
        ("lape_flores_en-zz", "lape_flores"),
        ("lape_lcb_crosslingual_okapi_xx", "lape_lcb_crosslingual_okapi"),
        ("lape_lcb_monolingual_unknownset_de", "lape_lcb_monolingual_unknownset_de"),
        # context and question in different languages: no single language
        ("mlqa_de_ar", "mlqa_de_ar"),
    ],
)
def test_undecidable_names_give_none(name, family):
    assert task_languages(name) is None
    assert task_family(name) == family


def test_task_languages_is_frozen():
    resolved = task_languages("lape_xnli_de")
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolved.target = "fr"  # type: ignore[misc]


# ---------------------------------------------------------------------------- metadata.languages


@pytest.mark.parametrize(
    "declared, expected",
    [
        ({"target": "de"}, (M, None, "de")),
        ("deu_Latn", (M, None, "de")),  # the shorthand for a monolingual task
        ({"source": "en", "target": "nb"}, (T, "en", "no")),  # a source without a kind: translation
        ({"source": "de", "target": "fr", "kind": "forcing"}, (F, "de", "fr")),
        ({"source": "eng_Latn", "target": "cmn_Hans", "kind": "translation"}, (T, "en", "zh")),
        ({"target": "fr", "kind": "monolingual"}, (M, None, "fr")),
    ],
)
def test_declared_languages(declared, expected):
    assert declared_languages({"version": 1.0, "languages": declared}) == TaskLanguages(*expected)


@pytest.mark.parametrize(
    "declared, complaint",
    [
        ({"source": "de"}, "not understood"),  # no target
        ({"target": "de", "langauge": "fr"}, "not understood"),  # a misspelt key
        (["de"], "not understood"),
        ({"target": "de", "kind": "forcing"}, "does not fit"),  # forcing needs a source
        ({"source": "de", "target": "fr", "kind": "monolingual"}, "does not fit"),
        ({"target": "de", "kind": "chat"}, "does not fit"),
        ({"target": "xx"}, "unknown language 'xx'"),
    ],
)
def test_bad_declarations_are_named(declared, complaint):
    with pytest.raises(TaskLanguagesError, match=complaint):
        declared_languages({"languages": declared})
    with pytest.raises(TaskLanguagesError, match="task 'my_task'"):
        task_languages("my_task", {"languages": declared})


def test_metadata_comes_before_the_name_and_loaded_tasks_are_remembered(monkeypatch):
    monkeypatch.setattr(task_languages_module, "_LOADED", {})
    assert task_languages("xnli_de", {"languages": {"target": "fr"}}) == TaskLanguages(M, None, "fr")
    assert task_languages("xnli_de", {"version": 1}) == TaskLanguages(M, None, "de")  # declares none: the name
    assert task_languages("quiz_of_mine") is None
    record_loaded_task("quiz_of_mine", {"languages": {"source": "de", "target": "fr", "kind": "forcing"}})
    assert task_languages("quiz_of_mine") == TaskLanguages(F, "de", "fr")
    record_loaded_task("quiz_of_mine", None)  # reloaded without a declaration: nothing stale is kept
    assert task_languages("quiz_of_mine") is None
