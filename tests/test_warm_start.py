"""The warm start: its loss only on completion tokens (against a plain forward pass), its gradient only
on the LoRA weights, which answers count as right, the solution column, and the run's record of it."""

import json

import pytest
import torch
from test_dynamic import fake_draw

from grpo_lite import GRPOConfig
from grpo_lite.policy.model import trainable_parameters
from grpo_lite.trainer import GRPOTrainer
from grpo_lite.warm_start import (
    batch_of,
    own_right_answers,
    solution_examples,
    supervised_loss,
    supervised_phase,
)


def make_cfg(path, out, **kw):
    base = dict(model=str(path), output_dir=str(out), max_new_tokens=6, group_size=4, prompts_per_step=2,
                micro_batch_size=8, learning_rate=2e-2, lora_rank=8, max_steps=2, save_steps=0,
                rollout_weights="adapter")  # fmt: skip
    return GRPOConfig(**(base | kw))


@pytest.fixture
def trainer(tiny_qwen_path, tmp_path):
    rows = [{"prompt": f"{i}+{i}=", "answer": str(2 * i), "solution": f"{2 * i}"} for i in range(6)]
    return GRPOTrainer(make_cfg(tiny_qwen_path, tmp_path / "r"), rows, [lambda prompts, completions, **kw: [0.0] * len(completions)],
                       progress=False)  # fmt: skip


def test_the_loss_is_the_completions_nll_alone(trainer):
    tok, model = trainer.tokenizer, trainer.model
    examples = [(torch.tensor(tok("12+3=")["input_ids"]), torch.tensor(tok("15", add_special_tokens=False)["input_ids"])),
                (torch.tensor(tok("7=")["input_ids"]), torch.tensor(tok("seven!", add_special_tokens=False)["input_ids"]))]  # fmt: skip
    loss = supervised_loss(model, examples, tok.pad_token_id)
    nll = []  # slow reference: each example alone, a plain forward, the completion's positions only
    for prompt, completion in examples:
        ids = torch.cat([prompt, completion])[None]
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
        nll += (-torch.log_softmax(logits, -1).gather(1, completion[:, None])[:, 0]).tolist()
    assert loss.item() == pytest.approx(sum(nll) / len(nll), rel=1e-4)
    ids, attn, mask = batch_of(examples, tok.pad_token_id)  # padding: prompts left, completions right
    assert mask.sum() == len(nll) and attn.sum() == sum(len(p) + len(c) for p, c in examples)


def test_only_the_lora_weights_move_and_the_loss_falls(trainer):
    tok, model = trainer.tokenizer, trainer.model
    examples = [(torch.tensor(tok(f"{i}+{i}=")["input_ids"]), torch.tensor(tok(f"{2 * i}", add_special_tokens=False)["input_ids"]))
                for i in range(6)]  # fmt: skip
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert lora and all("lora_" in n for n in lora)
    losses = supervised_phase(model, trainable_parameters(model), examples, steps=8, batch=6, lr=2e-2,
                              max_grad_norm=1.0, seed=0, pad_id=tok.pad_token_id, scaler=trainer.scaler)  # fmt: skip
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(torch.equal(frozen[n], p) for n, p in model.named_parameters() if not p.requires_grad)
    assert any(not torch.equal(lora[n], p) for n, p in model.named_parameters() if p.requires_grad)


def test_which_of_its_own_answers_count_as_right():
    # group 0: two right (1.0), one better-but-not-top? no: 1.2 is the top; group 1: none reaches 1.0
    draw = fake_draw(0, [[1.0, 1.2, 0.0, 1.2], [0.5, 0.9, 0.0, 0.0]], width=2)
    draw.rollout.completion_mask[1, 1:] = 0  # row 1 is the shortest of the two top ones
    examples = own_right_answers([draw], threshold=1.0, group_size=4)
    assert len(examples) == 2  # rows 1 and 3 (1.2, the top); 1.0 is right but not the top
    assert [len(c) for _, c in examples] == [1, 1] and all(
        torch.equal(p, torch.full((2,), 7)) for p, _ in examples
    )
    assert own_right_answers([draw], threshold=2.0, group_size=4) == []


