"""grpo-lite: GRPO with 4-bit LoRA on one GPU, in a notebook you can steer while it trains.

Where things live (a step: roll out -> score -> advantages -> log-probs -> loss -> update -> log)::

    config.py         GRPOConfig: every setting, checked at construction (SAMPLING_RULES too)
    trainer.py        the loop: calls each piece below in order, hands one metrics dict per step to listeners
    assembly.py       what a run needs, built once for a new run and for a branch
    draw.py update.py the rollout-and-score half and the loss-and-update half of a step
    advantages.py     group-relative advantages                       pure math, paper equations
    logprobs.py       per-token log-probs and entropy, vocabulary chunk by chunk
    loss.py           policy_objective (per token) + agg_loss (grpo / dapo / dr_grpo)
    rollout/          how completions are sampled: Sampling, prompts, decode loop, KV cache, merged weights
    run/              what a run leaves on disk: RunDir (checkpoints, latest, best, branches, metrics,
                      lineage), TrainerState (capture / restore), rewards restored from a checkpoint
    policy/           loading the policy: 4-bit + LoRA, backends, dtypes, memory planner, Hub-free models
    steering.py alarms.py metrics.py callbacks.py trackers/
                      changes between steps, alarms (once per step, into the metrics), the metrics, listeners
    dynamic.py difficulty.py scan.py warm_start.py held_out.py evaluate.py
                      sparse rewards (dynamic sampling, per-prompt difficulty, the pre-flight scan, the warm
                      start), held-out evaluation while training and greedy accuracy
    tasks/ tools/     the demo tasks, one file each, found by module; what the model may call mid-answer
    export.py gguf/   adapter / merged / GGUF export and its checks
    notebook/         the dashboard (widgets)
    apps/             what drives the engine: cli, demo, tool_demo, gsm8k, scale_out
    ../rewards/       reward functions and the code sandbox: a package of its own

Import rules (``lint-imports``, contracts in pyproject.toml, run by ``make lint``): layers from the
apps down to the config, no import circle (type-only imports counted), ``rewards`` never imports
``grpo_lite``. The modules that moved into ``policy/`` and ``apps/`` keep their old names too
(``grpo_lite.demo``, ``grpo_lite.memory``, …): code and scale-out folders written before still import.
"""

import importlib
import importlib.abc
import importlib.util
import sys

from grpo_lite.advantages import group_advantages
from grpo_lite.config import GRPOConfig
from grpo_lite.loss import grpo_loss
from grpo_lite.policy.memory import plan_memory
from grpo_lite.trainer import GRPOTrainer

__all__ = ["GRPOConfig", "GRPOTrainer", "group_advantages", "grpo_loss", "plan_memory"]
__version__ = "0.1.0"

# Old module names -> where they live now (a module imported under either name is the same object).
MOVED = {f"grpo_lite.{name}": f"grpo_lite.{home}.{name}" for home, names in (
    ("policy", ("model", "backends", "precision", "memory", "offline", "tiny")),
    ("apps", ("cli", "demo", "scale_out", "gsm8k", "tool_demo"))) for name in names}  # fmt: skip


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import grpo_lite.demo`` gives ``grpo_lite.apps.demo`` itself."""

    def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):  # type: ignore[no-untyped-def]
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module) -> None:  # type: ignore[no-untyped-def]
        pass  # already executed under its own name


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())
