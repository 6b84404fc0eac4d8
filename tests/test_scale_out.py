"""Scale-out to TRL: the config mapping field by field, the generated folder, a 2-step TRL run on CPU."""

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from trl import GRPOConfig as TRLConfig

from grpo_lite import GRPOConfig
from grpo_lite.apps.cli import main
from grpo_lite.apps.scale_out import NO_EQUIVALENT, SAME_VALUE, scale_out, trl_args
from rewards import math_accuracy, strict_format


def short_answer(prompts, completions, **kw):
    """Defined in the test module (as a notebook would): written out to user_rewards.py only if needed."""
    return [1.0 if len(str(c)) < 80 else 0.0 for c in completions]


def test_every_field_is_mapped_or_listed():
    ours = {f.name for f in dataclasses.fields(GRPOConfig)}
    handled = set(SAME_VALUE) | set(NO_EQUIVALENT) | {"model", "output_dir", "load_in_4bit", "lora_rank", "lora_alpha",
                                                       "lora_dropout", "lora_target_modules", "prompt_column", "micro_batch_size"}  # fmt: skip
    assert ours == handled  # a new field must be mapped or listed: nothing silently dropped


@pytest.mark.parametrize(
    ("dtype", "flags"),
    [("bfloat16", {"bf16": True, "fp16": False}), ("float16", {"bf16": False, "fp16": True}),
     ("float32", {"bf16": False, "fp16": False}), ("auto", {})],
)  # fmt: skip
def test_compute_dtype_maps_to_trl_precision_flags(dtype, flags):
    args = trl_args(GRPOConfig(model="m", compute_dtype=dtype))
    assert {k: args[k] for k in ("bf16", "fp16") if k in args} == flags


def test_compile_rollouts_maps_to_trl_static_cache():
    assert trl_args(GRPOConfig(model="m", compile_rollouts=True))["cache_implementation"] == "static"
    assert "cache_implementation" not in trl_args(GRPOConfig(model="m"))
    trl = TRLConfig(
        output_dir="x", use_cpu=True, bf16=False, **trl_args(GRPOConfig(model="m", compile_rollouts=True))
    )
    assert trl.cache_implementation == "static"


def test_mapping_field_by_field_into_trl():
    cfg = GRPOConfig(model="m", group_size=4, prompts_per_step=6, micro_batch_size=8, temperature=0.7, top_p=0.9, top_k=20,
                     max_new_tokens=96, beta=0.04, eps_low=0.2, eps_high=0.28, loss_type="dr_grpo", advantage_scale="batch",
                     importance_sampling="sequence", num_iterations=2, learning_rate=3e-6, lr_scheduler="cosine",
                     warmup_steps=5, max_steps=50, seed=7, save_steps=25)  # fmt: skip
    args = trl_args(cfg, num_gpus=3)
    trl = TRLConfig(output_dir="x", use_cpu=True, bf16=False, **args)
    for ours, theirs in SAME_VALUE.items():
        assert getattr(trl, theirs) == getattr(cfg, ours), (ours, theirs)
    # 6 prompts x 4 completions = 24 per step = 8 per device x 3 GPUs x 1 accumulation step
    assert (trl.per_device_train_batch_size, trl.gradient_accumulation_steps) == (8, 1)
    with pytest.raises(ValueError, match="must split evenly over 5 GPU"):
        trl_args(cfg, num_gpus=5)


def test_renamed_trl_field_fails_loudly():
    fields = [f.name for f in dataclasses.fields(TRLConfig) if f.name != "epsilon_high"]
    with pytest.raises(RuntimeError, match=r"no GRPOConfig field\(s\) \['epsilon_high'\]"):
        trl_args(GRPOConfig(model="m"), trl_fields=fields)


