"""The dashboard's logic without a browser: sliders, reward editor, stop/pause, alarms, panels."""

import threading
import time

import pytest
from conftest import digit_share
from test_engine import make_cfg

from grpo_lite.callbacks import Callback
from grpo_lite.notebook import Dashboard, check_alarms, compile_reward
from grpo_lite.notebook.editor import RewardSourceError
from grpo_lite.trainer import GRPOTrainer


@pytest.fixture
def dash(tiny_model_path, sum_rows, tmp_path):
    cfg = make_cfg(tiny_model_path, tmp_path / "run", max_steps=2, save_steps=0)
    trainer = GRPOTrainer(cfg, sum_rows, [digit_share], progress=False)
    return Dashboard(
        trainer,
        eval_rows=sum_rows[:4],
        eval_reward=lambda prompts, completions, answer, **k: [0.0] * len(completions),
        eval_every=1,
    )


def test_slider_changes_next_steps_temperature(dash):
    dash.trainer.train_step()
    dash.temperature.value = 0.45  # as if the user moved the slider during step 1
    dash.max_new_tokens.value = 3
    history = dash.trainer.train()
    assert history[-1]["temperature"] == 0.45 and history[-1]["max_new_tokens"] == 3
    assert history[-1]["changes"] == {"temperature": 0.45, "max_new_tokens": 3}
    dash.temperature.value = 0.0 + 0.05
    dash.max_new_tokens.value = 0  # invalid: refused with a message, nothing queued
    assert "max_new_tokens must be &gt; 0" in dash.status.value


VALID = "def digit_share(prompts, completions, **kw):\n    return [0.25 for _ in completions]\n"


def test_test_and_apply_valid_code_swaps_at_next_step(dash):
    dash.trainer.train_step()
    dash.source.value = VALID
    dash.test_button.click()
    assert "scored 32 completions" in dash.editor_output.value and "0.25" in dash.editor_output.value
    dash.apply_button.click()
    assert "will be replaced at the next step" in dash.editor_output.value
    m = dash.trainer.train()[-1]
    assert m["rewards/digit_share/mean"] == 0.25 and "reward:digit_share" in m["changes"]
    assert m["changes"]["reward:digit_share"] == VALID  # the applied source is in the metrics log
    ckpt = dash.trainer.run_dir / "checkpoints" / "step-2" / "rewards" / "digit_share.py"
    assert ckpt.read_text() == VALID  # ... and in the checkpoint


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def digit_share(prompts, completions, **kw)\n    return []", "syntax error on line 1"),
        (
            "def digit_share(completions):\n    return []",
            "must have the signature (prompts, completions, **kwargs)",
        ),
        ("def digit_share(prompts, completions, **kw):\n    return 1 / 0", "ZeroDivisionError"),
        (
            "def digit_share(prompts, completions, **kw):\n    return [1.0]",
            "returned 1 values for 32 completions",
        ),
        ("x = 1", "define one function"),
    ],
)
def test_invalid_code_is_refused_and_training_continues(dash, source, message):
    dash.trainer.train_step()
    dash.source.value = source
    dash.apply_button.click()
    assert message in dash.editor_output.value
    m = dash.trainer.train()[-1]
    assert "changes" not in m and m["rewards/digit_share/mean"] > 0  # still the original function


def test_stop_button_writes_a_checkpoint(tiny_model_path, sum_rows, tmp_path):
    trainer = GRPOTrainer(
        make_cfg(tiny_model_path, tmp_path / "r", max_steps=50), sum_rows, [digit_share], progress=False
    )
    dash = Dashboard(trainer)

    class ClickStopAtStep2(Callback):
        def on_step_end(self, t, m):
            if m["step"] == 2:
                dash.stop_button.click()

    trainer.callbacks.append(ClickStopAtStep2())
    assert len(dash.train()) == 2
    assert (tmp_path / "r" / "checkpoints" / "step-2" / "adapter_model.safetensors").exists()


