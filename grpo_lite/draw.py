"""A step's completions: the next prompts of the stream, G completions each with the sampling
settings in force, scored by every reward function once (errors isolated); with dynamic sampling,
further draws until B groups carry signal (``dynamic.py``). ``t``: the trainer (its data, sampler,
tokenizer, rewards, steering and settings)."""

from __future__ import annotations

import time
from typing import Any

from grpo_lite.data import reward_columns
from grpo_lite.dynamic import Draw, seek_signal
from grpo_lite.rollout import Rollout, generate, is_chat


def draw_step(t: Any) -> tuple[Draw, dict[str, float]]:
    """The step's scored rollout, and its figures (dynamic sampling: draws, kept groups)."""
    B = t.cfg.prompts_per_step
    first = draw(t, B)
    if not t.cfg.dynamic_sampling:
        return first, {"time/generate": first.rollout_seconds, "time/score": first.score_seconds}
    return seek_signal(first, lambda: draw(t, B), want=B, max_extra_rounds=t.cfg.max_extra_rounds,
                       pad_id=t.tokenizer.pad_token_id)  # fmt: skip


def draw(t: Any, n: int) -> Draw:
    """The next ``n`` prompts of the stream, G completions each with the sampling settings in force
    (sampled by the policy or its merged copy, brought up to the latest update: rollout/weights.py),
    scored by every reward function once, errors isolated."""
    t0 = time.perf_counter()
    indices = t.data.take(n)
    rows = [t.data.rows[i] for i in indices]
    prompts = [row[t.cfg.prompt_column] for row in rows]
    rollout = generate(
        t.sampler_model.current(), t.tokenizer, prompts, group_size=t.cfg.group_size,
        sampling=t.sampling, max_prompt_tokens=t.cfg.max_prompt_tokens, stop_strings=t.cfg.stop_strings,
        sampler=t.cfg.sampler, compiled=t.cfg.compile_rollouts, tools=t.tools,
    )  # fmt: skip
    t_gen = time.perf_counter()
    scores, scored = score(t, prompts, rows, rollout)
    drawn = Draw(indices, rows, rollout, scores, scored, t_gen - t0, time.perf_counter() - t_gen)
    t.data.visited(indices, drawn.rewards, t.cfg.group_size)  # each row's pass rate (difficulty.py)
    return drawn


def score(
    t: Any, prompts: list[Any], rows: list[dict[str, Any]], rollout: Rollout
) -> tuple[Any, dict[str, Any]]:
    """Every reward function once (errors isolated); returns the scores and what they were given."""
    G = t.cfg.group_size
    completions = rollout.for_rewards(chat=is_chat(prompts[0]))  # with tools: the whole exchange
    columns = reward_columns(rows, prompt_column=t.cfg.prompt_column, group_size=G)
    columns |= rollout.tool_columns()  # with tools: tool_calls and tool_failures per completion
    repeated = [p for p in prompts for _ in range(G)]  # (N,) each prompt once per completion
    scored = {"prompts": repeated, "completions": completions, "columns": columns, "group_size": G}
    scores = t.rewards.score(repeated, completions, time_limit=t.cfg.reward_timeout,
                             stop=lambda: t.steering.stop_requested, **columns)  # fmt: skip
    t.steering.watch_timeouts(scores.timed_out)  # 3 steps in a row: weight 0 from the next step
    return scores, scored
