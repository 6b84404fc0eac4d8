"""The dashboard's branching: rewind to a checkpoint and go on with a branch of the run, the dashboard
following it (the parent's curves drawn dimmed)."""

from __future__ import annotations

import html
import threading
from typing import TYPE_CHECKING, Any

from grpo_lite.notebook.controls import error_html


class Branching:
    """Mixed into the Dashboard: :meth:`branch` and the "branch from here" button."""

    trainer: Any
    status: Any
    history: list[dict[str, Any]]
    parent_history: list[dict[str, Any]]
    eval_points: list[Any]
    alarms: list[Any]
    weights: Any
    checkpoints: Any
    _ending: threading.Lock
    _training: bool
    _branch_when_stopped: int | None

    if TYPE_CHECKING:  # the dashboard's own

        def _refresh_picker(self) -> None: ...

        def redraw(self) -> None: ...

    def branch(self, step: int) -> Any:
        """Rewind to the checkpoint of ``step`` and go on with a branch of the run (see
        ``GRPOTrainer.branch``): the dashboard switches to it and draws the parent's curves dimmed;
        ``dashboard.train()`` trains it. Refused while a run is training (stop it first); asked for
        while a stopped run is still writing its checkpoint, it happens as soon as the run has ended."""
        with self._ending:
            if self._training:
                if self.trainer.steering.stop_requested:
                    self._branch_when_stopped = step
                    self.status.value = f"the run is stopping: branching from step {step} once it has"
                else:
                    self.status.value = error_html("stop the run before branching")
                return None
        return self._switch_to_branch(step)

    def branch_clicked(self, step: int) -> None:
        """The "branch from here" button: :meth:`branch`, with a failure shown in the status line (a
        widget callback's exception would only reach the kernel's log)."""
        try:
            self.branch(step)
        except Exception as err:
            self.status.value = error_html(f"branching from step {step} failed: {type(err).__name__}: {err}")

    def _switch_to_branch(self, step: int) -> Any:
        parent = self.trainer
        child = parent.branch(step)
        parent.callbacks.remove(self)
        child.callbacks.append(self)
        self.parent_history, self.trainer = list(self.history), child
        self.history = list(child.history)
        self.eval_points = [p for p in self.eval_points if p[0] <= step]
        self.alarms = [a for a in self.alarms if a.step <= step]
        self._refresh_picker()
        self.weights.refresh()
        self.checkpoints.refresh()
        self.status.value = (
            f"branched from step {step} into {html.escape(str(child.run_dir))}; train() goes on from there"
        )
        self.redraw()
        return child
