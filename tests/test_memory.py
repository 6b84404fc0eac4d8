"""The memory planner: its parts against tensors measured on the CPU, and its verdict by hand."""

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from grpo_lite import GRPOConfig, plan_memory
from grpo_lite.logprobs import completion_logprobs
from grpo_lite.policy.memory import NF4_BYTES_PER_WEIGHT, ModelShape, estimate_parts, plan_for_config
from grpo_lite.policy.model import load_policy

# Qwen/Qwen2.5-1.5B-Instruct's config.json, the numbers that matter (no Hub needed).
QWEN_1_5B = Qwen2Config(
    hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
    intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True,
)  # fmt: skip


def test_shape_counts_the_parameters_of_the_real_architecture():
    with torch.device("meta"):  # no memory: shapes only
        model = AutoModelForCausalLM.from_config(QWEN_1_5B)
    total = sum(p.numel() for p in model.parameters())
    shape = ModelShape.from_config(QWEN_1_5B)
    counted = shape.linear_params + shape.embedding_params
    # Qwen2.5-1.5B has 1.54B parameters; what the shape leaves out (biases, norms) is < 0.1%.
    assert total == pytest.approx(1_543_714_304, rel=1e-6)
    assert counted == pytest.approx(total, rel=1e-3)


def test_hand_computed_parts_for_qwen_1_5b():
    parts = estimate_parts(
        ModelShape.from_config(QWEN_1_5B), group_size=8, max_new_tokens=512, prompt_len=256, lora_rank=16,
        load_in_4bit=True, micro_batch=8,
    )  # fmt: skip
    # KV cache: 2 (K, V) x 28 layers x 2 kv heads x 128 dims x 768 positions x 8 sequences x 2 bytes
    kv = 2 * 28 * 2 * 128 * 768 * 8 * 2
    assert parts["generation (KV cache)"] == kv + 8 * 151936 * (2 + 4 * 3)  # + last logits, sampler copies
    # LoRA on q,k,v,o,gate,up,down: r x (in + out) per layer; fp32 weights, grads and 8-bit Adam
    lora = 28 * 16 * ((1536 + 1536) + 2 * (1536 + 256) + (1536 + 1536) + 2 * (1536 + 8960) + (8960 + 1536))
    assert parts["lora + grads + optimizer"] == lora * 10
    embeddings = 151936 * 1536 * 2  # tied, kept in bfloat16 (not upcast)
    assert parts["weights"] == pytest.approx(embeddings + 1_310_375_936 * NF4_BYTES_PER_WEIGHT, rel=1e-3)


def test_issue_target_1_5b_at_g8_512_tokens_is_planned_under_5gb():
    plan = plan_memory(
        QWEN_1_5B, group_size=8, max_new_tokens=512, prompt_len=256, lora_rank=16, load_in_4bit=True,
        micro_batch=8, gpu_gb=5,
    )  # fmt: skip
    assert plan.fits and 2.0 < plan.peak_gb < 5.0, str(plan)


@pytest.fixture(scope="module")
def measured_model(tmp_path_factory):
    """A 4-bit LoRA policy loaded the way training loads it, on the CPU."""
    from grpo_lite.policy.tiny import build_tiny_model

    path = build_tiny_model(
        tmp_path_factory.mktemp("mem") / "m", hidden_size=128, num_layers=3, num_heads=4,
        intermediate_size=384, extra_tokens=4000,
    )  # fmt: skip
    return path


def _policy(path, **kw):
    cfg = GRPOConfig(model=str(path), lora_rank=8, device="cpu", rollout_weights="adapter", **kw)
    model, _ = load_policy(cfg)
    return model, ModelShape.from_config(model.config)


def test_weights_and_lora_match_the_loaded_4bit_model(measured_model):
    model, shape = _policy(measured_model)
    frozen = _frozen_bytes(model)
    parts = estimate_parts(shape, group_size=2, max_new_tokens=8, prompt_len=8, lora_rank=8, load_in_4bit=True,
                           micro_batch=1, device="cpu")  # fmt: skip
    assert parts["weights"] == pytest.approx(frozen, rel=0.02)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == shape.lora_params(8)
    assert parts["lora + grads + optimizer"] == trainable * (4 + 4 + 8)  # fp32 weight, grad, 2 Adam moments


