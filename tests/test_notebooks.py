"""Every notebook executes top to bottom in offline mode (GRPO_LITE_OFFLINE=1), as CI runs them."""

import base64
import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.fixture(scope="module")
def offline_env(smollm2_cache, demo_cache, tmp_path_factory):
    """Offline mode, with a cache holding the session's SmolLM2 and tiny demo model (conftest)."""
    from grpo_lite.apps.arith_model import MODEL_VERSION
    from grpo_lite.policy.offline import SMOLLM2_VERSION

    cache = tmp_path_factory.mktemp("notebook-cache")
    (cache / SMOLLM2_VERSION).symlink_to(smollm2_cache / SMOLLM2_VERSION)
    (cache / MODEL_VERSION).symlink_to(demo_cache / MODEL_VERSION)
    old = {k: os.environ.get(k) for k in ("GRPO_LITE_OFFLINE", "GRPO_LITE_CACHE", "HF_HUB_OFFLINE")}
    os.environ.update(GRPO_LITE_OFFLINE="1", GRPO_LITE_CACHE=str(cache), HF_HUB_OFFLINE="1")
    yield
    for k, v in old.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def run_notebook(name, workdir):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    ).execute()
    return nb


def outputs(nb, kind):
    return [
        o
        for cell in nb.cells
        if cell.cell_type == "code"
        for o in cell.get("outputs", [])
        if kind in o.get("data", {})
    ]


def text_of(nb):
    return "".join(
        o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
    )


def test_quickstart(offline_env, tmp_path, monkeypatch):
    """Offline, the quickstart trains SmolLM2-135M-Instruct with the dashboard (2 steps here, to fit
    CI's time; a user's run: 30), then prints the base vs trained held-out accuracy. That this demo
    learns is asked of its command at its README length (test_demo: `demo_run`'s same rows, settings
    and rewards, 40 steps, 10 points or more)."""
    monkeypatch.setenv("GRPO_LITE_DEMO_STEPS", "2")
    nb = run_notebook("01_quickstart.ipynb", tmp_path)
    pngs = outputs(nb, "image/png")
    assert pngs, "the dashboard's reward plot was not rendered"
    assert len(base64.b64decode(pngs[-1]["data"]["image/png"])) > 10_000  # a real figure, not a blank
    assert "offline mode (smollm2-135m-instruct, CPU)" in text_of(nb)
    found = re.search(
        r"held-out greedy accuracy: base ([\d.]+)% -> trained ([\d.]+)% \(48 problems\)", text_of(nb)
    )
    assert found and 0 <= float(found[1]) <= 30, text_of(nb)[-2000:]  # the base does this task badly (23%)
    assert "max_steps=2," in text_of(nb)  # the config printed: the steps the environment asked for
    assert "estimated peak" in text_of(nb) and "fits on a 15 GB GPU" in text_of(nb)  # the memory plan
    assert (tmp_path / "runs" / "quickstart" / "adapter" / "adapter_model.safetensors").exists()


def test_reward_playground(offline_env, tmp_path):
    text = text_of(run_notebook("02_reward_playground.ipynb", tmp_path))
    assert "accuracy=1.0 strict=1.0" in text  # the honest completion
    assert "[1.0, 0.0, 0.5]" in text  # code_unit_tests: exiting early earns nothing; `return 5` passes 1 of 2
    assert "short=" in text


def test_export(offline_env, tmp_path):
    text = text_of(run_notebook("03_export.ipynb", tmp_path))
    assert "adapter_model.safetensors" in text and "library_name: peft" in text
    assert "skipped the push" in text or "offline mode: skipped the push" in text
    # offline the tiny model's character tokenizer cannot become a GGUF: the cell says why, nothing is written
    assert "no GGUF: GGUF export: only byte-level BPE tokenizers" in text
    assert not (tmp_path / "runs" / "export-demo-gguf").exists()


def test_tools(offline_env, tmp_path, monkeypatch):
    """Offline, 04_tools shows the sandbox refusing a model's probes, then trains SmolLM2 with the python
    tool and the dashboard (3 steps here, for CI's time; a user's run: 6); sampled held-out accuracy
    rises by 20 points or more (RESULTS.md's 20-step runs: the training reward is at 0.8 or more from
    step 2-4 and held-out accuracy rises about 65 points; a sampled measure of 48 answers varies by
    under 10 points)."""
    monkeypatch.setenv("GRPO_LITE_TOOL_STEPS", "3")
    nb = run_notebook("04_tools.ipynb", tmp_path)
    text = text_of(nb)
    assert "'print(514 * 902)'" in text and "-> ok: '463628'" in text
    assert "-> ok: 'None'" in text  # the Hub token is not in the sandbox's environment
    assert "-> FAILED: \"OSError: [Errno 30] Read-only file system: '/etc/hostname'\"" in text
    assert "-> FAILED: 'Error: timed out after 2 s'" in text
    found = re.search(r"base: ([\d.]+)% right, ([\d.]+)% call the tool \(48 sampled answers\)\n"
                      r" *trained: ([\d.]+)% right, ([\d.]+)% call the tool", text)  # fmt: skip
    assert found, text[-3000:]
    assert float(found[3]) - float(found[1]) >= 20, found[0]
    by_step = re.search(r"tool calls per completion by step: \[([^\]]*)\]", text)
    assert by_step and len(by_step[1].split(",")) == 3, text[-1000:]  # the steps the environment asked for
    assert outputs(nb, "image/png"), "the dashboard's plot was not rendered"
    assert (tmp_path / "runs" / "tools" / "adapter" / "adapter_model.safetensors").exists()


def test_tasks(offline_env, tmp_path, monkeypatch):
    """05_tasks, as CI runs it: the JSON task, 1 step with the dashboard, base and trained side by side,
    and the reward editor testing an edit of the JSON reward's key weights on the last completions. The
    task is built so that the base is neither hopeless nor done: 20-60% of the 60 held-out sentences."""
    monkeypatch.setenv("GRPO_LITE_TASK", "json")
    monkeypatch.setenv("GRPO_LITE_TASK_STEPS", "1")
    monkeypatch.setenv("GRPO_LITE_SCAN_PROMPTS", "4")
    nb = run_notebook("05_tasks.ipynb", tmp_path)
    text = text_of(nb)
    assert re.search(
        r"scan of 4 prompts x 8 completions.*\nverdict: (too hard|learnable|too easy)", text, re.S
    )
    html = "".join(o["data"]["text/html"] for o in outputs(nb, "text/html"))
    assert "json: a sentence with facts -> a JSON object" in text and "--- base model:\n{" in text
    found = re.search(r"held-out greedy accuracy: base ([\d.]+)% -> trained ([\d.]+)% \(60 problems\)", text)
    assert found and 20 <= float(found[1]) <= 60, text[-3000:]
    assert (
        'key_weights = {"name": 1.0, "age": 1.0, "city": 1.0}' in text
    )  # the reward, as the editor shows it
    assert "scored 32 completions" in html and "edited" in html  # the edit tested next to the current scores
    assert "base (adapters off)" in html  # the side-by-side panel
    assert outputs(nb, "image/png"), "the dashboard's plot was not rendered"
    assert (tmp_path / "runs" / "tasks-json" / "adapter" / "adapter_model.safetensors").exists()
