"""Rewards that hang or crawl: bounded, recorded, training goes on, stop works, the editor's Test too."""

import threading
import time

import pytest
from conftest import digit_share
from test_engine import make_cfg

from grpo_lite.notebook.editor import try_reward
from grpo_lite.trainer import GRPOTrainer
from rewards.bounded_call import RewardTimeout, call_bounded
from rewards.combine import combine

KW = {"prompts": ["p"], "completions": ["c"]}


def hanging():
    """A reward blocked until its event is set (set it at the end: nothing keeps running)."""
    release = threading.Event()

    def hang(prompts, completions, **kw):
        release.wait()
        return [0.0] * len(completions)

    return hang, release


def test_a_spinning_call_is_stopped_and_its_line_named():
    def spin(prompts, completions, **kw):
        while True:
            pass

    start = time.monotonic()
    with pytest.raises(
        RewardTimeout,
        match=r"reward 'spin' did not return within 0.3 s \(at line \d+: `while True:`\); its call was stopped",
    ):
        call_bounded(spin, KW, 0.3, name="spin")
    assert time.monotonic() - start < 1.5
    time.sleep(0.2)
    assert not [t for t in threading.enumerate() if t.name == "reward spin"]  # nothing left spinning


def test_a_blocked_call_is_left_once_and_the_function_not_called_again_meanwhile():
    release, calls = threading.Event(), []

    def blocked(prompts, completions, **kw):
        calls.append(1)
        release.wait()
        return [1.0]

    with pytest.raises(
        RewardTimeout, match=r"within 0.2 s \(at line \d+: `release.wait\(\)`\); its call is blocked"
    ):
        call_bounded(blocked, KW, 0.2, name="blocked")
    with pytest.raises(RewardTimeout, match="reward 'blocked' is still running its call from"):
        call_bounded(blocked, KW, 0.2, name="blocked")
    assert calls == [1]
    release.set()
    time.sleep(0.3)
    assert call_bounded(blocked, KW, 2.0, name="blocked") == [1.0]  # finished: called again


def test_slow_but_in_time_errors_and_stop():
    def slow(prompts, completions, **kw):
        time.sleep(0.2)
        return [0.5]

    def broken(prompts, completions, **kw):
        raise KeyError("column")

    assert call_bounded(slow, KW, 2.0, name="slow") == [0.5]
    with pytest.raises(KeyError, match="column"):
        call_bounded(broken, KW, 2.0, name="broken")
    release = threading.Event()

    def waits(prompts, completions, **kw):
        release.wait()
        return [0.0]

    start = time.monotonic()
    with pytest.raises(RewardTimeout):
        call_bounded(waits, KW, 30.0, name="waits", stop=lambda: time.monotonic() - start > 0.3)
    assert time.monotonic() - start < 2  # a stop request does not wait out the limit
    release.set()


def test_scores_record_the_timeout_and_keep_the_others():
    hang, release = hanging()
    scores = combine(digit_share, hang).score(["p", "q"], ["12", "ab"], time_limit=0.2)
    release.set()
    assert scores.per_function == {"digit_share": [1.0, 0.0], "hang": [None, None]} and scores.total == [
        1.0,
        0.0,
    ]
    assert (
        scores.timed_out == ["hang"]
        and "RewardTimeout: reward 'hang' did not return within 0.2 s" in scores.errors["hang"]
    )


def test_training_goes_on_and_a_reward_that_keeps_hanging_gets_weight_0(tiny_model_path, sum_rows, tmp_path):
    hang, release = hanging()
    cfg = make_cfg(tiny_model_path, tmp_path / "r", max_steps=5, reward_timeout=0.3)
    start = time.monotonic()
    history = GRPOTrainer(cfg, sum_rows, [digit_share, hang], progress=False).train()
    release.set()
    assert [m["step"] for m in history] == [1, 2, 3, 4, 5] and time.monotonic() - start < 60
    for m in history[:3]:
        assert "RewardTimeout: reward 'hang'" in m["reward_error_tracebacks"]["hang"]
    assert history[3]["changes"] == {"disabled_after_timeouts": ["hang"], "weight:hang": 0.0}
    assert [m["weights/hang"] for m in history] == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert all(m["rewards/digit_share/mean"] == m["rewards/digit_share/mean"] for m in history)  # not NaN


def test_stop_works_while_a_reward_hangs(tiny_model_path, sum_rows, tmp_path):
    hang, release = hanging()
    cfg = make_cfg(tiny_model_path, tmp_path / "r", max_steps=5, reward_timeout=120)
    trainer = GRPOTrainer(cfg, sum_rows, [digit_share, hang], progress=False)
    threading.Timer(3.0, trainer.steering.stop).start()
    start = time.monotonic()
    history = trainer.train()
    release.set()
    assert (
        time.monotonic() - start < 30 and len(history) == 1
    )  # the step in progress ends, then the run stops
    assert (tmp_path / "r" / "checkpoints" / "step-1").is_dir()


def test_the_editors_test_is_bounded_too():
    latest = {"prompts": ["p"], "completions": ["c"], "columns": {}, "per_function": {}}
    result = try_reward(
        "def spin(prompts, completions, **kw):\n    while True:\n        pass\n",
        "spin",
        latest,
        time_limit=0.3,
    )
    assert not result.ok and "did not return within 0.3 s (at line 2: `while True:`)" in result.message
