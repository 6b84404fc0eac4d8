"""The GRPO loss on hand-computed tensors, and against a slow loop that follows the papers."""

import math

import pytest
import torch

from grpo_lite.loss import grpo_loss, microbatch_weight


def slow_loss(logps, old, ref, adv, mask, eps_low, eps_high, beta, loss_type, max_tokens, seq=False):
    """DeepSeekMath eq. 3 / DAPO eq. 8 / Dr. GRPO / GSPO, one token at a time."""
    N, T = logps.shape
    logps, old, adv, mask = logps.tolist(), old.tolist(), adv.tolist(), mask.tolist()
    ref = ref.tolist() if ref is not None else None
    per_seq, total, n_tok = [], 0.0, 0
    for i in range(N):
        toks = [t for t in range(T) if mask[i][t] > 0]
        s_ratio = math.exp(sum(logps[i][t] - old[i][t] for t in toks) / max(len(toks), 1))
        acc = 0.0
        for t in toks:
            rho = s_ratio if seq else math.exp(logps[i][t] - old[i][t])
            a = adv[i]
            obj = min(rho * a, min(max(rho, 1 - eps_low), 1 + eps_high) * a)
            kl = 0.0
            if beta > 0:
                d = ref[i][t] - logps[i][t]
                kl = math.exp(d) - d - 1
            acc += -(obj - beta * kl)
        per_seq.append(acc / max(len(toks), 1))
        total += acc
        n_tok += len(toks)
    if loss_type == "grpo":
        return sum(per_seq) / N
    if loss_type == "dapo":
        return total / n_tok
    return total / (N * (max_tokens or T))


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.1])
@pytest.mark.parametrize("seq", [False, True])
def test_matches_slow_loop(loss_type, beta, seq):
    g = torch.Generator().manual_seed(1)
    N, T = 6, 7
    logps = -torch.rand(N, T, generator=g, dtype=torch.float64) * 3
    old = logps + 0.3 * torch.randn(N, T, generator=g, dtype=torch.float64)
    ref = logps + 0.5 * torch.randn(N, T, generator=g, dtype=torch.float64)
    adv = torch.randn(N, generator=g, dtype=torch.float64)
    mask = (torch.rand(N, T, generator=g) > 0.3).double()
    mask[0] = 0  # a completion with no tokens must not divide by zero
    kw = dict(eps_low=0.2, eps_high=0.28, beta=beta, loss_type=loss_type, max_tokens=10)
    loss, _ = grpo_loss(logps, old, ref, adv, mask, importance_sampling="sequence" if seq else "token", **kw)
    expected = slow_loss(logps, old, ref, adv, mask, 0.2, 0.28, beta, loss_type, 10, seq=seq)
    assert loss.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_hand_computed_clipping():
    # Two one-token completions, advantages +1 and -1, ratios e^0.5 = 1.6487 and e^-0.5 = 0.6065.
    logps = torch.tensor([[0.5], [-0.5]])
    old = torch.zeros(2, 1)
    adv = torch.tensor([1.0, -1.0])
    mask = torch.ones(2, 1)
    loss, m = grpo_loss(logps, old, None, adv, mask, eps_low=0.2, eps_high=0.2)
    # A=+1: min(1.6487, 1.2) = 1.2; A=-1: min(-0.6065, -0.8) = -0.8. loss = -(1.2 - 0.8)/2 = -0.2
    assert loss.item() == pytest.approx(-0.2)
    assert m["clip_high"] == pytest.approx(0.5) and m["clip_low"] == pytest.approx(0.5)
    assert m["ratio_mean"] == pytest.approx((math.exp(0.5) + math.exp(-0.5)) / 2)


def test_ratio_one_and_kl_zero_at_start():
    logps = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], requires_grad=True)
    adv = torch.tensor([1.0, -1.0])
    loss, m = grpo_loss(logps, logps.detach(), logps.detach(), adv, torch.ones(2, 2), beta=0.04)
    assert m["ratio_mean"] == 1.0 and m["kl"] == 0.0
    # At ratio 1 the gradient is -A / (N * |o|) per token: the policy-gradient theorem's direction.
    loss.backward()
    assert torch.allclose(logps.grad, torch.tensor([[-0.25, -0.25], [0.25, 0.25]]))


def test_normalisations_hand_computed():
    # Sequence 0 has 1 token, sequence 1 has 3; all ratios 1, so l_t = -A.
    logps = torch.zeros(2, 3)
    mask = torch.tensor([[1.0, 0, 0], [1, 1, 1]])
    adv = torch.tensor([2.0, 1.0])
    grpo, _ = grpo_loss(logps, logps, None, adv, mask, loss_type="grpo")
    dapo, _ = grpo_loss(logps, logps, None, adv, mask, loss_type="dapo")
    dr, _ = grpo_loss(logps, logps, None, adv, mask, loss_type="dr_grpo", max_tokens=4)
    assert grpo.item() == pytest.approx(-(2 + 1) / 2)  # per-sequence means -2, -1
    assert dapo.item() == pytest.approx(-(2 + 3) / 4)  # token sum -5 over 4 tokens
    assert dr.item() == pytest.approx(-(2 + 3) / (2 * 4))


def test_kl_needs_reference():
    with pytest.raises(ValueError, match="ref_logps"):
        grpo_loss(torch.zeros(1, 1), torch.zeros(1, 1), None, torch.zeros(1), torch.ones(1, 1), beta=0.1)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_microbatches_sum_to_full_batch(loss_type):
    g = torch.Generator().manual_seed(3)
    logps = -torch.rand(8, 5, generator=g, dtype=torch.float64)
    old = logps + 0.1 * torch.randn(8, 5, generator=g, dtype=torch.float64)
    adv = torch.randn(8, generator=g, dtype=torch.float64)
    mask = (torch.rand(8, 5, generator=g) > 0.4).double()
    full, _ = grpo_loss(logps, old, None, adv, mask, loss_type=loss_type, max_tokens=5)
    parts = 0.0
    for idx in ([0, 1, 2], [3, 4], [5, 6, 7]):  # uneven micro-batches
        part, _ = grpo_loss(
            logps[idx], old[idx], None, adv[idx], mask[idx], loss_type=loss_type, max_tokens=5
        )
        w = microbatch_weight(loss_type, mask[idx], total_seqs=8, total_tokens=int(mask.sum()))
        parts += part.item() * w
    assert parts == pytest.approx(full.item(), rel=1e-9)
