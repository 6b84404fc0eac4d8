"""The lean sampler and decode loop: the distribution it draws from, and what the loss relies on."""

import pytest
import torch
from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from grpo_lite.policy.model import load_base_model, load_tokenizer
from grpo_lite.rollout import completion_mask_and_truncation
from grpo_lite.rollout.decode import decode, drops_by_default, filter_logits, sample_tokens

LOGITS = torch.tensor([2.0, 1.5, 1.0, 0.2, -0.5, -1.0])  # a 6-token vocabulary
DRAWS = 40_000
# chi-square critical value for 5 degrees of freedom at p = 0.001: a correct sampler passes with
# probability 0.999 (fixed seeds make it deterministic); a wrong one scores in the hundreds.
CHI2_CRIT = 20.52


def expected_probs(temperature, top_k=0, top_p=1.0):
    """What transformers' generate samples from: temperature, then top-k, then top-p, then softmax."""
    scores = LOGITS[None].clone()
    for warper in (
        TemperatureLogitsWarper(temperature),
        TopKLogitsWarper(top_k) if top_k else None,
        TopPLogitsWarper(top_p) if top_p < 1 else None,
    ):
        if warper is not None:
            scores = warper(None, scores)
    return scores.softmax(-1)[0]


def chi2(samples, probs):
    counts = torch.bincount(samples, minlength=len(probs)).double()
    expected = probs.double() * len(samples)
    support = expected > 0
    assert counts[~support].sum() == 0, "sampled a token the filter removed"
    return float(((counts[support] - expected[support]) ** 2 / expected[support]).sum())


SETTINGS = [(1.0, 0, 1.0), (0.5, 0, 1.0), (1.7, 0, 1.0), (1.0, 3, 1.0), (0.8, 0, 0.8), (1.3, 4, 0.9)]


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), SETTINGS)
def test_gumbel_max_draws_what_multinomial_draws(temperature, top_k, top_p):
    torch.manual_seed(0)
    logits = LOGITS.repeat(DRAWS, 1)  # (DRAWS, V): one draw per row
    ours = sample_tokens(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    probs = expected_probs(temperature, top_k, top_p)
    reference = torch.multinomial(probs, DRAWS, replacement=True)
    assert chi2(reference, probs) < CHI2_CRIT  # the test itself accepts multinomial's draws
    assert chi2(ours, probs) < CHI2_CRIT
    assert torch.equal(logits, LOGITS.repeat(DRAWS, 1))  # the caller's logits are left alone


@pytest.mark.parametrize(
    ("wrong", "why"),
    [
        (dict(temperature=0.7, top_k=0, top_p=1.0), "temperature"),
        (dict(temperature=1.0, top_k=4, top_p=1.0), "top-k"),
        (dict(temperature=1.0, top_k=0, top_p=0.9), "top-p"),
    ],
)
def test_the_chi_square_test_catches_a_wrong_distribution(wrong, why):
    """Samples drawn at T = 1 with no filter must fail against the distribution of other settings."""
    torch.manual_seed(1)
    ours = sample_tokens(LOGITS.repeat(DRAWS, 1), temperature=1.0)
    probs = expected_probs(**wrong)
    if why == "temperature":
        assert chi2(ours, probs) > 10 * CHI2_CRIT
    else:  # the filter removed tokens that were sampled
        with pytest.raises(AssertionError, match="filter removed"):
            chi2(ours, probs)


def test_filters_match_transformers_warpers_on_random_logits():
    torch.manual_seed(2)
    logits = torch.randn(16, 50) * 3
    for top_k, top_p in [(5, 1.0), (0, 0.7), (10, 0.5), (0, 0.05), (50, 1.0)]:
        ours = filter_logits(logits, top_k=top_k, top_p=top_p)
        theirs = logits.clone()
        if top_k:
            theirs = TopKLogitsWarper(top_k)(None, theirs)
        if top_p < 1:
            theirs = TopPLogitsWarper(top_p)(None, theirs)
        assert torch.equal(torch.isinf(ours), torch.isinf(theirs)), (top_k, top_p)
        assert (~torch.isinf(ours)).sum(dim=1).min() >= 1  # at least the most likely token survives


@pytest.fixture(scope="module")
def policy(tiny_model_path):
    model = load_base_model(str(tiny_model_path), load_in_4bit=True, device=torch.device("cpu"))
    return model.eval(), load_tokenizer(str(tiny_model_path))


def _prompts(tokenizer, texts):
    enc = tokenizer(texts, return_tensors="pt", padding=True)  # left padding
    return enc["input_ids"], enc["attention_mask"]


def test_shared_prefill_and_cache_reproduce_transformers_greedy(policy):
    """At a vanishing temperature the sampler is greedy: it must then pick exactly what
    ``generate(do_sample=False)`` picks, token for token, with prompts of different lengths (left
    padding), one prefill per prompt and the cache repeated for G samples."""
    model, tok = policy
    ids, mask = _prompts(tok, ["1+2=", "a longer prompt: 37+45=", "x"])
    G, T = 3, 12
    eos = [tok.eos_token_id]
    greedy = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=T,
                            eos_token_id=eos, pad_token_id=tok.pad_token_id)[:, ids.shape[1]:]  # fmt: skip
    expected = greedy.repeat_interleave(G, dim=0)
    for share_prefill in (True, False):
        ours = decode(model, ids, mask, group_size=G, max_new_tokens=T, temperature=1e-6, top_k=0, top_p=1.0,
                      eos_ids=eos, pad_id=tok.pad_token_id, share_prefill=share_prefill)  # fmt: skip
        assert torch.equal(ours, expected[:, : ours.shape[1]]), share_prefill