def test_kv_cache_matches_the_cache_generation_builds(measured_model):
    model, shape = _policy(measured_model)
    n, seq = 6, 40
    ids = torch.randint(10, 90, (n, seq))
    model.eval()
    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).past_key_values
    measured = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    parts = estimate_parts(shape, group_size=3, max_new_tokens=seq - 10, prompt_len=10, lora_rank=8,
                           load_in_4bit=True, micro_batch=1, prompts_per_step=2, device="cpu")  # fmt: skip
    logits = n * shape.vocab * (4 + 4 * 3)  # float32 compute: last logits + the sampler's three copies
    assert parts["generation (KV cache)"] - logits == measured


def _saved_bytes(model, n, prompt_len, completion_len):
    """Bytes autograd saves for backward in one training forward of the log-prob pass."""
    storages: dict[int, int] = {}
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}  # saved, but no extra memory

    def pack(t):
        if t.untyped_storage().data_ptr() not in weights:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    ids = torch.randint(10, 90, (n, prompt_len + completion_len))
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        completion_logprobs(
            model, ids, torch.ones_like(ids), torch.ones(n, completion_len, dtype=torch.long), temperature=1.0
        )
    return sum(storages.values())


@pytest.mark.parametrize("checkpointing", [False, True])
def test_activation_estimate_matches_saved_tensors(measured_model, checkpointing):
    model, shape = _policy(measured_model, gradient_checkpointing=checkpointing)
    n, P, T = 4, 64, 128
    measured = _saved_bytes(model, n, P, T)
    parts = estimate_parts(shape, group_size=2, max_new_tokens=T, prompt_len=P, lora_rank=8, load_in_4bit=True,
                           micro_batch=n, gradient_checkpointing=checkpointing, device="cpu")  # fmt: skip
    gathered = n * T * shape.hidden * 4  # the completion positions' hidden states, saved by the head
    if checkpointing:
        # Outside the checkpointed layers autograd keeps each layer's input and the final norm's (the
        # rest is recomputed one layer at a time in backward, so it is never saved here).
        kept = (shape.layers + 1) * n * (P + T) * shape.hidden * 4
        assert measured == pytest.approx(kept + gathered, rel=0.02)
    else:
        dequantized = max(a * b for a, b in shape.linear_shapes()) * 4  # transient, not saved
        estimate = parts["activations (training pass)"] - dequantized + gathered
        assert estimate == pytest.approx(measured, rel=0.2)


def test_verdict_and_suggestions():
    shape = ModelShape.from_config(QWEN_1_5B)
    plan = plan_memory(shape, group_size=8, max_new_tokens=1024, prompt_len=512, micro_batch=32, gpu_gb=6)
    assert not plan.fits and plan.peak_gb > 6
    assert plan.suggestions and all("->" in s for s in plan.suggestions)
    # each suggestion, applied, fits, and names the largest value of that setting that does
    for text in plan.suggestions:
        name, change = text.split(" ", 1)
        new = int(change.split("->")[1].split("(")[0])
        assert plan_memory(shape, **(plan.settings | {name: new}), gpu_gb=6).fits
        assert not plan_memory(shape, **(plan.settings | {name: new * 2}), gpu_gb=6).fits
    assert "does NOT fit" in str(plan)
    tiny_gpu = plan_memory(shape, gpu_gb=1)
    assert not tiny_gpu.fits and "no single change" in tiny_gpu.suggestions[0]
    with pytest.raises(ValueError, match="micro_batch"):
        plan_memory(shape, micro_batch=0)
    with pytest.raises(ValueError, match="gpu_gb"):
        plan_memory(shape, gpu_gb=0)


def test_plan_for_config_reads_a_local_config(measured_model):
    cfg = GRPOConfig(model=str(measured_model), max_new_tokens=64, max_prompt_tokens=32, micro_batch_size=4)
    plan = plan_for_config(cfg, gpu_gb=8)
    assert plan.fits and plan.settings["micro_batch"] == 4 and plan.settings["prompt_len"] == 32
    assert plan.peak_gb == pytest.approx(sum(plan.parts.values()) - _smaller_of_two(plan), rel=1e-9)


