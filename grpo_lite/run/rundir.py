"""``RunDir``: one run's folder and everything about its layout, in one place.

```
RUN/
  config.json              the GRPOConfig at the start (later changes are in metrics.jsonl)
  metrics.jsonl            one JSON object per step, append-only
  checkpoints/step-N/      adapter + tokenizer, trainer_state.pt, state.json, metrics.jsonl, rewards/NAME.py
  adapter/ summary.json reward_curve.png
  lineage.json             only in a branch: the parent run, its step, the checkpoint
  best.json                with held-out evaluation: the best checkpoint's step, measure, score
  branches/step-N-K/       branches started from this run's step N (each a RunDir of its own)
```

Every change follows ``atomic.py``'s rule (what appears under a final name is complete; what is
removed leaves its final name first), so a kill -9 at any moment leaves complete checkpoints, a
metrics log whose every line up to a possibly torn last one is whole, and hidden leftovers that the
next start or resume clears (``open``). ``is_complete`` is the one test of "complete", ``latest`` the
one meaning of "latest".
"""

from __future__ import annotations

import json
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from grpo_lite.run.atomic import (
    clear_leftovers,
    copy_file,
    install_folder,
    new_temp_folder,
    remove,
    sync_folder,
    write_text,
)
from grpo_lite.run.files import is_complete, read_metrics, read_state

RUN_FILES = ("config.json", "metrics.jsonl", "checkpoints", "adapter", "summary.json", "reward_curve.png",
             "warm_start.json", "held_out.jsonl", "best.json")  # fmt: skip
LINEAGE = "lineage.json"
BEST = "best.json"


