"""kill -9 at any moment loses nothing and leaves nothing half-done (issue 42). A run saving every step
with keep_checkpoints=3 is killed with SIGKILL at exact points — a rename (every change goes through
one), a deletion half done, a metrics line half written, a checkpoint half saved, a branch being made —
and resumed each time; then every visible checkpoint is complete and loads, at most three are kept and
nothing else is under checkpoints/, the metrics hold every step once, and a last resume trains on.
The same for an export killed part-way."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from grpo_lite.run import RunDir, read_metrics
from grpo_lite.run.files import is_complete

STEPS = 12
CHILD = r"""
import os, signal, sys, json
from pathlib import Path
model, run, kind, at, steps = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
import grpo_lite.run.atomic as atomic, grpo_lite.run.rundir as rundir, grpo_lite.callbacks as callbacks
calls = [0]
def hit():
    calls[0] += 1
    return calls[0] == at
def die():
    os.kill(os.getpid(), signal.SIGKILL)
if kind == "rename":  # the k-th rename anywhere in the run folder's writing
    real_replace = os.replace
    def replace(a, b):
        if hit(): die()
        return real_replace(a, b)
    atomic.os.replace = replace
elif kind == "delete":  # the k-th deletion, killed with half of it done
    real_delete = atomic.delete
    def delete(path):
        if hit():
            files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else []
            for p in files[: len(files) // 2]:
                p.unlink()
            die()
        return real_delete(path)
    atomic.delete = delete
elif kind == "append":  # the k-th metrics line, half written
    real = callbacks.JsonlLogger.on_step_end
    def on_step_end(self, trainer, metrics):
        if hit():
            with self.path.open("a") as f:
                f.write(json.dumps(callbacks._json_safe(metrics))[:40])
            die()
        return real(self, trainer, metrics)
    callbacks.JsonlLogger.on_step_end = on_step_end
elif kind == "save":  # the k-th checkpoint, killed after its adapter and before the rest
    real_save = rundir.torch.save
    def save(obj, path):
        if hit(): die()
        return real_save(obj, path)
    rundir.torch.save = save
from grpo_lite import GRPOConfig
from grpo_lite.trainer import GRPOTrainer

def digits(prompts, completions, **kw):
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]

rows = [{"prompt": f"{a}+{b}="} for a in range(5) for b in range(5)]
cfg = GRPOConfig(model=model, output_dir=str(run), max_new_tokens=4, group_size=4, prompts_per_step=2,
                 micro_batch_size=8, lora_rank=4, max_steps=steps, save_steps=1, keep_checkpoints=3,
                 rollout_weights="adapter", learning_rate=1e-2)
latest = rundir.RunDir(run).latest()
if kind == "branch":  # a branch being made from the latest checkpoint, killed at its k-th rename
    parent = GRPOTrainer(cfg, rows, [digits], resume_from="latest", progress=False)
    real_replace = os.replace
    def replace(a, b):
        if hit(): die()
        return real_replace(a, b)
    atomic.os.replace = replace
    parent.branch("latest")
    atomic.os.replace = real_replace
    sys.exit(0)
trainer = GRPOTrainer(cfg, rows, [digits], resume_from="latest" if latest else None, overwrite=latest is None,
                      progress=False)
