"""A tiny local model and tokenizer, built offline: for the demo, the tests and the benchmarks.

The tokenizer is character-level (built with the ``tokenizers`` library, wrapped as a transformers
fast tokenizer with a ChatML template); the model is a small random-init Llama or Qwen2.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Literal

from tokenizers import AddedToken, Tokenizer, decoders, models
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast, Qwen2Config

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<pad>", "<|im_start|>", "<|im_end|>"]
TAGS = ["<think>", "</think>", "<answer>", "</answer>"]
CHARS = string.digits + string.ascii_letters + string.punctuation + " \n"


def build_char_tokenizer(extra_tokens: int = 0) -> PreTrainedTokenizerFast:
    """Character-level tokenizer: one id per printable character, the R1 tags and ChatML markers as
    single tokens. ``extra_tokens`` pads the vocabulary with unused ids (to benchmark a large V)."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL + TAGS + list(CHARS))}
    for i in range(extra_tokens):
        vocab[f"<unused_{i}>"] = len(vocab)
    # BPE with no merges splits text into single characters; no pre-tokenizer, so spaces are kept.
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAGS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<|im_end|>", bos_token=None, padding_side="left"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(
    path: str | Path,
    *,
    arch: Literal["llama", "qwen2"] = "llama",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 128,
    extra_tokens: int = 0,
    initializer_range: float = 0.02,
    seed: int = 0,
) -> Path:
    """Write a random-init causal LM and its tokenizer to ``path``; returns the path.

    A larger ``initializer_range`` (e.g. 0.3) gives a peaked, far-from-uniform next-token
    distribution, which small LoRA updates can move: what a learning test needs.
    """
    import torch

    path = Path(path)
    tokenizer = build_char_tokenizer(extra_tokens)
    kwargs = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
        initializer_range=initializer_range,
    )
    config = LlamaConfig(**kwargs) if arch == "llama" else Qwen2Config(**kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
