"""A lean sampler and decode loop for rollouts: no per-token work that the loss does not need.

Shapes: B prompts, G samples per prompt, N = B*G sequences (group by group), P prompt tokens
(left-padded), T new tokens, V vocabulary.

What transformers' ``generate`` does per token and this loop leaves out: a logits-processor chain,
``torch.multinomial`` over the full softmax (the largest single cost of a CPU rollout), repeated
concatenation of ids and masks, and, with ``num_return_sequences``, a prefill of every prompt G
times. Here:

- one prefill per prompt, its KV cache then repeated G times (``Cache.batch_repeat_interleave``);
- the attention mask allocated once for P + T positions and sliced per step (a view, no copy);
- sampling by the Gumbel-max trick: ``argmax(logits / temperature - log E)`` with E ~ Exp(1) is an
  exact draw from ``softmax(logits / temperature)`` (Gumbel 1954; Maddison et al. 2014), one
  elementwise pass and an argmax instead of a softmax, a cumulative sum and a search;
- top-k and top-p applied as transformers' warpers apply them (temperature, then top-k, then top-p,
  at least one token kept), so a filtered run samples the same distribution as ``generate``;
- a finished sequence gets the pad token from then on; how many are finished is asked every
  ``check_every`` tokens (each ask waits for the GPU); once a quarter of the rows in the batch are
  finished, they leave it (their KV cache rows with them, ``Cache.batch_select_indices``), so that
  the model no longer computes tokens nobody reads: what continuous batching gives a server, for a
  batch whose rows all start together. A row's draws come from the same distribution either way.
  By default only on the CPU, where it was measured to help (``benchmarks/decode_extras.py``); on a
  GPU a decode step of a small model is launch-bound, fewer rows may save nothing, and it stays off
  until ``benchmarks/gpu_session.sh`` has measured it there (``drops_by_default``).

How the model is stepped (dynamic KV cache, or a static one with a compiled step for
``compile_rollouts``) is ``cache.py``'s.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import torch

from grpo_lite.rollout.cache import CacheSteps, CompiledSteps

log = logging.getLogger(__name__)


def filter_logits(logits: torch.Tensor, *, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set the logits of tokens outside the top-k / nucleus to -inf, like transformers' warpers.

    Args:
        logits: (N, V) float32 logits, already divided by the temperature.
        top_k: keep the k largest (0: off).
        top_p: keep the smallest set whose probability reaches top_p (1.0: off); the most likely
            token is always kept.
    Returns:
        (N, V) filtered logits (a new tensor when a filter applies).
    """
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (N, 1) the k-th largest
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ascending, order = torch.sort(logits, dim=-1)  # (N, V)
        cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)  # (N, V)
        remove = cumulative <= 1 - top_p  # the low tail whose mass stays under 1 - top_p
        remove[:, -1] = False  # the most likely token is always kept
        logits = logits.masked_fill(remove.scatter(1, order, remove), float("-inf"))
    return logits


