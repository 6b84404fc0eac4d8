"""grpo-lite vs TRL's GRPOTrainer at equal settings, side by side in one run.

    python benchmarks/compare_trl.py [--model bench|smollm2-135m-instruct] [--quick] [--json PATH]
                                     [--reps N] [--steps N] [--learning-steps N] [--learning-seeds N]

Both trainers get the same tiny local model and tokenizer, the same prompts, the same reward
function, group size, lengths, sampling settings, LoRA config (rank 16 on every linear layer of a
4-bit NF4 base), optimizer (AdamW), learning rate and number of steps; TRL's settings are produced
by the same mapping ``python -m grpo_lite scale-out`` uses (``grpo_lite.apps.scale_out.trl_args``). Each
run is a fresh process, alternating A B A B, so neither inherits the other's warm caches.

Why these settings: a Llama of 9M parameters with a 32,000-token vocabulary, 8 prompts x 8
completions x 64 new tokens. The vocabulary makes the output head (and so log-probs and sampling)
the largest part of the work, as it is for the 0.5B-1.5B models users train (Qwen2.5: 152k); 4,096
generated tokens per step make a step take seconds, so per-step work, not fixed start-up cost,
dominates the timing. The model is random-init, so nearly every completion runs to the full 64
tokens: the longest, most expensive case for both.

The reward is dense (the share of ``<unused_N>`` tokens with an even N): every group has unequal
rewards, so grpo-lite's skipping of zero-advantage completions never applies. It is the worst case
for grpo-lite on purpose; with a pass/fail reward (math) many groups tie and grpo-lite skips them.

Equal learning is checked apart, where learning shows in a few steps: the offline demo's task (the
tiny arithmetic model, its settings, the ``exact_answer`` reward, 30 steps) trained by each trainer
for each seed, then held-out greedy accuracy of the base (adapters off) and of the trained policy.
One seed is noisy (about +-10 points); the full run averages 3. Equal time too: each seed's TRL run
is also measured at the first step that ends as far into its training as grpo-lite's whole run took
(its evaluation off the clock), so both columns can be read at equal steps and at equal wall time.

``--model smollm2-135m-instruct``: the same comparison on the real SmolLM2-135M-Instruct (Q4_1
weights from the package index, dequantized; 4-bit NF4 + LoRA rank 16 as in the demo), timed and
checked on the demo's own task and settings: one-digit sums and products, 4 prompts x 8 completions
of up to 16 tokens, ``last_number_accuracy``, learning rate 5e-4; the learning check is that demo.

Measured per run: wall-clock time between consecutive optimizer-step ends (everything a user waits
for: generation, scoring, log-probs, backward, optimizer, logging), the first ``WARMUP`` steps left
out, split into generation, no-grad log-prob passes (reference / old policy), the optimizer step
and the rest (policy forward + backward, scoring, logging); generated tokens per second of
generation; peak memory (CUDA max allocated on a GPU, else the process's peak RSS, imports
included: what the user's process takes); the mean reward of the first and of the last steps. For
TRL the parts are timed by wrapping its own generation and log-prob methods and by its optimizer
callbacks; nothing it computes changes. The JSON holds every run's raw numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_report import SMOLLM2, learned_summary, summarize, table  # noqa: E402
from runners import WARMUP, machine, peak_memory_mb, run_grpo_lite, run_trl, versions  # noqa: E402

LEARNING_STEPS = 30  # steps of the equal-learning check (the offline demo's task)
VOCAB = 32_000
SETTINGS = dict(  # the GRPOConfig both trainers run with (TRL's via scale_out.trl_args)
    prompts_per_step=8,
    group_size=8,
    micro_batch_size=16,
    max_new_tokens=64,
    max_prompt_tokens=64,
    temperature=1.0,
    top_p=1.0,
    learning_rate=3e-3,  # high for LoRA, so that a few steps move the reward
    lora_rank=16,
    lora_alpha=32,
    beta=0.0,
    loss_type="grpo",
    load_in_4bit=True,
    gradient_checkpointing=True,
    save_steps=0,
    seed=0,
    device="cpu",
)
EVEN = re.compile(r"<unused_(\d+)>")


def even_unused_share(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
    """Dense benchmark reward: the share of ``<unused_N>`` tokens in a completion whose N is even."""
    out = []
    for text in completions:
        ns = [int(n) for n in EVEN.findall(text)]
        out.append(sum(n % 2 == 0 for n in ns) / len(ns) if ns else 0.0)
    return out


def bench_rows(n: int = 64) -> list[dict[str, str]]:
    """Plain-text prompts of 28-38 characters (one token per character)."""
    return [{"prompt": f"Task {i:03d}: write {'even ' * (i % 3 + 1)}tokens."} for i in range(n)]


def build_bench_model(path: Path) -> Path:
    """The benchmark's Llama: hidden 128, 4 layers, 32,000-token vocabulary (9M parameters)."""
    from grpo_lite.policy.tiny import build_char_tokenizer, build_tiny_model

    if (path / "config.json").exists():
        return path
    extra = VOCAB - len(build_char_tokenizer())
    return build_tiny_model(
        path, hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512, extra_tokens=extra
    )


