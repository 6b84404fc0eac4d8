"""The offline demo: GRPO makes a real pretrained model right more often, on a CPU, in minutes.

The default, ``model="smollm2-135m-instruct"``: SmolLM2-135M-Instruct (Q4_1 weights from the package
index, dequantized; ``offline.py``) is asked one-digit sums and products ("What is 7 + 8?", "What is
6 * 9?"). Greedy, it answers about a quarter of them right: it often says a wrong number ("7 + 7 is
11") or talks past its token budget. Sampled, it is right now and then, which is all GRPO needs.
Reward: the number it answers (its last number) equals the answer; nothing pays for form alone.

``model="tiny"``: the earlier rounds' demo, kept for the tests: a tiny Llama warm-started on ``a+b=``
labels that are right only 40% of the time, rewarded for an exact ``<answer>`` (+ a little format).

Both: 4-bit NF4 + LoRA through the normal engine; greedy accuracy on held-out problems (never trained
on) before and after; summary.json, metrics.jsonl, reward_curve.png and the adapter in the run folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpo_lite.apps.arith_model import arithmetic_split, demo_model
from grpo_lite.config import ComputeDtype, GRPOConfig
from grpo_lite.run import RunDir
from grpo_lite.run.atomic import write_text
from grpo_lite.tasks import TASKS, get_task

DEMO_MODELS = ("smollm2-135m-instruct", "tiny")
SIGNAL_FIELDS = ("dynamic_sampling", "max_extra_rounds", "prompt_order", "rest_tied_after", "warm_start",
                 "warm_start_steps")  # fmt: skip


def demo_config(
    model: Path, output_dir: Path, *, seed: int, steps: int, compute_dtype: ComputeDtype = "auto"
) -> GRPOConfig:
    """The tiny model's settings: 8 prompts x 8 completions a step, 8 new tokens, LoRA rank 8, 4-bit,
    on the CPU (its warm start's weights are what the tests' figures were measured on).
    ``compute_dtype="bfloat16"`` runs the GPU's 16-bit path on the CPU."""
    return GRPOConfig(
        model=str(model), output_dir=str(output_dir), load_in_4bit=True, max_new_tokens=8, group_size=8,
        prompts_per_step=8, micro_batch_size=64, learning_rate=2e-3, lora_rank=8, lora_alpha=16,
        max_steps=steps, save_steps=0, seed=seed, device="cpu", compute_dtype=compute_dtype,
    )  # fmt: skip


def smollm2_config(
    model: str | Path,
    output_dir: Path,
    *,
    seed: int,
    steps: int,
    compute_dtype: ComputeDtype = "auto",
    device: str | None = None,
) -> GRPOConfig:
    """SmolLM2's settings: 4 prompts x 8 completions of up to 16 tokens a step, LoRA rank 16 on every
    linear layer, 4-bit NF4, learning rate 5e-4 (high for LoRA, which a 40-step run needs); a task
    changes what it needs (``Task.settings``: the token budget, stop strings). Prompts are packed
    (``pack_prompts``): each prompt goes through the loss's forward/backward once for its 8
    completions, not 8 times (the prompts are as long as the completions or longer). ``device`` None:
    a CUDA GPU when one answers, else the CPU."""
    return GRPOConfig(
        model=str(model), output_dir=str(output_dir), load_in_4bit=True, max_new_tokens=16, group_size=8,
        prompts_per_step=4, micro_batch_size=32, learning_rate=5e-4, lora_rank=16, lora_alpha=32,
        max_steps=steps, save_steps=0, seed=seed, device=device, compute_dtype=compute_dtype, pack_prompts=True,
    )  # fmt: skip


@dataclass(frozen=True)
class DemoRun:
    """What a demo trains with: rows, settings, rewards; ``measures`` judge the held-out rows
    (``eval_reward`` is the first, accuracy)."""

    train_rows: list[dict[str, Any]]
    eval_rows: list[dict[str, Any]]
    cfg: GRPOConfig
    reward_funcs: list[Callable[..., Any]]
    reward_weights: list[float]
    measures: dict[str, Callable[..., Any]]
    task: str = "arithmetic"
    model: str = "smollm2-135m-instruct"  # the demo model's name (DEMO_MODELS)
    naive: bool = False

    @property
    def eval_reward(self) -> Callable[..., Any]:
        return self.measures["accuracy"]