def test_pause_waits_until_resumed(dash):
    dash.pause_button.value = True
    assert dash.pause_button.description == "resume"
    timer = threading.Timer(0.6, lambda: setattr(dash.pause_button, "value", False))
    start = time.monotonic()
    timer.start()
    dash.trainer.train()
    assert time.monotonic() - start >= 0.6 and dash.trainer.step == 2


def test_panels_curves_eval_and_compare(dash):
    dash.trainer.train()
    assert dash.figure_png().startswith(b"\x89PNG")
    assert [s for s, _ in dash.eval_points] == [1, 2]  # held-out accuracy every eval_every steps
    html = dash.completions_panel.value
    assert "best completion" in html and "advantage" in html and "step 2" in html
    rows = dash.compare()
    assert len(rows) == 3 and all(len(r) == 3 for r in rows)
    assert "base (adapters off)" in dash.compare_panel.value


def test_compile_reward_keeps_source():
    fn = compile_reward(VALID, "digit_share")
    assert fn(prompts=["p"], completions=["a", "b"]) == [0.25, 0.25] and fn.__grpo_source__ == VALID
    with pytest.raises(RewardSourceError, match="raised while defining"):
        compile_reward("raise ValueError('x')\ndef f(prompts, completions, **kw): return []")


def healthy(n=20):
    return [
        {"step": i + 1, "reward": 0.3 + 0.02 * i, "rewards/math_accuracy/mean": 0.2 + 0.02 * i, "rewards/strict_format/mean": 0.5,
         "equal_reward_groups": 0.2, "entropy": 1.0 - 0.01 * i, "truncated_frac": 0.05, "completion_len_mean": 100 + i,
         "kl": 0.01 + 0.001 * i, "reward_errors": 0.0}
        for i in range(n)
    ]  # fmt: skip


def with_changes(history, start, **values):
    for m in history[start:]:
        m.update(values)
    return history


@pytest.mark.parametrize(
    ("stream", "alarm"),
    [
        (
            lambda h: [
                m
                | {
                    "rewards/math_accuracy/mean": 0.3,
                    "rewards/strict_format/mean": 0.1 + (0.8 if m["step"] > 15 else 0),
                }
                for m in h
            ],
            "format_gaming",
        ),
        (lambda h: with_changes(h, 15, equal_reward_groups=0.9), "no_signal"),
        (lambda h: with_changes(h, 15, entropy=0.02), "entropy_collapse"),
        (lambda h: with_changes(h, 19, truncated_frac=0.8), "truncation"),
        (lambda h: with_changes(h, 15, completion_len_mean=400), "length_growth"),
        (lambda h: with_changes(h, 19, kl=2.5), "kl_runaway"),
        (
            lambda h: with_changes(
                h, 19, reward_errors=1.0, reward_error_tracebacks={"mine": "Traceback...\nKeyError: 'answer'"}
            ),
            "reward_error",
        ),
    ],
)
def test_alarms_fire_on_synthetic_streams(stream, alarm):
    fired = check_alarms(stream(healthy()))
    assert alarm in {a.name for a in fired}
    assert all(a.message and a.suggestion for a in fired)


def test_healthy_stream_is_quiet():
    h = healthy()
    assert all(check_alarms(h[: i + 1]) == [] for i in range(len(h)))


# ---- steering round two from the widgets ------------------------------------------------------------
def test_weight_slider_lr_field_new_and_remove_reward(dash):
    dash.trainer.cfg = dash.trainer.cfg.replace(max_steps=4)
    dash.trainer.train_step()
    dash.trainer.step = 1
    dash.weights.sliders["digit_share"].value = 0.5
    dash.weights.lr.value = 1e-3
    assert "learning rate = 0.001 from the next step" in dash.status.value
    dash.new_button.click()
    assert dash.reward_picker.value == "new_reward" and "def new_reward" in dash.source.value
    dash.source.value = "def new_reward(prompts, completions, **kw):\n    return [1.0 for _ in completions]\n"
    dash.apply_button.click()
    assert "new_reward will be added at the next step" in dash.editor_output.value

    class RemoveAt3(Callback):
        def on_step_boundary(self, trainer):
            if trainer.step == 2:
                dash.reward_picker.value = "new_reward"
                dash.remove_button.click()

    dash.trainer.callbacks.append(RemoveAt3())
    by_step = {m["step"]: m for m in dash.trainer.train()}
    assert by_step[2]["changes"] == {
        "added:new_reward": dash.source.value,
        "weight:digit_share": 0.5,
        "learning_rate": 1e-3,
    }
    assert by_step[2]["weights/new_reward"] == 1.0 and by_step[2]["lr"] == pytest.approx(1e-3)
    assert (
        by_step[3]["changes"] == {"removed_rewards": ["new_reward"]}
        and "weights/new_reward" not in by_step[3]
    )
    assert list(dash.weights.sliders) == ["digit_share"] and dash.weights.sliders["digit_share"].value == 0.5
    dash.reward_picker.value = "digit_share"
    dash.remove_button.click()  # the last one
    assert "cannot remove &#x27;digit_share&#x27;: it is the last reward function" in dash.editor_output.value


