"""The dashboard's steering panels beyond sampling: reward weights and learning rate, alarm remedies,
and the checkpoint list with "branch from here". Each is bound to a dashboard and reads
``dashboard.trainer`` on every use, so it follows the dashboard to a branch."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W

from grpo_lite.alarms import Alarm, remedy_for
from grpo_lite.run import RunDir


def error_html(err: Exception | str) -> str:
    return f"<span style='color:#b00'>{html.escape(str(err))}</span>"


class WeightControls:
    """A weight slider per reward function and a learning-rate field; changes apply at the next step."""

    def __init__(self, dashboard: Any) -> None:
        self.dashboard = dashboard
        self.sliders: dict[str, W.FloatSlider] = {}
        self.box = W.VBox()
        self.lr = W.FloatText(description="learning rate", style={"description_width": "110px"})
        self.lr.observe(self._lr_changed, names="value")
        self.widget = W.VBox([self.box, self.lr])
        self._quiet = False  # set while values are refreshed from the trainer (no requests then)
        self.refresh()

    def refresh(self, values: bool = True) -> None:
        """Sliders for the rewards in force (a new reward gets one showing its weight). ``values``: also
        show the trainer's weights and learning rate now — at start and after a branch, not after
        every step, which would undo a request still pending."""
        trainer = self.dashboard.trainer
        weights = {r.name: r.weight for r in trainer.rewards.rewards}
        self._quiet = True
        try:
            if list(weights) != list(self.sliders):
                self.sliders = {
                    name: self.sliders.get(name) or self._slider(name, w) for name, w in weights.items()
                }
                self.box.children = list(self.sliders.values())
            if values:
                for name, weight in weights.items():
                    self.sliders[name].max = max(self.sliders[name].max, weight)
                    self.sliders[name].value = weight
                self.lr.value = float(trainer.scheduler.get_last_lr()[0])
        finally:
            self._quiet = False

    def _slider(self, name: str, weight: float) -> W.FloatSlider:
        slider = W.FloatSlider(value=weight, min=0.0, max=max(2.0, weight), step=0.05, description=f"weight {name}",
                               style={"description_width": "110px"})  # fmt: skip
        slider.observe(lambda change: self._weight_changed(name, change["new"]), names="value")
        return slider

    def _weight_changed(self, name: str, value: float) -> None:
        if self._quiet:
            return
        try:
            self.dashboard.trainer.steering.set_reward_weights({name: value})
            self.dashboard.status.value = f"weight of {name} = {value:g} from the next step"
        except ValueError as err:
            self.dashboard.status.value = error_html(err)

    def _lr_changed(self, change: dict[str, Any]) -> None:
        if self._quiet:
            return
        try:
            self.dashboard.trainer.steering.set_learning_rate(change["new"])
            self.dashboard.status.value = f"learning rate = {change['new']:g} from the next step"
        except ValueError as err:
            self.dashboard.status.value = error_html(err)


def warm_start_source(trainer: Any) -> str:
    """The warm start ``trainer`` can make: on the data's worked solutions when it has them, else on
    the model's own right answers."""
    rows, column = trainer.data.rows, trainer.cfg.solution_column
    return "solutions" if rows and column in rows[0] else "own"


class RemedyButtons:
    """One button per alarm of the latest step that has an obvious remedy (see ``remedy_for``)."""

    def __init__(self, dashboard: Any) -> None:
        self.dashboard = dashboard
        self.widget = W.HBox()

    def update(self, alarms: list[Alarm]) -> None:
        trainer = self.dashboard.trainer
        buttons, seen = [], set()
        for alarm in alarms:
            remedy = remedy_for(alarm, lr=float(trainer.scheduler.get_last_lr()[0]),
                                temperature=trainer.sampling.temperature, max_new_tokens=trainer.sampling.max_new_tokens,
                                max_tool_calls=trainer.sampling.max_tool_calls,
                                warm_start=warm_start_source(trainer))  # fmt: skip
            if remedy is None or remedy.label in seen:
                continue
            seen.add(remedy.label)
            button = W.Button(description=remedy.label, button_style="info", layout=W.Layout(width="auto"))
            button.on_click(lambda _, r=remedy: self.apply(r))
            buttons.append(button)
        self.widget.children = buttons

    def apply(self, remedy: Any) -> None:
        try:
            remedy.request(self.dashboard.trainer.steering)
            self.dashboard.status.value = f"{html.escape(remedy.label)}: from the next step"
        except ValueError as err:
            self.dashboard.status.value = error_html(err)


class CheckpointList:
    """The run's complete checkpoints (step, reward, held-out accuracy when measured), each with
    "branch from here"."""

    def __init__(self, dashboard: Any) -> None:
        self.dashboard = dashboard
        self.widget = W.VBox()
        self.steps: list[int] = []

    def refresh(self) -> None:
        steps = RunDir(self.dashboard.trainer.run_dir).complete_steps()
        if steps == self.steps:
            return
        self.steps = steps
        by_step = {m["step"]: m for m in self.dashboard.history}
        accuracy = dict(self.dashboard.eval_points)
        rows = []
        for step in reversed(steps):
            reward = by_step.get(step, {}).get("reward")
            text = f"step {step}" + (f" · reward {reward:.3f}" if isinstance(reward, float) else "")
            text += f" · accuracy {accuracy[step]:.1%}" if step in accuracy else ""
            button = W.Button(description="branch from here", layout=W.Layout(width="auto"))
            button.on_click(lambda _, s=step: self.dashboard.branch_clicked(s))
            rows.append(W.HBox([W.HTML(text, layout=W.Layout(width="360px")), button]))
        self.widget.children = rows or [W.HTML("<i>no checkpoint yet (save_steps)</i>")]
