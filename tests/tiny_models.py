"""Tiny Hugging Face causal LMs built inside the tests (no network): a byte-level BPE
tokenizer trained on a few multilingual sentences, and a random Llama-style (gated MLP)
or GPT-2-style (non-gated MLP) model saved with ``save_pretrained``.

Example:
    >>> path = build_tiny_model(tmp_path / "llama", arch="llama")   # doctest: +SKIP
    >>> AutoModelForCausalLM.from_pretrained(path)                  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GPT2Config, LlamaConfig, PreTrainedTokenizerFast

SAMPLE_TEXT = {
    "en": "The cat sits on the warm mat. Everyone has the right to life, liberty and security of person.",
    "de": "Die Katze sitzt auf der warmen Matte. Jeder hat das Recht auf Leben, Freiheit und Sicherheit der Person.",
    "fr": "Le chat est assis sur le tapis chaud. Tout individu a droit à la vie, à la liberté et à la sûreté de sa personne.",
    "es": "El gato está sentado en la alfombra caliente. Todo individuo tiene derecho a la vida, a la libertad "
          "y a la seguridad de su persona.",
    "ru": "Кошка сидит на тёплом коврике. Каждый человек имеет право на жизнь, на свободу и на личную неприкосновенность.",
    "zh": "猫坐在温暖的垫子上。人人有权享有生命、自由和人身安全。",
}


def train_tokenizer(vocab_size: int = 400, bos: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer; with ``bos=True`` it prepends ``<s>`` like Llama/Gemma."""
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
    """Save a tiny random ``arch`` ("llama" or "gpt2") model and its tokenizer to ``path``
    (vLLM's CPU attention needs ``hidden / heads`` of 32 or more, e.g. ``hidden=128, heads=2``)."""
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
    elif arch == "gpt2":
        config = GPT2Config(n_embd=hidden, n_inner=width, n_layer=layers, n_head=heads, n_positions=512, **common)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}")
    from transformers import AutoModelForCausalLM

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
