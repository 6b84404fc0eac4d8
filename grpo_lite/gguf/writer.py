"""The GGUF writer: the merged model as one GGUF file with the ``gguf`` package (no llama.cpp build).

The architecture's hyper-parameters, the tokenizer (byte-level BPE: tokens, token types, merges,
special ids, the pre-tokenizer's name, the chat template) and the tensors under llama.cpp's names
(``gguf.get_tensor_name_map``); Llama's q/k projections are permuted as llama.cpp's converter does
(its rope layout), which transformers' GGUF loader undoes. Tensor types: ``f32``; ``f16`` (1-D
tensors, norms and biases, stay f32, as llama.cpp writes them); ``q8_0`` (blocks of 32 with one
scale; a matrix whose rows are not a multiple of 32 is written f16).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

FILE_TYPES = ("f32", "f16", "q8_0")
ARCHITECTURES = {"llama": "LLAMA", "qwen2": "QWEN2"}  # transformers' model_type -> gguf.MODEL_ARCH


def _types(file_type: str) -> tuple[Any, Any]:
    from gguf import GGMLQuantizationType as Q
    from gguf import LlamaFileType as F

    return {"f32": (F.ALL_F32, Q.F32), "f16": (F.MOSTLY_F16, Q.F16), "q8_0": (F.MOSTLY_Q8_0, Q.Q8_0)}[
        file_type
    ]


def architecture(config: Any) -> Any:
    """The gguf architecture of a transformers config; a clear error for the ones without a mapping."""
    import gguf

    kind = getattr(config, "model_type", None)
    if kind not in ARCHITECTURES:
        raise ValueError(
            f"GGUF export: architecture {kind!r} has no mapping here; supported: {sorted(ARCHITECTURES)}"
        )
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(
            f"GGUF export: rope scaling {rope.get('rope_type')!r} is not written here (only the default)"
        )
    return getattr(gguf.MODEL_ARCH, ARCHITECTURES[kind])


def _rope_theta(config: Any) -> float:
    theta = getattr(config, "rope_theta", None) or (getattr(config, "rope_parameters", None) or {}).get(
        "rope_theta"
    )
    return float(theta or 10000.0)


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's rope layout for q/k (``convert_hf_to_gguf.LlamaModel.permute``)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def stored(values: np.ndarray, file_type: str) -> tuple[np.ndarray, Any]:
    """What the file holds for a float32 tensor: (payload, its GGML type)."""
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import quantize

    _, qtype = _types(file_type)
    if values.ndim < 2 or qtype == Q.F32:
        return values.astype(np.float32), Q.F32
    if qtype == Q.Q8_0 and values.shape[-1] % 32 == 0:
        return quantize(values.astype(np.float32), Q.Q8_0), Q.Q8_0
    return values.astype(np.float16), Q.F16


def rounded(values: np.ndarray, file_type: str) -> np.ndarray:
    """The float32 values a reader gets back for ``values`` written as ``file_type``."""
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import dequantize

    payload, qtype = stored(values, file_type)
    return (
        dequantize(payload, Q.Q8_0).reshape(values.shape) if qtype == Q.Q8_0 else payload.astype(np.float32)
    )


def _tensors(model: Any, arch: Any) -> list[tuple[str, str, np.ndarray]]:
    """(transformers name, GGUF name, float32 values in the file's layout) for every tensor written."""
    import gguf

    config = model.config
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    out = []
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and tied:
            continue  # llama.cpp reads the embeddings for the output when there is no output.weight
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ValueError(f"GGUF export: tensor {name!r} has no GGUF name for {config.model_type!r}")
        values = tensor.detach().float().cpu().numpy()
        if arch == gguf.MODEL_ARCH.LLAMA and name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = config.num_attention_heads if "q_proj" in name else config.num_key_value_heads
            values = _permute(values, heads)
        out.append((name, gguf_name, values))
    return out


def _vocabulary(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int]]:
    from gguf import TokenType

    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = json.loads(backend.to_str()) if backend is not None else {}
    if spec.get("model", {}).get("type") != "BPE" or "ByteLevel" not in json.dumps(spec.get("pre_tokenizer")):
        raise ValueError(
            "GGUF export: only byte-level BPE tokenizers (gpt2 style: Llama 3, SmolLM, Qwen2) are written here; "
            f"this one is {spec.get('model', {}).get('type')!r} with pre-tokenizer "
            f"{(spec.get('pre_tokenizer') or {}).get('type')!r}"
        )
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        token = tokenizer.convert_ids_to_tokens(i) if i < len(tokenizer) else None
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        elif i in added:
            tokens.append(added[i].content)
            types.append(TokenType.CONTROL if added[i].special else TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(TokenType.NORMAL)
    return tokens, [int(t) for t in types]


def _pre_tokenizer(tokenizer: Any) -> str:
    """llama.cpp's name for how text is split before BPE (``tokenizer.ggml.pre``), from the tokenizer's
    own pre-tokenizer (the read-back check then proves the split the same on the prompts)."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    parts = spec.get("pretokenizers", [spec])
    patterns = [(p.get("pattern") or {}).get("Regex") for p in parts if p.get("type") == "Split"]
    if patterns:
        from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

        return "qwen2" if patterns[0] == PRETOKENIZE_REGEX else "llama-bpe"
    return "smollm" if any(p.get("type") == "Digits" for p in parts) else "gpt2"


def write_gguf(model: Any, tokenizer: Any, tokenizer_dir: Path, dest: Path, *, file_type: str, name: str,
               temperature: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Write ``dest`` (written whole under a hidden name, then renamed); returns what was written."""
    import gguf

    from grpo_lite.run.atomic import temp_path

    if file_type not in FILE_TYPES:
        raise ValueError(f"--gguf-type must be one of {list(FILE_TYPES)}; got {file_type!r}")
    config, arch = model.config, architecture(model.config)
    ftype, _ = _types(file_type)
    tmp = temp_path(dest)
    writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch])
    try:
        writer.add_name(name)
        writer.add_context_length(config.max_position_embeddings)
        writer.add_embedding_length(config.hidden_size)
        writer.add_block_count(config.num_hidden_layers)
        writer.add_feed_forward_length(config.intermediate_size)
        writer.add_head_count(config.num_attention_heads)
        writer.add_head_count_kv(config.num_key_value_heads)
        writer.add_layer_norm_rms_eps(config.rms_norm_eps)
        writer.add_rope_freq_base(_rope_theta(config))
        if arch == gguf.MODEL_ARCH.LLAMA:
            writer.add_rope_dimension_count(
                getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
            )
        writer.add_vocab_size(config.vocab_size)
        writer.add_file_type(int(ftype))
        if temperature is not None:
            writer.add_sampling_temp(float(temperature))
        tokens, types = _vocabulary(tokenizer, config.vocab_size)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(_pre_tokenizer(tokenizer))
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        special = gguf.SpecialVocab(tokenizer_dir, load_merges=True, n_vocab=config.vocab_size)
        special.chat_template = (
            tokenizer.chat_template or special.chat_template
        )  # transformers 5: its own file
        special.add_to_gguf(writer, quiet=True)
        counts: dict[str, int] = {}
        for _, gguf_name, values in _tensors(model, arch):
            payload, qtype = stored(values, file_type)
            writer.add_tensor(
                gguf_name, payload, raw_dtype=qtype if qtype == gguf.GGMLQuantizationType.Q8_0 else None
            )
            counts[qtype.name] = counts.get(qtype.name, 0) + 1
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return {"file": dest.name, "file_type": file_type, "bytes": dest.stat().st_size, "tensor_types": counts}
