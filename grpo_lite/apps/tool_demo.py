"""Tools, shown on a real model: SmolLM2-135M-Instruct learns to let Python multiply for it.

The task: "What is 514 * 902?" (three-digit numbers). SmolLM2-135M cannot multiply such numbers in
its head (none right of the 48 held-out problems, measured without tools); with the ``python`` tool
(the plain format: a fenced python block runs in the sandbox and its output comes back in a fenced
output block) it can, if it writes the code and then states the number. The prompt shows one worked
example of that; the base model follows it about a third of the time. Reward: the last number of its
final turn (after the tool's answer) equals the product; nothing pays for calling the tool itself.

``run_tool_demo`` trains with GRPO through the normal engine (4-bit NF4 + LoRA, tools on) and
measures, on 48 held-out problems, accuracy and the share of answers that call the tool, before and
after (sampled at the training temperature, 2 per problem, and near-greedy at temperature 0.001; tools
on), plus the base model's near-greedy accuracy without tools.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from grpo_lite.config import GRPOConfig

SPLIT_SEED = 4321
SAMPLES = 2  # sampled answers per held-out problem (at the training temperature)
EXAMPLE = (
    "Use Python to compute. Example:\nQuestion: What is 12 * 34?\n```python\nprint(12 * 34)\n```\n"
    "```output\n408\n```\nThe answer is 408.\n\nQuestion: "
)


def multiplication_split(
    train: int = 192, held_out: int = 48, *, chat: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train rows, held-out rows): "What is a * b?" with a, b in 100-999, the product in ``answer``;
    plain-text prompts after the worked example, or (``chat=True``, for a model whose chat template
    takes tools, such as Qwen2.5) a user message asking it to use the python tool."""
    rng = random.Random(SPLIT_SEED)
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < train + held_out:
        pairs.add((rng.randint(100, 999), rng.randint(100, 999)))

    def prompt(a: int, b: int) -> Any:
        if chat:
            return [
                {"role": "user", "content": f"What is {a} * {b}? Use the python tool, then give the number."}
            ]
        return f"{EXAMPLE}What is {a} * {b}?\n"

    rows = [{"prompt": prompt(a, b), "answer": str(a * b)} for a, b in sorted(pairs)]
    rng.shuffle(rows)
    return rows[held_out:], rows[:held_out]


def tool_demo_config(
    model: str | Path, output_dir: str | Path, *, seed: int, steps: int, **settings: Any
) -> GRPOConfig:
    """4 prompts x 8 completions of up to 64 tokens (the tool's answers included), at most 2 python
    calls each, LoRA rank 16, 4-bit NF4, learning rate 5e-4; a completion ends at "\\nQuestion" (the
    model starting a new example). Prompts are packed (``pack_prompts``: each prompt, a worked example
    and the question, is longer than its completions; the loss's forward/backward took half the time
    on SmolLM2). ``device`` None: a CUDA GPU when one answers, else the CPU."""
    return GRPOConfig(
        model=str(model), output_dir=str(output_dir), load_in_4bit=True, max_new_tokens=64, group_size=8,
        prompts_per_step=4, micro_batch_size=32, learning_rate=5e-4, lora_rank=16, lora_alpha=32,
        max_steps=steps, save_steps=0, seed=seed, device=None, tools=("python",), tool_format="plain",
        max_tool_calls=2, stop_strings=("\nQuestion",), max_prompt_tokens=256, pack_prompts=True,
    ).replace(**settings)  # fmt: skip


def run_tool_demo(
    output_dir: str | Path, *, seed: int = 0, steps: int = 30, overwrite: bool = False, **settings: Any
) -> dict[str, Any]:
    """Train SmolLM2 with the python tool; held-out accuracy and tool use before and after."""
    from grpo_lite.evaluate import tool_accuracy
    from grpo_lite.policy.offline import SMOLLM2, WEIGHTS_NOTE, resolve_model
    from grpo_lite.trainer import GRPOTrainer
    from rewards import last_number_accuracy

    start, output_dir = time.perf_counter(), Path(output_dir)
    train, held = multiplication_split()
    cfg = tool_demo_config(resolve_model(SMOLLM2), output_dir, seed=seed, steps=steps, **settings)
    trainer = GRPOTrainer(cfg, train, [last_number_accuracy], overwrite=overwrite)

    def measure(tools: Any, **how: Any) -> dict[str, float]:
        return tool_accuracy(trainer.model, trainer.tokenizer, held, last_number_accuracy, tools=tools,
                             max_new_tokens=cfg.max_new_tokens, stop_strings=cfg.stop_strings, **how)  # fmt: skip

    def both() -> dict[str, float]:  # sampled as in training (2 per problem), and near-greedy
        sampled, greedy = (
            measure(trainer.tools, temperature=cfg.temperature, samples=SAMPLES),
            measure(trainer.tools),
        )
        return {"sampled_accuracy": sampled["accuracy"], "sampled_tool_use": sampled["tool_use"],
                "greedy_accuracy": greedy["accuracy"], "greedy_tool_use": greedy["tool_use"]}  # fmt: skip

    without_tools = measure(None)["accuracy"]
    before = both()
    print(
        f"held-out before training: {_says(before)}; {100 * without_tools:.0f}% right without tools",
        flush=True,
    )
    history = trainer.train()
    after = both()
    print(f"held-out after training:  {_says(after)}", flush=True)
    summary = {
        "model": SMOLLM2, "weights": WEIGHTS_NOTE, "seed": seed, "steps": len(history),
        "held_out_problems": len(held), "samples_per_problem": SAMPLES, "greedy_accuracy_without_tools": without_tools,
        "before": before, "after": after, "seconds": round(time.perf_counter() - start, 1),
    }  # fmt: skip
    from grpo_lite.run.atomic import write_text

    write_text(output_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _says(m: dict[str, float]) -> str:
    return (f"sampled {100 * m['sampled_accuracy']:.0f}% right, {100 * m['sampled_tool_use']:.0f}% call the tool; "
            f"greedy {100 * m['greedy_accuracy']:.0f}% right, {100 * m['greedy_tool_use']:.0f}% call it")  # fmt: skip
