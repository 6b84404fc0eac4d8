"""The decode loop with tools: rows sample, stop at the end of a tool call, get the answer appended,
and go on from the KV cache, while the other rows keep decoding.

Shapes: B prompts, G samples per prompt, N = B*G rows, n rows still in the KV cache, P prompt
tokens, T completion tokens (the model's and the tools', together at most ``max_new_tokens``), V
vocabulary.

Each step:

1. answers that have come back are rendered as the format writes them (the chat template's tool
   message), tokenized and appended to their rows (``tool_mask`` = 1 there), and queued to be fed;
   an answer is taken no sooner than the step after its call, whose last token that step feeds;
2. every row whose logits are fresh samples a token (Gumbel-max, the decode loop's sampling rules,
   ``decode.sample_tokens``); a row ends at EOS or a stop string (done), at the token budget (done,
   truncated), or at the end of a tool call (``format.parse`` finds one): its call goes to the tool
   box's workers at once (the sandbox for ``python``) and the row waits;
3. one forward pass of one token per row: a sampled row feeds its new token, a row with a queued
   answer feeds the answer's next token (as a prompt is fed, its logits unused until the last one), a
   waiting row feeds a masked pad.

So an answer goes through the same pass as the other rows' tokens, one token a step: no pass of its
own, no cache copied out and back, no cache positions added for the other rows. A row's answer is
part of its token budget, so feeding it that way costs the row no more steps than writing those
tokens itself would have (measured against a prefill of each answer in a pass of its own:
benchmarks/RESULTS.md, *Tools mid-answer*).

Rows done for good leave the batch at once. When no row runs, none has an answer to feed and none
is back, the loop waits for the first answer (``tool_seconds`` counts that wait).

So a call costs its row the call's time, not the batch: the others keep decoding meanwhile. A row
makes at most ``max_tool_calls`` calls; a call past that ends the row (it is not run). Positions
count only a row's own tokens, so that the sequence the loss scores (prompt, then the completion
without the masked gaps) gives the same log-probs as the ones sampled from (tested).
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import torch

from grpo_lite.rollout.cache import cache_argument
from grpo_lite.rollout.decode import _stop_criteria, sample_tokens
from grpo_lite.rollout.turn_rows import Ends, Rows, Turns


@dataclass
class ToolUse:
    """What a rollout with tools needs: the tool box (``run``, ``schemas``) and the call format
    (``parse``, ``render``, ``stop_strings``); built by ``grpo_lite.tools``."""

    box: Any
    format: Any

    @property
    def schemas(self) -> list[dict[str, Any]] | None:
        """The schemas for the chat template; None in the plain format (the prompt says how)."""
        return self.box.schemas if self.format.name == "hermes" else None


@torch.no_grad()
def decode_with_tools(
    model: Any, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, group_size: int, max_new_tokens: int,
    temperature: float, top_k: int, top_p: float, eos_ids: list[int], pad_id: int, tokenizer: Any,
    stop_strings: tuple[str, ...], tool_format: Any, toolbox: Any, max_tool_calls: int,
    with_logps: bool = False,
) -> Turns:  # fmt: skip
    """Sample G completions per prompt (``prompt_ids``, ``prompt_mask``: (B, P) left-padded, on the
    model's device) with tool calls answered in between; see the module docstring."""
    N, device, arg = prompt_ids.shape[0] * group_size, prompt_ids.device, cache_argument(model)
    # one prefill per prompt, shared by its G rows: the cache, (n, V) logits, (n, L) attention over the
    # cache's positions, (n,) each row's next position
    cache, logits, attention, next_pos = _prefill_prompts(model, arg, prompt_ids, prompt_mask, group_size)
    rows = Rows(N, max_new_tokens, pad_id, device, tokenizer)
    stops = _stop_criteria(tokenizer, tuple(stop_strings) + tuple(tool_format.stop_strings))
    rules = Ends(eos_ids, tuple(stop_strings), stops, tool_format, max_tool_calls, max_new_tokens)
    order = list(range(N))  # the row of each sequence in the cache
    hot = set(order)  # rows whose ``logits`` are fresh: they sample next
    pending: dict[int, tuple[Any, Future[Any]]] = {}  # waiting row -> (its call, its answer to come)
    queued: dict[int, list[int]] = {}  # row -> the answer tokens it has still to feed, in order
    waited = 0.0
    noise = torch.empty(logits.shape, dtype=torch.float32, device=device)  # (N, V) reused every token
    pool = ThreadPoolExecutor(max_workers=max(1, getattr(toolbox, "workers", 4)))
    try:
        while True:
            # 1. the answers that have come back, appended to their rows and queued to be fed. Taken
            # before sampling: a call submitted below still feeds its last token in this step's pass,
            # so its answer (however fast) must wait for the next step
            queued |= rows.take_answers(pending, tool_format)
            feed = {r: tokens.pop(0) for r, tokens in queued.items()}  # row -> the token it feeds this step
            # 2. one token for each row with fresh logits; the calls that end go to the workers at once
            if hot:
                sampled = _sample_hot(logits, noise[: len(order)], order, hot, rows, (temperature, top_k, top_p),
                                      with_logps)  # fmt: skip
                for r, call in rules.apply(rows, sampled).items():
                    pending[r] = (call, pool.submit(toolbox.call, call))
                feed |= sampled  # the rows that ended left ``sampled``; the callers still feed their call
                hot = set()  # logits spent: a row that ended never samples again while the loop waits
            if not feed:
                if not pending:
                    break
                start = time.perf_counter()  # nothing to compute: wait for the first answer
                wait([future for _, future in pending.values()], return_when=FIRST_COMPLETED)
                waited += time.perf_counter() - start
                continue
            # rows done for good leave the batch at once (their cache too): with tools, rows end at
            # scattered times, and a done row kept in the batch costs a masked pad every step
            done = [i for i, r in enumerate(order) if r not in feed and r not in pending]
            if done:
                order, attention, next_pos, logits = _drop(cache, done, order, attention, next_pos, logits)
            # 3. one token per row through the model: sampled or an answer's, a masked pad for the waiting
            attention, next_pos, logits = _feed(model, arg, cache, order, feed, pad_id, attention, next_pos)
            # a row samples next when it fed its own token or its answer's last one
            hot = {r for r in feed if r not in pending and not queued.get(r)}
            queued = {r: tokens for r, tokens in queued.items() if tokens}
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return rows.turns(waited, with_logps)


def _drop(cache: Any, done: list[int], order: list[int], *tensors: torch.Tensor) -> tuple[Any, ...]:
    """The rows at the indices ``done`` out of the batch: from the cache, ``order`` and each tensor."""
    keep = torch.tensor([i for i in range(len(order)) if i not in set(done)], device=tensors[0].device)
    cache.batch_select_indices(keep)
    return ([order[i] for i in keep.tolist()], *(t[keep] for t in tensors))


def _feed(
    model: Any, arg: str, cache: Any, order: list[int], feed: dict[int, int], pad_id: int,
    attention: torch.Tensor, next_pos: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """One token per row in ``order`` through the model (a masked pad for a row not in ``feed``);
    the attention mask, next positions and (n, V) last logits after it."""
    device = attention.device
    fed = torch.tensor([r in feed for r in order], device=device)
    token_in = torch.tensor([feed.get(r, pad_id) for r in order], device=device)
    attention = torch.cat([attention, fed.to(attention.dtype)[:, None]], dim=1)
    out = model(input_ids=token_in[:, None], attention_mask=attention, position_ids=next_pos[:, None],
                use_cache=True, **{arg: cache})  # fmt: skip
    return attention, next_pos + fed.long(), out.logits[:, -1]


def _sample_hot(
    logits: torch.Tensor, noise: torch.Tensor, order: list[int], hot: set[int], rows: Any,
    sampling: tuple[float, int, float], with_logps: bool,
) -> dict[int, int]:  # fmt: skip
    """One token for each row with fresh logits (``hot``), appended to its row (with its log-prob when
    asked); returns row -> the token it sampled."""
    temperature, top_k, top_p = sampling
    token = sample_tokens(logits, temperature=temperature, top_k=top_k, top_p=top_p, noise=noise).tolist()
    lp = torch.log_softmax(logits.float() / temperature, dim=-1) if with_logps else None
    sampled: dict[int, int] = {}
    for i, r in enumerate(order):
        if r in hot:
            rows.append(r, [token[i]])
            sampled[r] = token[i]
            if lp is not None:
                rows.logps[r].append(float(lp[i, token[i]]))
    return sampled


def _prefill_prompts(
    model: Any, arg: str, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, group_size: int
) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prefill each prompt once and repeat its cache G times (as ``cache.CacheSteps`` does)."""
    positions = (prompt_mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, P) left padding aware
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions, use_cache=True,
                logits_to_keep=1)  # fmt: skip
    cache = getattr(out, arg)
    cache.batch_repeat_interleave(group_size)
    logits = out.logits[:, -1].repeat_interleave(group_size, dim=0)  # (N, V)
    attention = prompt_mask.repeat_interleave(group_size, dim=0)  # (N, P)
    return cache, logits, attention, positions[:, -1].repeat_interleave(group_size) + 1
