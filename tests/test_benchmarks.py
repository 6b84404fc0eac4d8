"""The benchmark scripts: their arithmetic by hand, their instrumentation on real runs of both
trainers (tiny model, CPU), and the log-prob memory measurement in fresh processes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import digit_share

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import compare_trl  # noqa: E402
import gpu  # noqa: E402
import runners  # noqa: E402


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<unused_2><unused_3>", 0.5),  # one even, one odd
        ("<unused_10>ab<unused_4>", 1.0),  # characters between tokens do not count
        ("<unused_7>", 0.0),
        ("plain text", 0.0),  # no unused token at all: nothing to pay
    ],
)
def test_even_unused_share(text, expected):
    assert compare_trl.even_unused_share([None], [text]) == [expected]


def _run(ends, generate, reference, optimizer, rewards, tokens, peak):
    parts = runners.with_policy({"generate": generate, "reference": reference, "optimizer": optimizer}, ends)
    return {"step_ends": ends, "parts": parts, "rewards": rewards, "gen_tokens": tokens, "peak_mem_mb": peak}


def test_policy_is_the_rest_of_each_step():
    run = _run(
        [0.0, 10.0, 13.0, 17.0], [4, 1, 2], [1, 0.5, 0.5], [0.5, 0.5, 0.5], [0.1, 0.2, 0.3], [64] * 3, 100
    )
    assert run["parts"]["policy"] == [4.5, 1.0, 1.0]  # 10-4-1-0.5, 3-1-0.5-0.5, 4-2-0.5-0.5


def test_summaries_by_hand():
    a = _run([0.0, 10.0, 13.0, 17.0], [4, 1, 2], [0, 0, 0], [1, 1, 1], [0.1, 0.2, 0.3], [100, 60, 80], 500)
    b = _run([0.0, 9.0, 11.0, 16.0], [4, 1, 3], [0, 0, 0], [1, 1, 1], [0.2, 0.4, 0.6], [100, 40, 90], 700)
    one = runners.step_parts(a)  # warm-up step left out: steps of 3 s and 4 s
    assert one["step_seconds_median"] == 3.5
    assert one["gen_tokens_per_sec"] == pytest.approx((60 + 80) / (1 + 2))
    assert one["parts_median"]["generate"] == 1.5
    s = compare_trl.summarize([a, b], last=2)
    assert s["step_seconds_median"] == 3.5  # median of 3, 4, 2, 5
    assert s["peak_mem_mb"] == 600
    assert s["gen_tokens_per_sec"] == pytest.approx((140 / 3 + 130 / 4) / 2)
    assert s["first_reward_mean"] == pytest.approx(0.15)
    assert s["final_reward_mean"] == pytest.approx((0.2 + 0.3 + 0.4 + 0.6) / 4)
    result = {"machine": "m", "grpo_lite": s, "trl": s, "last_steps_averaged": 2, "step_time_ratio": 1.0,
              "peak_mem_ratio": 1.0}  # fmt: skip
    text = compare_trl.table(result)
    assert "| median seconds / step | 3.50 | 3.50 | 1.00 |" in text
    assert "| - no-grad log-prob passes (reference) | 0.00 | 0.00 | - |" in text
    assert "demo task" not in text  # no learning check was run
    learned = s | {"demo_accuracy_base": 0.5, "demo_accuracy_trained": 0.8, "demo_reward_first": 0.4,
                   "demo_reward_last": 0.6, "demo_accuracy_trained_per_seed": [0.7, 0.9]}  # fmt: skip
    text = compare_trl.table(
        result | {"grpo_lite": learned, "trl": learned, "learning_steps": 30, "learning_seeds": 2}
    )
    assert "| demo task: accuracy after 30 steps (mean over 2 seeds) | 80.0% | 80.0% | 1.00 |" in text
    assert "grpo-lite 70.0%, 90.0%; TRL 70.0%, 90.0%" in text

    # --before: grpo-lite's earlier rollout road, its ratios by hand (a: 3.5 s, 140/3 tok/s; b: 3.5 s, 130/4)
    collected = compare_trl.collect({"grpo-lite": [a], "trl": [b], "grpo-lite-before": [b]}, {"grpo-lite": [], "trl": []},
                                    steps=4, reps=1, seeds=0, learning_steps=0)  # fmt: skip
    assert collected["before_ratios"]["step_time"] == pytest.approx(3.5 / 3.5)
    assert collected["before_ratios"]["gen_tokens_per_sec"] == pytest.approx((140 / 3) / (130 / 4))
    assert "now / then: step time 1.00, tokens/s 1.44" in compare_trl.table(collected)
    assert "grpo_lite_before" not in compare_trl.collect({"grpo-lite": [a], "trl": [b]}, {"grpo-lite": [], "trl": []},
                                                         steps=4, reps=1, seeds=0, learning_steps=0)  # fmt: skip


def test_the_real_model_comparison_times_the_demos_task(smollm2):
    from grpo_lite.apps.demo import demo_run
    from grpo_lite.tasks.arithmetic import last_number_accuracy

    settings, rows, reward = compare_trl.speed_task(compare_trl.SMOLLM2)
    demo = demo_run(compare_trl.SMOLLM2, "unused")
    assert (
        settings["max_new_tokens"] == 16 and settings["learning_rate"] == 5e-4 and settings["lora_rank"] == 16
    )
    assert "model" not in settings and rows == demo.train_rows and reward is last_number_accuracy
    assert compare_trl.speed_task("bench")[0] is compare_trl.SETTINGS
    parts = dict.fromkeys(("generate", "reference", "policy", "optimizer"), 1.0)
    s = {"step_seconds_median": 2.0, "parts_median": parts, "peak_mem_mb": 1.0, "gen_tokens_per_sec": 1.0,
         "first_reward_mean": 0.0, "final_reward_mean": 0.0}  # fmt: skip
    text = compare_trl.table({"machine": "m", "model": compare_trl.SMOLLM2, "grpo_lite": s, "trl": s,
                              "last_steps_averaged": 1, "step_time_ratio": 1.0, "peak_mem_ratio": 1.0})  # fmt: skip
    assert (
        "model: smollm2-135m-instruct" in text and "(target <= 0.30)" in text and "(target <= 0.60)" in text
    )


SMALL = dict(prompts_per_step=2, group_size=4, micro_batch_size=8, max_new_tokens=6, max_prompt_tokens=16,
             learning_rate=1e-2, lora_rank=4, lora_alpha=8, beta=0.04, save_steps=0, seed=0, device="cpu")  # fmt: skip


def test_learning_summary_by_hand():
    runs = [
        {"after": {"base": 0.5, "trained": 0.7}, "rewards": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]},
        {"after": {"base": 0.5, "trained": 0.9}, "rewards": [0.3, 0.2, 0.1, 0.6, 0.7, 0.8]},
    ]
    got = compare_trl.learned_summary(runs)
    assert got["demo_accuracy_base"] == 0.5 and got["demo_accuracy_trained"] == pytest.approx(0.8)
    assert got["demo_accuracy_trained_per_seed"] == [0.7, 0.9]
    assert got["demo_reward_first"] == pytest.approx((1.5 + 1.9) / 10)  # first 5 of each seed
    assert got["demo_reward_last"] == pytest.approx((2.0 + 2.4) / 10)  # last 5 of each seed
    assert compare_trl.learned_summary([]) == {}


def _greedy_accuracy(model, tokenizer):
    from grpo_lite.evaluate import accuracy

    rows = [{"prompt": f"{i}+{i}=", "answer": str(2 * i)} for i in range(4)]
    return {
        "base": accuracy(model, tokenizer, rows, exact_text, base=True, max_new_tokens=4),
        "trained": accuracy(model, tokenizer, rows, exact_text, max_new_tokens=4),
    }


def exact_text(prompts, completions, answer, **kw):
    return [1.0 if c.strip() == a else 0.0 for c, a in zip(completions, answer, strict=True)]


def _check_run(result, steps, n):
    assert len(result["step_ends"]) == steps + 1 and len(result["rewards"]) == steps
    for part in ("generate", "reference", "policy", "optimizer"):
        values = result["parts"][part]
        assert len(values) == steps and all(v >= 0 for v in values), (part, values)
    assert all(v > 0 for v in result["parts"]["generate"])
    assert all(v > 0 for v in result["parts"]["reference"])  # beta > 0: a reference pass every step
    assert all(v > 0 for v in result["parts"]["optimizer"])  # an optimizer step every step
    assert all(0 < t <= n * SMALL["max_new_tokens"] for t in result["gen_tokens"])
    # the trained model handed to `after` works with grpo-lite's evaluation, adapters on and off
    assert set(result["after"]) == {"base", "trained"}
    assert all(0.0 <= v <= 1.0 for v in result["after"].values())


@pytest.mark.slow
@pytest.mark.parametrize("run", [runners.run_grpo_lite, runners.run_trl], ids=["grpo-lite", "trl"])
def test_each_trainer_run_is_measured_at_the_same_settings(run, tiny_model_path, tmp_path):
    rows = [{"prompt": f"{i}+{i}="} for i in range(8)]
    result = run(str(tiny_model_path), SMALL, rows, digit_share, 3, tmp_path / "run", _greedy_accuracy)
    _check_run(result, 3, 8)


def test_logprob_memory_chunked_stays_flat_while_full_logits_grow(tmp_path):
    out = tmp_path / "lp.json"
    cmd = [
        sys.executable,
        str(BENCH / "logprob_memory.py"),
        "--tokens",
        "1024",
        "--hidden",
        "32",
        "--json",
        str(out),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    rows = {r["V"]: r for r in json.loads(out.read_text())["rows"]}
    chunked = [rows[v]["chunked"]["peak_mb"] for v in (32_000, 128_256, 151_936)]
    naive = [rows[v]["naive"]["peak_mb"] for v in (32_000, 128_256, 151_936)]
    logits_152k = 1024 * 151_936 * 4 / 2**20  # one fp32 copy of the full logits: 594 MB
    assert naive[2] > logits_152k  # the full logits (and more) were live at once
    assert naive[2] > 3.5 * naive[0]  # grows with the vocabulary
    assert max(chunked) < 400 and max(chunked) < 1.6 * min(chunked)  # nearly flat, ~64 MB slices
    assert naive[2] > 3 * chunked[2]


def test_gpu_benchmark_needs_cuda(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        gpu.main(["--runs", "0.5b:256:merged"])


def test_gpu_benchmark_plan():
    assert gpu.parse_runs(gpu.DEFAULT_RUNS) == [
        ("0.5b", 256, ["merged", "16bit", "before", "trl"]),
        ("1.5b", 512, ["lean", "merged"]),
    ]
    with pytest.raises(SystemExit, match="unknown \\['fast'\\]"):
        gpu.parse_runs("0.5b:256:fast")
    with pytest.raises(SystemExit, match="not MODEL:TOKENS"):
        gpu.parse_runs("0.5b:merged")


def test_gpu_benchmark_uses_the_real_shapes():
    from transformers import Qwen2Config

    from grpo_lite.policy.memory import ModelShape

    shape = ModelShape.from_config(Qwen2Config(**gpu.QWEN["0.5b"]))
    # Qwen2.5-0.5B: 494M parameters, of which 136M in the (tied) embedding
    assert shape.embedding_params == 151936 * 896
    assert shape.linear_params + shape.embedding_params == pytest.approx(494_032_768, rel=2e-3)
    planned = gpu.planned_peak_gb(Qwen2Config(**gpu.QWEN["1.5b"]), 512)
    assert 1.5 < planned < 5.0  # the target: 1.5B at G = 8 x 512 tokens under 5 GB
    rows = gpu.gsm8k_style_rows()
    assert rows[0]["prompt"][0]["role"] == "system" and "<answer>" in rows[0]["prompt"][0]["content"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_benchmark_runs(tmp_path):
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, str(BENCH / "gpu.py"), "--runs", "0.5b:64:before,merged,trl", "--steps", "3",
           "--rollouts", "2", "--random-weights", "--json", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=1200)
    result = json.loads(out.read_text())
    row = result["rows"][0]
    for impl in ("before", "merged", "trl"):
        assert row[impl]["peak_mem_mb"] > 0 and row[impl]["step_seconds_median"] > 0
    assert result["rollouts"][0]["merged, lean loop"]["tokens_per_sec"] > 0


@pytest.mark.slow
def test_gpu_benchmark_script_end_to_end_on_the_cpu(tmp_path):
    """The whole script (model build, the oldest and newest grpo-lite variants and TRL in fresh
    processes, rollouts alone, table, JSON) on a tiny model of the same family; on a GPU the same code
    runs with --device cuda."""
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, str(BENCH / "gpu.py"), "--runs", "tiny:8:before,merged,compiled,trl", "--steps", "3",
           "--rollouts", "2", "--device", "cpu", "--model-dir", str(tmp_path / "models"), "--json", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    row = result["rows"][0]
    assert row["source"] == "random weights, real config" and row["max_new_tokens"] == 8
    assert row["planned_peak_gb_merged"] > row["planned_peak_gb"] > 0
    for impl in ("before", "merged", "compiled", "trl"):
        m = row[impl]
        assert m["step_seconds_median"] > 0 and m["peak_mem_mb"] > 0 and m["gen_tokens_per_sec"] > 0
        assert m["parts_median"]["reference"] > 0  # beta = 0.04: the reference pass is timed
    assert "16bit" not in row and "lean" not in row  # only the variants asked for
    assert row["compiled"]["compiled_rollouts"] and not row["merged"]["compiled_rollouts"]
    rollouts = result["rollouts"][0]
    assert rollouts["prompts"] == 2 and rollouts["max_new_tokens"] == 8
    for road in ("adapter, transformers generate", "adapter, lean loop", "merged, lean loop"):
        assert rollouts[road]["tokens"] == 2 * 8 * 8 and rollouts[road]["tokens_per_sec"] > 0
    # decode_extras' roads: at full length every row runs to the end; with the EOS raised, rows end
    # early on every road (the compiled one too: its compile sees the hook)
    assert rollouts["full length, compiled step, static cache"]["mean_length"] == 8
    assert not any(m.get("fell_back_to_eager") for m in rollouts.values() if isinstance(m, dict))
    for road in ("finished rows kept", "finished rows dropped", "compiled step, static cache"):
        assert (
            rollouts[f"varied lengths, lean loop, {road}" if "rows" in road else f"varied lengths, {road}"][
                "mean_length"
            ]
            < 7
        )
    assert "| tiny-qwen2 (random weights, real config) | 8 | grpo-lite merged |" in proc.stdout
    assert "| merged, lean loop |" in proc.stdout


def test_fp32_stream_variant_rebuilds_the_path_before(tiny_qwen_path):
    """The benchmark's "before" variant: every 16-bit parameter but the 4-bit ones upcast to float32."""
    from grpo_lite import GRPOConfig
    from grpo_lite.policy.model import load_policy

    model, _ = load_policy(GRPOConfig(model=str(tiny_qwen_path), compute_dtype="bfloat16", lora_rank=4))
    lm = model.get_base_model()
    assert lm.model.embed_tokens.weight.dtype == torch.bfloat16
    runners.upcast_like_peft(model)
    assert lm.model.embed_tokens.weight.dtype == torch.float32 and lm.lm_head.weight.dtype == torch.float32
    assert lm.model.norm.weight.dtype == torch.float32
    assert type(lm.model.layers[0].mlp.up_proj.base_layer.weight).__name__ == "Params4bit"


