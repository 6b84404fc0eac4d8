"""GGUF export: the merged model as one GGUF file for llama.cpp, Ollama and LM Studio, read back and
checked; an Ollama ``Modelfile`` beside it.

Written with the ``gguf`` package's writer (no llama.cpp build): the architecture's hyper-parameters,
the tokenizer (byte-level BPE: tokens, token types, merges, special ids, the chat template) and the
tensors under llama.cpp's names (``gguf.get_tensor_name_map``); Llama's q/k projections are permuted
as llama.cpp's converter does (its rope layout), which transformers' GGUF loader undoes. Tensor
types: ``f32``; ``f16`` (1-D tensors, norms and biases, stay f32, as llama.cpp writes them); ``q8_0``
(blocks of 32 with one scale; a matrix whose rows are not a multiple of 32 is written f16).

The check reads the file back with transformers' GGUF loader (an independent reader) and compares it
with the weights the file is meant to hold (the merged model rounded to the file type, here, in
memory): the logits must agree within float error and the greedy completions on the prompts must be
the same; the read-back tokenizer must encode the prompts as the model's own does. What the file type
costs beside that (its rounding) is reported: the logit difference from the unrounded merged model
and the share of greedy completions that stay the same.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

FILE_TYPES = ("f32", "f16", "q8_0")
ARCHITECTURES = {"llama": "LLAMA", "qwen2": "QWEN2"}  # transformers' model_type -> gguf.MODEL_ARCH
READ_BACK_TOLERANCE = 1e-3  # max |logit difference| between the file read back and the weights meant


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


def intended_model(model: Any, file_type: str) -> Any:
    """A copy of ``model`` holding the weights the file is meant to hold (rounded to ``file_type``)."""
    import copy

    import gguf

    arch = architecture(model.config)
    ref = copy.deepcopy(model).float().eval()
    state = ref.state_dict()
    for name, _, values in _tensors(model, arch):
        back = rounded(values, file_type)
        if arch == gguf.MODEL_ARCH.LLAMA and name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = model.config.num_attention_heads if "q_proj" in name else model.config.num_key_value_heads
            back = _unpermute(back, heads)
        state[name].copy_(torch.from_numpy(np.ascontiguousarray(back)))
    if getattr(model.config, "tie_word_embeddings", False):
        ref.tie_weights()
    return ref


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def check_gguf(path: Path, model: Any, tokenizer: Any, prompts: Sequence[Any], *, file_type: str,
               max_new_tokens: int, stop_strings: Sequence[str] = ()) -> dict[str, Any]:  # fmt: skip
    """Read ``path`` back with transformers' GGUF loader and compare it with ``model`` (the merged model,
    float32); ``passed`` says whether the file holds what it should (see the module docstring)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpo_lite.evaluate import greedy_completions
    from grpo_lite.rollout import render_prompt

    start = time.perf_counter()
    path = Path(path)
    read = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    read_tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    texts = [render_prompt(p, tokenizer) for p in prompts]
    same_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] == read_tok(t, add_special_tokens=False)["input_ids"]
                for t in texts]  # fmt: skip
    intended = intended_model(model, file_type)
    probe = torch.tensor([tokenizer(texts[0], add_special_tokens=False)["input_ids"][-64:]])
    with torch.no_grad():
        read_logits, meant, merged = (
            m(input_ids=probe).logits for m in (read, intended, model.float().eval())
        )
    greedy = {
        key: greedy_completions(m, tokenizer, list(prompts), max_new_tokens=max_new_tokens, stop_strings=stop_strings)
        for key, m in (("read", read), ("intended", intended), ("merged", model))
    }  # fmt: skip
    error = float((read_logits - meant).abs().max())
    error = (
        error if math.isfinite(error) else math.inf
    )  # a NaN from a damaged tensor is a failure, said as one
    same = sum(a == b for a, b in zip(greedy["read"], greedy["intended"], strict=True))
    report = {
        "file_type": file_type,
        "max_logit_error_vs_file_type": error,
        "tolerance": READ_BACK_TOLERANCE,
        "greedy_same_as_file_type": f"{same}/{len(prompts)}",
        "tokenizer_same": f"{sum(same_ids)}/{len(texts)}",
        "rounding_max_logit_error_vs_merged": float((meant - merged).abs().max()),
        "greedy_agreement_with_merged": sum(a == b for a, b in zip(greedy["read"], greedy["merged"], strict=True))
        / max(len(prompts), 1),
        "prompts": len(prompts),
        "seconds": round(time.perf_counter() - start, 1),
    }  # fmt: skip
    report["passed"] = error <= READ_BACK_TOLERANCE and same == len(prompts) and all(same_ids)
    return report


def ollama_template(tokenizer: Any) -> tuple[str, str | None, list[str]]:
    """The chat template as an Ollama Go template, the default system message it inserts (or None) and
    the stop strings (the end of a turn). Derived by rendering probe conversations: any template whose
    turns are ``prefix(role) + content + suffix`` (ChatML and its kin) works; others are refused."""
    marks = {"system": "\x01S\x01", "user": "\x01U\x01", "assistant": "\x01A\x01"}
    conv = [{"role": r, "content": m} for r, m in marks.items()]
    full = tokenizer.apply_chat_template(conv, tokenize=False)
    refused = ValueError(
        "GGUF export: the chat template's turns are not prefix + content + suffix; no Modelfile"
    )
    pieces, rest = [], full
    for mark in marks.values():
        before, found, rest = rest.partition(mark)
        if not found:
            raise refused
        pieces.append(before)
    end = rest  # every turn ends with it
    if not end or not (pieces[1].startswith(end) and pieces[2].startswith(end)):
        raise refused
    prefix = {"system": pieces[0], "user": pieces[1][len(end) :], "assistant": pieces[2][len(end) :]}
    with_prompt = tokenizer.apply_chat_template(conv[:2], tokenize=False, add_generation_prompt=True)
    generation = with_prompt.split(marks["user"], 1)[1]
    if not generation.startswith(end):
        raise refused
    generation = generation[len(end) :]
    head = tokenizer.apply_chat_template(conv[1:2], tokenize=False).split(marks["user"], 1)[0]
    if not head.endswith(prefix["user"]):
        raise refused
    head = head[: len(head) - len(prefix["user"])]
    default_system, start = None, head  # no default system: what comes before the first turn
    if (
        head.startswith(prefix["system"])
        and head.endswith(end)
        and len(head) > len(prefix["system"]) + len(end)
    ):
        default_system, start = head[len(prefix["system"]) : len(head) - len(end)], ""
    body = "".join(
        f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}{_go(prefix[role])}{{{{ .Content }}}}{_go(end)}'
        for i, role in enumerate(prefix)
    )
    template = f"{_go(start)}{{{{ range .Messages }}}}{body}{{{{ end }}}}{{{{ end }}}}{_go(generation)}"
    return template, default_system, [end.strip()] if end.strip() else []


def _go(text: str) -> str:
    """Literal text inside a Go template (only ``{{`` needs escaping)."""
    return text.replace("{{", '{{ "{{" }}')


def modelfile(gguf_name: str, tokenizer: Any, temperature: float | None) -> str:
    template, system, stops = ollama_template(tokenizer)
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""']
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    if temperature is not None:
        lines.append(f"PARAMETER temperature {temperature:g}")
    return "\n".join(lines) + "\n"
