"""GGUF export (grpo_lite/gguf/): the writer for tiny random Llama and Qwen2 models read back
by transformers' GGUF loader, the read-back check failing on a corrupted tensor, the Modelfile's
template against the chat template, bad input, and `export RUN --gguf` end to end."""

import errno
import json
import re

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from grpo_lite.gguf import check_gguf, modelfile, ollama_template, write_gguf
from grpo_lite.policy.tiny import CHAT_TEMPLATE

TEXT = ["What is 12 + 30? The answer is 42.", "def f(x):\n    return x * 2", '{"ok": true, "n": [1, 2, 3]}',
        "Name three colours: red, green and blue."] * 20  # fmt: skip
PROMPTS = [[{"role": "user", "content": q}] for q in ("What is 1 + 2?", "Say ok.", "def f(x):")]
SYSTEM_TEMPLATE = (  # SmolLM2's kind: a default system message when the conversation has none
    "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}<|im_start|>system\nYou are helpful."
    "<|im_end|>\n{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_level_tokenizer(path, template=CHAT_TEMPLATE):
    """A small byte-level BPE (gpt2 style, as SmolLM2 and Qwen2 have) trained here, ChatML specials."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(TEXT, trainers.BpeTrainer(vocab_size=320, special_tokens=special,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))  # fmt: skip
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token="<|im_start|>")  # fmt: skip
    fast.chat_template = template
    fast.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def tiny(path, arch):
    tok = byte_level_tokenizer(path)
    kw = dict(vocab_size=len(tok) + 3, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, intermediate_size=96, max_position_embeddings=256,
              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, initializer_range=0.2)  # fmt: skip
    config = (
        LlamaConfig(**kw, tie_word_embeddings=False)
        if arch == "llama"
        else Qwen2Config(**kw, tie_word_embeddings=True)
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    if arch == "qwen2":  # its q/k/v biases are zero at init: make them count
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.q_proj.bias.normal_(0, 0.5)
                layer.self_attn.k_proj.bias.normal_(0, 0.5)
    return model, tok


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_the_file_reads_back_as_the_model_with_its_tokenizer_and_template(tmp_path, arch):
    """f32: every tensor read back by transformers equals the model's (Llama's q/k permutation undone,
    Qwen2's biases and tied output kept), the tokenizer gives the same ids, the chat template is the
    same; the ids past the tokenizer (a padded embedding) are written as unused tokens."""
    model, tok = tiny(tmp_path, arch)
    info = write_gguf(model, tok, tmp_path, tmp_path / "m.gguf", file_type="f32", name="tiny")
    assert info["tensor_types"] == {
        "F32": len(model.state_dict()) - (arch == "qwen2")
    }  # tied: no output.weight
    read = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.float32)
    theirs = read.state_dict()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(theirs[name], tensor, rtol=0, atol=0, msg=name)
    read_tok = AutoTokenizer.from_pretrained(tmp_path, gguf_file="m.gguf")
    for text in [*TEXT[:4], tok.apply_chat_template(PROMPTS[0], tokenize=False, add_generation_prompt=True)]:
        assert (
            read_tok(text, add_special_tokens=False)["input_ids"]
            == tok(text, add_special_tokens=False)["input_ids"]
        )
    from gguf import GGUFReader

    fields = GGUFReader(
        tmp_path / "m.gguf"
    ).fields  # transformers' loader leaves the template out: read it here
    assert fields["tokenizer.chat_template"].contents() == tok.chat_template
    assert [fields[f"tokenizer.ggml.{k}_token_id"].contents() for k in ("bos", "eos", "padding")] == [
        tok.bos_token_id, tok.eos_token_id, tok.pad_token_id]  # fmt: skip
    assert fields["general.architecture"].contents() == arch
    assert fields["tokenizer.ggml.token_type"].contents()[-3:] == [5, 5, 5]  # [PAD] ids: unused
    assert fields["tokenizer.ggml.tokens"].contents()[-1] == f"[PAD{len(tok) + 2}]"


@pytest.mark.parametrize("file_type", ["f16", "q8_0"])
def test_the_check_passes_on_a_good_file_and_fails_on_a_corrupted_tensor(tmp_path, file_type):
    model, tok = tiny(tmp_path, "llama")
    path = tmp_path / "m.gguf"
    write_gguf(model, tok, tmp_path, path, file_type=file_type, name="tiny")
    good = check_gguf(path, model, tok, PROMPTS, file_type=file_type, max_new_tokens=8)
    assert (
        good["passed"]
        and good["max_logit_error_vs_file_type"] <= 1e-3
        and good["greedy_same_as_file_type"] == "3/3"
    )
    assert (
        good["tokenizer_same"] == "3/3" and good["rounding_max_logit_error_vs_merged"] > 0
    )  # 16/8 bits cost something
    from gguf import GGUFReader

    reader = GGUFReader(path, "r+")
    [tensor] = [t for t in reader.tensors if t.name == "blk.1.ffn_down.weight"]
    data = tensor.data.view(np.uint8)
    data[: data.size // 2] = np.flip(data[: data.size // 2])  # bytes of half the matrix reversed
    reader.data.flush()
    del reader
    bad = check_gguf(path, model, tok, PROMPTS, file_type=file_type, max_new_tokens=8)
    assert not bad["passed"] and bad["max_logit_error_vs_file_type"] > 1e-3


def render_go(template, messages):
    """Ollama's Go template, for the constructs the Modelfile uses: text, range .Messages, if / else if
    eq .Role "x", .Content, end."""
    parts = re.split(r"(\{\{.*?\}\})", template)
    out, i = [], 0

    def block(items, message, start):
        k, active, done = start, True, False
        text = []
        while k < len(items):
            p = items[k]
            action = p[2:-2].strip().lstrip("-").strip() if p.startswith("{{") else None
            if action is None:
                text.append(p if active else "")
            elif action == "range .Messages":
                body_end = None
                for m in messages:
                    t, body_end = block(items, m, k + 1)
                    text.append(t if active else "")
                k = body_end if body_end is not None else skip(items, k + 1)
            elif action.startswith("if eq .Role") or action.startswith("else if eq .Role"):
                role = action.split('"')[1]
                if action.startswith("if"):
                    done = False
                active = not done and message is not None and message["role"] == role
                done = done or active
            elif action == ".Content":
                text.append(message["content"] if active else "")
            elif action == "end":
                if message is not None and not active_if_block_open(items, start, k):
                    return "".join(text), k
                active = True
            k += 1
        return "".join(text), k

    def skip(items, k):
        return k

    def active_if_block_open(items, start, k):
        depth = 0
        for p in items[start:k]:
            a = p[2:-2].strip() if p.startswith("{{") else ""
            if a.startswith("if "):
                depth += 1
            elif a == "end":
                depth -= 1
        return depth > 0

    text, _ = block(parts, None, i)
    out.append(text)
    return "".join(out)


@pytest.mark.parametrize("template", [CHAT_TEMPLATE, SYSTEM_TEMPLATE], ids=["chatml", "default-system"])
def test_the_modelfile_renders_a_conversation_as_the_chat_template(tmp_path, template):
    tok = byte_level_tokenizer(tmp_path, template)
    go, system, stops = ollama_template(tok)
    conversations = [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "2+2?"}],
        [{"role": "user", "content": "Hi"}],
    ]  # fmt: skip
    for conv in conversations:
        given = (
            conv
            if conv[0]["role"] == "system" or system is None
            else [{"role": "system", "content": system}, *conv]
        )
        assert render_go(go, given) == tok.apply_chat_template(
            conv, tokenize=False, add_generation_prompt=True
        )
    assert stops == ["<|im_end|>"] and system == (None if template == CHAT_TEMPLATE else "You are helpful.")
    text = modelfile("m.gguf", tok, 0.7)
    assert (
        text.startswith("FROM ./m.gguf\n")
        and 'PARAMETER stop "<|im_end|>"' in text
        and "temperature 0.7" in text
    )


def test_an_architecture_or_tokenizer_without_a_mapping_is_named(tmp_path, tiny_model_path):
    from transformers import GPT2Config

    model, tok = tiny(tmp_path, "llama")
    gpt2 = AutoModelForCausalLM.from_config(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(tok)))
    with pytest.raises(
        ValueError, match=r"architecture 'gpt2' has no mapping here; supported: \['llama', 'qwen2'\]"
    ):
        write_gguf(gpt2, tok, tmp_path, tmp_path / "g.gguf", file_type="f16", name="x")
    char = AutoTokenizer.from_pretrained(tiny_model_path)  # BPE without merges or byte-level: not gpt2 style
    with pytest.raises(ValueError, match="only byte-level BPE tokenizers"):
        write_gguf(AutoModelForCausalLM.from_pretrained(tiny_model_path), char, tiny_model_path,
                   tmp_path / "c.gguf", file_type="f16", name="x")  # fmt: skip
    with pytest.raises(ValueError, match=r"--gguf-type must be one of \['f32', 'f16', 'q8_0'\]; got 'q4'"):
        write_gguf(model, tok, tmp_path, tmp_path / "q.gguf", file_type="q4", name="x")
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*gguf*"))


@pytest.fixture(scope="module")
def byte_level_run(tmp_path_factory):
    """A run of 2 steps on the tiny byte-level Llama with held-out evaluation (best.json)."""
    from grpo_lite import GRPOConfig
    from grpo_lite.trainer import GRPOTrainer

    base = tmp_path_factory.mktemp("gguf") / "base"
    model, tok = tiny(base, "llama")
    model.save_pretrained(base)
    rows = [
        {"prompt": [{"role": "user", "content": f"What is {i} + 1?"}], "answer": str(i + 1)} for i in range(8)
    ]
    cfg = GRPOConfig(model=str(base), output_dir=str(base.parent / "run"), max_new_tokens=6, group_size=2,
                     prompts_per_step=2, micro_batch_size=4, lora_rank=4, max_steps=2, save_steps=1,
                     load_in_4bit=False, rollout_weights="adapter", eval_every=1, learning_rate=5e-2)  # fmt: skip

    def length(prompts, completions, **kw):
        return [1.0 if len(c[0]["content"]) > 3 else 0.0 for c in completions]

    GRPOTrainer(cfg, rows, [length], progress=False, eval_dataset=rows[:4]).train()
    return base.parent / "run"


def test_export_run_gguf_end_to_end(byte_level_run, capsys):
    from grpo_lite.apps.cli import main
    from grpo_lite.run import RunDir

    best = RunDir(byte_level_run).best()
    assert main(["export", str(byte_level_run), "--gguf"]) == 0
    out = byte_level_run / "exports" / f"gguf-f16-step-{best['step']}"
    printed = capsys.readouterr().out
    assert "read-back check passed" in printed and "ollama create NAME -f Modelfile" in printed
    report = json.loads((out / "gguf_check.json").read_text())
    assert (
        report["passed"]
        and report["file"] == f"run-step-{best['step']}-f16.gguf"
        and (out / report["file"]).exists()
    )
    assert (out / "Modelfile").read_text().startswith(f"FROM ./{report['file']}\n")
    card = (out / "README.md").read_text()
    assert f"checkpoint of step {best['step']}: the best by held-out" in card and "GGUF file" in card
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [report["file"], "Modelfile", "gguf_check.json", "README.md"]
    )


def test_a_full_disk_part_way_leaves_nothing_under_the_final_name(byte_level_run, tmp_path, monkeypatch):
    from grpo_lite.export import export

    def full(self, *a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("gguf.GGUFWriter.write_tensors_to_file", full)
    with pytest.raises(OSError, match="No space left"):
        export(byte_level_run / "checkpoints" / "step-2", tmp_path / "g", gguf="q8_0")
    assert list(tmp_path.iterdir()) == []  # no folder, no hidden temporary


def test_export_picks_best_latest_or_a_step_and_names_what_is_missing(byte_level_run, tmp_path):
    from grpo_lite.export import export_source
    from grpo_lite.run import RunDir

    run = RunDir(byte_level_run)
    assert export_source(byte_level_run) == run.checkpoint(run.best()["step"])
    assert export_source(byte_level_run, "latest") == run.checkpoint(2)
    assert export_source(byte_level_run, 1) == run.checkpoint(1)
    with pytest.raises(FileNotFoundError, match=r"cannot export step 7: no complete checkpoint"):
        export_source(byte_level_run, 7)
    with pytest.raises(FileNotFoundError, match="neither a grpo-lite checkpoint nor a saved adapter"):
        export_source(tmp_path)
