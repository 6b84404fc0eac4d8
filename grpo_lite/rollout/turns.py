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
from dataclasses import dataclass, field
from typing import Any

import torch

from grpo_lite.rollout.cache import cache_argument
from grpo_lite.rollout.decode import _stop_criteria, sample_tokens

TAIL = 32  # tokens looked at to find a stop string at the end of a row


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


@dataclass
class Turns:
    """What the loop produced, N rows."""

    completion_ids: torch.Tensor  # (N, T) the model's tokens and the tools' answers, pad after the end
    lengths: torch.Tensor  # (N,) tokens in each completion (model and tool)
    tool_mask: torch.Tensor  # (N, T) 1 on the tools' answers
    truncated: torch.Tensor  # (N,) bool: the budget ran out
    exchanges: list[list[dict[str, Any]]]  # (N,) each row's turns: {"role": "assistant", "content"} and
    #                                        {"role": "tool", "name", "arguments", "content", "failed", "seconds"}
    tool_seconds: float = 0.0  # wall time the loop waited for tools' answers with nothing to decode
    sampled_logps: list[list[float]] = field(default_factory=list)  # (N,) per model token, when asked


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
    rows = _Rows(N, max_new_tokens, pad_id, device, tokenizer)
    stops = _stop_criteria(tokenizer, tuple(stop_strings) + tuple(tool_format.stop_strings))
    rules = _Ends(eos_ids, tuple(stop_strings), stops, tool_format, max_tool_calls, max_new_tokens)
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
                token = sample_tokens(logits, temperature=temperature, top_k=top_k, top_p=top_p,
                                      noise=noise[: len(order)]).tolist()  # fmt: skip
                lp = torch.log_softmax(logits.float() / temperature, dim=-1) if with_logps else None
                sampled: dict[int, int] = {}  # row -> the token it sampled
                for i, r in enumerate(order):
                    if r in hot:
                        rows.append(r, [token[i]])
                        sampled[r] = token[i]
                        if lp is not None:
                            rows.logps[r].append(float(lp[i, token[i]]))
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
                keep = torch.tensor([i for i in range(len(order)) if i not in set(done)], device=device)
                cache.batch_select_indices(keep)
                order = [order[i] for i in keep.tolist()]
                attention, next_pos, logits = attention[keep], next_pos[keep], logits[keep]
            # 3. one token per row through the model: sampled or an answer's, a masked pad for the waiting
            fed = torch.tensor([r in feed for r in order], device=device)
            token_in = torch.tensor([feed.get(r, pad_id) for r in order], device=device)
            attention = torch.cat([attention, fed.to(attention.dtype)[:, None]], dim=1)
            out = model(input_ids=token_in[:, None], attention_mask=attention, position_ids=next_pos[:, None],
                        use_cache=True, **{arg: cache})  # fmt: skip
            next_pos = next_pos + fed.long()
            logits = out.logits[:, -1]  # (n, V), fresh for the rows that fed a token
            # a row samples next when it fed its own token or its answer's last one
            hot = {r for r in feed if r not in pending and not queued.get(r)}
            queued = {r: tokens for r, tokens in queued.items() if tokens}
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return rows.turns(waited, with_logps)


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


@dataclass(frozen=True)
class _Ends:
    """Where a row's turn ends: EOS or a stop string (done), the token budget (done, truncated), a
    complete tool call (it waits for the answer), a call past ``max_tool_calls`` (done, unrun)."""

    eos_ids: list[int]
    user_stops: tuple[str, ...]
    stops: Any  # transformers' StopStringCriteria over the user's stop strings and the format's
    tool_format: Any
    max_tool_calls: int
    max_new_tokens: int

    def apply(self, rows: _Rows, fed: dict[int, int]) -> dict[int, Any]:
        """Check the rows that just sampled the tokens ``fed`` (row -> token); the ones that are done
        leave ``fed`` and have their last turn closed. Returns the calls to run: row -> call (those
        rows still feed their last token, so that the cache holds the whole call)."""
        ended = {r for r, t in fed.items() if t in self.eos_ids}
        live = [r for r in fed if r not in ended]
        calls: dict[int, Any] = {}
        for r, hit in zip(live, self.stops(rows.tails(live), None).tolist() if live else [], strict=True):
            if not hit:
                continue
            text = rows.segment_text(r)
            if any(text.endswith(s) for s in self.user_stops):
                ended.add(r)
            elif (call := self.tool_format.parse(text)) is not None and rows.calls[r] >= self.max_tool_calls:
                ended.add(r)  # a call past max_tool_calls ends the answer, unrun
            elif call is not None:
                rows.close_segment(r)
                calls[r] = call
        for r in live:
            if r not in ended and r not in calls and rows.length[r] >= self.max_new_tokens:
                ended.add(r)
                rows.truncated[r] = True
        for r in ended:
            rows.close_segment(r)
            fed.pop(r)  # done: nothing more goes into its cache
        return calls


