"""A real browser: JupyterLab on localhost, headless Debian Chromium driven by Playwright.

Opens the quickstart in offline mode, runs it, checks the dashboard renders with a non-empty reward
plot, moves the temperature slider while training runs and sees the new value reach the metrics,
then stops the run from the dashboard (a checkpoint is written). Screenshots go to test-artifacts/.
CI installs chromium (.ci/run); elsewhere the test is skipped when /usr/bin/chromium is missing.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
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
        page.goto(f"{url}/lab/tree/01_quickstart.ipynb", timeout=90_000)
        page.wait_for_selector(".jp-Notebook", timeout=90_000)
        wait_for(lambda: page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count()
                 or "Idle" in page.inner_text("body"), 90, "an idle kernel")  # fmt: skip
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_text("Run All Cells", exact=True).click()

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
        time.sleep(3)
        page.screenshot(path=str(ARTIFACTS / "after_typing.png"), full_page=True)
        print(
            "DEBUG",
            [(m["step"], m["temperature"]) for m in metrics(run_dir)][-5:],
            readout.inner_text(),
            slider.inner_text(),
        )
        changed = wait_for(lambda: [m for m in metrics(run_dir) if m.get("changes", {}).get("temperature") == 0.55],
                           90, "the new temperature in the metrics")  # fmt: skip
        later = [m for m in metrics(run_dir) if m["step"] >= changed[0]["step"]]
        assert all(m["temperature"] == 0.55 for m in later)
        assert all(m["temperature"] == 1.0 for m in metrics(run_dir) if m["step"] < changed[0]["step"])

        # Stop from the dashboard: the run ends with a checkpoint.
        page.get_by_role("button", name="stop (checkpoint)").click()
        wait_for(lambda: (run_dir / "adapter" / "adapter_model.safetensors").exists(), 120, "the run to stop")
        last = metrics(run_dir)[-1]["step"]
        assert (
            last < 400 and (run_dir / "checkpoints" / f"step-{last}" / "adapter_model.safetensors").exists()
        )
        page.get_by_text("held-out greedy accuracy").wait_for(timeout=120_000)
        page.screenshot(path=str(ARTIFACTS / "dashboard_stopped.png"), full_page=True)
        browser.close()
    shutil.copy(ARTIFACTS / "dashboard_training.png", tmp_path / "kept.png")
