"""The command line: train/eval on local GSM8K-schema data with a tiny model, bad input, Ctrl-C + resume."""

import dataclasses
import json

import pytest

from grpo_lite import GRPOConfig
from grpo_lite.apps.cli import build_parser, main
from grpo_lite.apps.gsm8k import SYSTEM_PROMPT, gold_answer, load_gsm8k
from grpo_lite.trainer import GRPOTrainer


@pytest.fixture
def gsm8k_file(tmp_path):
    """A small local file in GSM8K's schema (question, answer ending in '#### N')."""
    path = tmp_path / "gsm8k_train.jsonl"
    rows = [
        {"question": f"What is {a} + {b}?", "answer": f"{a} + {b} = {a + b}\n#### {a + b:,}"}
        for a in range(6)
        for b in range(6)
    ]
    rows.append({"question": "Big?", "answer": "so\n#### 1,234"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_args(model, out):
    return ["--model", str(model), "--output-dir", str(out), "--max-new-tokens", "6", "--group-size", "4",
            "--prompts-per-step", "2", "--micro-batch-size", "8", "--max-steps", "2", "--save-steps", "1"]  # fmt: skip


@pytest.mark.parametrize(
    ("solution", "gold"), [("x\n#### 72", "72"), ("#### 1,234", "1234"), ("a #### b #### -5", "-5")]
)
def test_gold_answer(solution, gold):
    assert gold_answer(solution) == gold


def test_gsm8k_local_file_builds_chat_prompts(gsm8k_file):
    rows = load_gsm8k(path=gsm8k_file)
    assert rows[-1]["answer"] == "1234"
    assert rows[0]["prompt"] == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "What is 0 + 0?"},
    ]


def test_gsm8k_missing_columns(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "1+1", "solution": "2"}) + "\n")
    with pytest.raises(
        ValueError, match=r"needs the columns \['question', 'answer'\]; found \['problem', 'solution'\]"
    ):
        load_gsm8k(path=bad)


def test_help_documents_every_config_field():
    helptext = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for f in dataclasses.fields(GRPOConfig):
        assert "--" + f.name.replace("_", "-") in helptext, f.name
    assert "(default: 1.0)" in helptext and "math_accuracy=1.0" in helptext
    # --backend auto's help says what backends.resolve_backend does (Unsloth on a GPU where installed)
    flat = " ".join(helptext.split())
    assert "picks Unsloth when it is installed and a CUDA GPU is present, else transformers" in flat
    assert "--compute-dtype {auto,bfloat16,float16,float32}" in flat
    assert "--rollout-weights {auto,merged,adapter}" in flat and "--sampler {grpo_lite,transformers}" in flat


