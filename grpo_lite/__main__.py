"""Command line: ``python -m grpo_lite demo``."""

from __future__ import annotations

import argparse
import json
import sys


def _demo(args: argparse.Namespace) -> int:
    from grpo_lite.demo import run_demo

    summary = run_demo(args.output_dir, seed=args.seed, steps=args.steps, overwrite=args.overwrite)
    print(json.dumps(summary, indent=2))
    gain = 100 * (summary["accuracy_after"] - summary["accuracy_before"])
    print(
        f"held-out greedy accuracy: {100 * summary['accuracy_before']:.0f}% -> "
        f"{100 * summary['accuracy_after']:.0f}% ({gain:+.0f} points) in {summary['seconds']:.0f} s"
    )
    print(f"run directory: {args.output_dir} (summary.json, metrics.jsonl, reward_curve.png, adapter/)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m grpo_lite", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="offline CPU demo: GRPO on a tiny arithmetic model, accuracy before/after"
    )
    demo.add_argument("--output-dir", default="runs/demo", help="run directory (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="training seed (default: %(default)s)")
    demo.add_argument("--steps", type=int, default=80, help="GRPO steps (default: %(default)s)")
    demo.add_argument("--overwrite", action="store_true", help="replace a previous run in --output-dir")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