def sample_tokens(
    logits: torch.Tensor,
    *,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """One token per row from softmax(filter(logits / temperature)), by Gumbel-max.

    Args:
        logits: (N, V) raw next-token logits (any float dtype).
        noise: an (N, V) float32 buffer to draw the noise into (reused across tokens: on the CPU a
            fresh 8 MB tensor per token costs more in page faults than the arithmetic on it).
    Returns:
        (N,) long token ids.
    """
    if top_k > 0 or top_p < 1.0:
        scaled, scale = filter_logits(logits.float() / temperature, top_k=top_k, top_p=top_p), 1.0  # (N, V)
    else:  # argmax(l / T - log E) = argmax(l - T log E): no scaled copy of the logits needed
        scaled, scale = logits, temperature
    if noise is None:
        noise = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
    # E = -log U ~ Exp(1) for U ~ Uniform[0, 1), and -log E ~ Gumbel(0, 1). Drawn from rand and two logs:
    # torch's exponential_ is 4x slower on some CPUs (41 vs 10 ms for 64 x 32k on an AMD EPYC).
    log_e = noise.uniform_().log_().neg_().log_()  # (N, V) log E, in place
    return log_e.mul_(-scale).add_(scaled).argmax(dim=-1)  # (N,) argmax(scaled - scale * log E)


@functools.lru_cache(maxsize=8)
def _stop_criteria(tokenizer: Any, stop_strings: tuple[str, ...]) -> Any:
    """transformers' StopStringCriteria (its precomputation over the vocabulary is done once)."""
    from transformers import StopStringCriteria

    return StopStringCriteria(tokenizer=tokenizer, stop_strings=list(stop_strings))


@torch.no_grad()
def decode(
    model: Any,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    *,
    group_size: int,
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    eos_ids: list[int],
    pad_id: int,
    tokenizer: Any = None,
    stop_strings: tuple[str, ...] = (),
    share_prefill: bool = True,
    drop_finished: bool | None = None,
    compiled: bool = False,
) -> torch.Tensor:
    """Sample ``group_size`` continuations of each prompt with the KV cache.

    Args:
        model: a causal LM (a peft model, or the merged rollout copy), in eval mode.
        prompt_ids, prompt_mask: (B, P) left-padded prompts, on the model's device.
        tokenizer, stop_strings: a row also ends when its text ends with one of ``stop_strings``.
        share_prefill: prefill each prompt once and repeat its cache G times (False: prefill all N
            rows, as ``generate`` does; kept to measure the difference).
        drop_finished: finished rows leave the batch (False: they are computed to the end, as
            ``generate`` does; kept to measure the difference). None: ``drops_by_default``.
        compiled: a static KV cache and a compiled decode step (``decode_cache.CompiledSteps``; a
            plain transformers model only, rows never leave the batch). If it fails to compile or
            capture, a warning, and this model decodes without it from then on (same distribution).
    Returns:
        (N, T') long completion ids, T' <= max_new_tokens (the longest row); pad after a row ends.
    """
    kw: dict[str, Any] = dict(
        group_size=group_size, max_new_tokens=max_new_tokens, share_prefill=share_prefill
    )
    rules = _Rules(max_new_tokens, temperature, top_k, top_p, eos_ids, pad_id,
                   _stop_criteria(tokenizer, tuple(stop_strings)) if stop_strings else None)  # fmt: skip
    if compiled and not getattr(model, "_grpo_lite_compile_failed", False):
        try:
            return _sample(CompiledSteps(model, prompt_ids, prompt_mask, **kw), rules, drop_finished=False)
        except Exception as err:  # a step that does not compile or capture: decode without it from now on
            model._grpo_lite_compile_failed = True
            log.warning("compile_rollouts: the compiled decode step failed (%s: %s); decoding without it",
                        type(err).__name__, str(err).splitlines()[0] if str(err) else "")  # fmt: skip
    if drop_finished is None:
        drop_finished = drops_by_default(prompt_ids.device)
    return _sample(CacheSteps(model, prompt_ids, prompt_mask, **kw), rules, drop_finished=drop_finished)


def drops_by_default(device: torch.device) -> bool:
    """Whether finished rows leave the batch when ``decode`` is not told: where it was measured to
    help, the CPU (1.4-1.7x tokens/s when lengths vary); not on a GPU, where it is not measured yet."""
    return device.type == "cpu"


@dataclass(frozen=True)
class _Rules:
    """What ``decode``'s token loop samples and where a row ends."""

    max_new_tokens: int
    temperature: float
    top_k: int
    top_p: float
    eos_ids: list[int]
    pad_id: int
    stop: Any  # transformers' StopStringCriteria, or None


def _sample(steps: CacheSteps | CompiledSteps, r: _Rules, *, drop_finished: bool) -> torch.Tensor:
    """The token loop of ``decode`` over prefilled ``steps``: (N, T') completion ids."""
    logits = steps.logits  # (N, V)
    N, device = logits.shape[0], logits.device
    tokens = torch.full((N, r.max_new_tokens), r.pad_id, dtype=torch.long, device=device)  # (N, T)
    eos = torch.tensor(r.eos_ids, device=device)
    done = torch.zeros(N, dtype=torch.bool, device=device)  # (N,)
    check_every = 1 if device.type == "cpu" else 8
    noise = torch.empty(logits.shape, dtype=torch.float32, device=device)  # (N, V) reused every token
    rows = torch.arange(N, device=device)  # (n,) the row in ``tokens`` of each sequence still in the batch
    for t in range(r.max_new_tokens):
        n = len(rows)
        token = sample_tokens(
            logits, temperature=r.temperature, top_k=r.top_k, top_p=r.top_p, noise=noise[:n]
        )  # (n,)
        token = token.masked_fill(done, r.pad_id)
        tokens[rows, t] = token
        done |= torch.isin(token, eos)
        if r.stop is not None:
            done |= r.stop(tokens[rows, : t + 1], None)
        if t + 1 == r.max_new_tokens:
            break
        if (t + 1) % check_every == 0:
            finished = int(done.sum())
            if finished == n:
                break
            if drop_finished and steps.can_drop and 4 * finished >= n:  # a quarter finished: drop them
                keep = (~done).nonzero().squeeze(1)  # (n',)
                steps.drop(keep)
                rows, token, done = rows[keep], token[keep], done[keep]
        logits = steps.step(token, t)  # (n, V)
    return tokens[:, : t + 1]