def _smaller_of_two(plan):
    """The peak adds the larger of training and generation working memory, not both."""
    train = plan.parts["activations (training pass)"] + plan.parts["log-prob chunk"]
    return min(train, plan.parts["generation (KV cache)"])


# ---- the same parts at bfloat16, the dtype an Ampere+ GPU computes in ----------------------------------


def _frozen_bytes(model):
    """Bytes of every frozen parameter (norms included), with the 4-bit quantization state."""
    total = 0
    for p in model.parameters():
        if p.requires_grad:
            continue
        total += p.numel() * p.element_size()
        state = getattr(p, "quant_state", None)
        if state is not None:
            total += state.absmax.numel() * state.absmax.element_size()
            if state.nested:
                total += state.state2.absmax.numel() * state.state2.absmax.element_size()
    return total


def test_bfloat16_weights_kv_cache_and_merged_copy_match_the_loaded_model(measured_model):
    from grpo_lite.rollout.weights import MergedRollout

    model, shape = _policy(measured_model, compute_dtype="bfloat16")
    kw = dict(group_size=3, max_new_tokens=30, prompt_len=10, lora_rank=8, load_in_4bit=True, micro_batch=1,
              prompts_per_step=2, device="cpu", compute_dtype="bfloat16")  # fmt: skip
    parts = estimate_parts(shape, **kw)
    assert parts["weights"] == pytest.approx(_frozen_bytes(model), rel=0.02)
    assert parts["lora + grads + optimizer"] == shape.lora_params(8) * (4 + 4 + 8)  # LoRA stays float32
    ids = torch.randint(10, 90, (6, 40))
    model.eval()
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
    cache = getattr(out, "cache", None) or out.past_key_values
    kv = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert cache.layers[0].keys.dtype == torch.bfloat16
    assert parts["generation (KV cache)"] - 6 * shape.vocab * (2 + 4 * 3) == kv
    merged = MergedRollout(model, torch.bfloat16)
    assert estimate_parts(shape, rollout_weights="merged", **kw)["rollout copy (merged)"] == merged.copy_bytes
    assert parts["rollout copy (merged)"] == 0


def test_bfloat16_activations_kept_under_checkpointing_match_saved_tensors(measured_model):
    model, shape = _policy(measured_model, compute_dtype="bfloat16")
    n, P, T = 4, 64, 128
    measured = _saved_bytes(model, n, P, T)
    # each layer's input in bfloat16, the final norm's float32 upcast (its statistics are float32),
    # plus the gathered completion states
    kept = shape.layers * n * (P + T) * shape.hidden * 2 + n * (P + T) * shape.hidden * 4
    gathered = n * T * shape.hidden * 2
    assert measured == pytest.approx(kept + gathered, rel=0.02)
    parts = estimate_parts(shape, group_size=2, max_new_tokens=T, prompt_len=P, lora_rank=8, load_in_4bit=True,
                           micro_batch=n, device="cpu", compute_dtype="bfloat16")  # fmt: skip
    one_layer = n * (P + T) * (10 * shape.hidden + 4 * shape.intermediate + 14 * 8) * 2
    dequantized = max(a * b for a, b in shape.linear_shapes()) * 2
    assert parts["activations (training pass)"] == kept + one_layer + dequantized


def test_auto_plans_merged_only_where_it_fits(measured_model):
    cfg = GRPOConfig(model=str(measured_model), max_new_tokens=64, max_prompt_tokens=32, micro_batch_size=4)
    roomy = plan_for_config(cfg, gpu_gb=8)
    assert roomy.settings["rollout_weights"] == "merged" and roomy.parts["rollout copy (merged)"] > 0
    merged_peak = roomy.peak_gb
    adapter = plan_for_config(cfg.replace(rollout_weights="adapter"), gpu_gb=8)
    tight = plan_for_config(cfg, gpu_gb=(merged_peak + adapter.peak_gb) / 2)  # fits only without the copy
    assert tight.settings["rollout_weights"] == "adapter" and tight.fits
    forced = plan_for_config(cfg.replace(rollout_weights="merged"), gpu_gb=tight.gpu_gb)
    assert not forced.fits and forced.suggestions[0].startswith("rollout_weights merged -> adapter")
    assert "(rollout weights: merged)" in str(forced)
