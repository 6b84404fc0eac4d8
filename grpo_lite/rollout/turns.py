"""The decode loop with tools: sample until a row ends or ends a tool call, run the calls, append
their answers, and go on from the KV cache.

Shapes: B prompts, G samples per prompt, N = B*G rows, n rows still in the KV cache, P prompt
tokens, T completion tokens (the model's and the tools', together at most ``max_new_tokens``), K
appended tokens, V vocabulary.

One round:

1. every row still going samples a token at a time (Gumbel-max, the decode loop's sampling rules,
   ``decode.sample_tokens``) until it samples EOS or a stop string (done), reaches the token budget
   (done, truncated), or ends a tool call (``format.parse`` finds one: it waits). A row that waits
   or is done gets the pad token from then on, masked out of attention, so that it is as if it had
   not been fed; rows done for good leave the batch once a quarter of it are done.
2. the waiting rows' calls run all at once (``ToolBox.run``: sandbox workers, time limits);
3. each answer is rendered as the format writes it (the chat template's tool message), tokenized
   and appended to its row (``tool_mask`` = 1 there); the appended tokens of all rows go through
   the model in one call (left-padded, padding masked), a prefill of the appended tokens only;
4. the next round starts from the logits after each row's last appended token.

A row makes at most ``max_tool_calls`` calls; a call past that ends the row (it is not run).
Positions count only a row's own tokens, so that the sequence the loss scores (prompt, then the
completion without the masked gaps) gives the same log-probs as the ones sampled from.
"""

from __future__ import annotations

