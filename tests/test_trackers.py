"""Trackers: one tiny run logged to Trackio, TensorBoard and W&B (offline), each read back from its
own files and compared by value with the run's metrics and completions."""

import glob
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import digit_share

from grpo_lite import GRPOConfig
from grpo_lite.apps.scale_out import trl_args
from grpo_lite.callbacks import Callback
from grpo_lite.trainer import GRPOTrainer

STEPS = 4


def make_flaky():
    calls = []

    def flaky(prompts, completions, **kw):
        if len(completions) == 1:  # called one by one after the batch raised: fails on each completion too
            raise ValueError("flaky boom")
        calls.append(1)
        if len(calls) == 3:  # the third step's call raises: an error event at step 3
            raise ValueError("flaky boom")
        return [float(len(c) % 2) for c in completions]

    return flaky


class Steer(Callback):
    def on_step_boundary(self, trainer):
        if trainer.step == 1:  # applied at step 2
            trainer.steering.set_sampling(temperature=0.7)


class Rollouts(Callback):
    def __init__(self):
        self.by_step = {}

    def on_step_end(self, trainer, metrics):
        self.by_step[metrics["step"]] = dict(trainer.last_rollout)


def cfg_for(path, out, **kw):
    base = dict(model=str(path), output_dir=str(out), max_new_tokens=8, group_size=4, prompts_per_step=2,
                micro_batch_size=8, lora_rank=8, learning_rate=5e-2, max_steps=STEPS, save_steps=0)  # fmt: skip
    return GRPOConfig(**(base | kw))


@pytest.fixture(scope="module")
def run(tiny_model_path, tmp_path_factory):
    secret = f"hf_tracker_secret_{os.urandom(4).hex()}"
    before = os.environ.get("HF_TOKEN")
    os.environ["HF_TOKEN"] = secret  # exported, as a user logged in to the Hub has it
    try:
        rows = [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(10) for b in range(10)]
        cfg = cfg_for(tiny_model_path, tmp_path_factory.mktemp("tracked") / "run",
                      report_to=("trackio", "tensorboard", "wandb"), run_name="tracked", log_completions_every=2)  # fmt: skip
        rollouts = Rollouts()
        trainer = GRPOTrainer(
            cfg, rows, [digit_share, make_flaky()], callbacks=[Steer(), rollouts], progress=False
        )
        trainer.train()
    finally:
        if before is None:
            os.environ.pop("HF_TOKEN")
        else:
            os.environ["HF_TOKEN"] = before
    history = {m["step"]: m for m in trainer.history}
    return SimpleNamespace(trainer=trainer, history=history, rollouts=rollouts.by_step, secret=secret,
                           run_dir=Path(cfg.output_dir))  # fmt: skip


def test_the_run_has_what_the_trackers_must_show(run):
    assert sorted(run.history) == [1, 2, 3, 4]
    assert run.history[2]["changes"] == {"temperature": 0.7}
    assert "flaky" in run.history[3]["reward_error_tracebacks"]