def test_train_then_eval(tiny_model_path, gsm8k_file, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(
        [
            "train",
            "--dataset",
            str(gsm8k_file),
            "--reward",
            "math_accuracy=1",
            "--reward",
            "tag_count=0.5",
            *tiny_args(tiny_model_path, out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    saved = GRPOConfig.load(out / "config.json")
    assert (saved.max_new_tokens, saved.group_size, saved.model) == (6, 4, str(tiny_model_path))
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and "rewards/tag_count/mean" in metrics[0]

    result_path = tmp_path / "eval.json"
    args = ["eval", "--model", str(tiny_model_path), "--adapter", str(out / "adapter"), "--dataset", str(gsm8k_file),
            "--limit", "5", "--max-new-tokens", "6", "--output", str(result_path)]  # fmt: skip
    assert main(args) == 0
    first = json.loads(result_path.read_text())
    assert first["n"] == 5 and first["correct"] == sum(c["correct"] for c in first["completions"])
    assert main(args) == 0  # greedy: the same numbers and the same completions again
    assert json.loads(result_path.read_text()) == first


def test_config_file_and_overrides(tiny_model_path, gsm8k_file, tmp_path):
    cfg_path = tmp_path / "run.yaml"
    GRPOConfig(model=str(tiny_model_path), output_dir=str(tmp_path / "r"), max_new_tokens=4, group_size=2,
               prompts_per_step=2, micro_batch_size=4, max_steps=1).save(cfg_path)  # fmt: skip
    assert (
        main(["train", "--config", str(cfg_path), "--dataset", str(gsm8k_file), "--temperature", "0.5"]) == 0
    )
    saved = GRPOConfig.load(tmp_path / "r" / "config.json")
    assert (saved.temperature, saved.max_new_tokens) == (0.5, 4)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-steps", "0"], "GRPOConfig.max_steps must be > 0"),
        (["--max-steps", "-3"], "GRPOConfig.max_steps must be > 0"),
        (["--reward", "no_such_reward"], "unknown reward 'no_such_reward'"),
        (["--reward", "nomodule_xyz:fn"], "cannot import 'fn' from 'nomodule_xyz'"),
    ],
)
def test_bad_arguments(tiny_model_path, gsm8k_file, tmp_path, capsys, extra, message):
    rc = main(["train", "--dataset", str(gsm8k_file), *tiny_args(tiny_model_path, tmp_path / "r"), *extra])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_unknown_model_offline(gsm8k_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(
        [
            "train",
            "--dataset",
            str(gsm8k_file),
            "--model",
            "nobody/no-such-model",
            "--output-dir",
            str(tmp_path / "r"),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "'nobody/no-such-model' was not found locally" in err and "cannot be downloaded" in err


def test_existing_run_is_refused(tiny_model_path, gsm8k_file, tmp_path, capsys):
    args = ["train", "--dataset", str(gsm8k_file), *tiny_args(tiny_model_path, tmp_path / "r")]
    assert main(args) == 0
    assert main(args) == 2
    assert "holds a previous run" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0


def test_ctrl_c_saves_and_resume_continues(tiny_model_path, gsm8k_file, tmp_path, capsys, monkeypatch):
    real_step = GRPOTrainer.train_step

    def interrupted_step(self, changes=None):
        if self.step == 1:
            raise KeyboardInterrupt
        return real_step(self, changes)

    monkeypatch.setattr(GRPOTrainer, "train_step", interrupted_step)
    out = tmp_path / "r"
    assert main(["train", "--dataset", str(gsm8k_file), *tiny_args(tiny_model_path, out)]) == 130
    printed = capsys.readouterr().out
    ckpt = out / "checkpoints" / "step-1"
    assert f"--resume {ckpt}" in printed and ckpt.is_dir()
    monkeypatch.setattr(GRPOTrainer, "train_step", real_step)
    assert (
        main(["train", "--dataset", str(gsm8k_file), "--resume", str(ckpt)]) == 0
    )  # config from the checkpoint
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def test_builtin_rewards_are_read_from_the_package_not_kept_by_hand():
    import rewards
    from grpo_lite.apps.commands import builtin_rewards, parse_rewards

    names = builtin_rewards()
    assert {"math_accuracy", "last_number_accuracy", "json_exact", "code_unit_tests"} <= set(names)
    assert not {"extract_code", "completion_text", "combine", "overlong_penalty"} & set(
        names
    )  # helpers, a factory
    funcs, weights = parse_rewards(["last_number_accuracy=0.5"])
    assert funcs == [rewards.last_number_accuracy] and weights == [0.5]
    with pytest.raises(ValueError, match="unknown reward 'extract_code'; built-ins: .*last_number_accuracy"):
        parse_rewards(["extract_code"])


def test_train_with_held_out_evaluation_from_the_command_line(tiny_model_path, gsm8k_file, tmp_path, capsys):
    """--eval-dataset / --eval-every / --eval-measure: eval/NAME at steps 1 and 2 in metrics.jsonl, the
    best checkpoint named, `export RUN` takes it; a bad measure name is a clear error."""
    out = tmp_path / "r"
    args = ["train", "--dataset", str(gsm8k_file), *tiny_args(tiny_model_path, out), "--eval-dataset", str(gsm8k_file),
            "--eval-every", "1", "--eval-max-rows", "4", "--eval-measure", "math_accuracy"]  # fmt: skip
    assert main(args) == 0
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m.get("eval/math_accuracy") is not None for m in logged] == [True, True]
    best = json.loads((out / "best.json").read_text())
    assert best["measure"] == "math_accuracy" and best["step"] in (1, 2)
    assert main(["export", str(out)]) == 0
    assert (out / "exports" / f"adapter-step-{best['step']}" / "adapter_model.safetensors").exists()
    capsys.readouterr()
    assert main([*args[:-1], "no_such_reward", "--overwrite"]) == 2
    assert "--eval-measure 'no_such_reward': unknown reward" in capsys.readouterr().err
