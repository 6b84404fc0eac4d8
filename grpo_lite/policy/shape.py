"""The numbers of a causal LM's config that its memory depends on (:class:`ModelShape`), read from a
Hub id, a local folder (config.json only), a transformers config or given by hand."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a causal LM config that memory depends on."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        heads = int(config.num_attention_heads)
        hidden = int(config.hidden_size)
        return cls(
            hidden=hidden,
            layers=int(config.num_hidden_layers),
            heads=heads,
            kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
            head_dim=int(getattr(config, "head_dim", None) or hidden // heads),
            intermediate=int(config.intermediate_size),
            vocab=int(config.vocab_size),
            tied=bool(getattr(config, "tie_word_embeddings", False)),
        )

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of every linear layer of one decoder layer: q, k, v, o, gate, up, down."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        h, i = self.hidden, self.intermediate
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]

    @property
    def linear_params(self) -> int:
        return self.layers * sum(a * b for a, b in self.linear_shapes())

    @property
    def embedding_params(self) -> int:
        """Input embeddings plus the output head (one matrix when tied)."""
        return self.vocab * self.hidden * (1 if self.tied else 2)

    def lora_params(self, rank: int) -> int:
        """LoRA on every linear layer of every decoder layer ("all-linear"): r x (in + out) each."""
        return self.layers * sum(rank * (a + b) for a, b in self.linear_shapes())


def load_shape(model: Any) -> ModelShape:
    """A ModelShape from a Hub id or local path (config.json only), a transformers config, or a shape."""
    if isinstance(model, ModelShape):
        return model
    if isinstance(model, str):
        from transformers import AutoConfig

        from grpo_lite.policy.offline import resolve_model

        model = AutoConfig.from_pretrained(resolve_model(model))
    config = getattr(model, "text_config", None) or model  # multimodal configs nest the LM's
    return ModelShape.from_config(config)
