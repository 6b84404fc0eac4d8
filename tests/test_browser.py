"""A real browser: JupyterLab on localhost, headless Debian Chromium driven by Playwright.

Opens the quickstart in offline mode, runs it, checks the dashboard renders with a non-empty reward
plot, moves the temperature slider while training runs and sees the new value reach the metrics,
edits a reward function and applies it mid-run, then stops the run from the dashboard (a
checkpoint is written). Screenshots go to test-artifacts/.
CI installs chromium (.ci/run); elsewhere the test is skipped when /usr/bin/chromium is missing.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
HALF_REWARD = "def exact_answer(prompts, completions, answer, **kw):\n    return [0.5 for _ in completions]\n"
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("CI must install Debian's chromium for the browser test (see .ci/run)")
    pytest.skip("needs /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """JupyterLab serving a copy of the quickstart, long enough (400 steps) to steer it mid-run."""
    from grpo_lite.demo import demo_model

    env = {
        **os.environ,
        "GRPO_LITE_OFFLINE": "1",
        "GRPO_LITE_CACHE": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
    }
    os.environ["GRPO_LITE_CACHE"] = env["GRPO_LITE_CACHE"]
    demo_model()  # build the tiny model here, so the notebook's first cell does not time out
    nb = json.loads((ROOT / "notebooks" / "01_quickstart.ipynb").read_text())
    for cell in nb["cells"]:
        cell["source"] = "".join(cell["source"]).replace("steps=30", "steps=400")
    (tmp_path / "01_quickstart.ipynb").write_text(json.dumps(nb))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         "--IdentityProvider.token=", "--ServerApp.password=", "--allow-root", "--ServerApp.disable_check_xsrf=True",
         f"--ServerApp.root_dir={tmp_path}", "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return server.poll() is not None and pytest.fail("JupyterLab exited at start")

    wait_for(listening, 90, "JupyterLab to listen")
    yield f"http://127.0.0.1:{port}", tmp_path
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


def metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def wait_for(predicate, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def test_dashboard_in_jupyterlab(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    url, root = lab
    run_dir = root / "runs" / "quickstart"
    ARTIFACTS.mkdir(exist_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=flags, headless=True)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        try:
            drive_quickstart(page, url, run_dir)
        finally:
            page.screenshot(path=str(ARTIFACTS / "dashboard_last.png"), full_page=True)
            browser.close()


def drive_quickstart(page, url: str, run_dir: Path) -> None:
    """Run the quickstart, steer it from the dashboard, stop it; assert what a user would see."""
    page.goto(f"{url}/lab/tree/01_quickstart.ipynb", timeout=90_000)
    page.wait_for_selector(".jp-Notebook", timeout=90_000)
    wait_for(lambda: "(ipykernel) | Idle" in page.inner_text("body"), 120, "an idle kernel")
    # A cold JupyterLab can swallow the first menu click: retry until a cell is running or has run.
    started = lambda: page.locator(".jp-InputPrompt", has_text="[*]").count() or metrics(run_dir)  # noqa: E731
    for _ in range(3):
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_text("Run All Cells", exact=True).click()
        try:
            wait_for(started, 30, "the cells to start running")
            break
        except AssertionError:
            page.keyboard.press("Escape")

    # The dashboard renders, and training runs: steps appear in the metrics log.
    slider = page.locator(".widget-slider", has_text="temperature")
    slider.wait_for(timeout=180_000)
    wait_for(lambda: len(metrics(run_dir)) >= 3, 180, "training steps")
    plot = page.locator(".jp-OutputArea-output img").first
    plot.wait_for(timeout=60_000)
    wait_for(lambda: plot.evaluate("img => img.naturalWidth") > 300, 60, "a non-empty reward plot")
    page.screenshot(path=str(ARTIFACTS / "dashboard_training.png"), full_page=True)

    # Move the temperature slider during training (type into its readout, as a user can).
    readout = slider.locator(".widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("0.55")
    page.keyboard.press("Enter")
    changed = wait_for(lambda: [m for m in metrics(run_dir) if m.get("changes", {}).get("temperature") == 0.55],
                       90, "the new temperature in the metrics")  # fmt: skip
    later = [m for m in metrics(run_dir) if m["step"] >= changed[0]["step"]]
    assert all(m["temperature"] == 0.55 for m in later)
    assert all(m["temperature"] == 1.0 for m in metrics(run_dir) if m["step"] < changed[0]["step"])

    # Edit a reward function mid-run: the editor's Apply swaps it in at the next step.
    page.get_by_role("tab", name="reward editor").click()
    page.locator(".widget-textarea textarea").fill(HALF_REWARD)
    page.get_by_role("button", name="Apply", exact=True).click()
    swapped = wait_for(lambda: [m for m in metrics(run_dir) if "reward:exact_answer" in m.get("changes", {})],
                       90, "the edited reward in the metrics")  # fmt: skip
    assert swapped[0]["changes"]["reward:exact_answer"] == HALF_REWARD
    wait_for(lambda: metrics(run_dir)[-1]["step"] > swapped[0]["step"], 60, "a step after the swap")
    assert all(
        m["rewards/exact_answer/mean"] == 0.5 for m in metrics(run_dir) if m["step"] >= swapped[0]["step"]
    )
    page.screenshot(path=str(ARTIFACTS / "dashboard_reward_edited.png"), full_page=True)

    # Stop from the dashboard: the run ends with a checkpoint.
    page.get_by_role("button", name="stop (checkpoint)").click()
    wait_for(lambda: (run_dir / "adapter" / "adapter_model.safetensors").exists(), 120, "the run to stop")
    last = metrics(run_dir)[-1]["step"]
    assert last < 400 and (run_dir / "checkpoints" / f"step-{last}" / "adapter_model.safetensors").exists()
    page.get_by_text("held-out greedy accuracy").wait_for(timeout=120_000)
    page.screenshot(path=str(ARTIFACTS / "dashboard_stopped.png"), full_page=True)
