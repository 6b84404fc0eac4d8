"""The files of a scale-out folder that do not depend on the settings' mapping: the accelerate config,
the DeepSpeed JSON and ``train_trl.py`` (run there, with TRL, by accelerate)."""

from __future__ import annotations

from typing import Any

DEEPSPEED_STAGES = {"zero2": 2, "zero3": 3}


def accelerate_yaml(num_gpus: int, deepspeed: str | None) -> str:
    lines = [
        "compute_environment: LOCAL_MACHINE",
        f"num_processes: {num_gpus}",
        "num_machines: 1",
        "machine_rank: 0",
    ]
    if deepspeed:
        lines += [
            "distributed_type: DEEPSPEED",
            "deepspeed_config:",
            f"  deepspeed_config_file: deepspeed_{deepspeed}.json",
        ]
    else:
        lines += [f"distributed_type: {'MULTI_GPU' if num_gpus > 1 else 'NO'}"]
    return "\n".join(lines) + "\n"


def deepspeed_json(stage: str) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": DEEPSPEED_STAGES[stage], "overlap_comm": True}
    if stage == "zero3":
        zero |= {"stage3_gather_16bit_weights_on_model_save": True}
    return {"zero_optimization": zero, "bf16": {"enabled": "auto"}, "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto"}  # fmt: skip


TRAIN_SCRIPT = '''"""TRL GRPOTrainer from a grpo-lite run (written by `python -m grpo_lite scale-out`).

Launch: accelerate launch --config_file accelerate_config.yaml train_trl.py   (or: python train_trl.py)
"""

import importlib
import json
import sys
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoTokenizer, BitsAndBytesConfig
from trl import GRPOConfig, GRPOTrainer

from grpo_lite.apps.commands import load_dataset_arg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # user_rewards.py, when rewards were written out
spec = json.loads((HERE / "run_spec.json").read_text())
rewards = [getattr(importlib.import_module(module), name) for module, name in spec["rewards"]]
rows = load_dataset_arg(spec["dataset"], "train")
if spec["prompt_column"] != "prompt":
    rows = [dict(row, prompt=row[spec["prompt_column"]]) for row in rows]
args = dict(spec["trl_args"], output_dir=str(HERE / spec["trl_args"]["output_dir"]))
if not torch.cuda.is_available():
    args |= {"use_cpu": True, "bf16": False}
quantization = None
if spec["load_in_4bit"]:
    dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=dtype)
tokenizer = AutoTokenizer.from_pretrained(spec["model"], padding_side="left")
trainer = GRPOTrainer(
    model=spec["model"],
    reward_funcs=rewards,
    args=GRPOConfig(**args),
    train_dataset=Dataset.from_list(rows),
    processing_class=tokenizer,
    peft_config=LoraConfig(task_type="CAUSAL_LM", **spec["lora"]),
    quantization_config=quantization,
)
trainer.train()
trainer.save_model(str(HERE / "adapter"))  # peft layout: loads back into grpo-lite
'''
