"""The command line's commands (``cmd_*``), each a thin call into the package, and what they share: the
options made from GRPOConfig's fields, the rewards named on the command line, the datasets."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
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
    from grpo_lite.apps.gsm8k import load_gsm8k, to_prompt_rows
    from grpo_lite.data import load_rows

    if name == "gsm8k":
        return load_gsm8k(split, limit=limit)
    rows = load_rows(name)
    rows = rows[:limit] if limit else rows
    if rows and "question" in rows[0] and "prompt" not in rows[0]:
        return to_prompt_rows(rows)
    return rows


# ---- commands ------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from grpo_lite.apps.demo import run_demo

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
        from grpo_lite.apps.demo import demo_run

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
    from grpo_lite.apps.scale_out import scale_out

    cfg = GRPOConfig.load(args.config)
    funcs, weights = parse_rewards(args.reward or DEFAULT_REWARDS)
    out = scale_out(
        cfg, args.output, dataset=args.dataset, rewards=funcs, reward_weights=weights,
        num_gpus=args.num_gpus, deepspeed=args.deepspeed, vllm=args.vllm,
    )  # fmt: skip
    print(f"wrote {out}: see {out / 'README.md'} for the accelerate launch command")
    return 0