def test_rows_end_at_eos_with_padding_and_flags_the_loss_relies_on(policy):
    """Make the token that greedy decoding emits third in row 0 the EOS: row 0 (and its group) ends
    there, every later token is padding, the mask covers the EOS, and only the others are truncated."""
    model, tok = policy
    ids, mask = _prompts(tok, ["1+2=", "9*9="])
    kw = dict(group_size=2, temperature=1e-6, top_k=0, top_p=1.0, pad_id=tok.pad_token_id)
    free = decode(model, ids, mask, max_new_tokens=10, eos_ids=[tok.eos_token_id], **kw)
    stop_token = int(free[0, 2])
    assert stop_token not in free[0, :2].tolist() and stop_token not in free[2].tolist()  # a clean case
    out = decode(model, ids, mask, max_new_tokens=10, eos_ids=[stop_token], **kw)  # (4, T)
    assert out[0, 2] == stop_token and (out[0, 3:] == tok.pad_token_id).all()
    assert torch.equal(out[0], out[1])  # the same prompt, greedy: the same completion
    comp_mask, truncated = completion_mask_and_truncation(
        out, [stop_token], tok.pad_token_id, torch.zeros(4, dtype=torch.bool)
    )
    assert comp_mask[0].tolist() == [1, 1, 1] + [0] * (out.shape[1] - 3)
    assert truncated.tolist() == [False, False, True, True]
    assert out.shape[1] == 10  # the other rows ran to max_new_tokens