def test_sandbox_throughput_counts_honest_runs_only(monkeypatch):
    import sandbox_throughput

    result = sandbox_throughput.main(["--runs", "8", "--workers", "2"])
    assert set(result["runs_per_second"]) == {"bubblewrap", "unshare", "none"}
    assert all(rate > 0 for rate in result["runs_per_second"].values())
    # A run that does not pass every assert must stop the timing, not count as a run.
    monkeypatch.setattr(sandbox_throughput, "TESTS", [*sandbox_throughput.TESTS, "assert add(1, 1) == 3"])
    with pytest.raises(RuntimeError, match="8 runs did not pass every assert"):
        sandbox_throughput.runs_per_second(
            lambda: sandbox_throughput_run(sandbox_throughput), runs=8, workers=2
        )


def sandbox_throughput_run(module):
    from rewards.sandbox import run_tests

    return run_tests(module.CODE, module.TESTS)


def test_tools_benchmark_counts_only_right_calls_and_leaves_tool_time_out(smollm2, monkeypatch):
    import tools as tools_bench

    from grpo_lite.rollout import Rollout

    ids = torch.zeros((2, 4), dtype=torch.long)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    tool = torch.tensor([[0, 1, 0, 0], [0, 0, 0, 0]])
    fake = Rollout(ids, mask, ids, mask, torch.zeros(2, dtype=torch.bool), ["", ""], ["", ""], tool_mask=tool,
                   exchanges=[[], []], tool_seconds=1.5)  # fmt: skip
    assert tools_bench.rollout_tokens_per_second(fake, 3.5) == 4 / 2.0  # (3 - 1 tool token + 2) / (3.5 - 1.5)
    result = tools_bench.main(["--quick", "--workers", "2"])
    assert result["sandbox"]["calls"] == 16 and result["sandbox"]["calls_per_second"] > 0
    runs = result["rollout"]["runs"]
    assert len(runs["with"]) == len(runs["without"]) == 1 and runs["without"][0]["tool_seconds"] == 0
    assert (
        result["rollout"]["ratio"]
        == runs["with"][0]["tokens_per_second"] / runs["without"][0]["tokens_per_second"]
    )
    from grpo_lite.tools import ToolBox

    monkeypatch.setattr(
        ToolBox, "call", lambda self, call: type("R", (), {"output": "wrong", "failed": False})()
    )
    with pytest.raises(RuntimeError, match="did not print what they should"):
        tools_bench.calls_per_second(4, 2)


