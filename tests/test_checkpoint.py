"""Checkpoints: resume reproduces an uninterrupted run; Ctrl-C saves; incomplete folders are skipped."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import digit_share
from test_engine import load_base_4bit, make_cfg

from grpo_lite.callbacks import Callback
from grpo_lite.logprobs import adapters_disabled, completion_logprobs
from grpo_lite.run import RunDir
from grpo_lite.trainer import GRPOTrainer

KEYS = ("reward", "loss", "grad_norm", "entropy", "completion_len_mean")


def run(cfg, rows, **kw):
    return GRPOTrainer(cfg, rows, [digit_share], progress=False, **kw)


def test_resume_equals_uninterrupted(tiny_model_path, sum_rows, tmp_path):
    full = run(make_cfg(tiny_model_path, tmp_path / "full", max_steps=6), sum_rows).train()

    class InterruptAtStep3(Callback):
        def on_step_boundary(self, trainer):
            if trainer.step == 3:
                raise KeyboardInterrupt

    cfg = make_cfg(tiny_model_path, tmp_path / "part", max_steps=6)
    first = run(cfg, sum_rows, callbacks=[InterruptAtStep3()]).train()
    assert [m["step"] for m in first] == [1, 2, 3]
    assert (tmp_path / "part" / "checkpoints" / "step-3").is_dir()
    assert not (tmp_path / "part" / "adapter").exists()  # an interrupted run has no final adapter
    resumed = run(cfg, sum_rows, resume_from="latest")
    assert resumed.step == 3
    rest = resumed.train()
    assert [m["step"] for m in rest] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(full[3:], rest[3:], strict=True):
        for k in KEYS:
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6, nan_ok=True), (
                a["step"],
                k,
            )  # NaN entropy: all skipped
    logged = [json.loads(x)["step"] for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4, 5, 6]


def test_resume_truncates_log_of_the_interrupted_attempt(tiny_model_path, sum_rows, tmp_path):
    cfg = make_cfg(tiny_model_path, tmp_path / "r", max_steps=4, save_steps=2)
    run(cfg, sum_rows).train()  # checkpoints at 2 and 4
    shutil.rmtree(tmp_path / "r" / "checkpoints" / "step-4")
    resumed = run(cfg, sum_rows, resume_from="latest")
    assert resumed.step == 2
    assert [m["step"] for m in resumed.history] == [1, 2]


def test_incomplete_checkpoint_is_ignored_with_warning(tiny_model_path, sum_rows, tmp_path):
    cfg = make_cfg(tiny_model_path, tmp_path / "r", max_steps=2, save_steps=1)
    run(cfg, sum_rows).train()
    broken = tmp_path / "r" / "checkpoints" / "step-9"
    shutil.copytree(tmp_path / "r" / "checkpoints" / "step-2", broken)
    (broken / "adapter_model.safetensors").unlink()  # as if the writer died half way
    with pytest.warns(UserWarning, match="ignoring incomplete checkpoint .*step-9"):
        assert RunDir(tmp_path / "r").latest().name == "step-2"
    with pytest.raises(FileNotFoundError, match="not a complete grpo-lite checkpoint"):
        run(cfg, sum_rows, resume_from=broken)


def test_starting_adapter_trains_on_and_reference_stays_base(tiny_model_path, sum_rows, tmp_path):
    run(make_cfg(tiny_model_path, tmp_path / "first", max_steps=3), sum_rows).train()
    cfg = make_cfg(
        tiny_model_path, tmp_path / "second", adapter=str(tmp_path / "first" / "adapter"), beta=0.1
    )
    tr = run(cfg, sum_rows)
    assert any(p.requires_grad for p in tr.model.parameters())
    ids, attn, cmask = (
        torch.tensor([[5, 40, 41, 42, 43]]),
        torch.ones(1, 5, dtype=torch.long),
        torch.ones(1, 3),
    )
    tr.model.eval()
    with adapters_disabled(tr.model):
        ref, _ = completion_logprobs(tr.model, ids, attn, cmask, temperature=1.0)
    with torch.no_grad():
        base, _ = completion_logprobs(load_base_4bit(tiny_model_path), ids, attn, cmask, temperature=1.0)
        policy, _ = completion_logprobs(tr.model, ids, attn, cmask, temperature=1.0)
    assert (ref - base).abs().max().item() < 1e-5  # reference = base, not the starting adapter
    assert (policy - base).abs().max().item() > 1e-3  # the starting adapter is active in the policy
    m = tr.train_step()
    assert m["kl"] > 0  # the policy starts away from the reference


FIXTURE = Path(__file__).resolve().parent / "fixtures" / "checkpoint-v1" / "run"


@pytest.mark.parametrize("how", ["resume", "branch"])
def test_a_checkpoint_written_before_run_and_rollout_existed_still_loads(tiny_model_path, tmp_path, how):
    """tests/fixtures/checkpoint-v1: step 1 of a run checkpointed by grpo-lite before the run/ and rollout/
    packages (temperature steered to 0.7 at step 1; the tiny model; LoRA rank 2). Resumed in its own run
    folder, or branched into another, it loads whole: adapter, optimizer, sampling, rewards, step."""
    from safetensors.torch import load_file

    from rewards import exact_answer

    shutil.copytree(FIXTURE, tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoints" / "step-1"
    rows = [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(5) for b in range(5)]
    out = tmp_path / ("run" if how == "resume" else "branch")
    cfg = make_cfg(tiny_model_path, out, max_new_tokens=4, group_size=4, prompts_per_step=2, micro_batch_size=8,
                   lora_rank=2, lora_alpha=4, max_steps=2, temperature=0.9)  # fmt: skip
    trainer = GRPOTrainer(cfg, rows, [exact_answer], resume_from=checkpoint if how == "branch" else "latest",
                          progress=False)  # fmt: skip
    assert trainer.step == 1 and trainer.sampling.temperature == 0.7
    assert trainer.rewards.names == ["exact_answer"] and trainer.rewards.rewards[0].fn is exact_answer
    saved = load_file(checkpoint / "adapter_model.safetensors")
    params = {n.replace(".default", ""): p for n, p in trainer.model.named_parameters() if "lora_" in n}
    assert saved and all(torch.equal(saved[k], params[k]) for k in saved)
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=False)["optimizer"]["state"]
    loaded = trainer.optimizer.state_dict()["state"]
    assert state and all(torch.equal(state[i]["exp_avg"], loaded[i]["exp_avg"]) for i in state)
    history = trainer.train()
    assert [m["step"] for m in history] == [1, 2] and history[-1]["temperature"] == 0.7
    assert (trainer.lineage is not None) == (how == "branch")
