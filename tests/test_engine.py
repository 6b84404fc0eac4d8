"""The engine on a tiny 4-bit model on CPU: LoRA-only updates, reference = adapters off, learning."""

import json
import math
import os

import pytest
import torch
from conftest import digit_share
from peft import PeftModel
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from grpo_lite import GRPOConfig
from grpo_lite.callbacks import Callback
from grpo_lite.logprobs import adapters_disabled, completion_logprobs
from grpo_lite.policy.model import keep_cpu_4bit_layout
from grpo_lite.trainer import GRPOTrainer
from grpo_lite.update import optimizer_step
from rewards import RewardFunctionError


def make_cfg(path, out, **kw):
    base = dict(
        model=str(path),
        output_dir=str(out),
        max_new_tokens=8,
        group_size=8,
        prompts_per_step=4,
        micro_batch_size=16,
        learning_rate=5e-2,
        lora_rank=8,
        max_steps=3,
        save_steps=0,
    )
    return GRPOConfig(**(base | kw))


def load_base_4bit(path):
    """The base loaded separately with plain transformers, as a user would."""
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=q, device_map={"": "cpu"})
    # bitsandbytes' CPU inference repacking (AVX512-BF16 CPUs) rounds absmax to bf16; grpo-lite turns it
    # off (see model.keep_cpu_4bit_layout), so the comparison model must too.
    keep_cpu_4bit_layout(model)
    return model


