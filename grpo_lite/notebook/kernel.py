"""The kernel the dashboard runs in: can it pump widget events from a running cell (ipykernel < 7,
jupyter-ui-poll), and the ipykernel 7 fix that keeps widget updates flowing while a cell awaits."""

from __future__ import annotations

import inspect
from typing import Any


def current_kernel() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return getattr(shell, "kernel", None) if shell is not None else None


def in_kernel() -> bool:
    return current_kernel() is not None


def can_pump_events() -> bool:
    """jupyter-ui-poll works where the kernel can run one message-loop iteration (ipykernel < 7)."""
    return hasattr(current_kernel(), "do_one_iteration")


def ui_event_pump() -> Any:
    """jupyter-ui-poll's event pump where it works, else None (scripts, tests, ipykernel >= 7)."""
    if not (in_kernel() and can_pump_events()):
        return None
    try:
        from jupyter_ui_poll import ui_events
    except ImportError:  # jupyter-ui-poll missing: widgets act only between cells
        return None
    return ui_events()


def keep_widget_updates_flowing(kernel: Any) -> bool:
    """Work around ipykernel >= 7 dropping the widget updates that follow the first one.

    While an async cell runs (``await dashboard.finished()``), ipykernel 7 dispatches comm messages
    concurrently and publishes no busy/idle status for them. ipywidgets' front-end sends a model's
    next update only after the kernel says idle for the previous one, so a slider moved twice, or
    the reward editor edited twice, never reached the kernel a second time (found by the browser
    test). This wraps the kernel's comm_msg handler to publish that idle status itself when the
    message was dispatched concurrently. Returns whether the kernel was patched (idempotent; a
    no-op on kernels without this structure)."""
    handlers = getattr(kernel, "shell_handlers", None)
    lock = getattr(kernel, "_main_asyncio_lock", None)
    publish = getattr(kernel, "_publish_status", None)
    if not isinstance(handlers, dict) or lock is None or publish is None or "comm_msg" not in handlers:
        return False
    original = handlers["comm_msg"]
    if getattr(original, "grpo_lite_idle", False):
        return True

    def comm_msg(stream: Any, idents: Any, msg: Any) -> Any:
        concurrent = lock.locked()  # a cell holds the lock: ipykernel will not say idle for this message
        result = original(stream, idents, msg)
        if not concurrent:
            return result

        async def then_idle() -> None:
            if inspect.isawaitable(result):
                await result
            publish("idle", "shell", parent=msg)

        return then_idle()

    comm_msg.grpo_lite_idle = True  # type: ignore[attr-defined]
    handlers["comm_msg"] = comm_msg
    return True