def test_finished_rows_leave_the_batch_and_change_no_token(policy):
    """Rows that end early leave the batch (the model is called with fewer rows from then on), and
    what every row gets is exactly what it gets when finished rows stay in the batch to the end.
    Greedy, with an EOS that rows reach at different steps, so the batch shrinks several times.
    Not told, ``decode`` drops rows on the CPU (measured to help there) and not on a GPU (not yet)."""
    model, tok = policy
    ids, mask = _prompts(tok, ["1+2=", "a longer prompt: 37+45=", "x", "9*9="])
    kw = dict(group_size=2, max_new_tokens=16, temperature=1e-6, top_k=0, top_p=1.0, pad_id=tok.pad_token_id)
    free = decode(model, ids, mask, eos_ids=[tok.eos_token_id], **kw).tolist()

    def ends(stops):  # the step each row of ``free`` would end at with these EOS tokens (None: never)
        return [next((t for t, x in enumerate(row) if x in stops), None) for row in free]

    # two EOS tokens at which some rows end at different steps (after a few tokens) and some never end
    stops = next(
        [a, b]
        for a in sorted({x for row in free for x in row})
        for b in sorted({x for row in free for x in row})
        if a < b and None in ends({a, b}) and len({e for e in ends({a, b}) if e is not None and e >= 2}) >= 2
    )
    batch_rows = []
    hook = model.register_forward_pre_hook(
        lambda m, a, k: batch_rows.append(k["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        dropped = decode(model, ids, mask, eos_ids=stops, drop_finished=True, **kw)
        calls = list(batch_rows)
        kept = decode(model, ids, mask, eos_ids=stops, drop_finished=False, **kw)
        kept_calls = batch_rows[len(calls) :]
        default = decode(model, ids, mask, eos_ids=stops, **kw)
    finally:
        hook.remove()
    assert torch.equal(dropped, kept) and torch.equal(default, kept)
    assert (
        batch_rows[len(calls) + len(kept_calls) :] == calls
    )  # not told: the CPU drops rows (measured there)
    assert drops_by_default(torch.device("cpu")) and not drops_by_default(torch.device("cuda"))
    for row, free_row, end in zip(
        kept.tolist(), free, ends(stops), strict=True
    ):  # greedy: the free row, cut at its end
        cut = len(row) if end is None else end + 1
        assert row[:cut] == free_row[:cut] and set(row[cut:]) <= {tok.pad_token_id}
    assert calls[0] == 4 and min(calls[1:]) < 8  # one prefill per prompt; then fewer than the 8 rows
    assert set(kept_calls[1:]) == {8}  # without dropping, all 8 rows to the end


def test_static_cache_and_compiled_step_sample_what_the_dynamic_cache_samples(tiny_qwen_path):
    """``compiled=True`` (static KV cache, transformers' compiled decode step) on a plain model:
    greedy picks the same tokens as the dynamic cache, token for token, for prompts of different
    lengths; the same noise gives the same draws at T = 1; a second rollout of the same shape reuses
    the cache (no new allocation) and is still right; a rollout whose prompts are longer gets a
    longer cache. Rows that end stay in the static batch, padded, as in the dynamic one."""
    from transformers import AutoModelForCausalLM

    from grpo_lite.rollout.cache import can_compile

    model = AutoModelForCausalLM.from_pretrained(str(tiny_qwen_path), dtype=torch.float32).eval()
    tok = load_tokenizer(str(tiny_qwen_path))
    assert can_compile(model)
    ids, mask = _prompts(tok, ["1+2=", "a longer prompt: 37+45=", "x"])
    kw = dict(
        group_size=2,
        max_new_tokens=12,
        top_k=0,
        top_p=1.0,
        eos_ids=[tok.eos_token_id],
        pad_id=tok.pad_token_id,
    )
    greedy = decode(model, ids, mask, temperature=1e-6, **kw)
    assert torch.equal(decode(model, ids, mask, temperature=1e-6, compiled=True, **kw), greedy)
    first = model._grpo_lite_static_cache
    for seed in (0, 1):  # at T = 1 the same noise stream must give the same tokens
        torch.manual_seed(seed)
        dynamic = decode(model, ids, mask, temperature=1.0, drop_finished=False, **kw)
        torch.manual_seed(seed)
        static = decode(model, ids, mask, temperature=1.0, compiled=True, **kw)
        assert torch.equal(static, dynamic), seed
    assert model._grpo_lite_static_cache is first  # reused: a captured graph keeps its addresses
    ids2, mask2 = _prompts(tok, ["a much longer prompt than before, " * 10 + "1+1="])
    long = decode(model, ids2, mask2, temperature=1e-6, compiled=True, **kw | dict(max_new_tokens=4))
    assert torch.equal(long, decode(model, ids2, mask2, temperature=1e-6, **kw | dict(max_new_tokens=4)))
    assert model._grpo_lite_static_cache[0] != first[0]


def test_a_decode_step_that_fails_to_compile_warns_and_decodes_without_it(tiny_qwen_path, caplog):
    """Where the compiled step cannot compile or capture (a GPU or version it was never run on), the
    rollout still comes out, eagerly, with a warning that says why, and the model is not tried again."""
    import logging

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_qwen_path), dtype=torch.float32).eval()
    tok = load_tokenizer(str(tiny_qwen_path))
    calls = []

    def broken(config):
        def step(**kwargs):
            calls.append(1)
            raise RuntimeError("CUDA graph capture failed: operation not permitted when stream is capturing")

        return step

    model.get_compiled_call = broken
    ids, mask = _prompts(tok, ["1+2=", "x"])
    kw = dict(group_size=2, max_new_tokens=6, temperature=1e-6, top_k=0, top_p=1.0, eos_ids=[tok.eos_token_id],
              pad_id=tok.pad_token_id)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="grpo_lite.rollout.decode"):
        out = decode(model, ids, mask, compiled=True, **kw)
    assert torch.equal(out, decode(model, ids, mask, **kw))
    assert (
        "compile_rollouts: the compiled decode step failed (RuntimeError: CUDA graph capture failed"
        in caplog.text
    )
    decode(model, ids, mask, compiled=True, **kw)
    assert len(calls) == 1  # not tried again on this model