def test_4bit_lora_only_lora_trains_and_base_is_bit_identical(tiny_model_path, sum_rows, tmp_path):
    tr = GRPOTrainer(make_cfg(tiny_model_path, tmp_path / "run"), sum_rows, [digit_share], progress=False)
    layer = tr.model.get_base_model().model.layers[0].self_attn.q_proj
    assert type(layer.base_layer).__name__ == "Linear4bit"
    trainable = {n for n, p in tr.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    before = {n: t.detach().clone() for n, t in tr.model.state_dict().items()}
    tr.train_step()
    tr.train_step()
    after = tr.model.state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all("lora_" in n for n in changed), sorted(changed)[:5]
    assert any("lora_B" in n for n in changed)  # B starts at 0; it must have moved


def test_ratio_one_and_kl_zero_at_step_zero(tiny_model_path, sum_rows, tmp_path):
    cfg = make_cfg(tiny_model_path, tmp_path / "run", beta=0.04)
    m = GRPOTrainer(cfg, sum_rows, [digit_share], progress=False).train_step()
    assert m["ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert m["kl"] == pytest.approx(0.0, abs=1e-6)
    assert m["skipped_compute_frac"] == 0.0  # with beta > 0 nothing may be skipped


def test_reference_is_base_loaded_separately(tiny_model_path, sum_rows, tmp_path):
    tr = GRPOTrainer(make_cfg(tiny_model_path, tmp_path / "run"), sum_rows, [digit_share], progress=False)
    for _ in range(3):
        tr.train_step()
    ids = torch.tensor([[5, 40, 41, 42, 43, 44, 45]])
    attn = torch.ones_like(ids)
    cmask = torch.ones(1, 4, dtype=torch.long)
    tr.model.eval()
    with adapters_disabled(tr.model):
        ref, _ = completion_logprobs(tr.model, ids, attn, cmask, temperature=1.0)
    with torch.no_grad():
        policy, _ = completion_logprobs(tr.model, ids, attn, cmask, temperature=1.0)
        base, _ = completion_logprobs(load_base_4bit(tiny_model_path), ids, attn, cmask, temperature=1.0)
    assert (ref - base).abs().max().item() < 1e-5
    assert (policy - base).abs().max().item() > 1e-3  # the adapter did change the policy


def test_model_logprobs_match_naive_logits(tiny_qwen_path):
    model = load_base_4bit(tiny_qwen_path)
    torch.manual_seed(0)
    ids = torch.randint(3, 100, (3, 9))
    attn = torch.ones_like(ids)
    attn[0, :3] = 0  # left padding
    cmask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]])
    with torch.no_grad():
        fast, ent = completion_logprobs(
            model, ids, attn, cmask, temperature=0.7, chunk_tokens=3, with_entropy=True
        )
        pos = (attn.cumsum(1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=attn, position_ids=pos).logits[:, -5:-1] / 0.7
        slow = torch.log_softmax(logits.float(), -1).gather(2, ids[:, -4:, None]).squeeze(2) * cmask
        p = torch.softmax(logits.float(), -1)
        slow_ent = -(p * p.log()).sum(-1) * cmask
    assert (fast - slow).abs().max().item() < 1e-5
    assert (ent - slow_ent).abs().max().item() < 1e-4


@pytest.mark.parametrize(
    ("seed", "rollout_weights"), [(0, "merged"), (1, "merged"), (2, "merged"), (0, "adapter"), (1, "adapter")]
)
def test_mean_reward_rises(tiny_model_path, sum_rows, tmp_path, seed, rollout_weights):
    """Sampled from the merged copy (the CPU's default) or from the adapter model, the same bar."""
    cfg = make_cfg(
        tiny_model_path, tmp_path / "run", max_steps=30, seed=seed, rollout_weights=rollout_weights
    )
    history = GRPOTrainer(cfg, sum_rows, [digit_share], progress=False).train()
    assert {m["rollout_weights"] for m in history} == {rollout_weights}
    first = history[0]["reward"]  # sampled before any update
    last = sum(m["reward"] for m in history[-5:]) / 5
    assert first < 0.3 and last > first + 0.5, (first, last)


def test_skips_zero_advantage_completions_with_same_result(tiny_model_path, sum_rows, tmp_path):
    # A reward that is constant within half of the groups: those completions need no passes.
    def half_constant(prompts, completions, **kw):
        return [
            1.0 if p in ("0+0=", "0+1=") else float(len(c) % 3)
            for p, c in zip(prompts, completions, strict=True)
        ]

    cfg = make_cfg(tiny_model_path, tmp_path / "run", prompts_per_step=2, micro_batch_size=4)
    tr = GRPOTrainer(cfg, [{"prompt": "0+0="}, {"prompt": "7+7="}], [half_constant], progress=False)
    m = tr.train_step()
    assert m["skipped_compute_frac"] == 0.5
    assert m["equal_reward_groups"] == 0.5


def test_steering_changes_next_step_and_is_recorded(tiny_model_path, sum_rows, tmp_path):
    def zero(prompts, completions, **kw):
        return [0.0] * len(completions)

    tr = GRPOTrainer(
        make_cfg(tiny_model_path, tmp_path / "run", max_steps=2), sum_rows, [digit_share], progress=False
    )

    class SteerOnce(Callback):
        def on_step_boundary(self, trainer):
            if trainer.step == 1:
                trainer.steering.set_sampling(temperature=0.5, max_new_tokens=4)
                trainer.steering.replace_reward("digit_share", zero, "def zero(...): ...")

    tr.callbacks.append(SteerOnce())
    h = tr.train()
    assert (h[0]["temperature"], h[0]["max_new_tokens"]) == (1.0, 8)
    assert (h[1]["temperature"], h[1]["max_new_tokens"]) == (0.5, 4)
    assert h[1]["changes"]["temperature"] == 0.5 and "reward:digit_share" in h[1]["changes"]
    assert h[1]["reward"] == 0.0 and h[1]["completion_len_max"] <= 4
    with pytest.raises(ValueError, match="temperature must be > 0"):
        tr.steering.set_sampling(temperature=0)


def test_run_dir_adapter_reloads_with_plain_peft(tiny_model_path, sum_rows, tmp_path):
    run = tmp_path / "run"
    tr = GRPOTrainer(make_cfg(tiny_model_path, run, max_steps=3), sum_rows, [digit_share], progress=False)
    tr.train()
    for name in ("config.json", "metrics.jsonl", "reward_curve.png", "adapter/adapter_config.json"):
        assert (run / name).exists(), name
    assert (run / "adapter" / "adapter_model.safetensors").exists()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3]
    reloaded = PeftModel.from_pretrained(load_base_4bit(tiny_model_path), run / "adapter")
    ids = torch.tensor([[5, 40, 41, 42, 43]])
    tr.model.eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, tr.model(input_ids=ids).logits, atol=1e-5)
    ckpt = run / "checkpoints" / "step-3"
    assert "def digit_share" in (ckpt / "rewards" / "digit_share.py").read_text()


def test_refuses_to_mix_runs(tiny_model_path, sum_rows, tmp_path):
    cfg = make_cfg(tiny_model_path, tmp_path / "run", max_steps=1)
    GRPOTrainer(cfg, sum_rows, [digit_share], progress=False).train()
    with pytest.raises(FileExistsError, match="holds a previous run"):
        GRPOTrainer(cfg, sum_rows, [digit_share], progress=False)
    GRPOTrainer(cfg, sum_rows, [digit_share], progress=False, overwrite=True)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_dataset_without_prompt_column(tiny_model_path, tmp_path):
    with pytest.raises(
        ValueError, match=r"no prompt column 'prompt'; its columns are \['answer', 'question'\]"
    ):
        GRPOTrainer(
            make_cfg(tiny_model_path, tmp_path / "r"), [{"question": "q", "answer": "1"}], [digit_share]
        )