class _Rows:
    """The completions being written: ids, tool mask, lengths, segments, the exchange of each row."""

    def __init__(
        self, N: int, max_new_tokens: int, pad_id: int, device: torch.device, tokenizer: Any
    ) -> None:
        self.ids = torch.full((N, max_new_tokens), pad_id, dtype=torch.long)  # (N, T) on the CPU
        self.tool = torch.zeros((N, max_new_tokens), dtype=torch.long)  # (N, T)
        self.length, self.calls, self.segment_start = [0] * N, [0] * N, [0] * N
        self.truncated = [False] * N
        self.exchanges: list[list[dict[str, Any]]] = [[] for _ in range(N)]
        self.logps: list[list[float]] = [[] for _ in range(N)]
        self.max_new_tokens, self.pad_id, self.device, self.tokenizer = (
            max_new_tokens,
            pad_id,
            device,
            tokenizer,
        )

    def append(self, r: int, tokens: list[int], *, tool: bool = False) -> None:
        n = self.length[r]
        if n + len(tokens) > self.max_new_tokens:  # a slice past the end would drop them silently
            raise RuntimeError(
                f"row {r}: {n} + {len(tokens)} tokens past max_new_tokens={self.max_new_tokens}"
            )
        self.ids[r, n : n + len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        self.tool[r, n : n + len(tokens)] = int(tool)
        self.length[r] += len(tokens)

    def tails(self, rs: list[int]) -> torch.Tensor:
        """(len(rs), TAIL) the last TAIL tokens of rows ``rs``, left-padded: where stop strings are sought."""
        out = torch.full((len(rs), TAIL), self.pad_id, dtype=torch.long)
        for k, r in enumerate(rs):
            tail = self.ids[r, max(0, self.length[r] - TAIL) : self.length[r]]
            out[k, TAIL - len(tail) :] = tail
        return out

    def segment_text(self, r: int) -> str:
        """What the model wrote since the last tool answer (or the start)."""
        ids = self.ids[r, self.segment_start[r] : self.length[r]].tolist()
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def close_segment(self, r: int) -> None:
        self.exchanges[r].append({"role": "assistant", "content": self.segment_text(r)})

    def take_answers(
        self, pending: dict[int, tuple[Any, Future[Any]]], tool_format: Any
    ) -> dict[int, list[int]]:
        """The answers that have come back (taken out of ``pending``), appended to their rows; returns
        row -> the answer's tokens to feed, for the rows that go on (not those out of budget)."""
        answers = {}
        for r in [r for r, (_, future) in pending.items() if future.done()]:
            call, future = pending.pop(r)
            result = future.result()
            tokens = self.answer(r, result, tool_format.render(call, result.output))
            if tokens:
                answers[r] = tokens
        return answers

    def answer(self, r: int, result: Any, rendered: str) -> list[int]:
        """Append a tool's answer to row ``r``; the tokens to feed, [] when the budget is spent (the
        row ends, truncated)."""
        self.exchanges[r].append({"role": "tool", "name": result.name, "arguments": result.arguments,
                                  "content": result.output, "failed": result.failed, "seconds": result.seconds})  # fmt: skip
        self.calls[r] += 1
        tokens = self.tokenizer(rendered, add_special_tokens=False)["input_ids"]
        room = self.max_new_tokens - self.length[r]
        if len(tokens) >= room:  # no room left to answer after it: the row ends, truncated
            tokens, self.truncated[r] = tokens[:room], True
        self.append(r, tokens, tool=True)
        self.segment_start[r] = self.length[r]
        return [] if self.truncated[r] else tokens

    def turns(self, waited: float, with_logps: bool) -> Turns:
        T = max(max(self.length), 1)
        d = self.device
        return Turns(
            completion_ids=self.ids[:, :T].to(d), lengths=torch.tensor(self.length, device=d),
            tool_mask=self.tool[:, :T].to(d), truncated=torch.tensor(self.truncated, dtype=torch.bool, device=d),
            exchanges=self.exchanges, tool_seconds=waited, sampled_logps=self.logps if with_logps else [],
        )  # fmt: skip