def test_folder_contents(tmp_path):
    cfg = GRPOConfig(model="Qwen/Qwen2.5-1.5B-Instruct", micro_batch_size=4)
    out = scale_out(
        cfg,
        tmp_path / "f",
        dataset="gsm8k",
        rewards=[math_accuracy],
        num_gpus=4,
        deepspeed="zero3",
        vllm="server",
    )
    readme = (out / "README.md").read_text()
    assert "accelerate launch --config_file accelerate_config.yaml train_trl.py" in readme
    assert "trl vllm-serve --model Qwen/Qwen2.5-1.5B-Instruct" in readme
    assert "`advantage_baseline`" in readme and "`stop_strings`" in readme  # what TRL cannot express
    assert json.loads((out / "deepspeed_zero3.json").read_text())["zero_optimization"]["stage"] == 3
    accel = (out / "accelerate_config.yaml").read_text()
    assert "num_processes: 4" in accel and "distributed_type: DEEPSPEED" in accel
    spec = json.loads((out / "run_spec.json").read_text())
    assert spec["rewards"] == [["rewards.accuracy", "math_accuracy"]]
    assert spec["trl_args"]["use_vllm"] and spec["trl_args"]["vllm_mode"] == "server"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"deepspeed": "zero4"}, "--deepspeed must be one of ['zero2', 'zero3']"),
        ({"vllm": "remote"}, "--vllm must be one of"),
        ({"rewards": [lambda prompts, completions, **k: [0.0]]}, "needs a name"),
    ],
)
def test_bad_input(tmp_path, kwargs, message):
    args = {"dataset": "gsm8k", "rewards": [math_accuracy]} | kwargs
    with pytest.raises(ValueError, match=re.escape(message)):
        scale_out(GRPOConfig(model="m"), tmp_path / "f", **args)
    assert not (tmp_path / "f").exists()


def test_unimportable_reward_module(tmp_path, capsys):
    cfg_path = tmp_path / "c.yaml"
    GRPOConfig(model="m").save(cfg_path)
    assert (
        main(
            [
                "scale-out",
                "--config",
                str(cfg_path),
                "--output",
                str(tmp_path / "o"),
                "--reward",
                "no_such_module_xyz:fn",
            ]
        )
        == 2
    )
    assert "cannot import 'fn' from 'no_such_module_xyz'" in capsys.readouterr().err


def test_generated_script_trains_with_trl_on_cpu_and_adapter_loads(tiny_model_path, tmp_path):
    data = tmp_path / "gsm8k.jsonl"
    data.write_text(
        "".join(
            json.dumps({"question": f"{a}+{b}?", "answer": f"#### {a + b}"}) + "\n"
            for a in range(4)
            for b in range(4)
        )
    )
    cfg = GRPOConfig(
        model=str(tiny_model_path),
        max_new_tokens=6,
        group_size=4,
        prompts_per_step=2,
        micro_batch_size=8,
        max_steps=2,
    )
    out = scale_out(cfg, tmp_path / "trl", dataset=str(data), rewards=[math_accuracy, strict_format, short_answer],
                    reward_weights=[1.0, 0.1, 0.1])  # fmt: skip
    # math_accuracy/strict_format are imported from the rewards package; short_answer, defined here,
    # is not importable by a fresh interpreter, so its source was written out.
    assert "def short_answer" in (out / "user_rewards.py").read_text()
    assert json.loads((out / "run_spec.json").read_text())["rewards"][2] == ["user_rewards", "short_answer"]
    accelerate = Path(sys.executable).parent / "accelerate"  # the README's launch command, on the CPU
    run = subprocess.run(
        [str(accelerate), "launch", "--config_file", "accelerate_config.yaml", "train_trl.py"],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "'rewards/short_answer/mean'" in run.stdout  # our reward ran inside TRL, unchanged
    from grpo_lite.policy.model import load_base_model

    base = load_base_model(str(tiny_model_path), load_in_4bit=True, device=torch.device("cpu"))
    model = PeftModel.from_pretrained(base, out / "adapter")
    assert any("lora_A" in n for n, _ in model.named_parameters())
    from grpo_lite.export import export

    exported = export(out / "adapter", tmp_path / "exported")  # and grpo-lite's export takes it
    assert (exported / "README.md").exists()


def test_seeking_signal_is_named_not_dropped(tmp_path, caplog):
    from grpo_lite.apps.scale_out import not_carried

    cfg = GRPOConfig(model="m", dynamic_sampling=True, warm_start="own", rest_tied_after=2)
    said = not_carried(cfg)
    assert [line.split("=")[0] for line in said] == ["dynamic_sampling", "rest_tied_after", "warm_start"]
    assert "TRL has no dynamic sampling" in said[0] and "SFTTrainer" in said[2]
    assert not_carried(GRPOConfig(model="m")) == []
    with caplog.at_level("WARNING"):
        out = scale_out(cfg, tmp_path / "trl", dataset="gsm8k", rewards=[])
    assert "dynamic_sampling=True is not carried" in caplog.text
    assert (
        "| `dynamic_sampling` = True | not carried: TRL has no dynamic sampling"
        in (out / "README.md").read_text()
    )