def test_solution_examples_and_a_missing_column(trainer):
    tok = trainer.tokenizer
    rows = [
        {"prompt": "1+1=", "solution": "2"},
        {"prompt": "2+2=", "solution": " "},
        {"prompt": "3+3=", "solution": None},
    ]
    examples = solution_examples(
        rows, tok, prompt_column="prompt", solution_column="solution", max_prompt_tokens=32
    )
    assert len(examples) == 1
    prompt, completion = examples[0]
    assert prompt.tolist() == tok("1+1=")["input_ids"]
    assert completion.tolist() == tok("2", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with pytest.raises(ValueError, match="reads the column 'worked'.*does not have.*solution_column"):
        solution_examples(rows, tok, prompt_column="prompt", solution_column="worked", max_prompt_tokens=32)


def test_the_run_records_its_warm_start_and_a_resume_does_not_redo_it(tiny_qwen_path, tmp_path):
    rows = [{"prompt": f"{i}+{i}=", "answer": str(2 * i), "solution": f"{2 * i}"} for i in range(6)]
    zero = [lambda prompts, completions, **kw: [0.0] * len(completions)]
    cfg = make_cfg(tiny_qwen_path, tmp_path / "r", warm_start="solutions", warm_start_steps=5, save_steps=1)
    tr = GRPOTrainer(cfg, rows, zero, progress=False)
    history = tr.train()
    record = json.loads((tmp_path / "r" / "warm_start.json").read_text())
    assert record["source"] == "solutions" and record["examples"] == 6 and record["steps"] == 5
    assert record["losses"][-1] < record["losses"][0]
    assert all(m["warm_start_examples"] == 6 and m["warm_start"] == "solutions" for m in history)
    card = (tmp_path / "r" / "adapter" / "grpo_lite.json").read_text()
    assert '"warm_start_steps": 5' in card
    written = (tmp_path / "r" / "warm_start.json").read_text()
    resumed = GRPOTrainer(cfg.replace(max_steps=3), rows, zero, progress=False, resume_from="latest")
    assert resumed.warm_started == {"source": "solutions", "examples": 6, "steps": 5}
    more = resumed.train()
    assert [m["step"] for m in more] == [1, 2, 3] and more[-1]["warm_start_examples"] == 6
    assert (tmp_path / "r" / "warm_start.json").read_text() == written  # not done again


def test_no_right_answer_of_its_own_is_said_and_training_goes_on(tiny_qwen_path, tmp_path, caplog):
    rows = [{"prompt": f"{i}+{i}="} for i in range(6)]
    cfg = make_cfg(tiny_qwen_path, tmp_path / "r", warm_start="own", warm_start_prompts=4)
    tr = GRPOTrainer(cfg, rows, [lambda prompts, completions, **kw: [0.0] * len(completions)], progress=False)
    with caplog.at_level("WARNING"):
        history = tr.train()
    assert "no right answer in 4 prompts x 4" in caplog.text and len(history) == 2
    assert json.loads((tmp_path / "r" / "warm_start.json").read_text())["examples"] == 0
    assert tr.data.served == 4 + 2 * 2  # the warm start's prompts came from the stream


def test_own_answers_are_trained_on(tiny_qwen_path, tmp_path):
    rows = [{"prompt": f"{i}+{i}="} for i in range(6)]

    def long_is_right(prompts, completions, **kw):
        return [1.0 if len(c) >= 3 else 0.0 for c in completions]

    cfg = make_cfg(tiny_qwen_path, tmp_path / "r", warm_start="own", warm_start_prompts=6, warm_start_steps=3)
    tr = GRPOTrainer(cfg, rows, [long_is_right], progress=False)
    tr.train()
    record = json.loads((tmp_path / "r" / "warm_start.json").read_text())
    assert record["prompts_sampled"] == 6 and 0 < record["examples"] <= 6 * 2 and record["steps"] == 3


def test_a_solution_column_the_data_lacks_is_refused_before_loading(tmp_path):
    cfg = GRPOConfig(
        model="never-loaded", output_dir=str(tmp_path / "r"), warm_start="solutions", solution_column="worked"
    )
    with pytest.raises(
        ValueError, match=r"solution_column='worked', which the dataset does not have .*\['prompt'\]"
    ):
        GRPOTrainer(cfg, [{"prompt": "1+1="}], [lambda prompts, completions, **kw: [0.0] * len(completions)])


def test_a_warm_start_asked_for_mid_run_trains_then_grpo_goes_on(tiny_qwen_path, tmp_path):
    """The no_signal alarm's remedy: ``steering.warm_start`` between steps runs the supervised phase
    (only the LoRA moves, its loss falls), records it in that step's changes and its own file, and the
    next GRPO step runs; a source the data cannot serve is refused when asked, nothing queued."""
    rows = [{"prompt": f"{i}+{i}=", "answer": str(2 * i), "solution": f"{2 * i}"} for i in range(6)]
    zero = [lambda prompts, completions, **kw: [0.0] * len(completions)]
    tr = GRPOTrainer(make_cfg(tiny_qwen_path, tmp_path / "r", max_steps=3, warm_start_steps=4), rows, zero,
                     progress=False)  # fmt: skip
    tr.train_step(tr._step_boundary())
    lora = {n: p.detach().clone() for n, p in tr.model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in tr.model.named_parameters() if not p.requires_grad}
    with pytest.raises(ValueError, match="warm start source must be 'own' or 'solutions'; got 'mine'"):
        tr.steering.warm_start("mine")
    tr.steering.warm_start("solutions")
    changes = tr._step_boundary()  # step 1's boundary: all-zero rewards leave the LoRA as it was until now
    assert changes["warm_start"] == {"source": "solutions", "examples": 6, "steps": 4}
    record = json.loads((tmp_path / "r" / "warm_start-step-1.json").read_text())
    assert (
        record["at_step"] == 1 and len(record["losses"]) == 4 and record["losses"][-1] < record["losses"][0]
    )
    assert not (tmp_path / "r" / "warm_start.json").exists()  # the run did not start with one
    assert any(not torch.equal(p, lora[n]) for n, p in tr.model.named_parameters() if n in lora)
    assert all(torch.equal(p, frozen[n]) for n, p in tr.model.named_parameters() if n in frozen)
    metrics = tr.train_step(changes)
    assert metrics["step"] == 2 and metrics["changes"]["warm_start"]["steps"] == 4
    assert metrics["warm_start"] == "solutions" and metrics["warm_start_steps"] == 4

    plain = GRPOTrainer(
        make_cfg(tiny_qwen_path, tmp_path / "p"), [{"prompt": "1+1="}] * 4, zero, progress=False
    )
    with pytest.raises(ValueError, match=r"solution_column='solution', which the dataset does not have"):
        plain.steering.warm_start("solutions")
    assert not plain.steering.take()  # nothing queued
