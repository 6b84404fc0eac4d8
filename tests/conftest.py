"""Shared fixtures: a tiny random-init model and tokenizer built offline, and a toy task."""

import os
import tempfile
import warnings

import pytest

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
    from grpo_lite.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "llama", initializer_range=0.3)


@pytest.fixture(scope="session")
def tiny_qwen_path(tmp_path_factory):
    from grpo_lite.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "qwen2", arch="qwen2", initializer_range=0.3)


@pytest.fixture
def sum_rows():
    """Prompts like '3+4=' with the answer in a column."""
    return [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(10) for b in range(10)]


def digit_share(prompts, completions, **kw):
    """A dense toy reward: the share of digits in the completion."""
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]
