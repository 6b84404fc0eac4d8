"""Backend choice: every combination of "CUDA present" x "unsloth installed" x requested backend."""

import pytest
import torch
from conftest import digit_share
from test_engine import make_cfg

from grpo_lite.policy import backends
from grpo_lite.trainer import GRPOTrainer

# (requested, cuda, unsloth installed, expected backend or error text)
CASES = [
    ("auto", True, True, "unsloth"),  # the one case where auto picks Unsloth
    ("auto", True, False, "transformers"),
    ("auto", False, True, "transformers"),  # Unsloth installed but no GPU: quietly transformers
    ("auto", False, False, "transformers"),
    ("transformers", True, True, "transformers"),
    ("transformers", False, False, "transformers"),
    ("unsloth", True, True, "unsloth"),
    ("unsloth", False, True, "needs a CUDA GPU; Unsloth runs only on NVIDIA GPUs"),
    ("unsloth", True, False, "needs the unsloth package; Install it with `pip install grpo-lite[unsloth]`"),
    ("unsloth", False, False, "needs a CUDA GPU and the unsloth package"),
]


@pytest.mark.parametrize(("requested", "cuda", "installed", "expected"), CASES)
def test_backend_selection(monkeypatch, requested, cuda, installed, expected):
    monkeypatch.setattr(backends, "cuda_available", lambda: cuda)
    monkeypatch.setattr(backends, "unsloth_installed", lambda: installed)
    if expected in ("unsloth", "transformers"):
        assert backends.resolve_backend(requested) == expected
    else:
        with pytest.raises(RuntimeError, match="GRPOConfig.backend='unsloth'") as err:
            backends.resolve_backend(requested)
        assert expected in str(err.value)


def test_unsloth_error_comes_before_any_loading(tiny_model_path, sum_rows, tmp_path, monkeypatch):
    monkeypatch.setattr(backends, "cuda_available", lambda: False)
    loaded = []
    monkeypatch.setattr("grpo_lite.assembly.load_policy", lambda cfg: loaded.append(cfg))
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        GRPOTrainer(make_cfg(tiny_model_path, tmp_path / "r", backend="unsloth"), sum_rows, [digit_share])
    assert loaded == [] and not (tmp_path / "r").exists()


def test_auto_trains_with_transformers_and_records_it(tiny_model_path, sum_rows, tmp_path):
    cfg = make_cfg(tiny_model_path, tmp_path / "r", backend="auto", max_steps=1)
    tr = GRPOTrainer(cfg, sum_rows, [digit_share], progress=False)
    history = tr.train()
    assert history[0]["backend"] == "transformers"
    assert "transformers backend" in (tmp_path / "r" / "adapter" / "README.md").read_text()


def test_importing_grpo_lite_does_not_import_unsloth():
    import subprocess
    import sys

    code = "import sys, grpo_lite, grpo_lite.apps.cli, rewards; print('unsloth' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "False"]  # nothing heavy at import: Unsloth could still be imported first


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_unsloth_trains_a_few_steps_on_gpu(tmp_path):
    pytest.importorskip("unsloth")
    from grpo_lite.policy.tiny import build_tiny_model

    path = build_tiny_model(
        tmp_path / "m",
        hidden_size=256,
        num_layers=2,
        num_heads=4,
        intermediate_size=512,
        initializer_range=0.3,
    )
    rows = [{"prompt": f"{a}+{b}="} for a in range(10) for b in range(10)]
    cfg = make_cfg(path, tmp_path / "r", backend="unsloth", max_steps=3)
    history = GRPOTrainer(cfg, rows, [digit_share], progress=False).train()
    assert [m["backend"] for m in history] == ["unsloth"] * 3
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in history)
