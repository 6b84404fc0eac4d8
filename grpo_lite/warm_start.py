"""A warm start: a short supervised phase of the LoRA on right answers, before GRPO (RFT / STaR).

Where a step's 32 completions hold one right answer or none, GRPO has almost nothing to learn from.
The warm start gathers right answers first and fine-tunes the LoRA on them, then GRPO goes on from
there; the reference stays the base with its adapters off. Sources (``GRPOConfig.warm_start``):

- ``"own"``: the model's own right answers (rejection sampling; STaR, arXiv 2203.14465):
  ``warm_start_prompts`` training prompts, G completions each with the run's sampling settings and
  rewards; a completion counts when its total reward is at least ``solve_threshold`` and the top of
  its group (each prompt gives at most ``group_size // 2`` of its right answers, the shortest).
  Exactly the tokens that were sampled are trained on.
- ``"solutions"``: the data's ``solution_column`` (a worked answer per row), where it is not empty.

Then ``warm_start_steps`` optimizer steps, each on ``warm_start_batch`` examples cycled in a seeded
order: the mean negative log-likelihood of the completion's tokens (the prompt is context only, its
tokens carry no loss), gradients on the LoRA weights only (the base is frozen), an AdamW of its own
at ``learning_rate``, clipped to ``max_grad_norm``. No right answer found: said, and GRPO starts
from the base as without a warm start. What it did goes to ``warm_start.json`` in the run folder
and into the run's facts (every step's metrics, checkpoints, the model card).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from grpo_lite.logprobs import completion_logprobs
from grpo_lite.rollout.prompts import encode_prompts, is_chat, render_prompt
from grpo_lite.run.atomic import write_text

log = logging.getLogger(__name__)
Example = tuple[torch.Tensor, torch.Tensor]  # (prompt ids, completion ids), 1-D, no padding


def own_right_answers(draws: Sequence[Any], *, threshold: float, group_size: int) -> list[Example]:
    """The right completions of scored draws (``dynamic.Draw``): reward >= ``threshold`` and the top of
    the group; at most ``group_size // 2`` per prompt, the shortest first."""
    out: list[Example] = []
    for d in draws:
        rewards, r = d.rewards, d.rollout
        for g in range(len(d.indices)):
            rows = range(g * group_size, (g + 1) * group_size)
            top = max((float(rewards[i]) for i in rows if rewards[i] == rewards[i]), default=float("nan"))
            right = [i for i in rows if float(rewards[i]) >= threshold and float(rewards[i]) == top]
            right.sort(key=lambda i: int(r.extents[i]))
            for i in right[: max(group_size // 2, 1)]:
                prompt = r.prompt_ids[i][r.prompt_mask[i].bool()]
                out.append((prompt.cpu(), r.completion_ids[i, : int(r.extents[i])].cpu()))
    return out


def solution_examples(
    rows: Sequence[dict[str, Any]],
    tokenizer: Any,
    *,
    prompt_column: str,
    solution_column: str,
    max_prompt_tokens: int,
) -> list[Example]:
    """(prompt, solution + EOS) token ids for every row whose ``solution_column`` holds text."""
    if rows and solution_column not in rows[0]:
        raise ValueError(
            f"warm_start='solutions' reads the column {solution_column!r}, which the dataset does not have "
            f"(its columns: {sorted(rows[0])}); set GRPOConfig.solution_column or use warm_start='own'"
        )
    out: list[Example] = []
    for row in rows:
        solution = row.get(solution_column)
        if not isinstance(solution, str) or not solution.strip():
            continue
        text = render_prompt(row[prompt_column], tokenizer)
        ids, mask = encode_prompts(
            [text], tokenizer, max_prompt_tokens=max_prompt_tokens, chat=[is_chat(row[prompt_column])]
        )
        completion = tokenizer(solution, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        out.append((ids[0][mask[0].bool()], torch.tensor(completion, dtype=torch.long)))
    return out


def batch_of(examples: Sequence[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention mask, completion mask): prompts left-padded, completions right-padded;
    ids and attention (n, P+T), the completion mask (n, T)."""
    P = max(len(p) for p, _ in examples)
    T = max(len(c) for _, c in examples)
    prompt = torch.stack([F.pad(p, (P - len(p), 0), value=pad_id) for p, _ in examples])
    pmask = torch.stack([F.pad(torch.ones_like(p), (P - len(p), 0)) for p, _ in examples])
    comp = torch.stack([F.pad(c, (0, T - len(c)), value=pad_id) for _, c in examples])
    cmask = torch.stack([F.pad(torch.ones_like(c), (0, T - len(c))) for _, c in examples])
    return torch.cat([prompt, comp], 1), torch.cat([pmask, cmask], 1), cmask


def supervised_loss(model: Any, examples: Sequence[Example], pad_id: int) -> torch.Tensor:
    """Mean negative log-likelihood of the completions' tokens (the prompts' carry none)."""
    device = next(model.parameters()).device
    ids, attn, mask = (t.to(device) for t in batch_of(examples, pad_id))
    logps, _ = completion_logprobs(model, ids, attn, mask, temperature=1.0)
    return -(logps.float() * mask).sum() / mask.sum()


def supervised_phase(
    model: Any,
    params: list[torch.nn.Parameter],
    examples: Sequence[Example],
    *,
    steps: int,
    batch: int,
    lr: float,
    max_grad_norm: float,
    seed: int,
    pad_id: int,
    scaler: Any,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """``steps`` AdamW steps on the examples (cycled in a seeded order, ``batch`` at a time); the losses."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    losses, pos = [], 0
    model.train()
    for step in range(steps):
        picked = [examples[order[(pos + k) % len(order)]] for k in range(min(batch, len(order)))]
        pos += len(picked)
        loss = supervised_loss(model, picked, pad_id)
        scaler.scale(loss).backward()
        scaler.unscale(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else float("inf"))
        scaler.step(optimizer, finite=bool(torch.isfinite(norm)) and bool(torch.isfinite(loss)))
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if on_step:
            on_step(step + 1, losses[-1])
    return losses


def warm_start(trainer: Any, source: str | None = None) -> dict[str, Any]:
    """Gather the examples ``source`` names (default ``trainer.cfg.warm_start``), fine-tune the LoRA on
    them, and record what was done in ``RUN/warm_start.json`` (``warm_start-step-N.json`` when asked
    for mid-run, as the ``no_signal`` alarm's remedy); returns that record. ``trainer``: a GRPOTrainer
    (``draw.draw`` samples and scores its prompts with the run's settings in force)."""
    from grpo_lite.draw import draw
    from grpo_lite.policy.model import trainable_parameters

    cfg, t0 = trainer.cfg.replace(warm_start=source or trainer.cfg.warm_start), time.perf_counter()
    if cfg.warm_start == "solutions":
        examples = solution_examples(trainer.data.rows, trainer.tokenizer, prompt_column=cfg.prompt_column,
                                     solution_column=cfg.solution_column, max_prompt_tokens=cfg.max_prompt_tokens)  # fmt: skip
        sampled = 0
    else:  # the model's own: the next warm_start_prompts prompts of the stream, drawn and scored
        draws, sampled = [], 0
        while sampled < cfg.warm_start_prompts:
            n = min(cfg.warm_start_prompts - sampled, 4 * cfg.prompts_per_step)
            draws.append(draw(trainer, n))
            sampled += n
        examples = own_right_answers(draws, threshold=cfg.solve_threshold, group_size=cfg.group_size)
    record: dict[str, Any] = {"source": cfg.warm_start, "prompts_sampled": sampled, "examples": len(examples),
                              "steps": 0, "losses": [], "at_step": trainer.step}  # fmt: skip
    if not examples:
        where = f"{sampled} prompts x {cfg.group_size}" if sampled else f"the column {cfg.solution_column!r}"
        log.warning("warm start (%s): no right answer in %s (reward >= solve_threshold %g); GRPO starts "
                    "without it", cfg.warm_start, where, cfg.solve_threshold)  # fmt: skip
    else:
        losses = supervised_phase(
            trainer.model, trainable_parameters(trainer.model), examples, steps=cfg.warm_start_steps,
            batch=cfg.warm_start_batch, lr=cfg.learning_rate, max_grad_norm=cfg.max_grad_norm, seed=cfg.seed,
            pad_id=trainer.tokenizer.pad_token_id, scaler=trainer.scaler,
        )  # fmt: skip
        record |= {"steps": len(losses), "losses": losses}
    record["seconds"] = round(time.perf_counter() - t0, 2)
    name = "warm_start.json" if trainer.step == 0 else f"warm_start-step-{trainer.step}.json"
    write_text(trainer.run_dir / name, json.dumps(record, indent=2) + "\n")  # whole or absent
    log.info("warm start (%s): %d examples, %d steps", cfg.warm_start, len(examples), record["steps"])
    return record


def warm_start_facts(record: dict[str, Any] | None) -> dict[str, Any]:
    """The run's facts about its warm start (every step's metrics, checkpoints, the model card)."""
    if not record:
        return {}
    return {"warm_start": record["source"], "warm_start_examples": record["examples"],
            "warm_start_steps": record["steps"]}  # fmt: skip


def record_from_state(state: dict[str, Any]) -> dict[str, Any] | None:
    """The warm start a checkpoint's run made (from its facts in ``state.json``), or None."""
    if not state.get("warm_start"):
        return None
    return {"source": state["warm_start"], "examples": state.get("warm_start_examples", 0),
            "steps": state.get("warm_start_steps", 0)}  # fmt: skip


def check_warm_start(cfg: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Settings that cannot work, refused before any model work: a solution column the data lacks."""
    if cfg.warm_start == "solutions" and rows and cfg.solution_column not in rows[0]:
        raise ValueError(
            f"GRPOConfig.warm_start='solutions' reads the column solution_column={cfg.solution_column!r}, which "
            f"the dataset does not have (its columns: {sorted(rows[0])}); name another or use warm_start='own'"
        )
