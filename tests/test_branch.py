"""Rewind and branch, and checkpoint retention, on the tiny model (CPU)."""

import hashlib
import json

import pytest
from conftest import digit_share
from test_cli import gsm8k_file, tiny_args  # noqa: F401 - gsm8k_file is a fixture
from test_engine import make_cfg

from grpo_lite.apps.cli import main
from grpo_lite.callbacks import Callback
from grpo_lite.run import RunDir
from grpo_lite.run.files import REQUIRED
from grpo_lite.trainer import GRPOTrainer

KEYS = ("reward", "loss", "grad_norm", "completion_len_mean")


def tree(root):
    """Every file under ``root`` (outside branches/) with the sha256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and "branches" not in p.relative_to(root).parts}  # fmt: skip


class Reweight(Callback):
    def on_step_boundary(self, trainer):
        if trainer.step == 2:  # lands at step 3 of the parent only
            trainer.steering.set_reward_weights({"digit_share": 0.25})


@pytest.fixture(scope="module")
def parent(tiny_model_path, tmp_path_factory):
    rows = [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(10) for b in range(10)]
    cfg = make_cfg(tiny_model_path, tmp_path_factory.mktemp("parent") / "run", max_steps=4, save_steps=1)
    trainer = GRPOTrainer(cfg, rows, [digit_share], callbacks=[Reweight()], progress=False)
    trainer.train()
    return trainer, rows


def test_branch_continues_at_n_plus_1_reproduces_the_parent_and_leaves_it_untouched(parent):
    trainer, _ = parent
    before = tree(trainer.run_dir)
    taken = sorted((trainer.run_dir / "branches").glob("step-2-*"))  # the other branch test may run first
    child = trainer.branch(2)
    assert child.run_dir == trainer.run_dir / "branches" / f"step-2-{len(taken) + 1}"
    assert child.step == 2 and [m["step"] for m in child.history] == [1, 2]
    # the weights in force at step 2 came back (the parent set 0.25 only from step 3)
    assert [(r.name, r.weight) for r in child.rewards.rewards] == [("digit_share", 1.0)]
    child.steering.set_reward_weights({"digit_share": 0.25})  # the same edit: the same run
    history = child.train()
    assert [m["step"] for m in history] == [1, 2, 3, 4]
    for mine, theirs in zip(history[2:], trainer.history[2:], strict=True):
        for key in KEYS:
            assert mine[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-6), (mine["step"], key)
    lineage = json.loads((child.run_dir / "lineage.json").read_text())
    assert lineage["parent_run_dir"] == str(trainer.run_dir.resolve()) and lineage["parent_step"] == 2
    assert lineage["checkpoint"] == str((trainer.run_dir / "checkpoints" / "step-2").resolve())
    card = (child.run_dir / "adapter" / "README.md").read_text()
    assert f"Branched from the run in `{trainer.run_dir.resolve()}` at its step 2" in card
    assert (
        json.loads((child.run_dir / "adapter" / "grpo_lite.json").read_text())["lineage"]["parent_step"] == 2
    )
    assert tree(trainer.run_dir) == before  # the parent's files, byte for byte


def test_a_second_branch_gets_its_own_directory_and_can_differ(parent):
    trainer, _ = parent
    taken = sorted(
        (trainer.run_dir / "branches").glob("step-2-*")
    )  # the first branch's test may run elsewhere
    child = trainer.branch(2)
    assert child.run_dir.name == f"step-2-{len(taken) + 1}" and child.run_dir not in taken
    child.steering.set_sampling(temperature=0.5)
    history = child.train()
    assert history[2]["changes"] == {"temperature": 0.5} and history[2]["temperature"] == 0.5


def test_branch_of_a_branch_records_the_chain(parent, tmp_path):
    trainer, _ = parent
    child = trainer.branch("latest", output_dir=tmp_path / "b1")
    assert child.step == 4
    child.cfg = child.cfg.replace(max_steps=5)
    child.train()
    grandchild = child.branch(5, output_dir=tmp_path / "b2")
    lineage = json.loads((tmp_path / "b2" / "lineage.json").read_text())
    assert lineage["parent_step"] == 5 and lineage["parent_lineage"]["parent_step"] == 4
    assert grandchild.step == 5


def test_bad_branch_requests_name_the_problem(parent, tmp_path):
    trainer, _ = parent
    with pytest.raises(
        FileNotFoundError, match=r"cannot branch from step 99: .*complete checkpoints: steps \[1, 2, 3, 4\]"
    ):
        trainer.branch(99)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(
        FileExistsError, match=r"cannot branch into .*full: it is not empty \(holds \['notes.txt'\]\)"
    ):
        trainer.branch(2, output_dir=tmp_path / "full")
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"


def test_cli_resume_into_another_output_dir_makes_a_branch(tiny_model_path, gsm8k_file, tmp_path):  # noqa: F811
    out, other = tmp_path / "r", tmp_path / "other"
    assert main(["train", "--dataset", str(gsm8k_file), *tiny_args(tiny_model_path, out)]) == 0
    before = tree(out)
    ckpt = out / "checkpoints" / "step-1"
    assert (
        main(["train", "--dataset", str(gsm8k_file), "--resume", str(ckpt), "--output-dir", str(other)]) == 0
    )
    assert json.loads((other / "lineage.json").read_text())["parent_step"] == 1
    steps = [json.loads(x)["step"] for x in (other / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2] and tree(out) == before


# ---- retention ---------------------------------------------------------------------------------------
def fake_checkpoint(root, step, interrupted=False, complete=True):
    path = root / "checkpoints" / f"step-{step}"
    path.mkdir(parents=True)
    for name in REQUIRED:
        (path / name).write_text(
            json.dumps({"step": step, "interrupted": interrupted}) if name == "state.json" else "x"
        )
    if not complete:
        (path / "trainer_state.pt").unlink()
    return path


def test_prune_keeps_the_newest_k_and_every_interrupt_checkpoint(tmp_path):
    for step in (1, 3, 4, 5):
        fake_checkpoint(tmp_path, step)
    fake_checkpoint(tmp_path, 2, interrupted=True)  # written on Ctrl-C: kept whatever its age
    fake_checkpoint(tmp_path, 6, complete=False)  # a save that died half way: left to look at
    deleted = RunDir(tmp_path).prune(keep=2)
    assert sorted(p.name for p in deleted) == ["step-1", "step-3"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step-2",
        "step-4",
        "step-5",
        "step-6",
    ]


def test_nothing_is_pruned_when_the_new_checkpoint_fails(tmp_path):
    for step in (1, 2, 3):
        fake_checkpoint(tmp_path, step)

    class Broken:
        def save_pretrained(self, path):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        RunDir(tmp_path).write_checkpoint(
            4, model=Broken(), tokenizer=Broken(), trainer_state={}, state={}, keep=1
        )
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-1", "step-2", "step-3"]


def test_training_keeps_exactly_the_newest_k(tiny_model_path, sum_rows, tmp_path):
    class StopAt4(Callback):
        def on_step_boundary(self, trainer):
            if trainer.step == 4:
                raise KeyboardInterrupt

    cfg = make_cfg(tiny_model_path, tmp_path / "r", max_steps=6, save_steps=1, keep_checkpoints=2)
    GRPOTrainer(cfg, sum_rows, [digit_share], callbacks=[StopAt4()], progress=False).train()
    names = lambda: sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir())  # noqa: E731
    assert names() == ["step-3", "step-4"]  # step 4 written twice (periodic, then on interrupt)
    GRPOTrainer(cfg, sum_rows, [digit_share], resume_from="latest", progress=False).train()
    assert names() == ["step-4", "step-5", "step-6"]  # the interrupt checkpoint stays
    with pytest.raises(ValueError, match="GRPOConfig.keep_checkpoints must be >= 0"):
        make_cfg(tiny_model_path, tmp_path / "x", keep_checkpoints=-1)


def test_a_built_in_reward_comes_back_as_itself_not_as_bare_source():
    # exact_answer's source alone cannot run (it calls helpers of rewards.exact): a branch imports it.
    from grpo_lite.run.rewards import reward_origin, rewards_at
    from rewards import combine, exact_answer, source_of

    state = {"rewards": [{"name": "exact_answer", "weight": 0.5}],
             "reward_sources": {"exact_answer": source_of(exact_answer)},
             "reward_origins": {"exact_answer": reward_origin(exact_answer)}}  # fmt: skip
    edited = combine(lambda prompts, completions, **kw: [0.0] * len(completions), names=["exact_answer"])
    restored = rewards_at(state, edited)
    assert restored.rewards[0].fn is exact_answer and restored.rewards[0].weight == 0.5
    assert restored.score(["1+1="], ["<answer>2</answer>"], answer=["2"]).total == [0.5]
    assert reward_origin(edited.rewards[0].fn) is None  # a lambda: its source is what is saved
