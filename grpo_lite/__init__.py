"""grpo-lite: GRPO with 4-bit LoRA on one GPU, in a notebook you can steer while it trains.

Where things live (a step: roll out -> score -> advantages -> log-probs -> loss -> update -> log)::

    config.py         GRPOConfig: every setting, checked at construction (SAMPLING_RULES too)
    trainer.py        the loop: calls each piece below in order, hands one metrics dict per step to listeners
    advantages.py     group-relative advantages                       pure math, paper equations
    logprobs.py       per-token log-probs and entropy, vocabulary chunk by chunk
    loss.py           policy_objective (per token) + agg_loss (grpo / dapo / dr_grpo)
    rollout/          how completions are sampled: Sampling, prompts, decode loop, KV cache, merged weights
    run/              what a run leaves on disk: RunDir (checkpoints, latest, branches, metrics, lineage),
                      TrainerState (capture / restore), rewards restored from a checkpoint
    model.py backends.py precision.py optim.py memory.py offline.py
                      loading (4-bit + LoRA, Unsloth), dtypes, optimizer, memory planner, Hub-free models
    steering.py alarms.py metrics.py callbacks.py trackers/
                      changes between steps, alarms (once per step, into the metrics), the metrics, listeners
    tasks/            the demo tasks (arithmetic, code, json, reasoning), one file each, found by module
    packing.py        one sequence per prompt in the log-prob pass (GRPOConfig.pack_prompts)
    notebook/         the dashboard (widgets); demo.py cli.py evaluate.py export.py scale_out.py gsm8k.py
    ../rewards/       reward functions and the code sandbox: a package of its own

Import rules (``lint-imports``, contracts in pyproject.toml, run by ``make lint``): no import circle among
these modules; ``run`` never imports the trainer; ``rollout`` never imports the loss, the trainer or
``run``; the engine never imports ``notebook``; ``rewards`` never imports ``grpo_lite``.
"""

from grpo_lite.advantages import group_advantages
from grpo_lite.config import GRPOConfig
from grpo_lite.loss import grpo_loss
from grpo_lite.memory import plan_memory
from grpo_lite.trainer import GRPOTrainer

__all__ = ["GRPOConfig", "GRPOTrainer", "group_advantages", "grpo_loss", "plan_memory"]
__version__ = "0.1.0"