import time
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
    tool_seconds: float = 0.0  # wall time spent running tools (the sandbox included)
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
    B, P = prompt_ids.shape
    N, device = B * group_size, prompt_ids.device
    arg = cache_argument(model)
    positions = (prompt_mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, P)
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions, use_cache=True,
                logits_to_keep=1)  # fmt: skip
    cache = getattr(out, arg)
    cache.batch_repeat_interleave(group_size)  # one prefill per prompt, shared by its G rows
    logits = out.logits[:, -1].repeat_interleave(group_size, dim=0)  # (N, V)
    attention = prompt_mask.repeat_interleave(group_size, dim=0)  # (n, L) over the cache's positions
    next_pos = positions[:, -1].repeat_interleave(group_size) + 1  # (n,) each row's next position

    ids = torch.full((N, max_new_tokens), pad_id, dtype=torch.long, device=device)  # (N, T)
    tool = torch.zeros((N, max_new_tokens), dtype=torch.long, device=device)  # (N, T)
    length = [0] * N
    truncated = [False] * N
    calls = [0] * N
    segment_start = [0] * N
    exchanges: list[list[dict[str, Any]]] = [[] for _ in range(N)]
    logps: list[list[float]] = [[] for _ in range(N)]
    eos = torch.tensor(eos_ids, device=device)
    user_stops = tuple(stop_strings)
    stops = _stop_criteria(tokenizer, user_stops + tuple(tool_format.stop_strings))
    rows = list(range(N))  # the row of ``ids`` of each sequence in the cache
    tool_seconds = 0.0

    def segment_text(r: int) -> str:
        return str(tokenizer.decode(ids[r, segment_start[r] : length[r]].tolist(), skip_special_tokens=True))

    while rows:
        n = len(rows)
        running = torch.ones(n, dtype=torch.bool, device=device)
        waiting: dict[int, Any] = {}  # row -> its call
        noise = torch.empty(logits.shape, dtype=torch.float32, device=device)
        while True:
            # 1. one token for each row still running
            token = sample_tokens(
                logits, temperature=temperature, top_k=top_k, top_p=top_p, noise=noise[: len(rows)]
            )
            token = token.masked_fill(~running, pad_id)  # (n,)
            if with_logps:
                lp = torch.log_softmax(logits.float() / temperature, dim=-1).gather(1, token[:, None])[:, 0]
            live = running.nonzero().squeeze(1).tolist()
            row_t = torch.tensor(rows, device=device)
            at = torch.tensor(length, device=device)[row_t]  # (n,)
            ids[row_t[running], at[running]] = token[running]
            for i in live:
                length[rows[i]] += 1
                if with_logps:
                    logps[rows[i]].append(float(lp[i]))
            ended = running & torch.isin(token, eos)  # (n,)
            cols = at[:, None] + 1 - TAIL + torch.arange(TAIL, device=device)  # (n, TAIL) the last TAIL
            tails = ids[row_t[:, None], cols.clamp(0, max_new_tokens - 1)].masked_fill(
                cols < 0, pad_id
            )  # (n, TAIL)
            flagged = (running & ~ended & stops(tails, None)).nonzero().squeeze(1).tolist()
            ended_list = set(ended.nonzero().squeeze(1).tolist())
            for i in flagged:
                r = rows[i]
                text = segment_text(r)
                if any(text.endswith(s) for s in user_stops):
                    ended_list.add(i)
                    continue
                call = tool_format.parse(text)
                if call is not None:
                    if calls[r] < max_tool_calls:
                        waiting[r] = call
                    else:
                        ended_list.add(i)  # a call past max_tool_calls ends the answer, unrun
                    running[i] = False
            for i in live:
                if i not in ended_list and rows[i] not in waiting and length[rows[i]] >= max_new_tokens:
                    ended_list.add(i)
                    truncated[rows[i]] = True
            for i in ended_list:
                running[i] = False
                exchanges[rows[i]].append({"role": "assistant", "content": segment_text(rows[i])})
            fed = torch.zeros_like(running)
            fed[live] = True  # this step's tokens go into the cache, the last one of a waiting row too
            if not bool(running.any()):
                unfed = {rows[i]: int(token[i]) for i in live if rows[i] in waiting}
                break
            # rows done for good leave the batch once they are a quarter of it (their cache too)
            done = [i for i in range(len(rows)) if not running[i] and rows[i] not in waiting]
            if 4 * len(done) >= len(rows):
                keep = [i for i in range(len(rows)) if i not in set(done)]
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                rows, running, token, fed = [rows[i] for i in keep], running[index], token[index], fed[index]
                attention, next_pos = attention[index], next_pos[index]
            # 2. feed the tokens just sampled; a row that sampled none feeds a masked pad, keeps its position
            attention = torch.cat([attention, fed.long()[:, None]], dim=1)
            out = model(input_ids=token[:, None], attention_mask=attention, position_ids=next_pos[:, None],
                        use_cache=True, **{arg: cache})  # fmt: skip
            next_pos = next_pos + fed.long()
            logits = out.logits[:, -1]  # (n, V)
        if not waiting:
            break
        # 3. the calls of the whole batch at once
        order = list(waiting)
        start = time.perf_counter()
        results = toolbox.run([waiting[r] for r in order])
        tool_seconds += time.perf_counter() - start
        appended: dict[int, list[int]] = {}  # what each row feeds next: its unfed last token, the answer
        for r, call, result in zip(order, [waiting[r] for r in order], results, strict=True):
            exchanges[r] += [
                {"role": "assistant", "content": segment_text(r)},
                {"role": "tool", "name": result.name, "arguments": result.arguments, "content": result.output,
                 "failed": result.failed, "seconds": result.seconds},
            ]  # fmt: skip
            calls[r] += 1
            answer = tokenizer(tool_format.render(call, result.output), add_special_tokens=False)["input_ids"]
            room = max_new_tokens - length[r]
            if len(answer) >= room:  # no room left to answer after it: the row ends, truncated
                answer, truncated[r] = answer[:room], True
            ids[r, length[r] : length[r] + len(answer)] = torch.tensor(answer, dtype=torch.long)
            tool[r, length[r] : length[r] + len(answer)] = 1
            length[r] += len(answer)
            segment_start[r] = length[r]
            if not truncated[r]:
                appended[r] = ([unfed[r]] if r in unfed else []) + answer
        keep = [i for i, r in enumerate(rows) if r in appended]
        if not keep:
            break
        index = torch.tensor(keep, device=device)
        cache.batch_select_indices(index)
        rows, attention, next_pos = [rows[i] for i in keep], attention[index], next_pos[index]
        # 4. the answers through the model at once: a prefill of the appended tokens only
        K = max(len(appended[r]) for r in rows)
        block = torch.full((len(rows), K), pad_id, dtype=torch.long, device=device)  # (n, K) left-padded
        block_mask = torch.zeros((len(rows), K), dtype=attention.dtype, device=device)
        for i, r in enumerate(rows):
            block[i, K - len(appended[r]) :] = torch.tensor(appended[r], dtype=torch.long)
            block_mask[i, K - len(appended[r]) :] = 1
        attention = torch.cat([attention, block_mask], dim=1)
        block_pos = next_pos[:, None] + (block_mask.cumsum(dim=1) - 1).clamp(min=0)  # (n, K)
        out = model(input_ids=block, attention_mask=attention, position_ids=block_pos, use_cache=True,
                    logits_to_keep=1, **{arg: cache})  # fmt: skip
        next_pos = next_pos + block_mask.sum(dim=1)
        logits = out.logits[:, -1]  # (n, V)
    T = max(max(length), 1)
    return Turns(
        completion_ids=ids[:, :T], lengths=torch.tensor(length, device=device), tool_mask=tool[:, :T],
        truncated=torch.tensor(truncated, dtype=torch.bool, device=device), exchanges=exchanges,
        tool_seconds=tool_seconds, sampled_logps=logps if with_logps else [],
    )  # fmt: skip