@pytest.mark.slow
def test_trl_is_evaluated_also_at_a_wall_time_off_its_clock(tiny_model_path, tmp_path):
    """Equal learning at equal time: TRL's policy measured at the first step that ends ``at_seconds``
    into training (grpo-lite's time for the same seed), its evaluation off the clock; at the end when
    no step gets there."""
    rows = [{"prompt": f"{i}+{i}="} for i in range(8)]
    early = runners.run_trl(str(tiny_model_path), SMALL, rows, digit_share, 3, tmp_path / "a", _greedy_accuracy,
                            at_seconds=0.0)  # fmt: skip
    _check_run(early, 3, 8)
    at = early["at_seconds"]
    assert at["step"] == 1 and set(at["after"]) == {"base", "trained"}
    assert at["seconds"] == pytest.approx(early["step_ends"][1] - early["step_ends"][0])
    assert at["after"]["base"] == early["after"]["base"]  # adapters off: the same base at both times
    late = runners.run_trl(str(tiny_model_path), SMALL, rows, digit_share, 2, tmp_path / "b", _greedy_accuracy,
                           at_seconds=1e9)  # fmt: skip
    assert late["at_seconds"]["step"] == 2 and late["at_seconds"]["after"] == late["after"]
    runs = [early | {"rewards": [0.0] * 3}, late | {"rewards": [0.0] * 2}]
    learned = compare_trl.learned_summary(runs)
    assert learned["demo_steps_at_equal_time_per_seed"] == [1, 2]
    assert learned["demo_accuracy_at_equal_time"] == pytest.approx(
        (at["after"]["trained"] + late["after"]["trained"]) / 2
    )
