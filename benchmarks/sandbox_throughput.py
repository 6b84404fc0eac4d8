"""Sandboxed code-reward runs per second: a trivial passing solution with three asserts.

    python benchmarks/sandbox_throughput.py [--runs N] [--workers W] [--before COMMIT] [--json PATH]

Each isolation this machine offers (bubblewrap, grpo-lite's own namespaces, none) runs N solutions,
W at a time (threads, as ``code_unit_tests`` does); ``--before COMMIT`` also times the sandbox of that
commit (its ``rewards/`` taken out with ``git archive`` and timed by this program in a process of its
own, ``--root``) in the same run, and the ratios are against it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CODE = "def add(a, b):\n    return a + b\n"
TESTS = ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(-1, 5) == 4"]


def runs_per_second(run_one: Any, runs: int, workers: int) -> float:
    """Runs per second of ``run_one()`` over ``runs`` calls, ``workers`` at a time (after 8 warm-up runs)."""
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda _: run_one(), range(8)))
        start = time.perf_counter()
        results = list(pool.map(lambda _: run_one(), range(runs)))
        seconds = time.perf_counter() - start
    failed = [r for r in results if r.passed != len(TESTS)]
    if failed:
        raise RuntimeError(
            f"{len(failed)} runs did not pass every assert (the timing would not be of honest runs): {failed[0]}"
        )
    return runs / seconds


def rate_at(commit: str, runs: int, workers: int) -> float:
    """Runs per second of the sandbox as it was at ``commit`` (default limits and isolation), timed by
    this program run on that commit's ``rewards/`` in a process of its own."""
    with tempfile.TemporaryDirectory() as root:
        archive = subprocess.run(
            ["git", "archive", commit, "rewards"], cwd=ROOT, check=True, capture_output=True
        )
        subprocess.run(["tar", "-x", "-C", root], input=archive.stdout, check=True)
        out = Path(root) / "rate.json"
        subprocess.run([sys.executable, __file__, "--root", root, "--runs", str(runs), "--workers", str(workers),
                        "--isolation", "auto", "--json", str(out)], check=True)  # fmt: skip
        return json.loads(out.read_text())["runs_per_second"]["auto"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--before", default=None, help="a commit whose sandbox is timed too")
    parser.add_argument("--json", default=None)
    parser.add_argument("--root", default=str(ROOT), help="the folder whose rewards/ is timed")
    parser.add_argument("--isolation", action="append", choices=["auto", "bubblewrap", "unshare", "none"])
    args = parser.parse_args(argv)
    sys.path.insert(0, args.root)
    from rewards import sandbox

    rates: dict[str, float] = {}
    if args.before:
        rates["before"] = rate_at(args.before, args.runs, args.workers)
    for isolation in args.isolation or ("bubblewrap", "unshare", "none"):
        try:
            sandbox.capabilities(isolation)
            limits = sandbox.Limits(isolation=isolation)
            sandbox._plan_for(limits)  # the one warning of isolation="none" before timing, not during
        except sandbox.SandboxUnavailable as error:
            print(f"{isolation}: not available here ({error})")
            continue
        rates[isolation] = runs_per_second(
            lambda limits=limits: sandbox.run_tests(CODE, TESTS, limits), args.runs, args.workers
        )
    result = {
        "runs": args.runs,
        "workers": args.workers,
        "before": args.before,
        "runs_per_second": {k: round(v, 1) for k, v in rates.items()},
        "ratio_to_before": {k: round(v / rates["before"], 2) for k, v in rates.items()}
        if "before" in rates
        else {},
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "user": "root" if os.geteuid() == 0 else "non-root",
        "capabilities": str(sandbox.capabilities()),
    }
    for name, rate in rates.items():
        ratio = f"  ({rate / rates['before']:.2f}x before)" if "before" in rates else ""
        print(f"{name:>10}: {rate:6.1f} runs/s with {args.workers} workers{ratio}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
