"""GRPOConfig: every check names its field and the allowed values; JSON and YAML round trips."""

import pytest

from grpo_lite import GRPOConfig

# (field, bad value, text the error must contain)
BAD = [
    ("group_size", 1, "GRPOConfig.group_size must be >= 2"),
    (
        "micro_batch_size",
        3,
        "GRPOConfig.micro_batch_size must be a divisor of prompts_per_step x group_size = 32",
    ),
    ("micro_batch_size", 0, "GRPOConfig.micro_batch_size must be > 0"),
    ("prompts_per_step", 0, "GRPOConfig.prompts_per_step must be > 0"),
    ("temperature", 0.0, "GRPOConfig.temperature must be > 0"),
    ("top_p", 0.0, "GRPOConfig.top_p must be in (0, 1]"),
    ("top_p", 1.5, "GRPOConfig.top_p must be in (0, 1]"),
    ("top_k", -1, "GRPOConfig.top_k must be >= 0"),
    ("max_new_tokens", 0, "GRPOConfig.max_new_tokens must be > 0"),
    ("max_prompt_tokens", -5, "GRPOConfig.max_prompt_tokens must be > 0"),
    ("max_steps", 0, "GRPOConfig.max_steps must be > 0"),
    ("learning_rate", 0.0, "GRPOConfig.learning_rate must be > 0"),
    ("beta", -0.1, "GRPOConfig.beta must be >= 0"),
    ("eps_low", 1.0, "GRPOConfig.eps_low must be in [0, 1)"),
    ("eps_low", -0.1, "GRPOConfig.eps_low must be in [0, 1)"),
    ("eps_high", -0.1, "GRPOConfig.eps_high must be >= 0"),
    ("num_iterations", 0, "GRPOConfig.num_iterations must be >= 1"),
    ("loss_type", "ppo", "GRPOConfig.loss_type must be one of ['grpo', 'dapo', 'dr_grpo']; got 'ppo'"),
    ("backend", "vllm", "GRPOConfig.backend must be one of ['auto', 'transformers', 'unsloth']"),
    ("advantage_scale", "max", "GRPOConfig.advantage_scale must be one of ['group', 'batch', 'none']"),
    ("lora_dropout", 1.0, "GRPOConfig.lora_dropout must be in [0, 1)"),
    ("model", "", "GRPOConfig.model must be a non-empty model id or path"),
    ("compile_rollouts", "yes", "GRPOConfig.compile_rollouts must be True or False"),
]


@pytest.mark.parametrize(("field", "value", "message"), BAD, ids=[f"{f}={v!r}" for f, v, _ in BAD])
def test_bad_values_name_the_field(field, value, message):
    kwargs = {"model": "m", field: value}
    with pytest.raises(ValueError) as err:
        GRPOConfig(**kwargs)
    assert message in str(err.value)


def test_defaults_fit_a_t4():
    cfg = GRPOConfig(model="Qwen/Qwen2.5-0.5B-Instruct")
    assert (cfg.group_size, cfg.max_new_tokens, cfg.lora_rank, cfg.load_in_4bit) == (8, 256, 16, True)
    assert cfg.backend == "auto"


@pytest.mark.parametrize("name", ["run.json", "run.yaml"])
def test_round_trip(tmp_path, name):
    cfg = GRPOConfig(
        model="m", stop_strings=("</answer>",), lora_target_modules=("q_proj", "v_proj"), beta=0.04
    )
    cfg.save(tmp_path / name)
    assert GRPOConfig.load(tmp_path / name) == cfg


def test_unknown_field_in_file(tmp_path):
    (tmp_path / "c.json").write_text('{"model": "m", "group_sise": 4}')
    with pytest.raises(ValueError, match=r"no field\(s\) \['group_sise'\]"):
        GRPOConfig.load(tmp_path / "c.json")


def test_frozen_and_replace_rechecks():
    cfg = GRPOConfig(model="m")
    with pytest.raises(AttributeError):
        cfg.temperature = 0.5  # type: ignore[misc]
    assert cfg.replace(temperature=0.5).temperature == 0.5
    with pytest.raises(ValueError, match="temperature"):
        cfg.replace(temperature=-1)