def test_remedy_buttons_request_the_obvious_fix(dash):
    from grpo_lite.alarms import Alarm

    alarms = [
        Alarm("format_gaming", 5, "m", "s", reward="digit_share"),
        Alarm("kl_runaway", 5, "m", "s"),
        Alarm("truncation", 5, "m", "s"),
        Alarm("length_growth", 5, "m", "s"),  # no obvious remedy: no button
    ]
    dash.remedies.update(alarms)
    labels = [b.description for b in dash.remedies.widget.children]
    assert labels == [
        "set digit_share weight to 0",
        "halve the learning rate (0.05 -> 0.025)",
        "raise max_new_tokens to 16",
    ]
    for button in dash.remedies.widget.children:
        button.click()
    changes = dash.trainer.steering.take()
    assert (changes.weights, changes.learning_rate, changes.sampling) == (
        {"digit_share": 0.0},
        0.025,
        {"max_new_tokens": 16},
    )


def test_the_dashboard_plots_the_trainers_held_out_scores(tiny_model_path, sum_rows, tmp_path):
    """A trainer with eval_every: the dashboard shows its eval/<best measure> points, measuring nothing
    itself (its own eval_reward, which would say 0.5, is not called)."""
    cfg = make_cfg(tiny_model_path, tmp_path / "run", max_steps=3, save_steps=0, eval_every=2)
    right = lambda prompts, completions, **k: [1.0] * len(completions)  # noqa: E731
    trainer = GRPOTrainer(cfg, sum_rows, [digit_share], progress=False, eval_dataset=sum_rows[:4],
                          eval_measures={"right": right})  # fmt: skip
    half = lambda prompts, completions, **k: [1.0, 0.0] * (len(completions) // 2)  # noqa: E731
    dash = Dashboard(trainer, eval_rows=sum_rows[:4], eval_reward=half, eval_every=1)
    dash.train()
    assert dash.eval_points == [(2, 1.0), (3, 1.0)]


def test_no_signal_offers_a_warm_start_on_what_the_data_has(dash):
    """The no_signal alarm's button: a warm start on the model's own right answers (these rows have no
    worked solutions), requested for the next step; a higher temperature when no warm start is given."""
    from grpo_lite.alarms import Alarm, remedy_for

    alarm = Alarm("no_signal", 5, "m", "s")
    dash.remedies.update([alarm])
    [button] = dash.remedies.widget.children
    assert button.description == "warm start on the model's own right answers"
    button.click()
    assert dash.trainer.steering.take().warm_start == "own"
    dash.trainer.data.rows[0]["solution"] = "2"
    dash.remedies.update([alarm])
    assert dash.remedies.widget.children[0].description == "warm start on the data's worked solutions"
    plain = remedy_for(alarm, lr=1e-4, temperature=1.0, max_new_tokens=8)
    assert plain is not None and plain.label == "raise temperature to 1.2"


def test_branch_from_the_checkpoint_list_switches_and_overlays_the_parent(
    tiny_model_path, sum_rows, tmp_path
):
    cfg = make_cfg(tiny_model_path, tmp_path / "run", max_steps=3, save_steps=1)
    dash = Dashboard(GRPOTrainer(cfg, sum_rows, [digit_share], progress=False))
    parent = dash.trainer
    dash.train()
    rows = dash.checkpoints.widget.children
    assert [r.children[0].value.split(" ·")[0] for r in rows] == ["step 3", "step 2", "step 1"]
    rows[2].children[1].click()  # "branch from here" on step 1
    child = dash.trainer
    assert (
        child is not parent and child.step == 1 and child.run_dir == parent.run_dir / "branches" / "step-1-1"
    )
    assert [m["step"] for m in dash.parent_history] == [1, 2, 3] and [m["step"] for m in dash.history] == [1]
    assert dash in child.callbacks and dash not in parent.callbacks
    fig = panels_figure(dash)
    assert "parent" in [line.get_label() for line in fig.axes[0].lines]
    history = dash.train()
    assert [m["step"] for m in history] == [1, 2, 3] and [m["step"] for m in dash.history] == [1, 2, 3]


def test_branch_clicked_while_the_run_stops_happens_once_it_has(tiny_model_path, sum_rows, tmp_path):
    cfg = make_cfg(tiny_model_path, tmp_path / "run", max_steps=50, save_steps=1)
    dash = Dashboard(GRPOTrainer(cfg, sum_rows, [digit_share], progress=False))
    parent, seen = dash.trainer, {}

    class Clicks(Callback):
        def on_step_end(self, t, m):
            if m["step"] == 2:
                rows = dash.checkpoints.widget.children  # newest first
                rows[-1].children[1].click()  # "branch from here" on step 1 while training: refused
                seen["training"] = (dash.trainer, dash.status.value)
                dash.stop_button.click()
                rows[-1].children[1].click()  # again, now that the run is stopping: held until it has
                seen["stopping"] = (dash.trainer, dash.status.value)

        def on_train_end(self, t):  # after the dashboard's, which moves it to the branch
            seen["ended"] = t

    parent.callbacks.append(Clicks())
    dash.train()
    assert seen["ended"] is parent  # the callbacks after the dashboard still hear the end
    assert seen["training"][0] is parent and "stop the run before branching" in seen["training"][1]
    assert seen["stopping"][0] is parent and "stopping: branching from step 1" in seen["stopping"][1]
    assert dash.trainer is not parent and dash.trainer.step == 1
    assert dash.trainer.run_dir == parent.run_dir / "branches" / "step-1-1"
    assert [m["step"] for m in dash.parent_history] == [1, 2] and "branched from step 1" in dash.status.value
    dash.branch_clicked(7)  # no such checkpoint: the reason in the status line, nothing raised
    assert "branching from step 7 failed: FileNotFoundError" in dash.status.value and dash.trainer.step == 1


def panels_figure(dash):
    from grpo_lite.notebook import panels

    return panels.curves_figure(dash.history, dash.eval_points, parent=dash.parent_history)


def test_widget_updates_keep_flowing_on_ipykernel_7():
    # A stand-in for ipykernel 7's kernel: while a cell holds the lock, comm messages are dispatched
    # with no idle status; the patch publishes one per message, and only then.
    import asyncio

    from grpo_lite.notebook.kernel import keep_widget_updates_flowing

    published, handled = [], []

    class Kernel:
        def __init__(self):
            self._main_asyncio_lock = asyncio.Lock()
            self.shell_handlers = {"comm_msg": lambda stream, idents, msg: handled.append(msg)}

        def _publish_status(self, status, channel, parent=None):
            published.append((status, parent))

    kernel = Kernel()
    assert keep_widget_updates_flowing(kernel) and keep_widget_updates_flowing(kernel)  # idempotent

    async def scenario():
        kernel.shell_handlers["comm_msg"](None, [], "update-1")  # no cell running: ipykernel says idle itself
        async with kernel._main_asyncio_lock:  # a cell awaits dashboard.finished()
            await kernel.shell_handlers["comm_msg"](None, [], "update-2")

    asyncio.run(scenario())
    assert handled == ["update-1", "update-2"] and published == [("idle", "update-2")]
    assert keep_widget_updates_flowing(object()) is False  # other kernels: left alone
