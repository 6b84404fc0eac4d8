"""The live dashboard: curves, completions, controls, reward editor, alarms, base vs trained.

Widget events reach the trainer's steering between two steps: on kernels that can pump events from
a running cell (ipykernel < 7, Colab) training runs in the cell and jupyter-ui-poll processes the
events at every step boundary; on ipykernel >= 7 training runs in a background thread while the
kernel dispatches the events (see :meth:`Dashboard.train`). Curves are matplotlib PNGs pushed into
a display handle: no third-party widget manager is needed, so they render in JupyterLab, Notebook
and Colab alike.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as W

from grpo_lite.alarms import Alarm, alarms_of
from grpo_lite.callbacks import Callback
from grpo_lite.notebook import panels
from grpo_lite.notebook.branching import Branching
from grpo_lite.notebook.controls import CheckpointList, RemedyButtons, WeightControls
from grpo_lite.notebook.editor import RewardEditing
from grpo_lite.notebook.kernel import (
    can_pump_events,
    current_kernel,
    in_kernel,
    keep_widget_updates_flowing,
    ui_event_pump,
)


class Dashboard(RewardEditing, Branching, Callback):
    """``Dashboard(trainer, eval_rows=held_out, eval_reward=math_accuracy).train()``."""

    def __init__(
        self,
        trainer: Any,
        *,
        eval_rows: Sequence[dict[str, Any]] | None = None,
        eval_reward: Callable[..., Any] | None = None,
        eval_every: int = 10,
        compare_prompts: Sequence[Any] | None = None,
        redraw_seconds: float = 0.3,
    ) -> None:
        self.trainer = trainer
        self.eval_rows, self.eval_reward, self.eval_every = eval_rows, eval_reward, eval_every
        self.compare_prompts = list(
            compare_prompts or [r[trainer.cfg.prompt_column] for r in trainer.data.rows[:3]]
        )
        self.redraw_seconds = redraw_seconds
        self.history: list[dict[str, Any]] = list(trainer.history)
        self.eval_points: list[tuple[int, float]] = []
        self.alarms: list[Alarm] = []
        self._last_draw = 0.0
        self._plot_handle: Any = None
        self._poll: Any = None
        self._poll_ctx: Any = None
        self._thread: threading.Thread | None = None
        self._training = False
        self._ending = threading.Lock()  # guards _training and a branch clicked while the run stops
        self._branch_when_stopped: int | None = None
        self.parent_history: list[dict[str, Any]] = []  # the run a branch came from, drawn dimmed
        self._build_widgets()
        trainer.callbacks.append(self)

    # ---- widgets ---------------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        s, style = self.trainer.sampling, {"description_width": "110px"}
        self.temperature = W.FloatSlider(
            value=s.temperature, min=0.05, max=2.0, step=0.05, description="temperature", style=style
        )
        self.top_p = W.FloatSlider(
            value=s.top_p, min=0.05, max=1.0, step=0.05, description="top_p", style=style
        )
        self.max_new_tokens = W.IntText(value=s.max_new_tokens, description="max_new_tokens", style=style)
        self.max_tool_calls = W.IntText(value=s.max_tool_calls, description="max_tool_calls", style=style)
        for widget, key in (
            (self.temperature, "temperature"),
            (self.top_p, "top_p"),
            (self.max_new_tokens, "max_new_tokens"),
            (self.max_tool_calls, "max_tool_calls"),
        ):
            widget.observe(self._sampling_changed(key), names="value")
        self.pause_button = W.ToggleButton(description="pause", icon="pause")
        self.pause_button.observe(self._pause_changed, names="value")
        self.stop_button = W.Button(description="stop (checkpoint)", button_style="danger", icon="stop")
        self.stop_button.on_click(lambda _: self.trainer.steering.stop())
        self.status = W.HTML()
        names = self.trainer.rewards.names
        self.reward_picker = W.Dropdown(options=names, value=names[0], description="reward")
        self.reward_picker.observe(lambda _: self._load_source(), names="value")
        self.source = W.Textarea(layout=W.Layout(width="100%", height="180px"))
        self.test_button, self.apply_button = (
            W.Button(description="Test"),
            W.Button(description="Apply", button_style="warning"),
        )
        self.test_button.on_click(lambda _: self.test_edit())
        self.apply_button.on_click(lambda _: self.apply_edit())
        self.new_button, self.remove_button = (
            W.Button(description="new reward"),
            W.Button(description="remove"),
        )
        self.new_button.on_click(lambda _: self.new_reward())
        self.remove_button.on_click(lambda _: self.remove_reward())
        self.weights, self.remedies, self.checkpoints = (
            WeightControls(self),
            RemedyButtons(self),
            CheckpointList(self),
        )
        self.editor_output = W.HTML()
        self.alarm_panel, self.completions_panel, self.compare_panel = W.HTML(), W.HTML(), W.HTML()
        self.compare_button = W.Button(description="compare base vs trained")
        self.compare_button.on_click(lambda _: self.compare())
        self._load_source()

    def widget(self) -> W.Widget:
        controls = W.VBox(
            [
                W.HBox(
                    [self.temperature, self.top_p, self.max_new_tokens]
                    + ([self.max_tool_calls] if self.trainer.tools is not None else [])
                ),
                W.HBox([self.pause_button, self.stop_button, self.status]),
                self.remedies.widget,
            ]
        )
        editor = W.VBox(
            [
                self.reward_picker,
                self.source,
                W.HBox([self.test_button, self.apply_button, self.new_button, self.remove_button]),
                self.editor_output,
            ]
        )
        tabs = W.Tab(
            children=[
                self.completions_panel,
                editor,
                self.alarm_panel,
                W.VBox([self.compare_button, self.compare_panel]),
                self.weights.widget,
                self.checkpoints.widget,
            ]
        )
        titles = ["completions", "reward editor", "alarms", "base vs trained", "weights & lr", "checkpoints"]
        for i, title in enumerate(titles):
            tabs.set_title(i, title)
        return W.VBox([controls, tabs])

    def show(self) -> None:
        """Display the controls and a display handle for the curves."""
        from IPython.display import HTML, display

        display(self.widget())
        self._plot_handle = display(HTML("<i>curves appear after the first step</i>"), display_id=True)

    def train(self) -> list[dict[str, Any]]:
        """Show the dashboard (once) and train.

        Where the kernel can pump widget events from inside a running cell (ipykernel < 7, as on
        Colab), training runs in this cell and interrupting the kernel stops it with a checkpoint.
        Where it cannot (ipykernel >= 7, which dispatches widget messages only between cells), it
        runs in a background thread and this returns at once: the widgets stay live, and
        ``await dashboard.finished()`` waits for the end (interrupting the kernel there stops it cleanly).
        """
        if self._plot_handle is None:
            self.show()
        if in_kernel() and not can_pump_events():
            keep_widget_updates_flowing(current_kernel())
            self._thread = threading.Thread(target=self.trainer.train, name="grpo-lite-train", daemon=True)
            self._thread.start()
            print(
                "training in the background; the dashboard stays live. `await dashboard.finished()` waits for the end."
            )
            return self.trainer.history
        return self.trainer.train()

    async def finished(self) -> list[dict[str, Any]]:
        """``await dashboard.finished()``: wait for a background run to end while the kernel keeps
        dispatching widget events (an awaiting cell does not block them, a blocking one would).
        Interrupting the kernel here asks the run to stop; it writes a checkpoint."""
        import asyncio

        trainer = self.trainer  # the run waited for, even if a branch replaces it as it ends
        while self._thread is not None and self._thread.is_alive():
            try:
                await asyncio.sleep(0.2)
            except (KeyboardInterrupt, asyncio.CancelledError):
                trainer.steering.stop()
        return trainer.history

    # ---- steering from the widgets -----------------------------------------------------------------
    def _sampling_changed(self, key: str) -> Callable[[dict[str, Any]], None]:
        def handler(change: dict[str, Any]) -> None:
            try:
                self.trainer.steering.set_sampling(**{key: change["new"]})
                self.status.value = f"{key} = {change['new']} from the next step"
            except ValueError as err:
                self.status.value = f"<span style='color:#b00'>{html.escape(str(err))}</span>"

        return handler

    def _pause_changed(self, change: dict[str, Any]) -> None:
        steering = self.trainer.steering
        steering.pause() if change["new"] else steering.resume()
        self.pause_button.description = "resume" if change["new"] else "pause"

    # ---- callbacks from the trainer -----------------------------------------------------------------
    def on_train_begin(self, trainer: Any) -> None:
        self._training = True
        if threading.current_thread() is not threading.main_thread():
            return  # a background run: the kernel dispatches widget events itself
        self._poll_ctx = ui_event_pump()
        self._poll = self._poll_ctx.__enter__() if self._poll_ctx is not None else None

    def on_step_boundary(self, trainer: Any) -> None:
        if self._poll is not None:
            self._poll(50)  # process widget events that arrived during the last step

    def on_step_end(self, trainer: Any, metrics: dict[str, Any]) -> None:
        self.history.append(metrics)
        engine = f"eval/{trainer.held_out.best_measure}" if trainer.held_out.every else None
        if engine and engine in metrics:  # the trainer measured the held-out rows (held_out.py): shown as is
            self.eval_points.append((metrics["step"], float(metrics[engine])))
        elif not engine and self.eval_rows and self.eval_reward and metrics["step"] % self.eval_every == 0:
            self.evaluate()  # a trainer without eval_every: the dashboard measures its own eval_rows
        latest = alarms_of(metrics)  # checked by the trainer, once per step
        self.alarms += latest
        self.alarm_panel.value = panels.alarms_html(self.alarms)
        self.remedies.update(latest)
        self._refresh_picker()
        self.weights.refresh(values=False)
        self.checkpoints.refresh()
        if trainer.last_rollout:
            self.completions_panel.value = panels.completions_html(trainer.last_rollout)
        self.status.value = f"step {metrics['step']}: reward {metrics['reward']:.3f}"
        if time.monotonic() - self._last_draw >= self.redraw_seconds:
            self.redraw()

    def on_train_end(self, trainer: Any) -> None:
        with self._ending:
            self._training = False
            step, self._branch_when_stopped = self._branch_when_stopped, None
        self.checkpoints.refresh()
        self.redraw()
        if self._poll_ctx is not None:
            self._poll_ctx.__exit__(None, None, None)
            self._poll_ctx = self._poll = None
        if step is not None:  # "branch from here" was clicked while the run was stopping
            self.branch_clicked(step)

    # ---- panels ------------------------------------------------------------------------------------
    def evaluate(self) -> float:
        from grpo_lite.evaluate import accuracy

        assert self.eval_rows is not None and self.eval_reward is not None
        t = self.trainer
        acc = accuracy(t.model, t.tokenizer, self.eval_rows, self.eval_reward,
                       prompt_column=t.cfg.prompt_column, max_new_tokens=t.sampling.max_new_tokens,
                       stop_strings=t.cfg.stop_strings)  # fmt: skip
        self.eval_points.append((t.step, acc))
        return acc

    def figure_png(self) -> bytes:
        return panels.curves_png(self.history, self.eval_points, parent=self.parent_history)

    def redraw(self) -> None:
        self._last_draw = time.monotonic()
        if self._plot_handle is not None and self.history:
            from IPython.display import Image

            self._plot_handle.update(Image(data=self.figure_png()))

    def compare(self) -> list[tuple[str, str, str]]:
        """The same prompts answered greedily with adapters off (base) and on (trained)."""
        from grpo_lite.evaluate import greedy_completions
        from grpo_lite.logprobs import adapters_disabled

        t, n, stops = self.trainer, self.trainer.sampling.max_new_tokens, self.trainer.cfg.stop_strings
        with adapters_disabled(t.model):
            base = greedy_completions(
                t.model, t.tokenizer, self.compare_prompts, max_new_tokens=n, stop_strings=stops
            )
        trained = greedy_completions(
            t.model, t.tokenizer, self.compare_prompts, max_new_tokens=n, stop_strings=stops
        )
        rows = [
            (panels.prompt_text(p), b, a) for p, b, a in zip(self.compare_prompts, base, trained, strict=True)
        ]
        self.compare_panel.value = panels.compare_html(rows)
        return rows