def demo_run(
    model: str,
    output_dir: str | Path,
    *,
    task: str = "arithmetic",
    naive: bool = False,
    seed: int = 0,
    steps: int | None = None,
    **settings: Any,
) -> DemoRun:
    """The demo of ``task`` (one of ``grpo_lite.tasks.TASKS``) on ``model`` (one of DEMO_MODELS), built
    on first use; ``steps`` defaults to the task's (tiny: 80); ``naive`` trains on the task's naive
    reward (reward hacking shown); ``settings`` override GRPOConfig fields (e.g. ``compute_dtype``)."""
    from grpo_lite.policy.offline import resolve_model
    from rewards import answer_tag_format, exact_answer

    if model not in DEMO_MODELS:
        raise ValueError(f"--model must be one of {', '.join(DEMO_MODELS)}; got {model!r}")
    chosen = get_task(task)
    if steps is not None and steps <= 0:
        raise ValueError(f"--steps must be > 0; got {steps}")
    if naive and chosen.naive is None:
        tasks_with = [name for name, t in TASKS.items() if t.naive is not None]
        raise ValueError(
            f"--naive: task {task!r} has no naive reward; tasks with one: {', '.join(tasks_with)}"
        )
    if model == "tiny":
        if task != "arithmetic":
            raise ValueError(
                f"--task {task} needs --model smollm2-135m-instruct (the tiny model knows only sums)"
            )
        train, held = arithmetic_split()
        cfg = demo_config(demo_model(), Path(output_dir), seed=seed, steps=steps or 80)
        return DemoRun(train, held, cfg.replace(**settings), [exact_answer, answer_tag_format], [1.0, 0.1],
                       {"accuracy": exact_answer}, model="tiny")  # fmt: skip
    train, held = chosen.split()
    cfg = smollm2_config(resolve_model(model), Path(output_dir), seed=seed, steps=steps or chosen.steps)
    funcs, weights = chosen.naive if naive and chosen.naive else (chosen.rewards, chosen.weights)
    return DemoRun(train, held, cfg.replace(**(chosen.settings | settings)), list(funcs), list(weights),
                   dict(chosen.measures), task=task, model=model, naive=naive)  # fmt: skip


def run_demo(
    output_dir: str | Path,
    *,
    model: str = "smollm2-135m-instruct",
    task: str = "arithmetic",
    naive: bool = False,
    seed: int = 0,
    steps: int | None = None,
    overwrite: bool = False,
    compute_dtype: ComputeDtype = "auto",
    device: str | None = None,
    eval_every: int = 0,
    eval_max_rows: int = 0,
) -> dict[str, Any]:
    """Train ``model`` on ``task`` with GRPO; measure held-out greedy accuracy (and the task's other
    measures) before and after. ``seconds`` counts everything, the first use's download and
    conversion included. The held-out completions before and after go to ``held_out.jsonl``.
    ``device``: SmolLM2 trains on a CUDA GPU when one answers (None), or where it says; the tiny
    model always on the CPU. ``eval_every``: the held-out rows (the first ``eval_max_rows``, 0: all)
    also measured every that many steps while training, and the best checkpoint kept."""
    start, output_dir = time.perf_counter(), Path(output_dir)
    where = {"device": device} if device and model != "tiny" else {}
    demo = demo_run(
        model,
        output_dir,
        task=task,
        naive=naive,
        seed=seed,
        steps=steps,
        compute_dtype=compute_dtype,
        eval_every=eval_every,
        eval_max_rows=eval_max_rows,
        **where,
    )
    return train_and_measure(demo, output_dir, overwrite=overwrite, start=start)


