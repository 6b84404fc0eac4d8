"""Merged rollout weights: the copy is the policy (fresh after every update), the choice is the
planner's, and layers it cannot merge fall back with a warning."""

import logging

import torch
from conftest import digit_share
from torch import nn

import grpo_lite.rollout.weights as rw
from grpo_lite import GRPOConfig
from grpo_lite.rollout.weights import AdapterRollout, MergedRollout, make_rollout_weights
from grpo_lite.trainer import GRPOTrainer


def make_cfg(path, out, **kw):
    base = dict(model=str(path), output_dir=str(out), max_new_tokens=8, group_size=8, prompts_per_step=4,
                micro_batch_size=16, learning_rate=5e-2, lora_rank=8, max_steps=3, save_steps=0)  # fmt: skip
    return GRPOConfig(**(base | kw))


def _logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def test_merged_copy_equals_the_trained_policy_not_the_one_before(tiny_qwen_path, sum_rows, tmp_path):
    """After training steps, the copy the next rollout samples from gives the peft model's logits to
    float32 rounding (stated tolerance: 1e-4 of the logits' scale), and differs from the copy taken
    before the updates by far more than that."""
    tr = GRPOTrainer(make_cfg(tiny_qwen_path, tmp_path / "r", rollout_weights="merged"), sum_rows, [digit_share],
                     progress=False)  # fmt: skip
    assert isinstance(tr.sampler_model, MergedRollout)
    ids = torch.randint(10, 60, (3, 12))
    stale = _logits(tr.sampler_model.current(), ids)
    for _ in range(3):
        m = tr.train_step()
    assert m["rollout_weights"] == "merged"
    fresh = _logits(tr.sampler_model.current(), ids)
    policy = _logits(tr.model, ids)
    scale = policy.abs().max()
    assert (fresh - policy).abs().max() < 1e-4 * scale
    assert (stale - policy).abs().max() > 100 * 1e-4 * scale  # the updates moved the policy: no stale copy
    # only the linear layers are copied; embeddings, norms, head and rotary tables are shared
    lm = tr.model.get_base_model()
    copy = tr.sampler_model.model
    assert copy.model.embed_tokens.weight is lm.model.embed_tokens.weight
    assert copy.model.norm.weight is lm.model.norm.weight
    linear = sum(
        m.weight.numel() for m in copy.modules() if isinstance(m, nn.Linear) and m is not copy.lm_head
    )
    assert tr.sampler_model.copy_bytes == linear * 4  # float32 compute on the CPU


def test_bfloat16_copy_is_as_close_to_the_policy_as_16_bit_allows(tiny_qwen_path, sum_rows, tmp_path):
    """In bfloat16 the merged weight W + s B A is rounded once; the peft model rounds its base output
    and adds a float32 LoRA term. Both are compared with the exact function (the same merge in
    float32): the copy must be no further from it than twice the 16-bit policy itself."""
    cfg = make_cfg(tiny_qwen_path, tmp_path / "r", compute_dtype="bfloat16", rollout_weights="merged")
    tr = GRPOTrainer(cfg, sum_rows, [digit_share], progress=False)
    for _ in range(2):
        tr.train_step()
    ids = torch.randint(10, 60, (3, 12))
    exact = _logits(MergedRollout(tr.model, torch.float32).current(), ids)
    merged = _logits(tr.sampler_model.current(), ids)
    policy = _logits(tr.model, ids)
    policy_error = (policy - exact).abs().mean()
    assert policy_error > 0  # 16-bit rounding is there to compare against
    assert (merged - exact).abs().mean() < 2 * policy_error


def test_auto_picks_merged_when_the_planner_says_it_fits(tiny_model_path, sum_rows, tmp_path, monkeypatch):
    tr = GRPOTrainer(make_cfg(tiny_model_path, tmp_path / "a"), sum_rows, [digit_share], progress=False)
    assert tr.rollout_weights == "merged" and isinstance(tr.sampler_model, MergedRollout)
    monkeypatch.setattr(rw, "device_memory_gb", lambda device: 0.4)  # under the planner's CUDA context alone
    tr = GRPOTrainer(make_cfg(tiny_model_path, tmp_path / "b"), sum_rows, [digit_share], progress=False)
    assert tr.rollout_weights == "adapter" and isinstance(tr.sampler_model, AdapterRollout)
    assert tr.train_step()["rollout_weights"] == "adapter"


