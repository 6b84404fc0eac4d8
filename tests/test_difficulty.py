"""Per-prompt difficulty: the record by hand, resting rows that keep tying (and their return), the
curriculum order, bad difficulty values, and the record through a checkpoint."""

import pytest
import torch

from grpo_lite import GRPOConfig
from grpo_lite.data import PromptData
from grpo_lite.difficulty import Difficulty
from grpo_lite.trainer import GRPOTrainer

nan = float("nan")


def test_the_record_by_hand():
    d = Difficulty(5)
    d.record([0, 1, 2], torch.tensor([1, 1, 1, 1, 0, 1.2, 0, nan, 0.5, 0.5, 0.5, 0.5]), 4, threshold=1.0)
    assert d.visits == {0: [(1.0, True)], 1: [(1 / 3, False)], 2: [(0.0, True)]}
    assert d.histogram() == {"always": 1, "never": 1, "between": 1, "unseen": 2}
    d.record([2, 2], torch.tensor([0.0] * 4 + [0, 0, 0, 1.0]), 4, threshold=1.0)
    assert d.tied_streak(2) == 0 and d.pass_rate(2) == pytest.approx((0 + 0 + 0.25) / 3)
    d.record([2] * 5, torch.zeros(20), 4, threshold=1.0)
    assert len(d.visits[2]) == 4 and d.tied_streak(2) == 5  # four visits remembered, the streak counted


def rows(n=8, **extra):
    return [{"prompt": f"p{i}", **{k: v(i) for k, v in extra.items()}} for i in range(n)]


def test_a_row_that_keeps_tying_is_rested_then_comes_back():
    data = PromptData(rows(), prompt_column="prompt", seed=0, rest_tied_after=2, rest_epochs=1)
    epoch0 = data.take(8)
    tied, mixed = torch.zeros(4), torch.tensor([0.0, 1.0, 0.0, 0.0])
    for row in epoch0:  # row epoch0[0] ties at every visit; the others have signal
        data.visited([row], tied if row == epoch0[0] else mixed, 4)
    epoch1 = data.take(8)
    data.visited([epoch0[0]], tied, 4)  # its second tie in a row: rested
    assert epoch0[0] in epoch1 and data.difficulty.resting == {epoch0[0]: 1}
    assert data.difficulty.metrics()["difficulty/resting"] == 1.0
    epoch2 = data.take(7)  # the stream passes over it once ...
    assert epoch0[0] not in epoch2 and sorted(epoch2) == sorted(set(range(8)) - {epoch0[0]})
    assert data.served == 24 and data.difficulty.resting == {}
    epoch3 = data.take(8)  # ... and it is back, its streak reset
    assert sorted(epoch3) == list(range(8)) and data.difficulty.tied_streak(epoch0[0]) == 0


def test_when_every_row_rests_they_are_served_anyway():
    data = PromptData(rows(3), prompt_column="prompt", seed=0, rest_tied_after=1, rest_epochs=5)
    data.visited([0, 1, 2], torch.zeros(12), 4)
    assert len(data.take(2)) == 2 and data.served == 5  # one epoch passed over, then served


def test_curriculum_by_the_difficulty_column_then_by_pass_rate():
    level = {0: 3, 1: 1, 2: 2, 3: 1, 4: 3, 5: 2}
    data = PromptData(rows(6, difficulty=level.get), prompt_column="prompt", seed=0, order="curriculum")
    first = data.take(6)
    assert [level[i] for i in first] == [1, 1, 2, 2, 3, 3]
    other = PromptData(rows(6, difficulty=level.get), prompt_column="prompt", seed=1, order="curriculum")
    assert [level[i] for i in other.take(6)] == [1, 1, 2, 2, 3, 3] and other.served == 6
    by_rate = PromptData(rows(4), prompt_column="prompt", seed=0, order="curriculum")
    epoch0 = by_rate.take(4)
    for row, right in zip(epoch0, (0.0, 1.0, 0.5, 0.25), strict=True):
        by_rate.visited([row], torch.tensor([1.0] * int(4 * right) + [0.0] * (4 - int(4 * right))), 4)
    assert by_rate.take(4) == [epoch0[1], epoch0[2], epoch0[3], epoch0[0]]  # most often solved first


@pytest.mark.parametrize("bad", ["hard", None, float("nan"), True])
def test_a_difficulty_that_is_not_a_number_names_the_row(bad):
    data = rows(3, difficulty=lambda i: bad if i == 2 else 1)
    with pytest.raises(ValueError, match=rf"'difficulty' column must hold numbers.*row 2 has {bad!r}"):
        PromptData(data, prompt_column="prompt", seed=0, order="curriculum")
    PromptData(data, prompt_column="prompt", seed=0)  # the uniform order never reads it


def test_the_record_and_the_rests_go_through_a_checkpoint(tiny_qwen_path, tmp_path):
    def every_other(prompts, completions, **kw):  # rows p0-p3 tie (all 0), rows p4-p7 have signal
        return [float(i % 2) if int(p[1:]) >= 4 else 0.0 for i, p in enumerate(prompts)]

    cfg = GRPOConfig(model=str(tiny_qwen_path), output_dir=str(tmp_path / "r"), max_new_tokens=4, group_size=4,
                     prompts_per_step=2, micro_batch_size=8, lora_rank=4, max_steps=6, save_steps=3,
                     rollout_weights="adapter", rest_tied_after=1, rest_epochs=2, prompt_order="curriculum")  # fmt: skip
    whole = GRPOTrainer(cfg, rows(), [every_other], progress=False)
    history = whole.train()
    assert history[-1]["difficulty/unseen"] == 0 and history[-1]["difficulty/never"] == 4
    assert history[-1]["difficulty/between"] == 4
    again = GRPOTrainer(
        cfg, rows(), [every_other], progress=False, resume_from=tmp_path / "r/checkpoints/step-3"
    )
    assert again.data.state_dict() != whole.data.state_dict()
    again.train()
    assert again.data.state_dict() == whole.data.state_dict()
    assert [m["difficulty/resting"] for m in again.history[3:]] == [
        m["difficulty/resting"] for m in history[3:]
    ]
