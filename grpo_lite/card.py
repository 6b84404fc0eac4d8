"""The model card (README.md) of an exported adapter or merged model: YAML front matter for the Hub, and
a body that says how the run was made — config, rewards with their source, metrics, how to load it."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

CARD_METRICS = ("step", "reward", "reward_std", "kl", "entropy", "completion_len_mean", "truncated_frac")


def base_license(model: str) -> str | None:
    """The base model's license from its local README front matter, or from the Hub when reachable."""
    readme = Path(model) / "README.md"
    if readme.exists():
        match = re.search(r"^license:\s*(\S+)", readme.read_text(), re.MULTILINE)
        return match.group(1) if match else None
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", ""):
        return None
    try:
        from huggingface_hub import model_info

        card = model_info(model).card_data
        return getattr(card, "license", None) if card else None
    except Exception:  # no network or no such repo: the card simply leaves the license out
        return None


def model_card(info: dict[str, Any], *, merged: bool = False, curve: str | None = None) -> str:
    """README.md with YAML front matter (base_model, library_name, tags, license) and a body that
    explains the run: config, reward functions with their source, final metrics, how to load it."""
    import yaml

    config, base = info["config"], info["config"].get("model", "")
    front: dict[str, Any] = {"base_model": base, "library_name": "transformers" if merged else "peft"}
    front["tags"] = ["grpo", "grpo-lite", "lora"] + (["merged"] if merged else [])
    license_ = base_license(base)
    if license_:
        front["license"] = license_
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        "",
        f"# {Path(base).name or 'model'} + GRPO LoRA",
        "",
    ]
    lines += [f"A LoRA adapter trained with grpo-lite (GRPO, DeepSeekMath arXiv 2402.03300) on `{base}`."]
    loaded = [f"Model loaded with the {info['backend']} backend."] if info.get("backend") else []
    if info.get("compute_dtype"):
        loaded.append(
            f"Trained in {info['compute_dtype']} compute (LoRA weights and optimizer state in float32)."
        )
    lines += [" ".join(loaded), ""] if loaded else [""]
    lines += _how_it_was_made(info)
    if curve:
        lines += [f"![reward curve]({curve})", ""]
    lines += _metrics_and_rewards(info)
    lines += [
        "## Training configuration",
        "",
        "```yaml",
        yaml.safe_dump(config, sort_keys=False).strip(),
        "```",
        "",
    ]
    lines += _usage(base, merged)
    return "\n".join(lines) + "\n"


def _how_it_was_made(info: dict[str, Any]) -> list[str]:
    """The card's lines on the run's lineage, tools, the checkpoint chosen and the GGUF file."""
    lines: list[str] = []
    if info.get("lineage"):
        lineage = info["lineage"]
        lines += [f"Branched from the run in `{lineage['parent_run_dir']}` at its step {lineage['parent_step']} "
                  f"(checkpoint `{lineage['checkpoint']}`).", ""]  # fmt: skip
    if info.get("tools"):
        tools = info["tools"]
        lines += [f"Trained with tools mid-answer ({', '.join(tools['names'])}; {tools['format']} format): "
                  "use the adapter with the same tools, and run model-written code only in a sandbox.", ""]  # fmt: skip
    chosen = info.get("checkpoint")
    if chosen:
        best = chosen.get("best")
        said = (f"the best by held-out `{best['measure']}` ({best['score']:.4g})" if chosen.get("is_best") and best
                else "not the run's best by held-out score" + (f" (step {best['step']}: {best['score']:.4g})" if best else ""))  # fmt: skip
        lines += [f"Exported from the checkpoint of step {chosen['step']}: {said}.", ""]
    if info.get("gguf"):
        g = info["gguf"]
        lines += [f"GGUF file `{g['file']}` ({g['file_type']}, {g['bytes'] / 1e6:.1f} MB) with an Ollama `Modelfile` "
                  f"(`ollama create NAME -f Modelfile`). Read back with transformers' GGUF loader: max logit error "
                  f"{g['max_logit_error_vs_file_type']:.2e} against the weights meant, greedy completions "
                  f"{g['greedy_same_as_file_type']} the same, {100 * g['greedy_agreement_with_merged']:.0f}% the same "
                  f"as the unrounded merged model (max logit change from rounding "
                  f"{g['rounding_max_logit_error_vs_merged']:.3g}).", ""]  # fmt: skip
    return lines


def _metrics_and_rewards(info: dict[str, Any]) -> list[str]:
    """The final metrics table and each reward function with its source."""
    last = info["metrics"][-1] if info["metrics"] else {}
    lines = ["## Final metrics", "", "| metric | value |", "|---|---|"]
    shown = [*CARD_METRICS, *sorted(k for k in last if k.startswith("eval/") and k != "eval/seconds")]
    lines += [
        f"| {k} | {last[k]:.4g} |" if isinstance(last.get(k), float) else f"| {k} | {last.get(k)} |"
        for k in shown
        if k in last
    ]
    lines += ["", "## Reward functions", ""]
    for r in info["rewards"]:
        lines += [
            f"### `{r['name']}` (weight {r.get('weight', 1.0)})",
            "",
            "```python",
            r.get("source", "").rstrip(),
            "```",
            "",
        ]
    return lines


def _usage(base: str, merged: bool) -> list[str]:
    if merged:
        return ["## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
                'model = AutoModelForCausalLM.from_pretrained("THIS_REPO")', 'tokenizer = AutoTokenizer.from_pretrained("THIS_REPO")', "```"]  # fmt: skip
    return [
        "## Use", "", "With peft:", "", "```python", "from peft import AutoPeftModelForCausalLM",
        'model = AutoPeftModelForCausalLM.from_pretrained("THIS_REPO")', "```", "",
        "With transformers (peft installed):", "", "```python", "from transformers import AutoModelForCausalLM",
        f'model = AutoModelForCausalLM.from_pretrained("{base}")', 'model.load_adapter("THIS_REPO")', "```", "",
        "As a LoRA in vLLM:", "", "```python", "from vllm import LLM", "from vllm.lora.request import LoRARequest",
        f'llm = LLM(model="{base}", enable_lora=True)',
        'out = llm.generate(["..."], lora_request=LoRARequest("grpo", 1, "PATH_TO_THIS_FOLDER"))', "```",
    ]  # fmt: skip
