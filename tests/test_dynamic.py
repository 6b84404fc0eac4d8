"""Dynamic sampling (DAPO section 3.2): which groups a step keeps, against a slow reference written as
the paper states it; the loss equal to training on the kept groups alone; the cursor through a
checkpoint; a step with no signal makes no update; and it learns where plain GRPO cannot."""

import statistics

import pytest
import torch

from grpo_lite import GRPOConfig
from grpo_lite.dynamic import Draw, seek_signal, signal_groups
from grpo_lite.rollout.generate import Rollout
from grpo_lite.trainer import GRPOTrainer
from rewards import Scores

G = 4


def make_cfg(path, out, **kw):
    base = dict(model=str(path), output_dir=str(out), max_new_tokens=6, group_size=G, prompts_per_step=2,
                micro_batch_size=8, learning_rate=5e-2, lora_rank=8, max_steps=1, save_steps=0,
                rollout_weights="adapter", dynamic_sampling=True, max_extra_rounds=3)  # fmt: skip
    return GRPOConfig(**(base | kw))


def test_signal_groups_by_hand():
    nan = float("nan")
    rewards = torch.tensor([0, 0, 0, 0, 0, 1, 0, 0, nan, 1, nan, nan, 1, 1, nan, 1, nan, 0.5, 0.25, nan])
    assert signal_groups(rewards, G).tolist() == [False, True, False, False, True]


def fake_draw(start: int, rewards: list[list[float]], width: int) -> Draw:
    """A scored draw of len(rewards) prompts (rows start, start+1, ...): prompts ``width`` tokens wide,
    completions of row r ``r % 3 + 1`` tokens, each token = the row's index (to check what moves where)."""
    B = len(rewards)
    N = B * G
    rows = list(range(start, start + B))
    lengths = torch.tensor([r % 3 + 1 for r in rows for _ in range(G)])
    T = int(lengths.max())
    ids = torch.tensor([[r] * T for r in rows for _ in range(G)])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    rollout = Rollout(
        prompt_ids=torch.full((N, width), 7), prompt_mask=torch.ones(N, width, dtype=torch.long),
        completion_ids=ids, completion_mask=mask, truncated=torch.zeros(N, dtype=torch.bool),
        completions=[f"c{r}.{j}" for r in rows for j in range(G)], prompt_texts=[f"p{r}" for r in rows for _ in range(G)],
    )  # fmt: skip
    flat = [v for group in rewards for v in group]
    scores = Scores(total=flat, per_function={"r": [None if v != v else v for v in flat]})
    scored = {"prompts": [f"p{r}" for r in rows for _ in range(G)], "completions": rollout.completions,
              "columns": {"row": [r for r in rows for _ in range(G)]}, "group_size": G}  # fmt: skip
    return Draw(rows, [{"prompt": f"p{r}"} for r in rows], rollout, scores, scored, 1.0, 0.5)


def reference(stream: list[list[list[float]]], want: int, max_extra_rounds: int) -> tuple[list[int], int]:
    """DAPO as written: keep drawing batches while fewer than ``want`` groups have reward std > 0 and the
    bound allows; the batch is the first ``want`` such groups. Returns (kept rows, draws made)."""
    kept, draws, row = [], 0, 0
    while draws == 0 or (len(kept) < want and draws <= max_extra_rounds):
        for group in stream[draws]:
            if (
                statistics.pstdev([v for v in group if v == v] or [0.0]) > 0
                and sum(v == v for v in group) >= 2
            ):
                kept.append(row)
            row += 1
        draws += 1
    return kept[:want], draws


