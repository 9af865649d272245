"""FLORES from either source: FLORES-200 (facebook/flores) or FLORES+ (openlanguagedata/flores_plus),
local copies in both schemas, the hub fallback (the hub is simulated by replacing
datasets.load_dataset), the FLORES+ code mapping, the one clear error, and the source recorded
in the results."""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import pytest

from lape_harness.errors import InputError, LapeError
from lape_harness.languages import all_languages, get_language
from lape_harness.task_support import flores
from lape_harness.task_support.metrics import translation_signature
from lape_harness.task_support.task_data import DATA_ENV

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"
SCRIPT_ERROR = "Dataset scripts are no longer supported, but found flores.py"


def _fixture(dataset: str, config: str) -> list[dict]:
    lines = (FIXTURES / dataset / config / "devtest.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    """Each test starts with no source chosen, no local data and no source requested."""
    monkeypatch.setattr(flores, "_chosen", None)
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.delenv(flores.SOURCE_ENV, raising=False)


class FakeHub:
    """Stands in for ``datasets.load_dataset``: serves the fixtures of the datasets it is told to
    serve and raises ``errors[dataset]`` for the others; records every call."""

    def __init__(self, errors: dict[str, Exception]):
        self.errors = errors
        self.calls: list[tuple[str, str]] = []

    def __call__(self, path, name=None, split=None, **_kwargs):
        self.calls.append((path, name))
        assert split == "devtest"
        if path in self.errors:
            raise self.errors[path]
        return datasets.Dataset.from_list(_fixture(path, name))


def _gated() -> Exception:
    from datasets.exceptions import DatasetNotFoundError

    return DatasetNotFoundError("Dataset 'openlanguagedata/flores_plus' is a gated dataset on the Hub. "
                                "You must be authenticated to access it.")


# ------------------------------------------------------------------------------ code mapping


def test_every_language_maps_to_a_flores_plus_config():
    # FLORES+ 2.0 renamed zho_Hans to cmn_Hans; every other language of the table keeps its FLORES-200 code.
    for language in all_languages():
        expected = "cmn_Hans" if language.flores == "zho_Hans" else language.flores
        assert flores.flores_plus_config(language.code) == expected, language.code
        assert flores.FLORES_200.config(language.code) == language.flores
        assert re.fullmatch(r"[a-z]{3}_[A-Z][a-z]{3}", expected)
    assert get_language("cmn_Hans").code == "zh"  # FLORES+ codes are understood wherever codes are read


# ------------------------------------------------------------------------------ local copies, both schemas


def test_local_flores_200_copy(monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(FIXTURES))
    pair = flores.load_pair("en", "de")
    assert pair.column == "sentence"
    assert [row["sentence"] for row in pair.target_rows] == [row["sentence"] for row in _fixture("facebook/flores", "deu_Latn")]
    assert pair.provenance == f"facebook/flores@local:{FIXTURES}"


def test_local_flores_plus_copy_by_request(monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(FIXTURES))
    monkeypatch.setenv(flores.SOURCE_ENV, "flores_plus")
    pair = flores.load_pair("en", "zh")
    assert pair.column == "text"
    assert [row["text"] for row in pair.target_rows] == [
        row["text"] for row in _fixture("openlanguagedata/flores_plus", "cmn_Hans")
    ]
    assert pair.provenance == f"openlanguagedata/flores_plus@local:{FIXTURES}"


def test_auto_uses_the_local_source_that_has_both_languages(monkeypatch, tmp_path):
    # Only FLORES+ copies: auto reads them (and the FLORES-200 copy of one language alone is not enough).
    (tmp_path / "facebook/flores/eng_Latn").mkdir(parents=True)
    datasets.Dataset.from_list(_fixture("facebook/flores", "eng_Latn")).to_parquet(
        tmp_path / "facebook/flores/eng_Latn/devtest.parquet")
    for config in ("eng_Latn", "deu_Latn"):
        datasets.Dataset.from_list(_fixture("openlanguagedata/flores_plus", config)).to_parquet(
            tmp_path / f"openlanguagedata/flores_plus/{config}/devtest.parquet")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    pair = flores.load_pair("en", "de")
    assert pair.provenance.startswith("openlanguagedata/flores_plus@local:")
    assert pair.source_rows[3]["text"].endswith("(FLORES+).")


def test_missing_local_copy_names_both_expected_paths(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(InputError) as error:
        flores.load_pair("en", "de")
    message = str(error.value)
    assert str(tmp_path / "facebook/flores/deu_Latn/devtest.parquet") in message
    assert str(tmp_path / "openlanguagedata/flores_plus/deu_Latn/devtest.parquet") in message


def test_a_copy_in_the_other_schema_is_named(monkeypatch, tmp_path):
    for config in ("eng_Latn", "deu_Latn"):  # FLORES+ rows filed under facebook/flores
        datasets.Dataset.from_list(_fixture("openlanguagedata/flores_plus", config)).to_parquet(
            tmp_path / f"facebook/flores/{config}/devtest.parquet")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(InputError, match="openlanguagedata/flores_plus/"):
        flores.load_pair("en", "de")


def test_the_docs_recipe_writes_copies_both_sources_read(monkeypatch, tmp_path):
    """Run the offline-copy recipe of docs/tasks.md as written (into a temporary folder, against a
    hub that serves every config), then read every pair it wrote from both sources."""
    recipe = re.search(r"```python\n(from datasets import load_dataset\nfrom lape_harness.task_support.flores.*?)```",
                       (REPO / "docs/tasks.md").read_text(encoding="utf-8"), re.S).group(1)
    monkeypatch.setattr(datasets, "load_dataset", _hub_with_every_config)
    exec(recipe.replace('root = "/dir"', f"root = {str(tmp_path)!r}"), {})
    assert (tmp_path / "openlanguagedata/flores_plus/cmn_Hans/devtest.parquet").is_file()
    assert (tmp_path / "facebook/flores/zho_Hans/devtest.parquet").is_file()
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    for source in ("flores", "flores_plus"):
        monkeypatch.setenv(flores.SOURCE_ENV, source)
        for target in ("de", "zh"):
            pair = flores.load_pair("en", target)
            assert pair.column == flores.SOURCES[source].column
            assert len(pair.source_rows) == len(pair.target_rows) == 4


def _hub_with_every_config(path, name=None, split=None, **_kwargs):
    """A hub that has every config: configs without a fixture get the English fixture rows."""
    if path == "facebook/belebele":
        return datasets.Dataset.from_list([{"flores_passage": "Ein Text.", "question": "Was?"}])
    config = name if (FIXTURES / path / name).is_dir() else "eng_Latn"
    return datasets.Dataset.from_list(_fixture(path, config))


# ------------------------------------------------------------------------------ the hub and the fallback


def test_hub_flores_200_when_it_loads(monkeypatch):
    hub = FakeHub({})
    monkeypatch.setattr(datasets, "load_dataset", hub)
    pair = flores.load_pair("de", "en")
    assert hub.calls == [("facebook/flores", "deu_Latn"), ("facebook/flores", "eng_Latn")]
    assert pair.column == "sentence"
    assert pair.provenance == "facebook/flores@unknown"  # a Dataset built in memory has no cache folder


@pytest.mark.parametrize("failure", [
    RuntimeError(SCRIPT_ERROR),
    ValueError("BuilderConfig 'deu_Latn' not found. Available: ['all']"),
    ConnectionError("Couldn't reach 'facebook/flores' on the Hub (OfflineModeIsEnabled)"),
])
def test_fallback_to_flores_plus(monkeypatch, failure):
    hub = FakeHub({"facebook/flores": failure})
    monkeypatch.setattr(datasets, "load_dataset", hub)
    pair = flores.load_pair("en", "zh")
    assert hub.calls == [("facebook/flores", "eng_Latn"), ("openlanguagedata/flores_plus", "eng_Latn"),
                         ("openlanguagedata/flores_plus", "cmn_Hans")]
    assert pair.column == "text" and pair.provenance.startswith("openlanguagedata/flores_plus@")
    # the run stays on FLORES+: the next pair does not try FLORES-200 again
    hub.calls.clear()
    flores.load_pair("en", "de")
    assert {path for path, _ in hub.calls} == {"openlanguagedata/flores_plus"}


def test_both_sources_failing_is_one_error_naming_both_routes(monkeypatch):
    monkeypatch.setattr(datasets, "load_dataset", FakeHub({"facebook/flores": RuntimeError(SCRIPT_ERROR),
                                                           "openlanguagedata/flores_plus": _gated()}))
    with pytest.raises(InputError) as error:
        flores.load_pair("en", "de")
    message = str(error.value)
    for needed in ("facebook/flores: RuntimeError: Dataset scripts are no longer supported",
                   "openlanguagedata/flores_plus: DatasetNotFoundError", "gated", "accept its terms",
                   "huggingface-cli login", "HF_TOKEN", DATA_ENV, flores.SOURCE_ENV):
        assert needed in message, needed


def test_an_unrelated_error_is_not_swallowed(monkeypatch):
    monkeypatch.setattr(datasets, "load_dataset", FakeHub({"facebook/flores": KeyError("sentence")}))
    with pytest.raises(KeyError):
        flores.load_pair("en", "de")


def test_a_later_pair_never_switches_source(monkeypatch):
    hub = FakeHub({})
    monkeypatch.setattr(datasets, "load_dataset", hub)
    flores.load_pair("en", "de")  # auto settles on FLORES-200
    hub.errors["facebook/flores"] = ValueError("BuilderConfig 'bod_Tibt' not found")
    with pytest.raises(InputError, match=f"{flores.SOURCE_ENV}=flores_plus"):
        flores.load_pair("en", "bo")
    assert ("openlanguagedata/flores_plus", "bod_Tibt") not in hub.calls


def test_requested_source_is_the_only_one_tried(monkeypatch):
    monkeypatch.setenv(flores.SOURCE_ENV, "flores")
    monkeypatch.setattr(datasets, "load_dataset", FakeHub({"facebook/flores": RuntimeError(SCRIPT_ERROR)}))
    with pytest.raises(RuntimeError, match="scripts"):
        flores.load_pair("en", "de")
    monkeypatch.setenv(flores.SOURCE_ENV, "flores-plus")
    with pytest.raises(InputError, match="use flores, flores_plus or auto"):
        flores.load_pair("en", "de")


# ------------------------------------------------------------------------------ the source in the results


def test_signature_names_the_source_and_refuses_a_mix():
    items = [("Hallo Welt", "Hallo Welt", "de", "facebook/flores@abc")] * 2
    assert translation_signature(items).endswith("; data: facebook/flores@abc")
    with pytest.raises(LapeError, match="several data sources"):
        translation_signature(items + [("Hallo", "Hallo", "de", "openlanguagedata/flores_plus@def")])


def test_fallback_through_simple_evaluate_records_flores_plus(monkeypatch, tiny_llama):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    monkeypatch.setattr(datasets, "load_dataset", FakeHub({"facebook/flores": RuntimeError(SCRIPT_ERROR)}))
    results = simple_evaluate(
        model="hf", model_args=f"pretrained={tiny_llama},dtype=float32", device="cpu",
        tasks=["lape_flores_de-en"], limit=4, gen_kwargs={"max_gen_toks": 4},
        task_manager=TaskManager(include_path=str(REPO / "tasks"), include_defaults=False), log_samples=True,
    )
    samples = results["samples"]["lape_flores_de-en"]
    german = [row["text"] for row in _fixture("openlanguagedata/flores_plus", "deu_Latn")]
    english = [row["text"] for row in _fixture("openlanguagedata/flores_plus", "eng_Latn")]
    assert [sample["doc"]["source"] for sample in samples] == german
    assert [sample["target"] for sample in samples] == english
    assert results["results"]["lape_flores_de-en"]["signature,none"].endswith(
        "; data: openlanguagedata/flores_plus@unknown")
