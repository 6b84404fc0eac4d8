"""The check of a written GGUF: read back with transformers' GGUF loader (an independent reader) and
compared with the weights the file is meant to hold (the merged model rounded to the file type, here,
in memory): the logits within float error, the same greedy completions on the prompts, the prompts
tokenized the same. What the file type costs beside that (its rounding) is reported: the logit change
from the unrounded merged model and the share of greedy completions that stay the same.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from grpo_lite.gguf.writer import _tensors, architecture, rounded

READ_BACK_TOLERANCE = 1e-3  # max |logit difference| between the file read back and the weights meant


def intended_model(model: Any, file_type: str) -> Any:
    """A copy of ``model`` holding the weights the file is meant to hold (rounded to ``file_type``)."""
    import copy

    import gguf

    arch = architecture(model.config)
    ref = copy.deepcopy(model).float().eval()
    state = ref.state_dict()
    for name, _, values in _tensors(model, arch):
        back = rounded(values, file_type)
        if arch == gguf.MODEL_ARCH.LLAMA and name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = model.config.num_attention_heads if "q_proj" in name else model.config.num_key_value_heads
            back = _unpermute(back, heads)
        state[name].copy_(torch.from_numpy(np.ascontiguousarray(back)))
    if getattr(model.config, "tie_word_embeddings", False):
        ref.tie_weights()
    return ref


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def check_gguf(path: Path, model: Any, tokenizer: Any, prompts: Sequence[Any], *, file_type: str,
               max_new_tokens: int, stop_strings: Sequence[str] = ()) -> dict[str, Any]:  # fmt: skip
    """Read ``path`` back with transformers' GGUF loader and compare it with ``model`` (the merged model,
    float32); ``passed`` says whether the file holds what it should (see the module docstring)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpo_lite.evaluate import greedy_completions
    from grpo_lite.rollout import render_prompt

    start = time.perf_counter()
    path = Path(path)
    read = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    read_tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    texts = [render_prompt(p, tokenizer) for p in prompts]
    same_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] == read_tok(t, add_special_tokens=False)["input_ids"]
                for t in texts]  # fmt: skip
    intended = intended_model(model, file_type)
    probe = torch.tensor([tokenizer(texts[0], add_special_tokens=False)["input_ids"][-64:]])
    with torch.no_grad():
        read_logits, meant, merged = (
            m(input_ids=probe).logits for m in (read, intended, model.float().eval())
        )
    greedy = {
        key: greedy_completions(m, tokenizer, list(prompts), max_new_tokens=max_new_tokens, stop_strings=stop_strings)
        for key, m in (("read", read), ("intended", intended), ("merged", model))
    }  # fmt: skip
    error = float((read_logits - meant).abs().max())
    error = (
        error if math.isfinite(error) else math.inf
    )  # a NaN from a damaged tensor is a failure, said as one
    same = sum(a == b for a, b in zip(greedy["read"], greedy["intended"], strict=True))
    report = {
        "file_type": file_type,
        "max_logit_error_vs_file_type": error,
        "tolerance": READ_BACK_TOLERANCE,
        "greedy_same_as_file_type": f"{same}/{len(prompts)}",
        "tokenizer_same": f"{sum(same_ids)}/{len(texts)}",
        "rounding_max_logit_error_vs_merged": float((meant - merged).abs().max()),
        "greedy_agreement_with_merged": sum(a == b for a, b in zip(greedy["read"], greedy["merged"], strict=True))
        / max(len(prompts), 1),
        "prompts": len(prompts),
        "seconds": round(time.perf_counter() - start, 1),
    }  # fmt: skip
    report["passed"] = error <= READ_BACK_TOLERANCE and same == len(prompts) and all(same_ids)
    return report
