"""Prompts as the model sees them: chat messages through the chat template, tokenized, left-padded."""

from __future__ import annotations

from typing import Any

import torch


def is_chat(prompt: Any) -> bool:
    """A prompt is a chat when it is a list of {"role", "content"} messages."""
    return isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m for m in prompt)


def render_prompt(prompt: Any, tokenizer: Any, tools: list[dict[str, Any]] | None = None) -> str:
    """Chat messages through the tokenizer's chat template (with the generation prompt and the tool
    schemas ``tools``, if any); text as is."""
    if is_chat(prompt):
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("a prompt holds chat messages but the tokenizer has no chat template")
        return str(
            tokenizer.apply_chat_template(prompt, tools=tools, tokenize=False, add_generation_prompt=True)
        )
    if isinstance(prompt, str):
        return prompt
    raise TypeError(f"a prompt must be a string or a list of chat messages; got {type(prompt).__name__}")


def encode_prompts(
    texts: list[str], tokenizer: Any, *, max_prompt_tokens: int, chat: list[bool]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize and left-pad; prompts longer than ``max_prompt_tokens`` lose their beginning.

    Returns (ids, mask), each (len(texts), P). A chat template already holds its special tokens,
    so they are added only to plain-text prompts.
    """
    encoded = [
        tokenizer(text, add_special_tokens=not c)["input_ids"][-max_prompt_tokens:]
        for text, c in zip(texts, chat, strict=True)
    ]
    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, width - len(e) :] = torch.tensor(e, dtype=torch.long)
        mask[i, width - len(e) :] = 1
    return ids, mask