# ---- TensorBoard ---------------------------------------------------------------------------------
def tensorboard_events(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(
        str(run.run_dir / "tensorboard" / "tracked"), size_guidance={"scalars": 0, "tensors": 0}
    )
    acc.Reload()
    return acc


def tensorboard_text(acc, tag):
    from tensorboard.util.tensor_util import make_ndarray

    return {e.step: make_ndarray(e.tensor_proto).item().decode() for e in acc.Tensors(f"{tag}/text_summary")}


def test_tensorboard_scalars_text_and_tables(run):
    acc = tensorboard_events(run)
    rewards = {e.step: e.value for e in acc.Scalars("reward")}
    assert rewards == pytest.approx({s: m["reward"] for s, m in run.history.items()}, rel=1e-6)
    flaky = {e.step: e.value for e in acc.Scalars("rewards/flaky/mean")}
    assert sorted(flaky) == [1, 2, 4]  # step 3's NaN (the function raised) is not a point
    temperatures = {e.step: e.value for e in acc.Scalars("temperature")}
    assert temperatures == pytest.approx({1: 1.0, 2: 0.7, 3: 0.7, 4: 0.7})  # float32 in the event file
    tables = tensorboard_text(acc, "completions")
    assert sorted(tables) == [2, 4]
    first = run.rollouts[2]["completions"][0].replace("|", "\\|").replace("\n", "<br>")
    assert (
        first in tables[2]
        and "| step | prompt | completion | digit_share | flaky | total | advantage |" in tables[2]
    )
    assert "temperature" in tensorboard_text(acc, "events/changes")[2]
    assert "flaky boom" in tensorboard_text(acc, "events/reward_error")[3]
    assert "def digit_share" in tensorboard_text(acc, "reward_source/digit_share")[0]
    assert '"report_to"' in tensorboard_text(acc, "config")[0]


# ---- Trackio ---------------------------------------------------------------------------------------
def test_trackio_scalars_tables_alerts_and_config(run):
    from trackio.sqlite_storage import SQLiteStorage

    logs = SQLiteStorage.get_logs("grpo-lite", "tracked")
    rewards = {log["step"]: log["reward"] for log in logs if "reward" in log}
    assert rewards == pytest.approx({s: m["reward"] for s, m in run.history.items()}, rel=1e-9)
    tables = {log["step"]: log["completions"]["_value"] for log in logs if "completions" in log}
    assert sorted(tables) == [2, 4]
    rollout = run.rollouts[4]
    assert [row["completion"] for row in tables[4]] == rollout["completions"]
    assert [row["advantage"] for row in tables[4]] == pytest.approx(rollout["advantage"])
    alerts = SQLiteStorage.get_alerts("grpo-lite", run_name="tracked")
    by_title = {a["title"]: a for a in alerts}
    assert json.loads(by_title["changes at step 2"]["text"]) == {"temperature": 0.7}
    assert by_title["reward_error at step 3"]["level"] == "error"
    assert "flaky boom" in by_title["reward_error at step 3"]["text"]
    config = SQLiteStorage.get_run_config("grpo-lite", "tracked")
    assert (
        config["report_to"] == ["trackio", "tensorboard", "wandb"]
        and "def digit_share" in config["rewards"]["digit_share"]["source"]
    )


# ---- Weights & Biases (offline) ----------------------------------------------------------------------
def wandb_records(path):
    """The protobuf records of an offline ``.wandb`` file (LevelDB log format: 32 KiB blocks of
    records with a 7-byte header — crc32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def test_wandb_offline_history_tables_and_events(run):
    (offline,) = glob.glob(str(run.run_dir / "wandb" / "offline-run-*"))
    history = {}
    for record in wandb_records(glob.glob(f"{offline}/*.wandb")[0]):
        if record.WhichOneof("record_type") == "history":
            items: dict = {}
            for item in record.history.item:  # a table's fields come as nested keys (completions, path)
                *parents, leaf = [item.key] if item.key else list(item.nested_key)
                target = items
                for parent in parents:
                    target = target.setdefault(parent, {})
                target[leaf] = json.loads(item.value_json)
            history[record.history.step.num] = items
    assert {s: h["reward"] for s, h in history.items()} == pytest.approx(
        {s: m["reward"] for s, m in run.history.items()}
    )
    assert {s for s, h in history.items() if "completions" in h} == {2, 4}
    table = json.loads(Path(offline, "files", history[2]["completions"]["path"]).read_text())
    assert table["columns"] == ["step", "prompt", "completion", "digit_share", "flaky", "total", "advantage"]
    assert [row[2] for row in table["data"]] == run.rollouts[2]["completions"]
    events = json.loads(Path(offline, "files", history[STEPS]["events"]["path"]).read_text())["data"]
    assert [2, "changes", '{"temperature": 0.7}'] in events
    assert any(e[0] == 3 and e[1] == "reward_error" and "flaky boom" in e[2] for e in events)


def test_no_token_reaches_any_tracker_file(run):
    roots = [run.run_dir, Path(os.environ["TRACKIO_DIR"])]
    files = [p for root in roots for p in root.rglob("*") if p.is_file()]
    assert len(files) > 10
    assert [p for p in files if run.secret.encode() in p.read_bytes()] == []


# ---- configuration ---------------------------------------------------------------------------------
def test_report_to_is_checked(tmp_path):
    assert GRPOConfig(model="m", report_to="wandb").report_to == ("wandb",)  # as TRL users write it
    assert GRPOConfig(model="m", report_to="none").report_to == ()
    with pytest.raises(
        ValueError,
        match=r"GRPOConfig.report_to must be a tuple of distinct names from \['trackio', 'tensorboard', 'wandb'\]; got \('mlflow',\)",
    ):
        GRPOConfig(model="m", report_to=("mlflow",))
    with pytest.raises(ValueError, match="report_to must be"):
        GRPOConfig(model="m", report_to=("wandb", "wandb"))
    with pytest.raises(ValueError, match="log_completions_every must be >= 0"):
        GRPOConfig(model="m", log_completions_every=-1)
    cfg = GRPOConfig(model="m", report_to=("trackio", "tensorboard"), run_name="r1", log_completions_every=5)
    cfg.save(tmp_path / "c.json")
    assert GRPOConfig.load(tmp_path / "c.json") == cfg


def test_missing_tracker_stops_before_any_model_loads(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    cfg = GRPOConfig(
        model=str(tmp_path / "no-such-model"),
        output_dir=str(tmp_path / "run"),
        report_to=("tensorboard", "wandb"),
    )
    with pytest.raises(ImportError, match=r"needs wandb, not installed here: pip install wandb"):
        GRPOTrainer(cfg, [{"prompt": "x"}], [digit_share])
    assert not (tmp_path / "run").exists()


def test_no_tracker_code_is_imported_without_report_to(tiny_model_path, tmp_path):
    script = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from conftest import digit_share
from grpo_lite import GRPOConfig
from grpo_lite.trainer import GRPOTrainer
cfg = GRPOConfig(model={str(tiny_model_path)!r}, output_dir={str(tmp_path / "run")!r}, max_new_tokens=4, group_size=2,
                 prompts_per_step=1, micro_batch_size=2, max_steps=1, save_steps=0)
GRPOTrainer(cfg, [{{"prompt": "1+1="}}], [digit_share], progress=False).train()
names = ("trackio", "wandb", "tensorboard", "torch.utils.tensorboard", "grpo_lite.trackers.base")
print(sorted(m for m in sys.modules if m.split(".")[0] in names or m in names or m.startswith("grpo_lite.trackers.")))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_scale_out_maps_trackers_to_trl():
    fields = ["report_to", "log_completions", "run_name", "learning_rate", "lr_scheduler_type",
              "per_device_train_batch_size", "gradient_accumulation_steps", "save_steps", "logging_steps"]  # fmt: skip
    from grpo_lite.apps.scale_out import SAME_VALUE

    fields += list(SAME_VALUE.values())
    args = trl_args(
        GRPOConfig(model="m", report_to=("wandb", "tensorboard"), run_name="r1", log_completions_every=0),
        trl_fields=fields,
    )
    assert (args["report_to"], args["run_name"], args["log_completions"]) == (
        ["wandb", "tensorboard"],
        "r1",
        False,
    )
    args = trl_args(GRPOConfig(model="m"), trl_fields=fields)
    assert (args["report_to"], args["log_completions"], "run_name" in args) == ("none", True, False)


def test_tensorboard_in_a_real_browser(run):
    # TensorBoard serving the run's event files, opened in headless Chromium: the reward curve and
    # the completions text are there. The screenshot is the README's (test-artifacts/tensorboard.png).
    from test_browser import ARTIFACTS, CHROMIUM, free_port, wait_for

    if not Path(CHROMIUM).exists():
        pytest.skip("needs /usr/bin/chromium (CI installs it)")
    from playwright.sync_api import sync_playwright

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(run.run_dir / "tensorboard"),
         "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        import urllib.request

        def up():
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=2).read()
            except OSError:
                return None

        assert b"tracked" in wait_for(up, 60, "TensorBoard to serve the run")
        ARTIFACTS.mkdir(exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--headless", "--no-sandbox", "--disable-gpu"])  # fmt: skip
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/#timeseries")
            tags = page.get_by_role("combobox", name="Filter tags (regex)")
            tags.fill("^reward$|rewards/.*mean|temperature")
            tags.press("Escape")
            page.get_by_text("rewards/digit_share/mean").first.wait_for(timeout=60_000)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(ARTIFACTS / "tensorboard.png"))
            page.goto(f"http://127.0.0.1:{port}/#text")
            page.get_by_text(run.rollouts[2]["completions"][0].split("\n")[0][:6]).first.wait_for(
                timeout=60_000
            )
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_report_to_from_the_command_line():
    from grpo_lite.apps.cli import build_parser
    from grpo_lite.apps.commands import config_from_args

    args = build_parser().parse_args(["train", "--model", "m", "--report-to", "trackio", "tensorboard",
                                      "--run-name", "r1", "--log-completions-every", "3"])  # fmt: skip
    cfg = config_from_args(args)
    assert (cfg.report_to, cfg.run_name, cfg.log_completions_every) == (("trackio", "tensorboard"), "r1", 3)


def test_a_branch_tells_its_tracker_where_it_came_from(run, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    child = run.trainer.branch("latest", output_dir=tmp_path / "branch")
    child.cfg = child.cfg.replace(max_steps=STEPS + 1, report_to=("tensorboard",))
    from grpo_lite.trackers import make_trackers

    child.callbacks = [cb for cb in child.callbacks if not hasattr(cb, "log_event")] + make_trackers(
        child.cfg, child.run_dir
    )
    child.train()
    assert child.cfg.run_name == "tracked-branch"  # a run of its own in every tracker
    acc = EventAccumulator(
        str(tmp_path / "branch" / "tensorboard" / "tracked-branch"), size_guidance={"tensors": 0}
    )
    acc.Reload()
    text = tensorboard_text(acc, "events/branch")
    assert text == {STEPS: f"branched from {run.run_dir.resolve()} at step {STEPS}"}
    assert '"parent_step": 4' in tensorboard_text(acc, "config")[0]
