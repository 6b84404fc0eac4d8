"""Chunked log-probs against the naive full-logits computation (vocabulary >= 32k)."""

import pytest
import torch

from grpo_lite.logprobs import (
    HeadSpec,
    naive_token_logprobs,
    token_entropy,
    token_logprobs,
    token_logprobs_and_entropy,
)


@pytest.mark.parametrize(
    "head",
    [
        HeadSpec(),  # plain head: the analytic backward
        HeadSpec(temperature=0.7, logit_scale=1.3),  # scaled logits: analytic backward with s = 1.3 / 0.7
        HeadSpec(temperature=0.7, logit_scale=1.3, softcap=30.0),  # soft-cap: autograd through each slice
    ],
)
def test_chunked_equals_naive_forward_and_backward(head):
    torch.manual_seed(0)
    M, H, V = 37, 16, 32_768
    hidden = torch.randn(M, H, requires_grad=True)
    weight = (torch.randn(V, H) * 0.2).requires_grad_(True)
    targets = torch.randint(0, V, (M,))
    grad_out = torch.randn(M)

    fast = token_logprobs(hidden, weight, targets, head=head, chunk_tokens=5)  # 8 uneven chunks
    gh_fast, gw_fast = torch.autograd.grad(fast, (hidden, weight), grad_out)
    slow = naive_token_logprobs(hidden, weight, targets, head=head)
    gh_slow, gw_slow = torch.autograd.grad(slow, (hidden, weight), grad_out)

    assert (fast - slow).abs().max().item() < 1e-5
    assert (gh_fast - gh_slow).abs().max().item() < 1e-5
    assert (gw_fast - gw_slow).abs().max().item() < 1e-5


def test_entropy_matches_definition():
    torch.manual_seed(1)
    hidden, weight = torch.randn(9, 8), torch.randn(1000, 8)
    p = torch.softmax(hidden @ weight.T / 0.5, dim=-1)
    expected = -(p * p.log()).sum(-1)
    got = token_entropy(hidden, weight, head=HeadSpec(temperature=0.5), chunk_tokens=4)
    assert torch.allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("head", [HeadSpec(temperature=0.7), HeadSpec(temperature=1.0, softcap=3.0)])
def test_entropy_from_the_log_prob_pass_matches_the_definition_and_changes_no_gradient(head):
    """The loss's first pass takes the entropies from its own slices of logits (one pass through the
    head, not two): the same entropies as the definition, the same log-probs and gradients as without."""
    torch.manual_seed(2)
    hidden, weight, targets = torch.randn(11, 8), torch.randn(300, 8), torch.randint(0, 300, (11,))
    logits = (hidden @ weight.T).float()
    if head.softcap:
        logits = head.softcap * torch.tanh(logits / head.softcap)
    p = torch.softmax(logits / head.temperature, dim=-1)
    expected = -(p * p.log()).sum(-1)  # H = -sum p log p, written out
    grads = []
    for with_entropy in (True, False):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        if with_entropy:
            logps, ent = token_logprobs_and_entropy(
                h, w, targets, head=head, chunk_tokens=4
            )  # 3 uneven slices
            assert torch.allclose(ent, expected, atol=1e-5) and not ent.requires_grad
        else:
            logps = token_logprobs(h, w, targets, head=head, chunk_tokens=4)
        (logps * torch.arange(11.0)).sum().backward()
        grads.append((logps.detach(), h.grad, w.grad))
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)


def test_uniform_distribution_hand_computed():
    # All-zero weights: every token has probability 1/V, log-prob -log V, entropy log V.
    V = 50
    out = token_logprobs(torch.ones(3, 4), torch.zeros(V, 4), torch.tensor([0, 7, 49]))
    assert torch.allclose(out, torch.full((3,), -torch.log(torch.tensor(50.0)).item()))
    assert torch.allclose(token_entropy(torch.ones(2, 4), torch.zeros(V, 4)), torch.log(torch.tensor(50.0)))
    _, ent = token_logprobs_and_entropy(torch.ones(2, 4), torch.zeros(V, 4), torch.tensor([3, 9]))
    assert torch.allclose(ent, torch.log(torch.tensor(50.0)))
