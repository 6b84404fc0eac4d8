"""Held-out evaluation while training and the best checkpoint (grpo_lite/held_out.py)."""

import json

import pytest

from grpo_lite import GRPOConfig
from grpo_lite.run import RunDir
from grpo_lite.trainer import GRPOTrainer

ROWS = [{"prompt": f"{i}+{i}=", "answer": str(2 * i)} for i in range(6)]
EVAL = [{"prompt": f"{i}+1=", "answer": str(i + 1), "right": i < 3} for i in range(4)]


def zero(prompts, completions, **kw):
    return [0.0] * len(completions)


def marked_right(prompts, completions, right, **kw):
    """1.0 on the rows marked right, whatever the model wrote: 3 of the 4 eval rows."""
    return [1.0 if r else 0.0 for r in right]


def scripted(shares):
    """A measure scoring the k-th evaluation's share ``shares[k]`` of the 4 eval rows (a quarter each)."""
    calls = []

    def measure(prompts, completions, **kw):
        n = round(4 * shares[min(len(calls), len(shares) - 1)])
        calls.append(n)
        return [1.0] * n + [0.0] * (len(completions) - n)

    return measure


def make_cfg(path, out, **kw):
    base = dict(model=str(path), output_dir=str(out), max_new_tokens=4, group_size=2, prompts_per_step=2,
                micro_batch_size=4, learning_rate=1e-3, lora_rank=4, max_steps=5, save_steps=0,
                rollout_weights="adapter")  # fmt: skip
    return GRPOConfig(**(base | kw))


def test_the_schedule_and_the_metrics_by_hand(tiny_qwen_path, tmp_path):
    """eval_every=2 over 5 steps: evaluated at 2, 4 and the last; eval/NAME is the share of rows a
    measure gives 1.0 (3 of 4 marked right: 0.75; zero: 0.0), in metrics.jsonl too."""
    cfg = make_cfg(tiny_qwen_path, tmp_path / "r", eval_every=2)
    tr = GRPOTrainer(cfg, ROWS, [zero], progress=False, eval_dataset=EVAL, eval_measures=[marked_right, zero])
    history = tr.train()
    evaluated = [m["step"] for m in history if "eval/marked_right" in m]
    assert evaluated == [2, 4, 5]
    for m in history:
        if m["step"] in evaluated:
            assert m["eval/marked_right"] == 0.75 and m["eval/zero"] == 0.0 and m["eval/seconds"] > 0
        else:
            assert not any(k.startswith("eval/") for k in m)
    logged = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [m.get("eval/marked_right") for m in logged] == [None, 0.75, None, 0.75, 0.75]
    assert json.loads((tmp_path / "r" / "best.json").read_text()) == {
        "step": 2, "measure": "marked_right", "score": 0.75,
    }  # fmt: skip  # a tie keeps the earlier step
    assert RunDir(tmp_path / "r").complete_steps() == [2, 5]  # save_steps=0: the best and the end


def test_eval_max_rows_and_the_training_rewards_as_default_measures(tiny_qwen_path, tmp_path):
    cfg = make_cfg(tiny_qwen_path, tmp_path / "r", eval_every=1, max_steps=1, eval_max_rows=2)
    tr = GRPOTrainer(cfg, ROWS, [marked_right], progress=False, eval_dataset=EVAL)
    [m] = tr.train()
    assert len(tr.held_out.rows) == 2 and m["eval/marked_right"] == 1.0  # rows 0 and 1 are both right


def test_the_best_is_kept_past_retention_and_found_again_on_resume(tiny_qwen_path, tmp_path):
    """Scores 0.25, 0.75, 0.5, 0.5 with keep_checkpoints=1: steps 2 (best) and 4 (newest) stay. A
    resume goes on: a tie does not move the best, a better score does and the old best is pruned."""
    cfg = make_cfg(
        tiny_qwen_path, tmp_path / "r", eval_every=1, max_steps=4, save_steps=1, keep_checkpoints=1
    )
    run = RunDir(tmp_path / "r")
    GRPOTrainer(cfg, ROWS, [zero], progress=False, eval_dataset=EVAL,
                eval_measures={"acc": scripted([0.25, 0.75, 0.5, 0.5])}).train()  # fmt: skip
    assert run.complete_steps() == [2, 4] and run.best() == {"step": 2, "measure": "acc", "score": 0.75}
    assert run.find_checkpoint("best") == run.checkpoint(2)
    more = GRPOTrainer(cfg.replace(max_steps=6), ROWS, [zero], progress=False, resume_from="latest",
                       eval_dataset=EVAL, eval_measures={"acc": scripted([0.75, 1.0])})  # fmt: skip
    assert more.held_out.best_measure == "acc" and run.best()["step"] == 2
    more.train()
    assert run.best() == {"step": 6, "measure": "acc", "score": 1.0} and run.complete_steps() == [6]