# grpo-lite's rollouts before its lean decode loop and merged rollout weights (on the CPU compute was
# float32 then as now): transformers' generate on the 4-bit adapter model. Run with --before.
BEFORE = {"sampler": "transformers", "rollout_weights": "adapter"}


def speed_task(model_name: str) -> tuple[dict[str, Any], list[dict[str, Any]], Any]:
    """(settings, rows, reward) of the timed runs: the synthetic benchmark's, or the SmolLM2 demo's."""
    if model_name != SMOLLM2:
        return SETTINGS, bench_rows(), even_unused_share
    from grpo_lite.apps.demo import demo_run

    demo = demo_run(SMOLLM2, "unused", steps=1)
    skip = ("model", "output_dir", "max_steps")
    return (
        {f: getattr(demo.cfg, f) for f in demo.cfg.to_dict() if f not in skip},
        demo.train_rows,
        demo.eval_reward,
    )


def worker(impl: str, model: str, model_name: str, steps: int, out_json: Path) -> None:
    run = run_trl if impl == "trl" else run_grpo_lite
    settings, rows, reward = speed_task(model_name)
    settings = settings | (BEFORE if impl == "grpo-lite-before" else {})
    with tempfile.TemporaryDirectory() as tmp:
        result = run(model, settings, rows, reward, steps, Path(tmp) / "run")
    result["peak_mem_mb"] = peak_memory_mb()
    out_json.write_text(json.dumps(result))


def learning_worker(
    impl: str, model_name: str, steps: int, seed: int, out_json: Path, at_seconds: float | None = None
) -> None:
    """Equal learning: an offline demo's task (the tiny arithmetic model's for the synthetic benchmark,
    SmolLM2's for SmolLM2), its settings and reward, trained by one trainer; held-out greedy accuracy
    of the base and of the trained policy. ``at_seconds`` (TRL): the accuracy also at the first step
    that far into its training (equal wall time: grpo-lite's training time for the same seed)."""
    from grpo_lite.apps.demo import demo_run
    from grpo_lite.evaluate import accuracy

    demo = demo_run(SMOLLM2 if model_name == SMOLLM2 else "tiny", "unused", seed=seed, steps=steps)
    cfg, held_out, reward = demo.cfg, demo.eval_rows, demo.eval_reward
    skip = ("model", "output_dir", "max_steps")
    settings = {f: getattr(cfg, f) for f in cfg.to_dict() if f not in skip}

    def held_out_accuracy(model: Any, tokenizer: Any) -> dict[str, float]:
        kw = dict(max_new_tokens=cfg.max_new_tokens)
        return {
            "base": accuracy(model, tokenizer, held_out, reward, base=True, **kw),
            "trained": accuracy(model, tokenizer, held_out, reward, **kw),
        }

    with tempfile.TemporaryDirectory() as tmp:
        args = (cfg.model, settings, demo.train_rows, reward, steps, Path(tmp) / "run", held_out_accuracy)
        result = run_grpo_lite(*args) if impl == "grpo-lite" else run_trl(*args, at_seconds=at_seconds)
    out_json.write_text(json.dumps(result))


