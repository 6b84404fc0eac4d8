"""The reward editor: compile edited source, test it, apply it (functions without widgets), and the
dashboard's editor that calls them (:class:`RewardEditing`).

A syntax error, a wrong signature, an exception or a wrong-length result is refused with its
message; the trainer keeps the previous function. An applied function keeps its source, which the
checkpoint and the metrics log record.
"""

from __future__ import annotations

import html
import traceback
from dataclasses import dataclass, field
from typing import Any

from grpo_lite.notebook import panels
from grpo_lite.reward_source import RewardSourceError, compile_reward
from rewards import RewardFunctionError
from rewards.bounded_call import RewardTimeout, call_bounded
from rewards.combine import check_values


@dataclass
class TryResult:
    ok: bool
    message: str
    new_scores: list[float | None] = field(default_factory=list)
    old_scores: list[float | None] = field(default_factory=list)


def try_reward(
    source: str, name: str, latest: dict[str, Any] | None, current: Any = None, time_limit: float = 10.0
) -> TryResult:
    """Run edited source on the latest step's completions, next to the current function's scores;
    a call that takes longer than ``time_limit`` seconds is refused (and left to finish)."""
    try:
        fn = compile_reward(source, name)
    except RewardSourceError as err:
        return TryResult(False, str(err))
    if not latest:
        return TryResult(True, "compiled; no completions yet to test it on")
    kwargs = {"prompts": latest["prompts"], "completions": latest["completions"], **latest.get("columns", {})}
    try:
        value = call_bounded(fn, kwargs, time_limit, name=name, source=source)
        new = check_values(name, value, len(latest["completions"]))
    except (RewardFunctionError, RewardTimeout) as err:
        return TryResult(False, str(err))
    except Exception:
        return TryResult(False, "raised on the latest completions:\n" + traceback.format_exc(limit=-2))
    old = latest.get("per_function", {}).get(name, [])
    return TryResult(True, f"scored {len(new)} completions", new, list(old))


def apply_reward(trainer: Any, name: str, source: str) -> TryResult:
    """Test the source, then ask the trainer to swap it in (or add it, for a new name) at the next
    step; refused if the test fails."""
    result = try_reward(source, name, trainer.last_rollout, time_limit=trainer.cfg.reward_timeout)
    if result.ok and name in trainer.rewards.names:
        trainer.steering.replace_reward(name, compile_reward(source, name), source)
        result.message = f"{name} will be replaced at the next step"
    elif result.ok:  # a new reward
        try:
            trainer.steering.add_reward(compile_reward(source, name), name=name, source=source)
            result.message = f"{name} will be added at the next step (weight 1)"
        except ValueError as err:
            result.ok, result.message = False, str(err)
    return result


class RewardEditing:
    """The dashboard's reward editor: pick a reward, edit its source, test it on the latest
    completions, apply it (or a new one) at the next step, remove one."""

    trainer: Any
    reward_picker: Any
    source: Any
    editor_output: Any

    def _load_source(self) -> None:
        reward = next((r for r in self.trainer.rewards.rewards if r.name == self.reward_picker.value), None)
        if reward is not None:  # a new reward not yet applied keeps its draft
            self.source.value = reward.source

    def _refresh_picker(self) -> None:
        names = self.trainer.rewards.names
        drafts = [n for n in self.reward_picker.options if n not in names and n == self.reward_picker.value]
        if list(self.reward_picker.options) != names + drafts:
            value = self.reward_picker.value if self.reward_picker.value in names + drafts else names[0]
            self.reward_picker.options = names + drafts
            self.reward_picker.value = value

    def new_reward(self) -> str:
        """A draft reward in the editor (Test, then Apply adds it at the next step with weight 1)."""
        taken, k = set(self.trainer.rewards.names) | set(self.reward_picker.options), 1
        name = "new_reward"
        while name in taken:
            k += 1
            name = f"new_reward_{k}"
        self.reward_picker.options = [*self.reward_picker.options, name]
        self.reward_picker.value = name
        self.source.value = (
            f"def {name}(prompts, completions, **kwargs):\n    return [0.0 for _ in completions]\n"
        )
        return name

    def remove_reward(self) -> None:
        """Remove the picked reward at the next step (refused for the last one)."""
        try:
            self.trainer.steering.remove_reward(self.reward_picker.value)
            self.editor_output.value = (
                f"{html.escape(self.reward_picker.value)} will be removed at the next step"
            )
        except ValueError as err:
            self.editor_output.value = f"<span style='color:#b00'>{html.escape(str(err))}</span>"

    def test_edit(self) -> None:
        """Run the edited source on the latest completions, next to the current function's scores."""
        result = try_reward(self.source.value, self.reward_picker.value, self.trainer.last_rollout)
        self.editor_output.value = panels.try_result_html(result)

    def apply_edit(self) -> None:
        """Swap the edited function in at the next step, unless it fails its test."""
        result = apply_reward(self.trainer, self.reward_picker.value, self.source.value)
        self.editor_output.value = panels.try_result_html(result)
