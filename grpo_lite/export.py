"""Export: the adapter in peft layout with a model card, a merged 16-bit model, a checked GGUF file
with an Ollama Modelfile (``grpo_lite/gguf``), and the Hub upload.

Every export is written to a temporary folder next to the destination and renamed at the end, so
a failure never leaves a partial folder. The Hub token is read at push time (argument, ``HF_TOKEN``
or the stored login) and handed to ``huggingface_hub`` only: it is never written anywhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from grpo_lite.card import model_card
from grpo_lite.run.atomic import delete, new_temp_folder

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
# max |logit difference| between the merged model and base + adapter, in float32, relative to the largest
# |logit|: float32's rounding through the layers (measured: 2.4e-3 on SmolLM2's 30 layers, logits up to 33,
# where the adapter itself moves logits by 41; 0 in float64), far below any wrong merge
MERGE_TOLERANCE = 2e-4


@contextmanager
def atomic_folder(dest: Path) -> Iterator[Path]:
    """A hidden temporary folder beside ``dest``, renamed to ``dest`` only if the block succeeds; a
    kill part-way leaves only the hidden folder, which the next export to ``dest`` deletes."""
    if dest.exists():
        raise FileExistsError(f"{dest} already exists; choose another output folder or remove it")
    for stale in dest.parent.glob(f".tmp-{dest.name}-*"):  # an earlier export of it, killed part-way
        delete(stale)
    tmp = new_temp_folder(dest.parent, dest.name)
    try:
        yield tmp
        os.replace(tmp, dest)
    except BaseException:
        delete(tmp)
        raise


def run_info(source: Path) -> dict[str, Any]:
    """Config, rewards and metrics of the run that produced ``source`` (a checkpoint or an adapter folder)."""
    if not all((source / f).exists() for f in ADAPTER_FILES):
        raise FileNotFoundError(
            f"{source} is neither a grpo-lite checkpoint nor a saved adapter (needs {list(ADAPTER_FILES)})"
        )
    info: dict[str, Any] = {"config": {}, "rewards": [], "metrics": []}
    for name in ("grpo_lite.json", "state.json"):  # written by save_adapter / save_checkpoint
        if (source / name).exists():
            data = json.loads((source / name).read_text())
            info["config"] = data.get("config", {})
            info["backend"] = data.get("backend")
            info["compute_dtype"] = data.get("compute_dtype")
            sources = data.get("reward_sources", {})
            info["rewards"] = [
                r | {"source": sources.get(r["name"], r.get("source", ""))} for r in data.get("rewards", [])
            ]
    for candidate in (source / "metrics.jsonl", source.parent / "metrics.jsonl"):
        if candidate.exists():
            info["metrics"] = [
                json.loads(line) for line in candidate.read_text().splitlines() if line.strip()
            ]
            break
    if not info["config"].get("model"):
        adapter_cfg = json.loads((source / "adapter_config.json").read_text())
        info["config"]["model"] = adapter_cfg.get("base_model_name_or_path", "")
    return info


def save_trained_adapter(directory: Path, trainer: Any) -> Path:
    """A trainer's adapter in peft layout, its tokenizer, ``grpo_lite.json`` (config, how it trained,
    rewards with weights and source, tools, final metrics, lineage) and a model card; returns ``directory``."""
    rewards = [{"name": r.name, "weight": r.weight, "source": r.source} for r in trainer.rewards.rewards]
    info = {
        "config": trainer.cfg.to_dict(),
        **trainer.run_facts(),
        "rewards": rewards,
        "metrics": trainer.history[-1:],
    } | ({"lineage": trainer.lineage} if trainer.lineage else {})
    if trainer.tools is not None:
        info["tools"] = {"names": trainer.tools.box.names, "format": trainer.tools.format.name}
    trainer.model.save_pretrained(directory)
    trainer.tokenizer.save_pretrained(directory)
    (directory / "grpo_lite.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    (directory / "README.md").write_text(model_card(info))
    return directory


def write_adapter_folder(dest: Path, source: Path, info: dict[str, Any]) -> None:
    """Adapter files, tokenizer, reward curve and model card from ``source`` into ``dest`` (exists)."""
    for path in source.iterdir():
        keep = path.name.startswith("adapter_") or "token" in path.name
        if path.is_file() and (keep or path.name in ("chat_template.jinja", "grpo_lite.json")):
            shutil.copy2(path, dest / path.name)
    curve = None
    if info["metrics"]:
        from grpo_lite.plotting import plot_rewards

        plot_rewards(info["metrics"], dest / "reward_curve.png")
        curve = "reward_curve.png"
    (dest / "README.md").write_text(model_card(info, curve=curve))


def export_source(path: str | Path, checkpoint: str | int | None = None) -> Path:
    """What to export: ``path`` itself when it is a checkpoint or adapter folder; in a run folder the
    checkpoint ``checkpoint`` names (``"best"``, ``"latest"``, a step), by default the best by held-out
    score when the run has one (``best.json``), else the latest."""
    from grpo_lite.run import RunDir

    path = Path(path)
    if checkpoint is None and all((path / f).exists() for f in ADAPTER_FILES):
        return path
    run = RunDir(path)
    if not run.checkpoints.is_dir():
        if checkpoint is not None:
            raise FileNotFoundError(
                f"{path} is not a run folder (no checkpoints/): cannot pick --checkpoint {checkpoint}"
            )
        raise FileNotFoundError(
            f"{path} holds no adapter to export: it is neither a grpo-lite checkpoint nor a saved adapter (needs "
            f"{list(ADAPTER_FILES)}) nor a run folder (checkpoints/)"
        )
    chosen = checkpoint if checkpoint is not None else ("best" if run.best() else "latest")
    return run.find_checkpoint(str(chosen), purpose="export")


def checkpoint_facts(source: Path) -> dict[str, Any] | None:
    """Which checkpoint ``source`` is (its step) and, when the run keeps one, its best by held-out score."""
    from grpo_lite.run import RunDir, read_state

    if not (source / "state.json").exists() or source.parent.name != "checkpoints":
        return None
    step = int(read_state(source)["step"])
    best = RunDir(source.parent.parent).best()
    return {"step": step, "best": best, "is_best": bool(best and best["step"] == step)}


def export(
    source: str | Path, output: str | Path, *, merge: bool = False, dtype: torch.dtype = torch.bfloat16,
    gguf: str | None = None, check_prompts: list[Any] | None = None,
) -> Path:  # fmt: skip
    """Write ``output`` from a checkpoint or adapter folder: the adapter + card, a merged model, or
    (``gguf``: ``"f32"``, ``"f16"``, ``"q8_0"``) one GGUF file + Modelfile, checked by reading it back
    on ``check_prompts`` (default: the run's held-out prompts, ``held_out.jsonl``, else a few fixed
    ones); a failed check raises and leaves nothing under ``output``."""
    source, output = Path(source), Path(output)
    info = run_info(source)
    info["checkpoint"] = checkpoint_facts(source)
    with atomic_folder(output) as tmp:
        if gguf:
            from grpo_lite.gguf import write_checked_gguf

            merged, _ = merged_model(info["config"]["model"], source)
            report = write_checked_gguf(merged, info, source, tmp, file_type=gguf, prompts=check_prompts)
            info["gguf"] = report
            (tmp / "README.md").write_text(model_card(info, merged=True))
        elif merge:
            merge_adapter(info["config"]["model"], source, tmp, dtype=dtype)
            (tmp / "README.md").write_text(model_card(info, merged=True))
        else:
            write_adapter_folder(tmp, source, info)
    return output


def merge_adapter(base: str, adapter: Path, dest: Path, *, dtype: torch.dtype) -> float:
    """Merge the LoRA into an unquantized copy of the base (``merged_model``) and save it in
    safetensors as ``dtype`` with the tokenizer. Returns the max logit difference found."""
    from grpo_lite.policy.model import load_tokenizer

    merged, diff = merged_model(base, adapter)
    merged.to(dtype).save_pretrained(dest, safe_serialization=True)
    load_tokenizer(str(adapter) if (adapter / "tokenizer_config.json").exists() else base).save_pretrained(
        dest
    )
    return diff


def merged_model(base: str, adapter: Path) -> tuple[Any, float]:
    """The LoRA merged into an unquantized float32 copy of the base (not into 4-bit weights, which is
    lossy), its logits checked against base + adapter; (model, max logit difference). Raises if the
    difference is above MERGE_TOLERANCE."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from grpo_lite.policy.offline import resolve_model

    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(resolve_model(base), dtype=torch.float32), adapter
    )
    model.eval()
    probe = torch.arange(3, 35).remainder(model.config.vocab_size).unsqueeze(0)  # (1, 32) any tokens do
    with torch.no_grad():
        expected = model(input_ids=probe).logits
        merged = model.merge_and_unload()
        diff = (merged(input_ids=probe).logits - expected).abs().max().item()
    bound = MERGE_TOLERANCE * max(1.0, expected.abs().max().item())
    if not diff <= bound:
        raise ValueError(
            f"merged model differs from base + adapter by {diff:.2e} (> {bound:.2e}: {MERGE_TOLERANCE} of the largest "
            "logit); not saved"
        )
    return merged, diff