def train_and_measure(
    demo: DemoRun, output_dir: str | Path, *, overwrite: bool = False, start: float | None = None
) -> dict[str, Any]:
    """Train a demo run (``demo_run``'s, or one changed from it: an ablation) and measure its held-out
    rows before and after; ``summary.json`` and ``held_out.jsonl`` in ``output_dir``."""
    from grpo_lite.evaluate import held_out_scores
    from grpo_lite.trainer import GRPOTrainer
    from grpo_lite.warm_start import warm_start

    start, output_dir = start or time.perf_counter(), Path(output_dir)
    cfg, held = demo.cfg, demo.eval_rows
    trainer = GRPOTrainer(
        cfg, demo.train_rows, demo.reward_funcs, reward_weights=demo.reward_weights, overwrite=overwrite,
        eval_dataset=held, eval_measures=demo.measures,
    )  # fmt: skip

    def measure() -> tuple[dict[str, float], list[str]]:
        return held_out_scores(trainer.model, trainer.tokenizer, held, demo.measures,
                               max_new_tokens=cfg.max_new_tokens, stop_strings=cfg.stop_strings)  # fmt: skip

    before, texts_before = measure()
    print(f"held-out greedy before training: {_says(before)} of {len(held)} problems", flush=True)
    after_warm_start = None
    if cfg.warm_start != "off":  # measured apart, so that the table says what GRPO added to it
        trainer.warm_started = warm_start(trainer)
        after_warm_start = measure()[0]
        print(f"held-out greedy after the warm start: {_says(after_warm_start)}", flush=True)
    history = trainer.train()
    after, texts_after = measure()
    print(f"held-out greedy after training:  {_says(after)}", flush=True)
    summary = _summary(demo, trainer, history, (before, after_warm_start, after), output_dir, start)
    lines = [json.dumps({"prompt": row["prompt"], "before": b, "after": a}) + "\n"
             for row, b, a in zip(held, texts_before, texts_after, strict=True)]  # fmt: skip
    write_text(output_dir / "held_out.jsonl", "".join(lines))  # whole or absent (run/atomic.py)
    write_text(output_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _summary(demo: DemoRun, trainer: Any, history: list[dict[str, Any]], scores: tuple[Any, Any, Any],
             output_dir: Path, start: float) -> dict[str, Any]:  # fmt: skip
    """summary.json: what ran, how it sought signal, and the held-out scores before, after the warm
    start and after training."""
    from grpo_lite.policy.offline import WEIGHTS_NOTE

    before, after_warm_start, after = scores
    model, task, naive, seed, cfg, held = (
        demo.model,
        demo.task,
        demo.naive,
        demo.cfg.seed,
        demo.cfg,
        demo.eval_rows,
    )
    return {
        "model": model,
        "task": task,
        "naive": naive,
        "rewards": {name: w for name, w in zip(trainer.rewards.names, demo.reward_weights, strict=True)},
        "weights": WEIGHTS_NOTE if model == "smollm2-135m-instruct" else "built by grpo_lite.apps.demo",
        "accuracy_before": before["accuracy"],
        "accuracy_after": after["accuracy"],
        "before": before,
        "after_warm_start": after_warm_start,
        "after": after,
        "held_out_problems": len(held),
        "steps": len(history),
        "seed": seed,
        "seconds": round(time.perf_counter() - start, 1),
        "final_reward": history[-1]["reward"] if history else None,
        "device": str(trainer.device),
        "compute_dtype": history[-1]["compute_dtype"] if history else None,
        "signal": {k: getattr(cfg, k) for k in SIGNAL_FIELDS},  # how the run sought signal (sparse rewards)
        "extra_rounds": sum(m.get("dynamic/extra_rounds", 0) for m in history),
        "steps_without_update": sum(m.get("update_skipped", 0) for m in history),
        "warm_start": {k: v for k, v in (trainer.warm_started or {}).items() if k != "losses"} or None,
        "held_out_curve": [
            {k: v for k, v in m.items() if k == "step" or k.startswith("eval/")}
            for m in history
            if "eval/seconds" in m
        ],  # fmt: skip
        "best": RunDir(output_dir).best(),
    }


def _says(shares: dict[str, float]) -> str:
    return ", ".join(f"{name} {100 * v:.0f}%" for name, v in shares.items())
