"""What the dashboard shows, as pure functions: HTML strings and a matplotlib figure."""

from __future__ import annotations

import html
import math
from typing import Any

from grpo_lite.alarms import Alarm

TABLE = "<table style='border-collapse:collapse;font-size:12px'>{}</table>"
CELL = "<td style='border:1px solid #ccc;padding:3px;vertical-align:top;white-space:pre-wrap;max-width:420px'>{}</td>"


def prompt_text(prompt: Any) -> str:
    """A prompt as text: itself, or the content of its last user message."""
    if isinstance(prompt, list):
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return str(users[-1] if users else prompt)
    return str(prompt)


def exchange_text(c: Any) -> str:
    """A completion as text; an exchange with tools turn by turn, each tool call's answer marked."""
    if not (isinstance(c, list) and c):
        return str(c)
    if not any(m.get("role") == "tool" for m in c):
        return str(c[-1].get("content", ""))
    parts = []
    for m in c:
        if m.get("role") == "tool":
            status = "FAILED" if m.get("failed") else "ok"
            parts.append(f"▶ tool {m.get('name')} [{status}, {m.get('seconds', 0):.2f} s]\n"
                         f"{m.get('content', '')}\n◀ end of tool answer")  # fmt: skip
        else:
            parts.append(str(m.get("content", "")))
    return "\n".join(parts)


def _row(*cells: Any) -> str:
    return "<tr>" + "".join(CELL.format(html.escape(str(c))) for c in cells) + "</tr>"


def completions_html(latest: dict[str, Any], *, prompts: int = 3) -> str:
    """For a few prompts of the latest step: the highest- and lowest-reward completion side by side,
    with each reward function's score and the advantage."""
    n = len(latest["completions"])
    group = latest.get("group_size") or n
    names = list(latest["per_function"])
    head = "<tr><th>prompt</th><th>best completion</th><th>worst completion</th></tr>"
    rows = []
    for start in range(0, min(n, prompts * group), group):
        idx = range(start, start + group)
        score = [latest["reward"][i] if not math.isnan(latest["reward"][i]) else -math.inf for i in idx]
        best, worst = start + score.index(max(score)), start + score.index(min(score))

        def cell(i: int) -> str:
            parts = ", ".join(f"{k}={latest['per_function'][k][i]}" for k in names)
            return f"{exchange_text(latest['completions'][i])}\n— reward {latest['reward'][i]:.3g} ({parts}), advantage {latest['advantage'][i]:+.3g}"

        rows.append(_row(prompt_text(latest["prompts"][start]), cell(best), cell(worst)))
    return f"<b>step {latest.get('step', '?')}</b>" + TABLE.format(head + "".join(rows))


def alarms_html(alarms: list[Alarm]) -> str:
    if not alarms:
        return "<span style='color:#080'>no alarms</span>"
    items = [
        f"<li><b>step {a.step}: {html.escape(a.message)}</b> — {html.escape(a.suggestion)}</li>"
        for a in alarms[-20:]
    ]
    return "<ul>" + "".join(reversed(items)) + "</ul>"


def try_result_html(result: Any) -> str:
    color = "#080" if result.ok else "#b00"
    out = f"<pre style='color:{color}'>{html.escape(result.message)}</pre>"
    if result.new_scores:
        head = "<tr><th>#</th><th>edited</th><th>current</th></tr>"
        old = result.old_scores or [None] * len(result.new_scores)
        out += TABLE.format(
            head
            + "".join(_row(i, n, o) for i, (n, o) in enumerate(zip(result.new_scores, old, strict=False)))
        )
    return out


def compare_html(rows: list[tuple[str, str, str]]) -> str:
    head = "<tr><th>prompt</th><th>base (adapters off)</th><th>trained</th></tr>"
    return TABLE.format(head + "".join(_row(*r) for r in rows))


def curves_png(history: list[dict[str, Any]], eval_points: list[Any], *, parent: Any = None) -> bytes:
    """:func:`curves_figure` as PNG bytes (the figure closed after)."""
    import io

    import matplotlib.pyplot as plt

    fig = curves_figure(history, eval_points, parent=parent)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def curves_figure(
    history: list[dict[str, Any]],
    eval_points: list[tuple[int, float]],
    parent: list[dict[str, Any]] | None = None,
) -> Any:
    """Reward (total, per function, held-out accuracy), KL, length and truncation, entropy.
    Steps where settings or reward code changed are marked with dotted lines. ``parent``: the run a
    branch came from, its total reward, KL, length and entropy drawn dimmed beside the branch's."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    steps = [m["step"] for m in history]

    def series(key: str) -> list[float]:
        return [float(m[key]) if isinstance(m.get(key), (int, float)) else math.nan for m in history]

    difficulty = {k.split("/")[1]: v for k, v in (history[-1] if history else {}).items()
                  if k.startswith("difficulty/") and k != "difficulty/resting"}  # fmt: skip
    fig, axes = plt.subplots(1, 5 if difficulty else 4, figsize=(19 if difficulty else 15, 3.2))
    if parent:
        parent_steps = [m["step"] for m in parent]
        for a, key in zip(axes[:4], ("reward", "kl", "completion_len_mean", "entropy"), strict=True):
            values = [float(m[key]) if isinstance(m.get(key), (int, float)) else math.nan for m in parent]
            a.plot(parent_steps, values, color="grey", alpha=0.35, linewidth=2, label="parent")
    ax = axes[0]
    ax.plot(steps, series("reward"), label="total", linewidth=2)
    for key in sorted({k for m in history for k in m if k.startswith("rewards/") and k.endswith("/mean")}):
        ax.plot(steps, series(key), label=key.split("/")[1], alpha=0.7)
    if eval_points:
        ax.plot(*zip(*eval_points, strict=True), "k^--", label="held-out accuracy")
    if any("tools/calls_per_completion" in m for m in history):  # a run with tools: how much they are used
        ax.plot(steps, series("tools/calls_per_completion"), "g:", label="tool calls / completion")
        ax.plot(steps, series("tools/failure_rate"), "r:", alpha=0.6, label="tool failure rate")
    ax.set_title("reward")
    ax.legend(fontsize=7)
    kl = series("kl")
    axes[1].plot(steps, kl)
    no_kl = all(v == 0 for v in kl)
    axes[1].set_title("KL to reference" + (" (beta = 0: not computed)" if no_kl else ""))
    axes[2].plot(steps, series("completion_len_mean"), label="mean length")
    twin = axes[2].twinx()
    twin.plot(steps, series("truncated_frac"), color="tab:red", alpha=0.6)
    twin.set_ylim(0, 1)
    axes[2].set_title("length (tokens) / truncated (red)")
    axes[3].plot(steps, series("entropy"))
    axes[3].set_title("entropy")
    if difficulty:
        _difficulty_bars(axes[4], difficulty, history[-1].get("difficulty/resting", 0))
    for a in axes[:4]:
        a.grid(alpha=0.3)
        a.set_xlabel("step")
        for m in history:
            if m.get("changes"):
                a.axvline(m["step"], color="grey", linestyle=":", linewidth=1)
    fig.tight_layout()
    return fig


def _difficulty_bars(ax: Any, counts: dict[str, float], resting: float) -> None:
    """The training rows by their last visit's pass rate (grpo_lite/difficulty.py), as bars."""
    names = ["never", "between", "always", "unseen"]
    ax.bar(names, [counts.get(n, 0) for n in names], color=["tab:red", "tab:blue", "tab:green", "grey"])
    ax.set_title("prompts solved" + (f" ({resting:.0f} resting)" if resting else ""))
