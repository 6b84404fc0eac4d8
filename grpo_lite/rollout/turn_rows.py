"""The rows of the decode loop with tools (``turns.py``): what each completion holds so far — ids, tool
mask, length, segments, calls made, its exchange — and where a row's turn ends (:class:`Ends`)."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

TAIL = 32  # tokens looked at to find a stop string at the end of a row


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


@dataclass(frozen=True)
class Ends:
    """Where a row's turn ends: EOS or a stop string (done), the token budget (done, truncated), a
    complete tool call (it waits for the answer), a call past ``max_tool_calls`` (done, unrun)."""

    eos_ids: list[int]
    user_stops: tuple[str, ...]
    stops: Any  # transformers' StopStringCriteria over the user's stop strings and the format's
    tool_format: Any
    max_tool_calls: int
    max_new_tokens: int

    def apply(self, rows: Rows, fed: dict[int, int]) -> dict[int, Any]:
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


class Rows:
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
