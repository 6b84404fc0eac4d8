"""Held-out evaluation while training, and the best checkpoint.

Every ``cfg.eval_every`` steps and at the last one, the policy answers each eval row once, greedily
(``evaluate.held_out_scores``: batched ``generate`` with the run's stop strings and token budget),
off the training clock; each eval measure (a function with the rewards' signature whose 1.0 means
"right"; default: the training rewards as the run starts) gives the share of rows it scores 1.0 as
``eval/NAME`` in that step's metrics (so in ``metrics.jsonl``, the trackers and the dashboard), with
``eval/seconds``.

The best checkpoint: at an evaluated step whose ``eval/<best_measure>`` beats every earlier score in
this run folder, a checkpoint of that step is written if the schedule did not write one, then
``RUN/best.json`` names it (``{"step", "measure", "score"}``, written whole: ``run/atomic.py``).
Pruning (``keep_checkpoints``) never deletes the step that ``best.json`` names; the previous best
becomes an ordinary checkpoint and goes by recency. A resume finds its best again from its own
metrics (only steps whose checkpoint is there); a branch is a run folder of its own, so its best is
its own. Ties keep the earlier step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from grpo_lite.data import PromptData
from grpo_lite.evaluate import held_out_scores
from grpo_lite.run import RunDir

Measure = Callable[..., Sequence[Any]]


def resolve_measures(measures: Any, rewards: Any) -> dict[str, Measure]:
    """``{name: function}`` from a dict, a list of functions, NamedRewards or built-in reward names
    (``rewards`` package); None: the training rewards (``rewards``: a Combined)."""
    import rewards as builtin

    if measures is None:
        return {r.name: r.fn for r in rewards.rewards}
    if isinstance(measures, dict):
        items = list(measures.items())
    else:
        items = []
        for m in measures:
            if isinstance(m, str):
                fn = getattr(builtin, m, None)
                if not callable(fn):
                    raise ValueError(f"eval measure {m!r} is not a reward function of the rewards package")
                items.append((m, fn))
            elif hasattr(m, "fn") and hasattr(m, "name"):  # a NamedReward
                items.append((m.name, m.fn))
            elif callable(m):
                items.append((getattr(m, "__name__", "") or f"measure_{len(items)}", m))
            else:
                raise TypeError(f"eval measure {m!r} is neither a function nor a reward name")
    out: dict[str, Measure] = {}
    for name, fn in items:
        if name in out:
            raise ValueError(f"two eval measures are named {name!r}; pass a dict to name them apart")
        if not callable(fn):
            raise TypeError(f"eval measure {name!r} is not callable")
        out[name] = fn
    if not out:
        raise ValueError("eval measures: none given")
    return out


@dataclass
class HeldOut:
    """The run's held-out set, its measures and schedule; inert when ``every`` is 0."""

    rows: list[dict[str, Any]] = field(default_factory=list)  # the eval rows as given (a branch gets them)
    measures: dict[str, Measure] = field(default_factory=dict)
    every: int = 0
    best_measure: str = ""
    prompt_column: str = "prompt"

    @classmethod
    def build(cls, cfg: Any, eval_dataset: Any, measures: Any, rewards: Any, *, tools: bool) -> HeldOut:
        """Checked before any model loads: eval rows for ``eval_every``, a known ``best_measure``."""
        if eval_dataset is None:
            if cfg.eval_every:
                raise ValueError(
                    f"GRPOConfig.eval_every={cfg.eval_every} needs eval rows: pass eval_dataset=... "
                    "(the CLI: --eval-dataset FILE)"
                )
            return cls()
        if tools and cfg.eval_every:
            raise ValueError(
                "held-out evaluation while training does not run tools yet; measure a tool run after "
                "training with grpo_lite.evaluate.tool_accuracy (or set eval_every=0)"
            )
        rows = PromptData(eval_dataset, prompt_column=cfg.prompt_column, seed=0).rows
        rows = rows[: cfg.eval_max_rows] if cfg.eval_max_rows else rows
        resolved = resolve_measures(measures, rewards)
        best = cfg.best_measure or next(iter(resolved))
        if best not in resolved:
            raise ValueError(
                f"GRPOConfig.best_measure={cfg.best_measure!r} is not an eval measure; measures: {list(resolved)}"
            )
        return cls(rows, resolved, cfg.eval_every, best, cfg.prompt_column)

    def due(self, step: int, max_steps: int) -> bool:
        return bool(self.every and self.rows) and (step % self.every == 0 or step == max_steps)

    def measure(self, trainer: Any) -> dict[str, float]:
        """``eval/NAME`` for every measure and ``eval/seconds`` when ``trainer.step`` is due; else {}."""
        if not self.due(trainer.step, trainer.cfg.max_steps):
            return {}
        start, cfg, column = time.perf_counter(), trainer.cfg, self.prompt_column
        rows = [{"prompt": r[column], **{k: v for k, v in r.items() if k != column}} for r in self.rows]
        shares, _ = held_out_scores(trainer.model, trainer.tokenizer, rows, self.measures,
                                    max_new_tokens=trainer.sampling.max_new_tokens, stop_strings=cfg.stop_strings)  # fmt: skip
        out = {f"eval/{name}": share for name, share in shares.items()}
        return out | {"eval/seconds": round(time.perf_counter() - start, 3)}

    def keep_best(self, trainer: Any, metrics: dict[str, Any]) -> None:
        """After a step's metrics are logged (and its scheduled checkpoint written): make the step the
        best checkpoint if its score beats the best so far."""
        score = metrics.get(f"eval/{self.best_measure}")
        if score is None:
            return
        folder = RunDir(trainer.run_dir)
        best = folder.best()
        if best is not None and score <= best["score"]:
            return
        cfg = trainer.cfg
        if not (cfg.save_steps and trainer.step % cfg.save_steps == 0):  # the schedule did not save it
            trainer.save_checkpoint()
        folder.write_best({"step": trainer.step, "measure": self.best_measure, "score": score})
        if cfg.keep_checkpoints:
            folder.prune(cfg.keep_checkpoints)  # the old best, now ordinary, goes by recency

    def restore(self, trainer: Any) -> None:
        """After a resume (the metrics cut at its step): the best among this folder's own checkpoints."""
        if not self.every:
            return  # no evaluation in this session: best.json, if any, stays as it was
        folder = RunDir(trainer.run_dir)
        kept = set(folder.complete_steps())
        key = f"eval/{self.best_measure}"
        scored = [(m[key], m["step"]) for m in trainer.history if key in m and m["step"] in kept]
        best = None
        for score, step in scored:  # in step order: a tie keeps the earlier
            if best is None or score > best[0]:
                best = (score, step)
        folder.write_best(
            None if best is None else {"step": best[1], "measure": self.best_measure, "score": best[0]}
        )
