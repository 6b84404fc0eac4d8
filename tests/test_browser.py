"""A real browser: JupyterLab on localhost, headless Debian Chromium driven by Playwright, on both
kernel families: ipykernel 7 (this environment's; training runs in a background thread) and
ipykernel 6 (Colab's family; training runs in the cell and jupyter-ui-poll pumps widget events),
the latter through a kernel spec that puts ipykernel 6 first on the path of the same Python.

Opens the quickstart in offline mode (on the tiny model), runs it, checks the dashboard renders with a non-empty reward
plot, and while training runs: moves the temperature slider, edits a reward function and applies
it, moves a reward's weight slider, sets the learning rate, adds a new reward — each seen in the
metrics of the step it took effect. Then stops the run (a checkpoint), branches from an earlier
checkpoint in the checkpoint list, trains the branch from a new cell and sees its metrics continue
after the branch point. Screenshots go to test-artifacts/.
CI installs chromium (.ci/run); elsewhere the test is skipped when /usr/bin/chromium is missing.
"""

import json
import os
import re
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


IPYKERNEL6 = ROOT / ".venv" / "ipykernel6"  # ipykernel < 7, installed once, first on the kernel's path


def ipykernel6_spec(root: Path) -> Path:
    """A kernel spec named python3 that runs this Python with ipykernel 6 ahead of the installed 7."""
    if not (IPYKERNEL6 / "ipykernel").is_dir():
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                               str(IPYKERNEL6), "ipykernel>=6.29,<7"], capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, (
            f"installing ipykernel<7 for the kernel spec failed: {done.stderr[-500:]}"
        )
    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python",
        "env": {"PYTHONPATH": str(IPYKERNEL6)},
    }))  # fmt: skip
    return root


@pytest.fixture(params=["ipykernel7", "ipykernel6"])
def lab(tmp_path, request, demo_cache):
    """JupyterLab serving a copy of the quickstart on the session's tiny demo model (conftest), long
    enough (400 steps) to steer it mid-run, checkpoints every 5 steps (to branch from), on the kernel
    family of the parameter."""
    env = {
        **os.environ,
        "GRPO_LITE_OFFLINE": "1",
        "GRPO_LITE_CACHE": str(demo_cache),
        "HF_HUB_OFFLINE": "1",
        # the tiny model: this test is about the dashboard's wiring in a browser, and a steering scenario
        # of ~40 steps on two kernels fits CI's time at 0.2 s a step (SmolLM2's quickstart: test_notebooks)
        "GRPO_LITE_DEMO_MODEL": "tiny",
        "GRPO_LITE_DEMO_STEPS": "400",
    }
    if request.param == "ipykernel6":
        env["JUPYTER_PATH"] = str(ipykernel6_spec(tmp_path / "jupyter"))
    nb = json.loads((ROOT / "notebooks" / "01_quickstart.ipynb").read_text())
    for cell in nb["cells"]:
        cell["source"] = "".join(cell["source"]).replace("steps=STEPS)", "steps=STEPS, save_steps=5)")
    assert sum("save_steps=5" in cell["source"] for cell in nb["cells"]) == 1  # the notebook's demo_run call
    (tmp_path / "01_quickstart.ipynb").write_text(json.dumps(nb))
    port = free_port()
    log = (tmp_path / "jupyter.log").open("w")  # the server's and kernel's output, kept on failure
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         "--IdentityProvider.token=", "--ServerApp.password=", "--allow-root", "--ServerApp.disable_check_xsrf=True",
         f"--ServerApp.root_dir={tmp_path}", "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return server.poll() is not None and pytest.fail("JupyterLab exited at start")

    wait_for(listening, 90, "JupyterLab to listen")
    yield f"http://127.0.0.1:{port}", tmp_path, request.param
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


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

    url, root, kernel = lab
    run_dir = root / "runs" / "quickstart"
    ARTIFACTS.mkdir(exist_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=flags, headless=True)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        try:
            drive_quickstart(page, url, run_dir, kernel)
            branch_and_train(page, run_dir, kernel)
        except Exception as err:  # the kernel's side of the story: its tracebacks go to the server log
            log = root / "jupyter.log"
            (ARTIFACTS / f"jupyter_{kernel}.log").write_text(log.read_text())
            outputs = page.locator(".jp-OutputArea")
            seen = [
                outputs.nth(i).inner_text()[-800:]
                for i in range(max(0, outputs.count() - 3), outputs.count())
            ]
            raise AssertionError(
                f"{err}\n--- the last outputs:\n{seen}\n--- JupyterLab/kernel log:\n{log.read_text()[-4000:]}"
            ) from err
        finally:
            page.screenshot(path=str(ARTIFACTS / f"dashboard_last_{kernel}.png"), full_page=True)
            browser.close()


NEW_REWARD = "def new_reward(prompts, completions, **kwargs):\n    return [0.25 for _ in completions]\n"


def changed_at(run_dir: Path, key: str, value=None, what: str = "") -> dict:
    """The first logged step whose ``changes`` hold ``key`` (equal to ``value`` when given)."""
    found = wait_for(lambda: [m for m in metrics(run_dir) if key in m.get("changes", {})
                              and (value is None or m["changes"][key] == value)], 90, what or key)  # fmt: skip
    wait_for(lambda: metrics(run_dir)[-1]["step"] > found[0]["step"], 60, f"a step after {key}")
    return found[0]


