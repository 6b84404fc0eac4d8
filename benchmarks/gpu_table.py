"""The Markdown table ``gpu.py`` prints (and ``benchmarks/RESULTS.md`` holds) from its JSON."""

from __future__ import annotations

from typing import Any


def table(r: dict[str, Any], variants: list[str]) -> str:
    """``r``: gpu.py's result; ``variants``: the grpo-lite variants in the order of the rows."""
    lines = [f"machine: {r['machine']}", "",
             "| model (weights) | tokens | run | s/step | generate | reference | policy | optimizer | tokens/s | peak VRAM GB | planned GB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in r["rows"]:
        for impl in [*variants, "trl"]:
            m = row.get(impl)
            if m is None:
                continue
            name = impl if impl == "trl" else f"grpo-lite {impl}"
            if impl == "compiled" and not m.get("compiled_rollouts", True):
                name += " (compiled step failed: eager, see the warning)"
            head = f"| {row['model']} ({row['source']}) | {row['max_new_tokens']} | {name} "
            if "error" in m:
                lines.append(head + "| failed | | | | | | | |")
                continue
            planned = {
                "merged": row.get("planned_peak_gb_merged"),
                "compiled": row.get("planned_peak_gb_merged"),
                "before": None,
                "trl": None,
            }.get(impl, row["planned_peak_gb"])
            parts = m["parts_median"]
            lines.append(
                head
                + f"| {m['step_seconds_median']:.2f} | {parts['generate']:.2f} | {parts['reference']:.2f} | "
                f"{parts['policy']:.2f} | {parts['optimizer']:.2f} | {m['gen_tokens_per_sec']:.0f} | "
                f"{m['peak_mem_mb'] / 1024:.2f} | {'-' if planned is None else f'{planned:.2f}'} |"
            )
    for roll in r.get("rollouts", []):
        lines += ["", f"rollouts alone, {roll['model']} ({roll['source']}):"]
        if "error" in roll:
            lines.append("failed: " + roll["error"][-500:])
            continue
        lines += [f"{roll['prompts']} prompts x G = {roll['group_size']} x {roll['max_new_tokens']} new tokens",
                  "| sampling road | tokens/s | seconds |", "|---|---|---|"]  # fmt: skip
        for name, m in roll.items():
            if isinstance(m, dict):
                lines.append(f"| {name} | {m['tokens_per_sec']:.0f} | {m['seconds']:.2f} |")
    return "\n".join(lines)
