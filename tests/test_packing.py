"""Packed log-probs (one sequence per prompt, ``grpo_lite.packing``) against the plain layout (one row
per completion): the same log-probs, entropies and LoRA gradients, on tiny Llama and Qwen2 models and
on the real SmolLM2."""

import pytest
import torch

from grpo_lite.logprobs import completion_logprobs


def batch(vocab, *, prompts=((5, 9, 3), (7, 2)), per_prompt=(3, 2), T=6, seed=0):
    """Rows as a rollout lays them out: left-padded prompts repeated per completion, completions of
    different lengths (right-padded), the completion mask marking what exists."""
    g = torch.Generator().manual_seed(seed)
    P = max(len(p) for p in prompts)
    ids, attn, cmask = [], [], []
    for prompt, k in zip(prompts, per_prompt, strict=True):
        for j in range(k):
            length = T - j  # completions end at different places
            row = torch.zeros(P + T, dtype=torch.long)
            row[P - len(prompt) : P] = torch.tensor(prompt)
            row[P : P + length] = torch.randint(1, vocab, (length,), generator=g)
            mask = torch.zeros(P + T, dtype=torch.long)
            mask[P - len(prompt) : P + length] = 1
            ids.append(row), attn.append(mask), cmask.append(mask[P:].clone())
    return torch.stack(ids), torch.stack(attn), torch.stack(cmask)


def lora_model(path, dtype=torch.float32):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    )
    return model


def both_ways(model, ids, attn, cmask):
    out = {}
    for pack in (False, True):
        model.zero_grad()
        logps, entropy = completion_logprobs(
            model, ids, attn, cmask, temperature=0.7, with_entropy=True, pack=pack
        )
        (logps * torch.linspace(-1, 1, logps.numel()).view_as(logps)).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        out[pack] = (logps.detach(), entropy, grads)
    return out


@pytest.mark.parametrize("fixture", ["tiny_model_path", "tiny_qwen_path"])
def test_packed_equals_plain_logprobs_entropy_and_gradients(fixture, request):
    model = lora_model(request.getfixturevalue(fixture))
    ids, attn, cmask = batch(model.config.vocab_size)
    out = both_ways(model, ids, attn, cmask)
    (plain, ent_plain, g_plain), (packed, ent_packed, g_packed) = out[False], out[True]
    assert plain.shape == packed.shape == cmask.shape
    assert torch.equal(packed == 0, cmask == 0)  # scored exactly where tokens exist
    torch.testing.assert_close(packed, plain, atol=1e-5, rtol=1e-5)
    # entropy = -sum p log p: a logit off by d moves it by up to d * max|log p + H| (~10 here), so the
    # log-probs' 1e-5 is 1e-4 for the entropy (other CPUs' kernels round packed and plain apart so far)
    torch.testing.assert_close(ent_packed, ent_plain, atol=1e-4, rtol=1e-5)
    for name, g in g_plain.items():  # float32 sums in another order: ~1e-6 of the gradient's scale
        scale = float(g.abs().max())
        torch.testing.assert_close(g_packed[name], g, atol=1e-5 * max(scale, 1.0), rtol=1e-4, msg=name)
    assert any(g.abs().sum() > 0 for g in g_plain.values())  # a real gradient was compared


def test_packing_a_shuffled_micro_batch_with_a_split_group(tiny_model_path):
    """A micro-batch holds any rows: groups split, rows out of order, a prompt with one completion."""
    model = lora_model(tiny_model_path)
    ids, attn, cmask = batch(model.config.vocab_size, prompts=((5, 9, 3), (7, 2), (4,)), per_prompt=(3, 2, 1))
    rows = torch.tensor([4, 0, 5, 2])  # prompt 2's second row, prompt 1's first and third, prompt 3
    with torch.no_grad():
        plain, _ = completion_logprobs(model, ids[rows], attn[rows], cmask[rows], temperature=1.0)
        packed, _ = completion_logprobs(model, ids[rows], attn[rows], cmask[rows], temperature=1.0, pack=True)
    torch.testing.assert_close(packed, plain, atol=1e-5, rtol=1e-5)


def test_packing_in_bfloat16_stays_within_bf16s_precision(tiny_model_path):
    """The 16-bit path: the mask is built in the stream's dtype; packed and plain agree as closely as two
    bf16 computations of the same sums can (bf16 keeps 8 bits: a few 1e-2 on log-probs of ~-5)."""
    model = lora_model(tiny_model_path, dtype=torch.bfloat16)
    ids, attn, cmask = batch(model.config.vocab_size)
    with torch.no_grad():
        plain, _ = completion_logprobs(model, ids, attn, cmask, temperature=1.0)
        packed, _ = completion_logprobs(model, ids, attn, cmask, temperature=1.0, pack=True)
    assert torch.isfinite(packed).all()
    torch.testing.assert_close(packed, plain, atol=0.1, rtol=0.02)


@pytest.mark.slow
def test_packed_equals_plain_on_smollm2(smollm2):
    """The real model (4-bit NF4 + LoRA as training loads it), a prompt shared by 4 completions."""
    from grpo_lite.config import GRPOConfig
    from grpo_lite.policy.model import load_policy

    model, tok = load_policy(GRPOConfig(model=str(smollm2), output_dir="unused", device="cpu", lora_rank=8))
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 7 + 8?"}], tokenize=False,
                                     add_generation_prompt=True)  # fmt: skip
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    outs = [
        tok(t, add_special_tokens=False)["input_ids"] for t in ("15.", "7 + 8 = 15", "It is 16", "Fifteen!")
    ]
    T = max(map(len, outs))
    ids = torch.zeros(4, len(p_ids) + T, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for i, o in enumerate(outs):
        ids[i, : len(p_ids) + len(o)] = torch.tensor(p_ids + o)
        attn[i, : len(p_ids) + len(o)] = 1
    cmask = attn[:, len(p_ids) :].clone()
    with torch.no_grad():
        plain, _ = completion_logprobs(model, ids, attn, cmask, temperature=1.0)
        packed, _ = completion_logprobs(model, ids, attn, cmask, temperature=1.0, pack=True)
    torch.testing.assert_close(packed, plain, atol=2e-4, rtol=1e-4)
    assert (plain[cmask.bool()] < 0).all()