class RunDir:
    """The folder of one run (``cfg.output_dir``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step-{step}"

    # ---- reading ---------------------------------------------------------------------------------
    def _numbered(self) -> list[tuple[int, Path]]:
        """Every ``checkpoints/step-N`` folder, newest first (complete or not)."""
        if not self.checkpoints.is_dir():
            return []
        found = [(p.name.removeprefix("step-"), p) for p in self.checkpoints.glob("step-*")]
        return sorted(((int(n), p) for n, p in found if n.isdigit()), reverse=True)

    def complete_steps(self) -> list[int]:
        """The steps of the complete checkpoints, oldest first."""
        return sorted(step for step, path in self._numbered() if is_complete(path))

    def latest(self) -> Path | None:
        """The newest complete checkpoint; incomplete ones are skipped with a warning."""
        for _, path in self._numbered():
            if is_complete(path):
                return path
            warnings.warn(
                f"ignoring incomplete checkpoint {path} (missing or unreadable files)", stacklevel=2
            )
        return None

    def best(self) -> dict[str, Any] | None:
        """``best.json`` (``{"step", "measure", "score"}``) when it names a complete checkpoint; else None."""
        path = self.path / BEST
        if not path.exists():
            return None
        record = dict(json.loads(path.read_text()))
        return record if is_complete(self.checkpoint(int(record["step"]))) else None

    def write_best(self, record: dict[str, Any] | None) -> None:
        """Name the best checkpoint (written whole); None: there is none."""
        if record is None:
            remove(self.path / BEST)
        else:
            write_text(self.path / BEST, json.dumps(record, indent=2) + "\n")

    def find_checkpoint(self, step: int | str | Path, *, purpose: str = "branch from") -> Path:
        """The complete checkpoint for ``step``: a step number, ``"latest"``, ``"best"`` (by held-out
        score: ``best.json``), or a checkpoint folder."""
        if isinstance(step, Path) or (
            isinstance(step, str) and step not in ("latest", "best") and not step.isdigit()
        ):
            path: Path | None = Path(step)
        elif step == "latest":
            path = self.latest()
        elif step == "best":
            best = self.best()
            if best is None:
                raise FileNotFoundError(
                    f"cannot {purpose} the best checkpoint: {self.path} has none (no held-out evaluation, "
                    f"eval_every=0, or its checkpoint is gone); complete checkpoints: steps {self.complete_steps() or 'none'}"
                )
            path = self.checkpoint(int(best["step"]))
        else:
            path = self.checkpoint(int(step))
        if path is None or not is_complete(path):
            raise FileNotFoundError(
                f"cannot {purpose} step {step!s}: no complete checkpoint {path or ''} in {self.checkpoints}; "
                f"complete checkpoints: steps {self.complete_steps() or 'none'}"
            )
        return path

    def resume_point(self, resume_from: str | Path | None) -> Path | None:
        """The checkpoint to resume: a folder, ``"latest"`` (the newest complete one), or None."""
        if resume_from is None:
            return None
        resume = self.latest() if str(resume_from) == "latest" else Path(resume_from)
        if resume is None:
            raise FileNotFoundError(f"no complete checkpoint to resume in {self.checkpoints}")
        return resume

    def lineage(self) -> dict[str, Any] | None:
        path = self.path / LINEAGE
        return json.loads(path.read_text()) if path.exists() else None

    def new_branch_dir(self, step: int) -> Path:
        """``RUN/branches/step-N-K`` with the first K not taken."""
        k = 1
        while (self.path / "branches" / f"step-{step}-{k}").exists():
            k += 1
        return self.path / "branches" / f"step-{step}-{k}"

    def is_branch_start(self, checkpoint: Path) -> bool:
        """Resuming ``checkpoint`` here starts a branch: the checkpoint is another run's."""
        return Path(checkpoint).resolve().parent.parent != self.path.resolve()

    # ---- starting ----------------------------------------------------------------------------------
    def open(self, cfg: Any, resume: Path | None, *, overwrite: bool) -> dict[str, Any] | None:
        """Ready the folder for training; returns its lineage (None for a run that is not a branch).
        No checkpoint: a new run. Another run's checkpoint: a branch of it. Its own: nothing to do but
        clear what an earlier kill left (``clear``)."""
        self.clear()
        if resume is None:
            self.start_new(cfg, overwrite=overwrite)
            return None
        if self.is_branch_start(resume):
            return self.start_branch(resume, cfg)
        return self.lineage()

    def start_new(self, cfg: Any, *, overwrite: bool) -> None:
        """Create the folder; a previous run there is refused unless ``overwrite``, then removed."""
        previous = [name for name in RUN_FILES if (self.path / name).exists()]
        if previous and not overwrite:
            raise FileExistsError(
                f"{self.path} holds a previous run ({', '.join(previous)}); pass overwrite=True "
                "(--overwrite) to replace it, or resume it"
            )
        for name in previous:
            remove(self.path / name)
        self.path.mkdir(parents=True, exist_ok=True)
        write_text(self.path / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")

    def start_branch(self, checkpoint: Path, cfg: Any) -> dict[str, Any]:
        """Make this folder (absent or empty) a branch of the run that wrote ``checkpoint``: its config,
        ``lineage.json`` and the parent's metrics up to the checkpoint's step. Returns the lineage."""
        checkpoint = Path(checkpoint)
        if self.path.exists() and any(self.path.iterdir()):
            raise FileExistsError(
                f"cannot branch into {self.path}: it is not empty (holds "
                f"{sorted(p.name for p in self.path.iterdir())[:5]}); give an absent or empty output directory"
            )
        parent = RunDir(checkpoint.resolve().parent.parent)
        lineage: dict[str, Any] = {
            "parent_run_dir": str(parent.path),
            "parent_step": int(read_state(checkpoint)["step"]),
            "checkpoint": str(checkpoint.resolve()),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if parent.lineage():
            lineage["parent_lineage"] = parent.lineage()
        # made whole in a hidden folder and renamed into place (an empty folder given: filled, lineage last)
        fresh = not self.path.exists()
        folder = new_temp_folder(self.path.parent, self.path.name) if fresh else self.path
        if (checkpoint / "metrics.jsonl").exists():
            copy_file(checkpoint / "metrics.jsonl", folder / "metrics.jsonl")
        write_text(folder / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
        write_text(folder / LINEAGE, json.dumps(lineage, indent=2) + "\n")
        if fresh:
            install_folder(folder, self.path)
        return lineage

    def truncate_metrics(self, step: int) -> list[dict[str, Any]]:
        """Keep the logged steps up to ``step``: later ones belong to an interrupted attempt."""
        kept = [m for m in read_metrics(self.metrics_path) if m["step"] <= step]
        write_text(self.metrics_path, "".join(json.dumps(m) + "\n" for m in kept))  # whole, or the old log
        return kept

    def clear(self) -> list[str]:
        """What a kill left, cleared (``atomic.clear_leftovers``) in the run folder and ``checkpoints/``,
        and every ``checkpoints/step-N`` that is not complete removed (only an earlier version or damage
        from outside leaves one). Returns what was done."""
        done = (
            clear_leftovers(self.path)
            + clear_leftovers(self.checkpoints)
            + clear_leftovers(self.path / "branches")
        )
        for _, path in self._numbered():
            if not is_complete(path):
                remove(path)
                done.append(f"removed incomplete {path.name}")
        if done:
            warnings.warn(
                f"{self.path}: cleared what an interrupted run left: {'; '.join(done)}", stacklevel=2
            )
        return done

    # ---- checkpoints -------------------------------------------------------------------------------
    def write_checkpoint(
        self,
        step: int,
        *,
        model: Any,
        tokenizer: Any,
        trainer_state: dict[str, Any],
        state: dict[str, Any],
        keep: int = 0,
    ) -> Path:
        """Write ``checkpoints/step-{step}`` atomically; returns its path. Each source in
        ``state["reward_sources"]`` is also written to ``rewards/NAME.py``. Then, with ``keep`` > 0,
        older checkpoints are pruned (:meth:`prune`) — only once this one is complete."""
        final = self.checkpoint(step)
        tmp = new_temp_folder(self.checkpoints, final.name)
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            torch.save(trainer_state, tmp / "trainer_state.pt")
            (tmp / "rewards").mkdir()
            for name, src in state.get("reward_sources", {}).items():
                (tmp / "rewards" / f"{name}.py").write_text(src)
            if self.metrics_path.exists():
                copy_file(self.metrics_path, tmp / "metrics.jsonl")
            (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2) + "\n")
            sync_folder(tmp)
            install_folder(tmp, final)  # the same step saved again replaces it (e.g. stop after a save)
        except BaseException:
            remove(tmp)
            raise
        if keep:
            self.prune(keep)
        return final

    def prune(self, keep: int) -> list[Path]:
        """Delete complete checkpoints beyond the newest ``keep``; returns what was deleted. Never
        deleted: the newest complete one, the best one (``best.json``) and one written on interrupt
        (``state.json`` says ``"interrupted": true``). Hidden temporaries (a save in progress) are never looked at here."""
        complete = [path for _, path in self._numbered() if is_complete(path)]
        best = self.best()
        deleted = []
        for path in complete[max(keep, 1) :]:
            if read_state(path).get("interrupted") or (best and path == self.checkpoint(int(best["step"]))):
                continue
            remove(path)  # leaves its final name first: a kill mid-deletion leaves no half of it
            deleted.append(path)
        return deleted