# ---- the comparison --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="2 runs each of 4 steps (under 10 min on 2 CPU cores)"
    )
    p.add_argument("--reps", type=int, default=None, help="runs per trainer (default 3, quick 2)")
    p.add_argument("--steps", type=int, default=None, help="steps per run (default 8, quick 4)")
    p.add_argument(
        "--learning-steps",
        type=int,
        default=LEARNING_STEPS,
        help=f"steps of the equal-learning check on the demo task (default {LEARNING_STEPS}; 0 skips it)",
    )
    p.add_argument(
        "--learning-seeds",
        type=int,
        default=None,
        help="seeds of the learning check, one run each per trainer (default 3, quick 1)",
    )
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--model", default="bench", choices=["bench", SMOLLM2],
                   help="bench: the synthetic 9M-parameter Llama with a 32k vocabulary; smollm2-135m-instruct: "
                   "the real model on its demo's task (default: %(default)s)")  # fmt: skip
    p.add_argument("--model-dir", type=Path, default=None, help="where the benchmark model is built/cached")
    p.add_argument("--before", action="store_true",
                   help="also time grpo-lite's earlier rollout path (generate on the adapter model)")  # fmt: skip
    p.add_argument("--worker", choices=["grpo-lite", "trl", "grpo-lite-before"], help=argparse.SUPPRESS)
    p.add_argument("--task", choices=["speed", "learning"], default="speed", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--at-seconds", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--model-path", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)  # fmt: skip
    reps = a.reps or (2 if a.quick else 3)
    steps = a.steps or (4 if a.quick else 8)
    if a.worker and a.task == "learning":
        learning_worker(a.worker, a.model, a.learning_steps, a.seed, a.out, a.at_seconds)
        return {}
    if a.worker:
        worker(a.worker, a.model_path, a.model, steps, a.out)
        return {}
    if steps <= WARMUP + 1:
        p.error(f"--steps must be > {WARMUP + 1} (the first {WARMUP} step(s) are warm-up)")

    from grpo_lite.apps.demo import demo_model
    from grpo_lite.policy.offline import cache_dir, resolve_model

    if a.model == SMOLLM2:
        model = Path(resolve_model(SMOLLM2))  # fetched and converted once, outside every timing
    else:
        model = build_bench_model(a.model_dir or cache_dir() / "bench-llama-32k-v1")
    impls = ("grpo-lite", "trl", "grpo-lite-before") if a.before else ("grpo-lite", "trl")
    runs: dict[str, list[dict[str, Any]]] = {impl: [] for impl in impls}
    for rep in range(reps):
        for impl in impls:  # A B A B: drift in the machine hits both alike
            args = ["--model", a.model, "--model-path", str(model), "--steps", str(steps)]
            runs[impl].append(_spawn(impl, args, f"run {rep + 1}/{reps}"))
    learning: dict[str, list[dict[str, Any]]] = {"grpo-lite": [], "trl": []}
    seeds = a.learning_seeds or (1 if a.quick else 3)
    if a.learning_steps > 0:
        demo_model() if a.model == "bench" else resolve_model(a.model)  # built once, outside both timings
        for seed in range(seeds):
            args = ["--task", "learning", "--model", a.model, "--learning-steps", str(a.learning_steps),
                    "--seed", str(seed)]  # fmt: skip
            learning["grpo-lite"].append(_spawn("grpo-lite", args, f"learning check, seed {seed}"))
            ends = learning["grpo-lite"][-1]["step_ends"]  # TRL evaluated also at grpo-lite's training time
            at = ["--at-seconds", str(ends[-1] - ends[0])]
            learning["trl"].append(_spawn("trl", args + at, f"learning check, seed {seed}"))
    result = collect(runs, learning, steps=steps, reps=reps, seeds=seeds, learning_steps=a.learning_steps,
                     model=a.model)  # fmt: skip
    print(table(result))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


def collect(
    runs: dict[str, list[dict[str, Any]]],
    learning: dict[str, list[dict[str, Any]]],
    *,
    steps: int,
    reps: int,
    seeds: int,
    learning_steps: int,
    model: str = "bench",
) -> dict[str, Any]:
    """The result: each trainer's summary, the ratios, and every run's raw values."""
    last = max(1, steps // 2)
    ours, trl = summarize(runs["grpo-lite"], last), summarize(runs["trl"], last)
    settings = SETTINGS | {"vocab": VOCAB} if model == "bench" else speed_task(model)[0] | {"vocab": 49152}
    result = {
        "machine": machine(),
        "versions": versions(),
        "model": model,
        "settings": settings | {"steps": steps, "reps": reps, "warmup_steps_excluded": WARMUP},
        "grpo_lite": ours | learned_summary(learning["grpo-lite"]),
        "trl": trl | learned_summary(learning["trl"]),
        "step_time_ratio": ours["step_seconds_median"] / trl["step_seconds_median"],
        "peak_mem_ratio": ours["peak_mem_mb"] / trl["peak_mem_mb"],
        "last_steps_averaged": last,
        "learning_steps": learning_steps,
        "learning_seeds": seeds if learning_steps > 0 else 0,
        "runs": runs,
        "learning_runs": learning,
    }  # fmt: skip
    if "grpo-lite-before" in runs:
        before = summarize(runs["grpo-lite-before"], last)
        result["grpo_lite_before"] = before
        result["before_ratios"] = {
            "step_time": ours["step_seconds_median"] / before["step_seconds_median"],
            "gen_tokens_per_sec": ours["gen_tokens_per_sec"] / before["gen_tokens_per_sec"],
        }
    return result


def _spawn(impl: str, args: list[str], label: str) -> dict[str, Any]:
    """One worker in a fresh process; its JSON result."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, "--worker", impl, *args, "--out", str(out)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"{impl} {label} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        print(f"  {impl:9s} {label}: {time.perf_counter() - t0:5.1f} s", flush=True)
        return dict(json.loads(out.read_text()))


if __name__ == "__main__":
    main()