def test_merged_that_cannot_fit_warns_with_numbers_and_samples_from_the_adapter(
    tiny_model_path, sum_rows, tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(rw, "device_memory_gb", lambda device: 0.4)
    cfg = make_cfg(tiny_model_path, tmp_path / "r", rollout_weights="merged")
    with caplog.at_level(logging.WARNING, logger="grpo_lite.rollout.weights"):
        tr = GRPOTrainer(cfg, sum_rows, [digit_share], progress=False)
    assert tr.rollout_weights == "adapter"
    assert "rollout_weights='merged'" in caplog.text and "0.4 GB available" in caplog.text


def test_a_layer_of_unknown_quantization_falls_back_naming_its_type(
    tiny_model_path, sum_rows, tmp_path, caplog
):
    tr = GRPOTrainer(make_cfg(tiny_model_path, tmp_path / "r", rollout_weights="adapter"), sum_rows,
                     [digit_share], progress=False)  # fmt: skip

    class StrangeQuantLinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(64, 64, dtype=torch.int8), requires_grad=False)

    lm = tr.model.get_base_model()
    lm.model.layers[0].mlp.down_proj.base_layer = StrangeQuantLinear()
    with caplog.at_level(logging.WARNING, logger="grpo_lite.rollout.weights"):
        out = make_rollout_weights(tr.model, choice="merged", dtype=torch.float32)
    assert isinstance(out, AdapterRollout)
    assert "StrangeQuantLinear" in caplog.text and "rollout_weights='adapter'" in caplog.text


def test_merging_never_touches_the_base_weights_of_a_full_precision_model(
    tiny_model_path, sum_rows, tmp_path
):
    cfg = make_cfg(tiny_model_path, tmp_path / "r", load_in_4bit=False, rollout_weights="merged")
    tr = GRPOTrainer(cfg, sum_rows, [digit_share], progress=False)
    base = {n: p.detach().clone() for n, p in tr.model.named_parameters() if not p.requires_grad}
    for _ in range(2):
        tr.train_step()  # each rollout rewrites the merged copy first
    tr.sampler_model.current()
    assert all(torch.equal(base[n], p) for n, p in tr.model.named_parameters() if not p.requires_grad)
    ids = torch.randint(10, 60, (2, 9))
    assert (_logits(tr.sampler_model.model, ids) - _logits(tr.model, ids)).abs().max() < 1e-4


def test_compiled_rollouts_decode_with_the_fresh_merged_weights(tiny_qwen_path, sum_rows, tmp_path, caplog):
    """``compile_rollouts``: the trainer's rollouts go through the static cache and compiled step of
    the merged copy; after updates, that compiled step (compiled at the first rollout) decodes with
    the new weights: greedy, it picks what the peft policy picks. With the adapter model it warns
    and decodes eagerly."""
    from grpo_lite.rollout.decode import decode

    tr = GRPOTrainer(make_cfg(tiny_qwen_path, tmp_path / "r", rollout_weights="merged", compile_rollouts=True),
                     sum_rows, [digit_share], progress=False)  # fmt: skip
    for _ in range(3):
        m = tr.train_step()
    copy = tr.sampler_model.model
    assert hasattr(copy, "_grpo_lite_static_cache")  # the compiled road ran
    assert m["rollout_weights"] == "merged" and m["compiled_rollouts"] is True
    ids = torch.randint(10, 60, (2, 7))
    kw = dict(group_size=2, max_new_tokens=10, temperature=1e-6, top_k=0, top_p=1.0, eos_ids=[-1], pad_id=0)
    compiled = decode(tr.sampler_model.current(), ids, torch.ones_like(ids), compiled=True, **kw)
    tr.model.eval()
    assert torch.equal(compiled, decode(tr.model, ids, torch.ones_like(ids), **kw))
    with caplog.at_level(logging.WARNING, logger="grpo_lite.rollout.weights"):
        tr2 = GRPOTrainer(make_cfg(tiny_qwen_path, tmp_path / "a", rollout_weights="adapter", compile_rollouts=True),
                          sum_rows, [digit_share], progress=False)  # fmt: skip
    assert isinstance(tr2.sampler_model, AdapterRollout) and tr2.run_facts()["compiled_rollouts"] is False
    assert "compile_rollouts applies to merged rollouts" in caplog.text
    copy._grpo_lite_compile_failed = True  # what decode marks when the compiled step fails
    assert tr.run_facts()["compiled_rollouts"] is False