def resolve_token(token: str | None) -> str:
    """The token from the argument, ``HF_TOKEN``, or the stored ``hf auth login``; never logged."""
    token = token or os.environ.get("HF_TOKEN")
    if not token:
        from huggingface_hub import get_token

        token = get_token()
    if not token:
        raise ValueError("no Hugging Face token: pass token=..., set HF_TOKEN, or run `hf auth login`")
    return token


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = True,
    token: str | None = None,
    run_name: str | None = None,
    api: Any = None,
) -> str:
    """Create ``repo_id`` if needed and upload ``folder`` in one commit; returns the commit message.

    ``api`` defaults to ``huggingface_hub.HfApi``; tests pass a stand-in with the same two methods.
    """
    folder = Path(folder)
    if not REPO_ID.fullmatch(repo_id):
        raise ValueError(f"repo id must look like 'user/name' (letters, digits, . _ -); got {repo_id!r}")
    if not (folder / "README.md").exists():
        raise FileNotFoundError(f"{folder} has no README.md model card; export it first")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=resolve_token(token))
    message = f"grpo-lite: upload run {run_name or folder.name}"
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message=message)
    except Exception as err:  # no network, refused token, Hub error: one clear message, no token in it
        raise ConnectionError(
            f"pushing to the Hugging Face Hub repo {repo_id} failed: {type(err).__name__}: {err}"
        ) from err
    return message