trainer.train()
"""
# (what is injected, at which call) — spread over saving, pruning, the metrics log, resuming, branching
SCHEDULE = [("rename", 4), ("append", 2), ("delete", 2), ("rename", 9), ("save", 3), ("branch", 2),
            ("rename", 14), ("delete", 1), ("append", 1), ("save", 1), ("rename", 2), ("branch", 1)]  # fmt: skip


def run_child(script, model, run, kind, at, steps=STEPS):
    env = dict(os.environ, PYTHONWARNINGS="ignore", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, str(script), str(model), str(run), kind, str(at), str(steps)],
                          capture_output=True, text=True, env=env, timeout=600)  # fmt: skip


def visible_checkpoints_are_complete(run: Path) -> list[int]:
    steps = []
    for path in (run / "checkpoints").glob("step-*"):
        assert is_complete(path), (
            f"{path.name} is under its final name but not complete: {sorted(os.listdir(path))}"
        )
        steps.append(int(path.name.removeprefix("step-")))
    return sorted(steps)


@pytest.mark.slow
def test_ten_kills_and_resumes_lose_nothing(tiny_model_path, tmp_path):
    script, run = tmp_path / "child.py", tmp_path / "run"
    script.write_text(CHILD)
    killed = 0
    for kind, at in SCHEDULE:
        done = run_child(script, tiny_model_path, run, kind, at)
        killed += done.returncode == -9
        assert done.returncode in (0, -9), done.stderr[-3000:]
        visible_checkpoints_are_complete(run)
        for branch in (run / "branches").glob("step-*") if (run / "branches").exists() else []:
            assert (branch / "lineage.json").exists() and (branch / "config.json").exists(), branch
        read_metrics(run / "metrics.jsonl")  # readable whatever the kill left (a torn last line skipped)
    assert killed >= 10, f"only {killed} of {len(SCHEDULE)} runs were killed: the schedule missed"
    final = run_child(script, tiny_model_path, run, "none", 0)
    assert final.returncode == 0, final.stderr[-3000:]
    steps = visible_checkpoints_are_complete(run)
    assert steps == [STEPS - 2, STEPS - 1, STEPS], steps
    assert sorted(os.listdir(run / "checkpoints")) == [f"step-{s}" for s in steps]  # nothing hidden left
    assert not [n for n in os.listdir(run) if n.startswith(".")], os.listdir(run)
    logged = [m["step"] for m in read_metrics(run / "metrics.jsonl")]
    assert logged == list(range(1, STEPS + 1)), logged
    for s in steps:  # each loads
        state = torch.load(run / "checkpoints" / f"step-{s}" / "trainer_state.pt", weights_only=False)
        assert (
            state["optimizer"]["state"]
            and json.loads((run / "checkpoints" / f"step-{s}" / "state.json").read_text())["step"] == s
        )
    more = run_child(script, tiny_model_path, run, "none", 0, steps=STEPS + 1)  # and a last resume trains on
    assert more.returncode == 0, more.stderr[-3000:]
    assert [m["step"] for m in read_metrics(run / "metrics.jsonl")] == list(range(1, STEPS + 2))
    assert RunDir(run).complete_steps() == [STEPS - 1, STEPS, STEPS + 1]


EXPORT = r"""
import os, signal, sys
from pathlib import Path
from grpo_lite import export as ex
source, out, kill, merge = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "kill", sys.argv[4] == "merge"
real = ex.model_card
def model_card(*a, **k):  # the weights are written by now; the card and the rename are not
    if kill:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*a, **k)
ex.model_card = model_card
ex.export(source, out, merge=merge)
"""


@pytest.mark.slow
@pytest.mark.parametrize("merge", ["adapter", "merge"])
def test_an_export_killed_part_way_leaves_nothing_and_the_next_one_works(tiny_model_path, tmp_path, merge):
    from grpo_lite import GRPOConfig
    from grpo_lite.trainer import GRPOTrainer

    cfg = GRPOConfig(model=str(tiny_model_path), output_dir=str(tmp_path / "run"), max_new_tokens=4, group_size=4,
                     prompts_per_step=2, micro_batch_size=8, lora_rank=4, max_steps=1, save_steps=1,
                     rollout_weights="adapter")  # fmt: skip
    GRPOTrainer(cfg, [{"prompt": "1+1="}], [lambda prompts, completions, **kw: [0.0] * len(completions)],
                progress=False).train()  # fmt: skip
    source, out, script = (
        tmp_path / "run" / "checkpoints" / "step-1",
        tmp_path / "exported",
        tmp_path / "export.py",
    )
    script.write_text(EXPORT)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    killed = subprocess.run([sys.executable, str(script), str(source), str(out), "kill", merge], capture_output=True,
                            text=True, env=env, timeout=600)  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not out.exists() and [p.name for p in tmp_path.glob(".tmp-exported-*")]  # only a hidden leftover
    again = subprocess.run([sys.executable, str(script), str(source), str(out), "go", merge], capture_output=True,
                           text=True, env=env, timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / ("model.safetensors" if merge == "merge" else "adapter_model.safetensors")).exists()
    assert not list(tmp_path.glob(".tmp-exported-*"))  # the leftover went with the next export