def type_into(page, locator, text: str) -> None:
    locator.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def drive_quickstart(page, url: str, run_dir: Path, kernel: str) -> None:
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
    background = page.get_by_text("training in the background").count() > 0
    assert background == (
        kernel == "ipykernel7"
    )  # ipykernel 6: in the cell, events pumped by jupyter-ui-poll
    page.screenshot(path=str(ARTIFACTS / f"dashboard_training_{kernel}.png"), full_page=True)

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
    page.screenshot(path=str(ARTIFACTS / f"dashboard_reward_edited_{kernel}.png"), full_page=True)

    # A reward's weight and the learning rate, from the "weights & lr" tab.
    page.get_by_role("tab", name="weights & lr").click()
    type_into(
        page,
        page.locator(".widget-slider", has_text="weight answer_tag_format").locator(".widget-readout"),
        "0.3",
    )
    at = changed_at(run_dir, "weight:answer_tag_format", 0.3)
    assert all(
        m["weights/answer_tag_format"] == (0.3 if m["step"] >= at["step"] else 0.1) for m in metrics(run_dir)
    )
    type_into(page, page.locator(".widget-text", has_text="learning rate").locator("input"), "0.001")
    at = changed_at(run_dir, "learning_rate", 0.001)
    assert all(m["lr"] == pytest.approx(0.001) for m in metrics(run_dir) if m["step"] >= at["step"])

    # A new reward, written in the editor and added mid-run.
    page.get_by_role("tab", name="reward editor").click()
    page.get_by_role("button", name="new reward").click()
    editor = page.locator(".widget-textarea textarea")
    wait_for(
        lambda: "def new_reward" in editor.input_value(), 60, "the new reward's template"
    )  # then edit it
    editor.fill(NEW_REWARD)
    # Test, then Apply. This is the editor's second edit of the run: with ipykernel 7 it reaches the
    # kernel only thanks to grpo_lite.notebook.kernel.keep_widget_updates_flowing (see there).
    page.get_by_role("button", name="Test", exact=True).click()
    output = page.locator(".widget-html", has_text="edited")
    wait_for(lambda: "0.25" in output.inner_text(), 60, "the edited new reward tested")
    page.get_by_role("button", name="Apply", exact=True).click()
    at = changed_at(run_dir, "added:new_reward")
    assert at["changes"]["added:new_reward"] == NEW_REWARD
    assert all(m["rewards/new_reward/mean"] == 0.25 for m in metrics(run_dir) if m["step"] >= at["step"])

    # Stop from the dashboard: the run ends with a checkpoint.
    page.get_by_role("button", name="stop (checkpoint)").click()
    wait_for(lambda: (run_dir / "adapter" / "adapter_model.safetensors").exists(), 120, "the run to stop")
    last = metrics(run_dir)[-1]["step"]
    assert last < 400 and (run_dir / "checkpoints" / f"step-{last}" / "adapter_model.safetensors").exists()
    # The cell's output, not its code (which holds the same words and is visible from the start).
    page.locator(".jp-OutputArea-output", has_text="held-out greedy accuracy").wait_for(timeout=120_000)
    page.screenshot(path=str(ARTIFACTS / f"dashboard_stopped_{kernel}.png"), full_page=True)


def branch_and_train(page, run_dir: Path, kernel: str) -> None:
    """Branch from step 5 in the checkpoint list, train the branch from a new cell, stop it."""
    page.get_by_role("tab", name="checkpoints").click()
    row = page.locator(".widget-hbox", has_text=re.compile(r"^\s*step 5 ·"))
    row.get_by_role("button", name="branch from here").click()
    page.get_by_text("branched from step 5").wait_for(timeout=60_000)
    branch = run_dir / "branches" / "step-5-1"
    assert json.loads((branch / "lineage.json").read_text())["parent_step"] == 5
    # A new cell at the end, as a user adds one: train the branch.
    page.locator(".jp-Cell").last.click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")
    page.keyboard.press("Enter")
    page.keyboard.type("history = dashboard.train()")
    page.keyboard.press("Shift+Enter")
    wait_for(lambda: len(metrics(branch)) >= 9, 180, "the branch's steps after step 5")
    steps = [m["step"] for m in metrics(branch)]
    assert steps == list(range(1, len(steps) + 1))  # the parent's 1..5, then the branch's own 6, 7, ...
    parent = {m["step"]: m for m in metrics(run_dir)}
    assert [m["reward"] for m in metrics(branch)[:5]] == [parent[s]["reward"] for s in range(1, 6)]
    failing = [m["step"] for m in metrics(branch)[5:] if m.get("reward_error_tracebacks")]
    assert failing == []  # the branch's rewards (those in force at step 5) all run
    page.wait_for_timeout(2000)  # the next redraw: the parent's curves dimmed beside the branch's
    page.screenshot(path=str(ARTIFACTS / f"dashboard_branch_{kernel}.png"), full_page=True)
    page.get_by_role("button", name="stop (checkpoint)").click()
    wait_for(lambda: (branch / "adapter" / "adapter_model.safetensors").exists(), 120, "the branch to stop")
