"""The pre-flight scan: its figures by hand on fixed rewards, the verdicts, the run left as it was, the
CLI command, and the dashboard's difficulty histogram."""

import json

import pytest
from test_cli import gsm8k_file, tiny_args  # noqa: F401  (a fixture)
from test_dynamic import fake_draw, signal_where_told

from grpo_lite import GRPOConfig
from grpo_lite.apps.cli import main
from grpo_lite.scan import report_text, summarize
from grpo_lite.trainer import GRPOTrainer

nan = float("nan")


def test_figures_by_hand():
    # 5 groups of 4: all 0 (lowest), mixed, all 1 (highest), all 0.5 (another tie), mixed with a NaN
    draws = [fake_draw(0, [[0, 0, 0, 0], [0, 1, 0, 0], [1, 1, 1, 1]], width=2),
             fake_draw(3, [[0.5, 0.5, 0.5, 0.5], [nan, 0, 1, 1]], width=2)]  # fmt: skip
    r = summarize(draws, group_size=4, prompts_per_step=4, max_extra_rounds=3, dynamic=False, temperature=1.0)
    assert r["prompts"] == 5 and r["groups_with_signal"] == pytest.approx(2 / 5)
    assert (r["tied_all_lowest"], r["tied_all_highest"], r["tied_other"]) == pytest.approx(
        (1 / 5, 1 / 5, 1 / 5)
    )
    assert r["reward"] == pytest.approx({"mean": 9 / 19, "min": 0.0, "max": 1.0})
    assert r["rewards"]["r"]["mean"] == pytest.approx(9 / 19)
    assert r["signal_groups_per_step"] == pytest.approx(1.6) and r["signal_groups_per_step_dynamic"] == 4
    # rows r have r % 3 + 1 tokens: rows 0-4 -> 1, 2, 3, 1, 2 tokens, 4 completions each
    assert r["length"] == pytest.approx({"mean": 9 / 5, "max": 3.0}) and r["truncated"] == 0.0
    assert r["verdict"] == "learnable"


def test_verdicts_and_their_advice():
    hard = [fake_draw(0, [[0] * 4] * 7 + [[0, 1, 0, 0]], width=2)]
    r = summarize(hard, group_size=4, prompts_per_step=4, max_extra_rounds=3, dynamic=False, temperature=0.7)
    assert r["verdict"] == "too hard" and r["advice"][0].startswith("dynamic_sampling=True")
    assert any("warm_start" in a for a in r["advice"]) and any(
        "temperature (now 0.7)" in a for a in r["advice"]
    )
    text = report_text(r)
    assert text.splitlines()[-1].startswith("verdict: too hard -- try: dynamic_sampling=True")
    on = summarize(hard, group_size=4, prompts_per_step=4, max_extra_rounds=3, dynamic=True, temperature=0.7)
    assert not any(a.startswith("dynamic_sampling") for a in on["advice"])
    easy = [fake_draw(0, [[1] * 4] * 7 + [[0, 1, 0, 0]], width=2)]
    assert (
        summarize(easy, group_size=4, prompts_per_step=4, max_extra_rounds=0, dynamic=False, temperature=1)[
            "verdict"
        ]
        == "too easy"
    )


def test_a_scan_leaves_the_run_as_it_was(tiny_qwen_path, tmp_path):
    rows = [{"prompt": f"{i}+{i}=", "signal": i % 2 == 0} for i in range(8)]
    kw = dict(model=str(tiny_qwen_path), max_new_tokens=4, group_size=4, prompts_per_step=2, micro_batch_size=8,
              lora_rank=4, max_steps=1, save_steps=0, rollout_weights="adapter")  # fmt: skip
    scanned = GRPOTrainer(
        GRPOConfig(output_dir=str(tmp_path / "a"), **kw), rows, [signal_where_told], progress=False
    )
    report = scanned.scan(6, progress=False)
    assert report["prompts"] == 6 and json.loads((tmp_path / "a" / "scan.json").read_text()) == report
    # the first six rows of the stream: half of them carry signal by construction
    signal = [rows[scanned.data.index_at(k)]["signal"] for k in range(6)]
    assert report["groups_with_signal"] == pytest.approx(sum(signal) / 6)
    assert scanned.data.served == 0 and scanned.data.difficulty.visits == {}
    plain = GRPOTrainer(
        GRPOConfig(output_dir=str(tmp_path / "b"), **kw), rows, [signal_where_told], progress=False
    )
    from grpo_lite.run import rng_state, set_rng_state

    start = rng_state()  # the two share the global generator: each step starts from the same state
    a = scanned.train_step()
    set_rng_state(start)
    b = plain.train_step()
    assert scanned.last_rollout["completions"] == plain.last_rollout["completions"] and a["loss"] == b["loss"]


def test_the_scan_command(tiny_model_path, gsm8k_file, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "scan"
    rc = main(["scan", "--dataset", str(gsm8k_file), "--reward", "math_accuracy", "--prompts", "4",
               *tiny_args(tiny_model_path, out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0 and "scan of 4 prompts x 4 completions" in printed and "verdict: " in printed
    assert json.loads((out / "scan.json").read_text())["prompts"] == 4


def test_the_dashboard_draws_the_difficulty_histogram():
    from grpo_lite.notebook.panels import curves_figure

    history = [{"step": 1, "reward": 0.1, "difficulty/never": 5.0, "difficulty/between": 2.0, "difficulty/always": 1.0,
                "difficulty/unseen": 8.0, "difficulty/resting": 3.0}]  # fmt: skip
    hist = [a for a in curves_figure(history, []).axes if a.get_title().startswith("prompts solved")]
    assert len(hist) == 1 and hist[0].get_title() == "prompts solved (3 resting)"
    assert [p.get_height() for p in hist[0].patches] == [5.0, 2.0, 1.0, 8.0]
    assert [tick.get_text() for tick in hist[0].get_xticklabels()] == ["never", "between", "always", "unseen"]
    plain = curves_figure([{"step": 1, "reward": 0.1}], []).axes
    assert not [a for a in plain if a.get_title().startswith("prompts solved")]