def test_a_resume_before_the_best_finds_the_best_up_to_there(tiny_qwen_path, tmp_path):
    cfg = make_cfg(tiny_qwen_path, tmp_path / "r", eval_every=1, max_steps=4, save_steps=1)
    run = RunDir(tmp_path / "r")
    GRPOTrainer(cfg, ROWS, [zero], progress=False, eval_dataset=EVAL,
                eval_measures={"acc": scripted([0.5, 0.25, 1.0, 0.0])}).train()  # fmt: skip
    assert run.best()["step"] == 3
    GRPOTrainer(cfg, ROWS, [zero], progress=False, resume_from=run.checkpoint(2), eval_dataset=EVAL,
                eval_measures={"acc": scripted([0.0])})  # fmt: skip
    assert run.best() == {
        "step": 1,
        "measure": "acc",
        "score": 0.5,
    }  # step 3's score was cut with its metrics


def test_a_branch_has_a_best_of_its_own(tiny_qwen_path, tmp_path):
    cfg = make_cfg(tiny_qwen_path, tmp_path / "r", eval_every=1, max_steps=3, save_steps=1)
    parent = GRPOTrainer(cfg, ROWS, [zero], progress=False, eval_dataset=EVAL,
                         eval_measures={"acc": scripted([1.0, 0.5, 0.5])})  # fmt: skip
    parent.train()
    branch = parent.branch(2)
    assert (
        branch.held_out.rows == EVAL and RunDir(branch.run_dir).best() is None
    )  # the parent's best is not its
    branch.cfg = branch.cfg.replace(max_steps=3)
    branch.train()
    assert RunDir(branch.run_dir).best() == {"step": 3, "measure": "acc", "score": 0.5}
    assert RunDir(tmp_path / "r").best()["step"] == 1


def test_bad_settings_are_named_before_any_model_loads(tmp_path):
    base = dict(model="never-loaded", output_dir=str(tmp_path / "r"))
    with pytest.raises(ValueError, match=r"eval_every=3 needs eval rows: pass eval_dataset"):
        GRPOTrainer(GRPOConfig(**base, eval_every=3), ROWS, [zero])
    with pytest.raises(ValueError, match=r"best_measure='acc' is not an eval measure; measures: \['zero'\]"):
        GRPOTrainer(GRPOConfig(**base, eval_every=1, best_measure="acc"), ROWS, [zero], eval_dataset=EVAL)
    with pytest.raises(ValueError, match=r"eval measure 'no_such_reward' is not a reward function"):
        GRPOTrainer(
            GRPOConfig(**base, eval_every=1),
            ROWS,
            [zero],
            eval_dataset=EVAL,
            eval_measures=["no_such_reward"],
        )
    with pytest.raises(ValueError, match=r"GRPOConfig.eval_every must be an integer >= 0"):
        GRPOConfig(**base, eval_every=-1)
    with pytest.raises(FileNotFoundError, match=r"has none \(no held-out evaluation"):
        RunDir(tmp_path / "r").find_checkpoint("best", purpose="export")


def test_the_reward_curve_draws_the_held_out_points(tmp_path, monkeypatch):
    """reward_curve.png: the held-out measure's points (steps 2 and 4) beside the reward curves."""
    import matplotlib.figure

    from grpo_lite.plotting import plot_rewards

    drawn = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: drawn.append(fig))
    history = [{"step": s, "reward": 0.1 * s, "rewards/acc/mean": 0.1 * s} | ({"eval/acc": s / 8, "eval/seconds": 1.0}
               if s % 2 == 0 else {}) for s in range(1, 5)]  # fmt: skip
    plot_rewards(history, tmp_path / "c.png")
    [ax] = drawn[0].axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert "held-out acc" in lines and "held-out seconds" not in lines
    assert list(lines["held-out acc"].get_xdata()) == [2, 4] and list(lines["held-out acc"].get_ydata()) == [
        0.25,
        0.5,
    ]