@pytest.mark.parametrize("seed", range(12))
def test_kept_groups_match_the_reference_on_scripted_streams(seed):
    rng = torch.Generator().manual_seed(seed)
    B, rounds = 3, int(torch.randint(0, 4, (1,), generator=rng))
    # each group: all 0, all 1, or mixed, at random; sometimes NaN rewards
    stream = []
    for _ in range(rounds + 1):
        batch = []
        for _ in range(B):
            kind = int(torch.randint(0, 4, (1,), generator=rng))
            group = {0: [0.0] * G, 1: [1.0] * G, 2: [0.0, 1.0, 0.0, 0.0], 3: [float("nan"), 0.5, 0.5, 0.0]}[
                kind
            ]
            batch.append(group)
        stream.append(batch)
    draws = iter([fake_draw(B * k, stream[k], width=3 + k) for k in range(rounds + 1)])
    kept, stats = seek_signal(next(draws), lambda: next(draws), want=B, max_extra_rounds=rounds, pad_id=0)
    want_rows, want_draws = reference(stream, B, rounds)
    assert stats["dynamic/extra_rounds"] == want_draws - 1
    assert stats["dynamic/groups_drawn"] == B * want_draws and stats["dynamic/groups_kept"] == len(want_rows)
    if not want_rows:  # nothing carried signal: the first draw whole, no update
        assert kept.indices == [0, 1, 2]
        return
    assert kept.indices == want_rows
    # every piece of the kept draw belongs to its row, in order: rewards, columns, text, tokens, masks
    assert kept.scored["columns"]["row"] == [r for r in want_rows for _ in range(G)]
    assert kept.scores.total == [v for r in want_rows for v in stream[r // B][r % B]] or any(
        v != v for r in want_rows for v in stream[r // B][r % B]
    )
    assert kept.rollout.completions == [f"c{r}.{j}" for r in want_rows for j in range(G)]
    lengths = torch.tensor([r % 3 + 1 for r in want_rows for _ in range(G)])
    assert torch.equal(kept.rollout.extents, lengths)
    assert torch.equal(kept.rollout.completion_ids[kept.rollout.completion_mask.bool()],
                       torch.repeat_interleave(torch.tensor([r for r in want_rows for _ in range(G)]), lengths))  # fmt: skip
    P = kept.rollout.prompt_ids.shape[1]
    assert max(3 + r // B for r in want_rows) == P and torch.equal(
        kept.rollout.prompt_mask.sum(1), torch.tensor([3 + r // B for r in want_rows for _ in range(G)])
    )
    discarded = sum(1.0 * (1 - sum(r // B == k for r in want_rows) / B) for k in range(want_draws))
    assert stats["dynamic/discarded_rollout_seconds"] == pytest.approx(discarded)
    assert stats["time/generate"] == want_draws * 1.0 and stats["time/score"] == want_draws * 0.5


def signal_where_told(prompts, completions, signal, **kw):
    """Scripted: on rows whose ``signal`` column is True, completions alternate 0/1; elsewhere all 0."""
    return [float(i % 2) if s else 0.0 for i, s in enumerate(signal)]


def signal_rows(n=12, every=3):
    return [{"prompt": f"{i}+{i}=", "signal": i % every == 0} for i in range(n)]


def expected(tr, rows, steps, B, max_extra):
    """The rows each step should train on, read off the prompt stream: slow and separate."""
    out, pos = [], 0
    for _ in range(steps):
        kept, draws = [], 0
        while draws == 0 or (len(kept) < B and draws <= max_extra):
            idx = [tr.data.index_at(k) for k in range(pos, pos + B)]
            kept += [i for i in idx if rows[i]["signal"]]
            pos, draws = pos + B, draws + 1
        out.append((kept[:B], draws, pos))
    return out


def test_trainer_keeps_the_signal_groups_and_the_cursor_moves_past_every_draw(tiny_qwen_path, tmp_path):
    rows = signal_rows()
    cfg = make_cfg(tiny_qwen_path, tmp_path / "r", max_steps=3)
    tr = GRPOTrainer(cfg, rows, [signal_where_told], progress=False)
    want = expected(tr, rows, 3, 2, 3)
    for kept, draws, pos in want:
        m = tr.train_step()
        assert tr.last_rollout["prompts"][::G] == [rows[i]["prompt"] for i in kept]
        assert m["dynamic/extra_rounds"] == draws - 1 and m["dynamic/groups_kept"] == len(kept)
        assert m["dynamic/groups_drawn"] == 2 * draws and tr.data.served == pos
        assert m["equal_reward_groups"] == 0.0 and m["reward"] == 0.5  # only groups with signal trained on
        assert m["dynamic/reward_drawn"] == pytest.approx(0.5 * len(kept) / (2 * draws))


def test_a_step_with_no_signal_makes_no_update(tiny_qwen_path, tmp_path, caplog):
    rows = [{"prompt": f"{i}=", "signal": False} for i in range(6)]
    tr = GRPOTrainer(make_cfg(tiny_qwen_path, tmp_path / "r", max_extra_rounds=1), rows, [signal_where_told],
                     progress=False)  # fmt: skip
    lora = {n: p.detach().clone() for n, p in tr.model.named_parameters() if p.requires_grad}
    with caplog.at_level("WARNING"):
        m = tr.train_step()
    assert m["update_skipped"] == 1.0 and m["dynamic/groups_kept"] == 0 and m["dynamic/extra_rounds"] == 1
    assert tr.data.served == 4 and "no update this step" in caplog.text
    assert all(torch.equal(lora[n], p) for n, p in tr.model.named_parameters() if p.requires_grad)
    assert tr.scheduler.last_epoch == 0


def test_the_update_equals_training_on_the_kept_groups_alone(tiny_qwen_path, tmp_path):
    """Near-greedy sampling (each prompt's completions fixed by the prompt), so a run on just the kept
    rows samples the same completions: the LoRA after one step must be the same."""
    rows = signal_rows(8, every=2)
    near_greedy = dict(temperature=1e-4, seed=3)
    a = GRPOTrainer(
        make_cfg(tiny_qwen_path, tmp_path / "a", **near_greedy), rows, [signal_where_told], progress=False
    )
    a.train_step()
    kept = a.last_rollout["prompts"][::G]
    assert len(kept) == 2 and a.data.served > 2
    only = [r for r in rows if r["prompt"] in kept]
    only.sort(key=lambda r: kept.index(r["prompt"]))
    b = GRPOTrainer(make_cfg(tiny_qwen_path, tmp_path / "b", dynamic_sampling=False, **near_greedy), only,
                    [signal_where_told], progress=False)  # fmt: skip
    b.data.index_at = lambda k: k % len(only)  # the kept order
    b.train_step()
    assert b.last_rollout["completions"] == a.last_rollout["completions"]
    for (n, pa), (_, pb) in zip(a.model.named_parameters(), b.model.named_parameters(), strict=True):
        if pa.requires_grad:
            assert torch.allclose(pa, pb, atol=1e-6), n


def test_the_cursor_goes_through_a_checkpoint(tiny_qwen_path, tmp_path):
    rows = signal_rows()
    cfg = make_cfg(tiny_qwen_path, tmp_path / "r", max_steps=2, save_steps=1)
    whole = GRPOTrainer(cfg, rows, [signal_where_told], progress=False)
    whole.train()
    cut = GRPOTrainer(cfg.replace(output_dir=str(tmp_path / "c"), max_steps=1), rows, [signal_where_told],
                      progress=False)  # fmt: skip
    cut.train()
    resumed = GRPOTrainer(cfg.replace(output_dir=str(tmp_path / "c")), rows, [signal_where_told], progress=False,
                          resume_from="latest")  # fmt: skip
    assert resumed.data.served == cut.data.served > 2
    resumed.train()
    assert resumed.data.served == whole.data.served
    assert resumed.history[-1]["dynamic/groups_kept"] == whole.history[-1]["dynamic/groups_kept"]
    branch = whole.branch(1)
    assert branch.data.served == cut.data.served


def test_config_checks():
    with pytest.raises(ValueError, match="max_extra_rounds must be an integer >= 0; got -1"):
        GRPOConfig(model="m", max_extra_rounds=-1)
    with pytest.raises(ValueError, match="dynamic_sampling must be True or False"):
        GRPOConfig(model="m", dynamic_sampling="yes")


def scorable_digits(prompts, completions, scorable, **kw):
    """Digit share on the scorable rows; 0 elsewhere, whatever was written (no signal there)."""
    return [
        sum(ch.isdigit() for ch in c) / max(len(c), 1) if s else 0.0
        for c, s in zip(completions, scorable, strict=True)
    ]


@pytest.mark.slow
def test_dynamic_sampling_learns_where_plain_grpo_rarely_finds_signal(tiny_model_path, tmp_path):
    """16 prompts, 2 of them scorable (the digit share of the completion), the other 14 always 0. With
    2 prompts a step, a plain step holds a scorable prompt about one time in four; with dynamic
    sampling (up to 7 further draws: the whole epoch) every step trains on scorable prompts. After the
    same 12 steps, the scorable prompts' sampled digit share must have risen with dynamic sampling,
    and by more than the plain run's (which trained on about an eighth as many groups with signal)."""
    from grpo_lite.rollout import Sampling, generate

    rows = [{"prompt": f"{i}+{i % 7}=", "scorable": i in (3, 11)} for i in range(16)]
    scorable = [r["prompt"] for r in rows if r["scorable"]]

    def digit_share_now(tr):
        torch.manual_seed(123)
        out = generate(
            tr.model,
            tr.tokenizer,
            scorable,
            group_size=32,
            sampling=Sampling(1.0, 1.0, 0, 8),
            max_prompt_tokens=64,
        )
        return statistics.mean(sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in out.completions)

    gains, kept = {}, {}
    for dynamic in (False, True):
        cfg = make_cfg(tiny_model_path, tmp_path / str(dynamic), max_steps=12, group_size=8, max_new_tokens=8,
                       micro_batch_size=16, dynamic_sampling=dynamic, max_extra_rounds=7)  # fmt: skip
        tr = GRPOTrainer(cfg, rows, [scorable_digits], progress=False)
        before = digit_share_now(tr)
        history = tr.train()
        gains[dynamic] = digit_share_now(tr) - before
        kept[dynamic] = sum(1 - m["equal_reward_groups"] for m in history) * 2
    assert kept[True] >= 12 and kept[False] <= 8, kept  # every dynamic step trained on a scorable prompt
    assert gains[True] > 0.3 and gains[True] > gains[False] + 0.2, gains  # measured: +0.87 against +0.15


def test_the_no_signal_alarm_names_the_reward_that_ties_everything_and_dynamic_stalls():
    from grpo_lite.alarms import check_alarms

    steps = [{"step": s, "equal_reward_groups": 1.0, "rewards/flat/std": 0.0, "rewards/varied/std": 0.3}
             for s in (1, 2, 3)]  # fmt: skip
    (alarm,) = [a for a in check_alarms(steps) if a.name == "no_signal"]
    assert "flat gave every completion the same value" in alarm.message and "varied" not in alarm.message
    stalled = [{"step": s, "equal_reward_groups": 0.0, "dynamic/groups_kept": 0.0} for s in (1, 2, 3)]
    (alarm,) = [a for a in check_alarms(stalled) if a.name == "no_signal"]
    assert "dynamic sampling found no group with signal in 3 steps" in alarm.message
    assert not [a for a in check_alarms(stalled[:2]) if a.name == "no_signal"]
