"""Steering round two: reward weights, learning rate, adding and removing rewards — the requests
checked when made, applied at the next boundary, recorded in that step's metrics."""

import math

import pytest
import torch
from conftest import digit_share
from test_engine import make_cfg
from transformers import get_scheduler

from grpo_lite.callbacks import Callback
from grpo_lite.steering import Changes, Steering, set_learning_rate
from grpo_lite.trainer import GRPOTrainer
from rewards import combine


def length_bonus(prompts, completions, **kw):
    return [len(c) / 100 for c in completions]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (lambda s: s.set_reward_weights({"nope": 1.0}), r"unknown reward name\(s\) \['nope'\]; rewards: \['digit_share', 'length_bonus'\]"),
        (lambda s: s.set_reward_weights({"digit_share": -1}), "reward 'digit_share': weight must be a finite number >= 0; got -1"),
        (lambda s: s.set_reward_weights({"digit_share": math.nan}), "got nan"),
        (lambda s: s.set_reward_weights({"digit_share": True}), "got True"),
        (lambda s: s.set_learning_rate(0), "learning rate must be a finite number > 0; got 0"),
        (lambda s: s.set_learning_rate(-1e-5), "got -1e-05"),
        (lambda s: s.set_learning_rate(math.inf), "got inf"),
        (lambda s: s.add_reward(digit_share), "a reward named 'digit_share' is already in use"),
        (lambda s: s.add_reward(lambda p, c, **k: [0.0] * len(c)), "needs a name"),
        (lambda s: s.add_reward(length_bonus, name="x2", weight=-2), "reward 'x2': weight must be"),
        (lambda s: s.remove_reward("nope"), r"no reward named 'nope'"),
        (lambda s: s.replace_reward("nope", digit_share), r"no reward named 'nope'"),
    ],
)  # fmt: skip
def test_bad_requests_are_refused_at_once_and_change_nothing(request_, message):
    steering = Steering(lambda: ["digit_share", "length_bonus"])
    with pytest.raises(ValueError, match=message):
        request_(steering)
    assert not steering.take()


def test_the_last_reward_cannot_be_removed_even_through_pending_requests():
    steering = Steering(lambda: ["a", "b"])
    steering.remove_reward("a")
    with pytest.raises(ValueError, match="cannot remove 'b': it is the last reward function"):
        steering.remove_reward("b")
    steering.add_reward(length_bonus)
    steering.remove_reward("b")  # now allowed: length_bonus remains
    assert steering.take().removed == ["a", "b"]


def test_changes_apply_reweights_adds_and_removes():
    rewards = combine(digit_share, length_bonus, weights=[1.0, 2.0])
    changes = Changes(weights={"digit_share": 0.25}, removed=["length_bonus"])

    def exact(prompts, completions, **kw):
        return [1.0] * len(completions)

    steering = Steering(lambda: rewards.names)
    steering.add_reward(exact, weight=3.0)
    changes.added = steering.take().added
    new, recorded = changes.apply(sampling(), rewards)
    assert [(r.name, r.weight) for r in new.rewards] == [("digit_share", 0.25), ("exact", 3.0)]
    assert recorded["weight:digit_share"] == 0.25 and recorded["removed_rewards"] == ["length_bonus"]
    assert "def exact" in recorded["added:exact"]
    scores = new.score(["p"], ["12ab"])
    assert scores.total == [pytest.approx(0.25 * 0.5 + 3.0)]


def sampling():
    from grpo_lite.rollout import Sampling as S

    return S(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=8)


def test_learning_rate_set_mid_schedule_continues_the_schedule():
    # linear: 2 warmup steps, 10 in all, base 1e-2. After 4 steps the factor is (10-4)/(10-2) = 0.75,
    # so the lr is 7.5e-3. Setting 3e-3 makes the base 3e-3 / 0.75 = 4e-3; one step later the factor
    # is 5/8 and the lr 2.5e-3; at the end of the decay it is 0.
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=1e-2)
    sched = get_scheduler("linear", opt, num_warmup_steps=2, num_training_steps=10)
    for _ in range(4):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(7.5e-3)
    set_learning_rate(sched, 3e-3)
    assert opt.param_groups[0]["lr"] == pytest.approx(3e-3) and sched.get_last_lr() == [pytest.approx(3e-3)]
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(2.5e-3)
    sched.load_state_dict(sched.state_dict())  # what a checkpoint keeps: the new base
    assert sched.base_lrs == [pytest.approx(4e-3)]


class Plan(Callback):
    """At the boundary before step N, make the requests planned for N."""

    def __init__(self, plan):
        self.plan = plan

    def on_step_boundary(self, trainer):
        if trainer.step + 1 in self.plan:
            self.plan.pop(trainer.step + 1)(trainer.steering)


def test_each_change_lands_at_its_step_and_is_recorded(tiny_model_path, sum_rows, tmp_path):
    plan = {
        2: lambda s: (s.set_reward_weights({"digit_share": 0.5}), s.set_learning_rate(1e-3)),
        3: lambda s: s.add_reward(length_bonus, weight=2.0),
        4: lambda s: s.remove_reward("length_bonus"),
    }
    cfg = make_cfg(tiny_model_path, tmp_path / "r", max_steps=4, learning_rate=5e-2)
    history = GRPOTrainer(cfg, sum_rows, [digit_share], callbacks=[Plan(plan)], progress=False).train()
    by_step = {m["step"]: m for m in history}
    assert [by_step[s]["weights/digit_share"] for s in (1, 2, 3, 4)] == [1.0, 0.5, 0.5, 0.5]
    assert [by_step[s]["lr"] for s in (1, 2, 3, 4)] == pytest.approx([5e-2, 1e-3, 1e-3, 1e-3])
    assert by_step[2]["changes"] == {"weight:digit_share": 0.5, "learning_rate": 1e-3}
    assert "def length_bonus" in by_step[3]["changes"]["added:length_bonus"]
    assert by_step[4]["changes"] == {"removed_rewards": ["length_bonus"]}
    assert [("rewards/length_bonus/mean" in by_step[s], "weights/length_bonus" in by_step[s]) for s in (1, 2, 3, 4)] == [
        (False, False), (False, False), (True, True), (False, False)]  # fmt: skip
    # the total is the weighted sum in force at that step
    assert by_step[2]["reward"] == pytest.approx(0.5 * by_step[2]["rewards/digit_share/mean"], rel=1e-6)
    m3 = by_step[3]
    assert m3["reward"] == pytest.approx(
        0.5 * m3["rewards/digit_share/mean"] + 2.0 * m3["rewards/length_bonus/mean"], rel=1e-6
    )