def test_reward_with_wrong_length_names_the_function(tiny_model_path, sum_rows, tmp_path):
    def short_reward(prompts, completions, **kw):
        return [1.0]

    tr = GRPOTrainer(make_cfg(tiny_model_path, tmp_path / "r"), sum_rows, [short_reward], progress=False)
    with pytest.raises(RewardFunctionError, match="'short_reward' returned 1 values for 32 completions"):
        tr.train_step()


def test_non_finite_loss_skips_the_update(tiny_model_path, sum_rows, tmp_path):
    tr = GRPOTrainer(make_cfg(tiny_model_path, tmp_path / "r"), sum_rows, [digit_share], progress=False)
    params = [p for p in tr.model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.ones_like(p)
    out = optimizer_step(tr, math.nan)
    assert out["update_skipped"] == 1.0
    assert all(torch.equal(a, p) for a, p in zip(before, params, strict=True))
    assert tr.scheduler.last_epoch == 0  # the schedule did not advance either


def test_num_iterations_reuses_rollouts_with_old_logps_fixed(tiny_model_path, sum_rows, tmp_path):
    cfg = make_cfg(tiny_model_path, tmp_path / "r", num_iterations=3, learning_rate=5e-2)
    tr = GRPOTrainer(cfg, sum_rows, [digit_share], progress=False)
    m = tr.train_step()
    assert tr.scheduler.last_epoch == 3  # three optimizer steps on one batch of rollouts
    # The last iteration's policy has moved away from the one that sampled: ratios are no longer 1.
    assert abs(m["ratio_mean"] - 1.0) > 1e-4
    assert m["step"] == 1


def test_step_with_no_signal_still_steps_the_optimizer(tiny_model_path, sum_rows, tmp_path):
    # All-equal rewards: every advantage is 0 and every pass is skipped, yet AdamW must take its step
    # (with zero gradients, momentum still moves the weights), exactly as the full computation would.
    calls = []

    def first_varied_then_constant(prompts, completions, **kw):
        calls.append(1)
        return digit_share(prompts, completions) if len(calls) == 1 else [1.0] * len(completions)

    tr = GRPOTrainer(
        make_cfg(tiny_model_path, tmp_path / "r"), sum_rows, [first_varied_then_constant], progress=False
    )
    tr.train_step()
    before = [p.detach().clone() for p in tr.model.parameters() if p.requires_grad]
    m = tr.train_step()
    assert m["skipped_compute_frac"] == 1.0 and math.isnan(m["entropy"])
    after = [p for p in tr.model.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert all(s["step"] == 2 for s in tr.optimizer.state.values())


def test_bitsandbytes_kernels_message_is_silenced_and_nothing_else():
    import subprocess
    import sys

    from grpo_lite.policy.model import BNB_KERNEL_TRUST_MESSAGE, BNB_KERNELS_MESSAGE

    # The messages are also logged by hand on their loggers, so the filter is checked on every machine:
    # bitsandbytes only tries the Hub kernel on CPUs with AVX512-BF16.
    probe = (
        "import logging, sys\n"
        "{first}\n"
        "import bitsandbytes\n"
        f"logging.getLogger('bitsandbytes.backends.cpu.ops').warning({BNB_KERNELS_MESSAGE!r} + ': by hand')\n"
        f"logging.getLogger('kernels._internals.hf_hub').warning({BNB_KERNEL_TRUST_MESSAGE!r} + ' by hand')\n"
        "logging.getLogger('bitsandbytes.backends.cpu.ops').warning('another bitsandbytes warning')\n"
        "logging.getLogger('kernels._internals.hf_hub').warning('another kernels warning')\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    bare, ours = (
        subprocess.run(
            [sys.executable, "-c", probe.format(first=first)], capture_output=True, text=True, env=env
        )
        for first in ("", "import grpo_lite.policy.model")
    )
    for out in (bare.stderr, ours.stderr):
        assert "another bitsandbytes warning" in out and "another kernels warning" in out
    # the control: without grpo-lite's filter both show
    assert (
        f"{BNB_KERNELS_MESSAGE}: by hand" in bare.stderr
        and f"{BNB_KERNEL_TRUST_MESSAGE} by hand" in bare.stderr
    )
    assert "gemm_4bit_forward" not in ours.stderr and "publisher trust check" not in ours.stderr
