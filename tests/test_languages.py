import pytest

from lape_harness.languages import (
    PAPER_CODES,
    UnknownLanguageError,
    get_language,
    normalize_code,
    register_language,
)


def test_paper_languages_in_mask_order():
    assert PAPER_CODES == tuple("bo mt it es de ja ar zh af nl fr pt ru ko hi tr pl sv da no en".split())


@pytest.mark.parametrize(
    ("key", "code", "flores", "script"),
    [("de", "de", "deu_Latn", "Latn"), ("deu_Latn", "de", "deu_Latn", "Latn"), ("JPN_JPAN", "ja", "jpn_Jpan", "Jpan"),
     ("nb", "no", "nob_Latn", "Latn"), ("zh-Hans", "zh", "zho_Hans", "Hans"), ("bod_Tibt", "bo", "bod_Tibt", "Tibt")],
)
def test_lookup_both_ways(key, code, flores, script):
    language = get_language(key)
    assert (language.code, language.flores, language.script) == (code, flores, script)
    assert normalize_code(key) == code


def test_every_paper_language_round_trips_through_flores():
    for code in PAPER_CODES:
        assert get_language(get_language(code).flores).code == code


def test_unknown_language_lists_known_codes():
    with pytest.raises(UnknownLanguageError, match="known codes: .*de.*register_language"):
        get_language("klingon")


def test_register_is_idempotent_and_rejects_conflicts():
    assert register_language("sw", "swh_Latn", "Swahili", "Latn", "Niger-Congo").code == "sw"
    with pytest.raises(ValueError, match="already registered"):
        register_language("sw", "swa_Latn", "Swahili", "Latn", "Niger-Congo")
