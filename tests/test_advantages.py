"""Group-relative advantages on hand-computed values, and against a loop written as the paper states it."""

import math

import pytest
import torch

from grpo_lite.advantages import equal_reward_fraction, group_advantages


def test_group_scale_hand_computed():
    # One group [1, 0, 0, 1]: mean 0.5, Bessel std sqrt(1/3) = 0.57735.
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4, eps=0.0)
    s = math.sqrt(1 / 3)
    assert torch.allclose(adv, torch.tensor([0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s]))


def test_batch_scale_uses_whole_batch_std():
    # Groups [1, 3] and [0, 0]: group means 2 and 0; batch std of [1,3,0,0] (Bessel) = sqrt(2).
    adv = group_advantages(torch.tensor([1.0, 3.0, 0.0, 0.0]), 2, scale="batch", eps=0.0)
    assert torch.allclose(adv, torch.tensor([-1 / math.sqrt(2), 1 / math.sqrt(2), 0.0, 0.0]))


def test_none_scale_is_dr_grpo_centering():
    adv = group_advantages(torch.tensor([2.0, 0.0, 1.0, 5.0, 5.0, 8.0]), 3, scale="none")
    assert torch.allclose(adv, torch.tensor([1.0, -1.0, 0.0, -1.0, -1.0, 2.0]))


def test_leave_one_out_baseline():
    # RLOO: r_i - mean of the others. Group [3, 0, 0]: 3 - 0, 0 - 1.5, 0 - 1.5.
    adv = group_advantages(torch.tensor([3.0, 0.0, 0.0]), 3, scale="none", baseline="leave_one_out")
    assert torch.allclose(adv, torch.tensor([3.0, -1.5, -1.5]))


def test_equal_rewards_give_zero_advantage_and_count_as_no_signal():
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0])
    adv = group_advantages(rewards, 2)
    assert adv[:2].abs().max().item() == 0.0
    assert equal_reward_fraction(rewards, 2) == 0.5


def test_nan_reward_gets_zero_advantage_and_is_left_out_of_stats():
    adv = group_advantages(torch.tensor([1.0, float("nan"), 0.0]), 3, eps=0.0)
    # Valid [1, 0]: mean 0.5, std sqrt(0.5).
    s = math.sqrt(0.5)
    assert torch.allclose(adv, torch.tensor([0.5 / s, 0.0, -0.5 / s]))


def test_matches_paper_loop():
    torch.manual_seed(0)
    rewards = torch.rand(5 * 4)
    fast = group_advantages(rewards, 4)
    slow = []
    for g in range(5):
        group = rewards[g * 4 : (g + 1) * 4].tolist()
        mean = sum(group) / 4
        std = math.sqrt(sum((x - mean) ** 2 for x in group) / 3)
        slow += [(x - mean) / (std + 1e-4) for x in group]
    assert torch.allclose(fast, torch.tensor(slow), atol=1e-6)


def test_wrong_length_is_an_error():
    with pytest.raises(ValueError, match="group_size=4"):
        group_advantages(torch.zeros(6), 4)
