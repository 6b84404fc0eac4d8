"""GGUF export for llama.cpp, Ollama and LM Studio: the writer (``writer.py``), the read-back check
(``check.py``) and the Ollama ``Modelfile`` (``ollama.py``); ``write_checked_gguf`` does all three
for a run's checkpoint, as ``export RUN --gguf`` runs it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grpo_lite.gguf.check import READ_BACK_TOLERANCE, check_gguf, intended_model
from grpo_lite.gguf.ollama import modelfile, ollama_template
from grpo_lite.gguf.writer import ARCHITECTURES, FILE_TYPES, architecture, write_gguf
from grpo_lite.run.atomic import delete

FIXED_PROMPTS = [[{"role": "user", "content": q}] for q in
                 ("What is 12 + 30?", "Write a Python function that reverses a string.", "Name three colours.",
                  "Reply with a JSON object with a key 'ok'.")]  # fmt: skip


def held_out_prompts(source: Path, limit: int = 48) -> list[Any]:
    """The prompts of the run's held-out problems (``held_out.jsonl``, written by the demos) beside the
    checkpoint's run; else a few fixed ones."""
    for folder in (source, source.parent, source.parent.parent):
        path = folder / "held_out.jsonl"
        if path.exists():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            return [r["prompt"] for r in rows][:limit]
    return list(FIXED_PROMPTS)


def write_checked_gguf(merged: Any, info: dict[str, Any], source: Path, dest: Path, *, file_type: str,
                       prompts: list[Any] | None) -> dict[str, Any]:  # fmt: skip
    """Write the merged model (float32) as ``dest/RUN-step-N-TYPE.gguf`` with ``dest/Modelfile``, read the
    file back and check it (``check.check_gguf``); the report also goes to ``dest/gguf_check.json``.
    Raises when the check fails. ``info``: the run's (``export.run_info``); ``source``: the checkpoint."""
    from grpo_lite.policy.model import load_tokenizer

    config = info["config"]
    architecture(merged.config)  # an architecture without a mapping: refused before any writing
    tokenizer_dir = source if (source / "tokenizer_config.json").exists() else dest / ".tokenizer"
    tokenizer = load_tokenizer(str(source) if tokenizer_dir == source else config["model"])
    if tokenizer_dir != source:
        tokenizer.save_pretrained(tokenizer_dir)
    run = info.get("checkpoint") or {}
    name = (
        f"{Path(config.get('output_dir') or 'model').name}-step-{run.get('step', 'final')}-{file_type}.gguf"
    )
    temperature = config.get("temperature")
    written = write_gguf(merged, tokenizer, tokenizer_dir, dest / name, file_type=file_type,
                         name=f"{Path(config['model']).name} + GRPO", temperature=temperature)  # fmt: skip
    (dest / "Modelfile").write_text(modelfile(name, tokenizer, temperature))
    report = written | check_gguf(dest / name, merged, tokenizer, prompts or held_out_prompts(source),
                                  file_type=file_type, max_new_tokens=int(config.get("max_new_tokens", 64)),
                                  stop_strings=config.get("stop_strings") or ())  # fmt: skip
    (dest / "gguf_check.json").write_text(json.dumps(report, indent=2) + "\n")
    if tokenizer_dir != source:
        delete(tokenizer_dir)
    if not report["passed"]:
        raise ValueError(f"GGUF read-back check failed, nothing exported: {json.dumps(report)}")
    return report


__all__ = [
    "ARCHITECTURES", "FILE_TYPES", "READ_BACK_TOLERANCE", "architecture", "check_gguf", "held_out_prompts",
    "intended_model", "modelfile", "ollama_template", "write_checked_gguf", "write_gguf",
]  # fmt: skip
