"""Rollouts: masks after EOS, truncation flags, stop strings, chat templates, left truncation."""

import pytest
import torch

from grpo_lite.policy.model import load_tokenizer
from grpo_lite.rollout import (
    Sampling,
    completion_mask_and_truncation,
    encode_prompts,
    generate,
    render_prompt,
)

EOS, PAD = 2, 0


@pytest.mark.parametrize(
    ("row", "stop", "mask", "truncated"),
    [
        ([5, 6, EOS, PAD], False, [1, 1, 1, 0], False),  # ends with EOS: EOS kept, padding dropped
        ([5, 6, 7, 8], False, [1, 1, 1, 1], True),  # no EOS within max_new_tokens: truncated
        ([EOS, PAD, PAD, PAD], False, [1, 0, 0, 0], False),  # EOS first: a one-token completion
        ([5, EOS, 9, EOS], False, [1, 1, 0, 0], False),  # only the first EOS counts
        ([5, 6, PAD, PAD], True, [1, 1, 0, 0], False),  # a stop string ended it: padding dropped
        ([5, 6, 7, 8], True, [1, 1, 1, 1], False),  # stop string in the last token: not truncated
    ],
)
def test_mask_and_truncation(row, stop, mask, truncated):
    m, t = completion_mask_and_truncation(torch.tensor([row]), [EOS], PAD, torch.tensor([stop]))
    assert m.tolist() == [mask] and t.tolist() == [truncated]


def test_pad_equal_to_eos_after_stop_string():
    # Llama-style: pad == eos. After a stop string generation pads with EOS, which was not sampled.
    m, t = completion_mask_and_truncation(torch.tensor([[5, 6, EOS, EOS]]), [EOS], EOS, torch.tensor([True]))
    assert m.tolist() == [[1, 1, 0, 0]] and t.tolist() == [False]


def test_chat_and_plain_prompts(tiny_model_path):
    tok = load_tokenizer(str(tiny_model_path))
    chat = render_prompt([{"role": "user", "content": "1+1="}], tok)
    assert chat == "<|im_start|>user\n1+1=<|im_end|>\n<|im_start|>assistant\n"
    assert render_prompt("1+1=", tok) == "1+1="
    with pytest.raises(TypeError, match="string or a list of chat messages"):
        render_prompt(42, tok)


def test_long_prompts_lose_their_beginning(tiny_model_path):
    tok = load_tokenizer(str(tiny_model_path))
    ids, mask = encode_prompts(["abcdef", "xy"], tok, max_prompt_tokens=4, chat=[False, False])
    assert tok.decode(ids[0]) == "cdef"
    assert mask.tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]  # left padding


def test_generate_groups_masks_and_text(tiny_model_path):
    from grpo_lite.policy.model import load_base_model

    tok = load_tokenizer(str(tiny_model_path))
    model = load_base_model(str(tiny_model_path), load_in_4bit=True, device=torch.device("cpu"))
    torch.manual_seed(0)
    r = generate(
        model, tok, ["1+1=", "22+3="], group_size=3, sampling=Sampling(1.0, 1.0, 0, 6), max_prompt_tokens=64
    )
    assert r.completion_ids.shape[0] == 6 and r.completion_ids.shape[1] <= 6
    assert r.prompt_texts == ["1+1="] * 3 + ["22+3="] * 3
    for i in range(6):
        n = int(r.completion_mask[i].sum())
        toks = r.completion_ids[i, :n].tolist()
        ended = toks[-1] == tok.eos_token_id
        assert bool(r.truncated[i]) == (not ended)
        assert r.completions[i] == tok.decode(toks[:-1] if ended else toks, skip_special_tokens=True)


def test_stop_strings_end_completions(tiny_model_path):
    from grpo_lite.policy.model import load_base_model

    tok = load_tokenizer(str(tiny_model_path))
    model = load_base_model(str(tiny_model_path), load_in_4bit=False, device=torch.device("cpu"))
    torch.manual_seed(0)
    # Stop on every digit: any completion that produced a digit must end right there.
    stops = tuple("0123456789")
    r = generate(
        model,
        tok,
        ["x"],
        group_size=16,
        sampling=Sampling(1.0, 1.0, 0, 12),
        max_prompt_tokens=8,
        stop_strings=stops,
    )
    with_digit = [c for c in r.completions if any(ch.isdigit() for ch in c)]
    assert with_digit, "expected some completion to sample a digit"
    for i, c in enumerate(r.completions):
        if any(ch.isdigit() for ch in c):
            assert c[-1].isdigit() and sum(ch.isdigit() for ch in c) == 1
            assert not r.truncated[i]


def test_transformers_sampler_with_compile_rollouts_uses_a_static_cache(tiny_model_path, monkeypatch):
    """``sampler="transformers"`` + ``compiled``: ``generate`` is asked for its static cache, and
    samples what it samples with its dynamic one (same seed)."""
    from transformers import GenerationMixin

    from grpo_lite.policy.model import load_base_model

    tok = load_tokenizer(str(tiny_model_path))
    model = load_base_model(str(tiny_model_path), load_in_4bit=False, device=torch.device("cpu"))
    asked = []
    real = GenerationMixin.generate

    def spy(self, *args, **kwargs):
        asked.append(kwargs["generation_config"].cache_implementation)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", spy)
    runs = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        runs[compiled] = generate(model, tok, ["1+1=", "22+3="], group_size=3, sampling=Sampling(1.0, 1.0, 0, 6),
                                  max_prompt_tokens=64, sampler="transformers", compiled=compiled)  # fmt: skip
    assert asked == [None, "static"]
    assert torch.equal(runs[True].completion_ids, runs[False].completion_ids)
