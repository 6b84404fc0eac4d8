"""The code sandbox under attack, as root and as an unprivileged user, with each isolation.

The attacks themselves are the table in ``tests/sandbox_attacks.py`` (one comment per case); it runs
as a separate program so that the secret it guards sits in a real parent's environment and so that it
can run as another user with Debian's world-readable ``/usr/bin/python3``.
"""

import contextlib
import json
import os
import pwd
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sandbox_attacks import processes_with

from rewards import code_unit_tests, extract_code
from rewards import sandbox as sandbox_module
from rewards.sandbox import Limits, SandboxUnavailable, capabilities, drops_privileges, run_tests
from rewards.sandbox import run as sandbox_run
from rewards.sandbox.budget import Budget
from rewards.sandbox.cgroups import Hierarchy, hierarchy
from rewards.sandbox.plan import PROTECTIONS

ROOT = Path(__file__).resolve().parents[1]
ATTACKS = ROOT / "tests" / "sandbox_attacks.py"
USER = "grpolite-sandbox-test"
SYSTEM_PYTHON = "/usr/bin/python3"
TESTS = ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(-1, 5) == 4"]
GOOD = "def add(a, b):\n    return a + b\n"
# The wall clock at the product's default (5 s; sandbox_attacks.py uses the same): the tests run on 2
# workers, and on a loaded machine the 200 MB output attack, 0.45 s alone, took 3.1 s (past a 3 s
# limit: "the code still runs" failed).
LIMITS = Limits(cpu_seconds=2)
# The attacks run with nothing else on the machine: next to the other test worker the 200 MB output
# attack took 3.1 s, then 5.06 s, in two of three runs (0.45 s alone), past its wall limit.
pytestmark = pytest.mark.alone
# a leaking attack and the protection that stops it
BUDGET = PROTECTIONS[12]  # one memory and process budget for the whole run, kept by the kernel
GUARDED_BY = {
    "parent environ": "own PID namespace (host processes invisible, unsignalable)",
    "signal parent": "own PID namespace (host processes invisible, unsignalable)",
    "token file": "private filesystem (read-only system; home, tokens, run directory invisible)",
    "write run dir": "private filesystem (read-only system; home, tokens, run directory invisible)",
    "tcp loopback": "no network (own network namespace)",
    "nested user namespace": "no user namespace inside (so no mount of its own)",
    "fill /tmp": "every writable place a tmpfs of Limits.disk_bytes (/work, /tmp, /dev/shm)",
    "fill /dev/shm": "every writable place a tmpfs of Limits.disk_bytes (/work, /tmp, /dev/shm)",
    "fill .": "every writable place a tmpfs of Limits.disk_bytes (/work, /tmp, /dev/shm)",
}


def unprivileged_user(name: str = USER) -> pwd.struct_passwd:
    """A user with a home of its own, created if missing (we are root in CI)."""
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/usr/sbin/nologin", name], check=True)
        user = pwd.getpwnam(name)
    os.makedirs(user.pw_dir, mode=0o700, exist_ok=True)
    os.chown(user.pw_dir, user.pw_uid, user.pw_gid)
    return user


def readable_copy() -> Path:
    """The attack program and the sandbox it loads, copied where another uid can read them: a checkout
    under a private home or ``mktemp -d`` folder (mode 0700) cannot be entered by that user."""
    copy = Path(tempfile.mkdtemp(prefix="grpolite-attacks-"))
    shutil.copytree(ROOT / "rewards", copy / "rewards", ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "tests").mkdir()
    shutil.copy(ATTACKS, copy / "tests" / ATTACKS.name)
    for path in [copy, *copy.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return copy


def run_attacks(as_user: bool, isolation: str, program_root: Path = ROOT, resources: bool = False) -> dict:
    secret = f"hf_secret_{os.urandom(6).hex()}"
    if as_user:
        # Without namespaces the process limit counts every process of the user, so the "none" run
        # gets a user of its own: the namespaced runs beside it do not eat into its limit.
        user = unprivileged_user(USER if isolation != "none" else USER + "-plain")
        kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        python, home = SYSTEM_PYTHON, user.pw_dir
    else:
        kwargs, python, home = {}, sys.executable, os.environ["HOME"]
    env = {"PATH": "/usr/bin:/bin", "HOME": home, "HF_TOKEN": secret}
    attacks = program_root / "tests" / ATTACKS.name
    done = subprocess.run([python, str(attacks), isolation, *(["--resources"] if resources else [])],
                          capture_output=True, text=True, env=env,
                          cwd=program_root, timeout=300, **kwargs)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def can_run_as_user() -> bool:
    return os.geteuid() == 0 and shutil.which("useradd") is not None and os.access(SYSTEM_PYTHON, os.X_OK)


SETUPS = [(False, "bubblewrap"), (False, "unshare"), (True, "bubblewrap"), (True, "unshare"), (True, "none")]


@pytest.fixture(scope="module")
def program_copy():
    """The attack program where the unprivileged users can run it (they are made here once)."""
    if not shutil.which("bwrap"):
        pytest.fail("bubblewrap is not installed (apt-get install bubblewrap): .ci/run installs it")
    if not can_run_as_user():
        pytest.skip("the unprivileged half needs root, useradd and /usr/bin/python3")  # not in CI
    unprivileged_user(), unprivileged_user(USER + "-plain")  # made once, before the runs start side by side
    copy = readable_copy()
    yield copy
    shutil.rmtree(copy, ignore_errors=True)


@pytest.fixture(scope="module")
def reports(program_copy):
    """Every setup's report, run side by side (each is a separate program)."""
    with ThreadPoolExecutor(len(SETUPS)) as pool:
        runs = pool.map(lambda s: run_attacks(*s, program_root=program_copy if s[0] else ROOT), SETUPS)
        return dict(zip(SETUPS, runs, strict=True))


def failures(report: dict, cases=None) -> list[str]:
    bad = []
    for name, case in report["cases"].items():
        if cases is not None and name not in cases:
            continue
        host = {k: case[k] for k in ("signals", "accepted", "run_dir_files", "sleepers_left")}
        if case["passed"] != case["expected"] or host != {"signals": 0, "accepted": 0, "run_dir_files": [],
                                                          "sleepers_left": 0}:  # fmt: skip
            bad.append(f"{name}: {case}")
        if name in GUARDED_BY and case["control"] != "True":
            bad.append(f"{name}: the attack does not even work without a sandbox: {case['control']!r}")
    return bad


@pytest.mark.parametrize(
    ("as_user", "isolation"), SETUPS[:4], ids=["root-bwrap", "root-unshare", "user-bwrap", "user-unshare"]
)
def test_every_attack_fails_and_honest_code_passes(reports, as_user, isolation):
    report = reports[(as_user, isolation)]
    # every protection, but the kernel-kept run budget for a user who may make no cgroup (the watcher holds)
    assert [name for name, on in report["capabilities"].items() if not on] == ([BUDGET] if as_user else [])
    assert failures(report) == []
    assert report["cases"]["infinite loop"]["seconds"] < LIMITS.wall_seconds + 1.5
    assert report["cases"]["200 MB output"]["output_bytes"] <= LIMITS.output_bytes


def test_without_namespaces_the_judge_holds_and_capabilities_say_what_leaks(reports):
    # An unprivileged user with isolation="none": limits and the judge still hold; the host is exposed,
    # exactly where capabilities() says a protection is missing.
    report = reports[(True, "none")]
    missing = {name for name, on in report["capabilities"].items() if not on}
    assert missing == set(GUARDED_BY.values()) | {"own IPC namespace", BUDGET}
    assert failures(report, cases=set(report["cases"]) - set(GUARDED_BY)) == []
    leaked = {name for name in GUARDED_BY if report["cases"][name]["passed"] == 0}
    assert leaked == {name for name, protection in GUARDED_BY.items() if protection in missing}


SLACK = 128 << 20  # the sandbox's own processes and the kernel's memory for them, beyond the budget


@pytest.mark.parametrize(
    ("as_user", "isolation"), SETUPS[:4], ids=["root-bwrap", "root-unshare", "user-bwrap", "user-unshare"]
)
def test_a_run_holds_its_budgets_seen_from_outside(program_copy, as_user, isolation):
    """Forks that each stay under the per-process limit, memory files, filled tmpfs with memory besides,
    a nested namespace's tmpfs, a deep tree, many files, a writer racing the cleanup: the host's free
    memory never drops by more than the run's budget (plus the slack), nothing is left on the host, and
    the honest answer after them earns 3 of 3. Root makes a cgroup per run; an unprivileged user here
    may not, and the watcher (its processes' memory and its tmpfs, from outside) bounds the run."""
    report = run_attacks(as_user, isolation, program_root=program_copy if as_user else ROOT, resources=True)
    limits, cases = report["limits"], report["cases"]
    kernel = report["budget"].startswith("cgroup")
    assert kernel == (not as_user and hierarchy().version > 0), report["budget"]
    allowed = limits["memory_bytes"] + SLACK  # the watcher counts the tmpfs too
    for name, case in cases.items():
        assert case["host_memory"] <= allowed, (name, case)
        # unbounded, the fill attacks alone would write 100 MB; the slack is for the machine's own writes
        assert case["host_disk"] < 16 << 20 and case["disk_left"] < 4 << 20, (name, case)
        assert case["folders_left"] == [] and case["processes_left"] == 0, (name, case)
    assert cases["fork and allocate"]["stopped_by"] == "memory budget"  # 1.2 GB asked: the budget said no
    assert cases["tmpfs and memory"]["stopped_by"] == "memory budget"  # 96 MB of tmpfs + 200 MB
    assert cases["fork and allocate"]["peak_memory"] <= limits["memory_bytes"] + (0 if kernel else SLACK)
    assert cases["honest"]["passed"] == 3


def test_in_one_batch_the_honest_answers_earn_full_marks_beside_the_attacks():
    from sandbox_attacks import resource_cases

    attacks = [f"```python\n{code}```" for _, code in resource_cases()]
    honest = f"```python\n{GOOD}```"
    completions = [honest, *attacks, honest]
    scores = code_unit_tests(
        ["p"] * len(completions), completions, tests=[TESTS] * len(completions), workers=4
    )
    assert scores[0] == scores[-1] == 1.0 and len(scores) == len(completions)


def test_parent_memory_intact_after_a_16_gb_allocation():
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = run_tests("x = bytearray(16 * 1024**3)\n" + GOOD, TESTS, LIMITS)
    assert result.passed == 0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 100_000  # KiB


def test_fifty_children_hit_the_process_limit_and_leave_nothing():
    code = "import subprocess\nfor _ in range(50):\n    subprocess.Popen(['sleep', '32.5'])\n" + GOOD
    start = time.monotonic()
    result = run_tests(code, TESTS, Limits(wall_seconds=3.0, cpu_seconds=2, max_processes=16))
    assert time.monotonic() - start < 5
    # Popen fails at the limit, so the code raises before defining add (root keeping its uid is exempt).
    assert result.passed == (0 if capabilities().protections["process-count limit"] else 3)
    time.sleep(0.2)
    assert processes_with("sleep 32.5") == 0


def test_working_directory_is_removed():
    code = "import os\nopen('marker.txt', 'w').write(os.getcwd())\n" + GOOD
    before = set(os.listdir("/tmp"))
    assert run_tests(code, TESTS, LIMITS).passed == 3
    assert {p for p in set(os.listdir("/tmp")) - before if p.startswith("grpo-lite-sandbox-")} == set()


DEEP_TREE = """import os
for _ in range(3000):  # past Python's recursion limit and PATH_MAX from the top
    os.mkdir('dir_with_a_long_name_' * 4)
    os.chdir('dir_with_a_long_name_' * 4)
    open('f', 'w').write('x')
os.mkdir('locked'); open('locked/f', 'w').write('x'); os.chmod('locked', 0)
os.chdir('/')
"""


@pytest.mark.parametrize("isolation", ["bubblewrap", "none"])
def test_a_deep_tree_and_a_locked_folder_are_cleaned_up_and_the_answer_still_counts(isolation, monkeypatch):
    """The code writes a tree 3,000 folders deep (shutil.rmtree raised RecursionError on 1,100: the
    reward raised for the whole batch, the uid was not given back, the tree stayed) and a folder of
    mode 000: its right answer still earns its tests, and nothing is left in the temp folder."""
    import warnings as w

    monkeypatch.setattr(sandbox_run, "_free_uids", [])  # which uids come back, seen from here
    before = set(os.listdir(tempfile.gettempdir()))
    with w.catch_warnings():
        w.simplefilter("ignore", RuntimeWarning)  # isolation="none": the no-namespaces warning
        result = run_tests(
            DEEP_TREE + GOOD, TESTS, Limits(wall_seconds=20.0, cpu_seconds=15, isolation=isolation)
        )
    assert result.passed == 3 and not result.timed_out
    left = {p for p in set(os.listdir(tempfile.gettempdir())) - before if p.startswith("grpo-lite-sandbox-")}
    assert left == set()
    if drops_privileges():
        assert len(sandbox_run._free_uids) == 1  # the run's uid given back


def test_remove_tree_takes_any_depth_and_never_raises(tmp_path):
    from rewards.sandbox.cleanup import remove_tree

    top = tmp_path / "t"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY)
    for _ in range(5000):  # made with relative names: no path from the top could name the bottom
        os.mkdir("d" * 200, dir_fd=fd)
        child = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
        with open(os.open("f", os.O_CREAT | os.O_WRONLY, dir_fd=child), "w") as f:
            f.write("x")
        os.close(fd)
        fd = child
    os.close(fd)
    assert remove_tree(str(top)) and not top.exists()
    assert remove_tree(str(tmp_path / "absent"))  # nothing there: nothing to do
    (tmp_path / "file").write_text("x")
    assert remove_tree(str(tmp_path / "file")) and not (tmp_path / "file").exists()


def test_capabilities_here_and_bad_input():
    caps = capabilities()
    # bwrap installed, root, /usr/bin/python3: everything, the run budget kept by the kernel where this
    # machine lets root make cgroups (the finder's own tests below hold what it says)
    assert caps.isolation == "bubblewrap" and caps.missing == ([] if hierarchy().version else [BUDGET])
    assert f"run memory budget: {hierarchy()}" in str(caps)
    assert drops_privileges() is True
    assert "[x] no network" in str(caps)
    with pytest.raises(ValueError, match="isolation='chroot'.*bubblewrap, unshare, none"):
        Limits(isolation="chroot")
    with pytest.raises(ValueError, match="isolation='jail'"):
        capabilities("jail")


def test_no_namespaces_warns_once_or_refuses(monkeypatch):
    monkeypatch.setattr(sandbox_module, "_warned", set())
    plain = Limits(wall_seconds=3.0, isolation="none")
    with pytest.warns(RuntimeWarning, match="WITHOUT: own PID namespace"):
        assert run_tests(GOOD, TESTS, plain).passed == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert run_tests(GOOD, TESTS, plain).passed == 3  # said once only
    with pytest.raises(SandboxUnavailable, match="require_isolation=True.*not running model-written code"):
        run_tests(GOOD, TESTS, Limits(isolation="none", require_isolation=True))


def test_unavailable_isolation_is_refused(monkeypatch):
    monkeypatch.setattr(sandbox_module.shutil, "which", lambda name: None)
    sandbox_module._plan_and_capabilities.cache_clear()
    try:
        with pytest.raises(SandboxUnavailable, match="bwrap not installed"):
            run_tests(GOOD, TESTS, Limits(isolation="bubblewrap"))
    finally:
        sandbox_module._plan_and_capabilities.cache_clear()


@pytest.mark.parametrize(
    ("completion", "code"),
    [
        ("```python\nx = 1\n```\ntext\n```python\ny = 2\n```", "y = 2\n"),  # the last block wins
        ("```py\nz = 3\n```", "z = 3\n"),  # ```py
        ("no code here", None),  # no block
    ],
)
def test_extract_code(completion, code):
    assert extract_code(completion) == code


def test_code_unit_tests_reward_in_parallel():
    completions = [
        f"```python\n{GOOD}```",
        "```python\ndef add(a, b):\n    return 0\n```",
        "no code",
        f"```python\n{GOOD}```",
        "```python\nclass A:\n    def __eq__(s, o): return True\ndef add(a, b): return A()\n```",
    ]
    tests = [TESTS, ["assert add(0, 0) == 0", *TESTS], TESTS, [], TESTS]
    scores = code_unit_tests(["p"] * 5, completions, tests=tests, workers=3)
    assert scores == [1.0, pytest.approx(1 / 4), 0.0, 0.0, 0.0]  # no asserts -> 0.0; a lying object -> 0.0


def test_a_per_run_uid_is_switched_by_setpriv_so_popen_can_vfork(monkeypatch):
    """Popen vforks only when it switches no ids and runs nothing between fork and exec (a fork of the
    trainer's GBs costs ~50 ms with the GIL held); setpriv switches instead where it is installed, a
    function in the child (which also enters the run's cgroup) where not. The switch itself is held
    by the attacks above (root runs get the per-run uid: the process limit)."""
    which, plain = shutil.which, Budget(1 << 30, 8, Hierarchy(0))
    assert sandbox_run._switched(["bwrap", "x"], None, plain) == (["bwrap", "x"], None)
    command, preexec = sandbox_run._switched(["bwrap", "x"], 61005, plain)
    assert preexec is None and command[1:] == [
        "--reuid=61005",
        "--regid=61005",
        "--clear-groups",
        "--",
        "bwrap",
        "x",
    ]
    assert os.path.basename(command[0]) == "setpriv"
    monkeypatch.setattr(shutil, "which", lambda name, **k: None if name == "setpriv" else which(name, **k))
    command, preexec = sandbox_run._switched(["bwrap"], 61005, plain)
    assert command == ["bwrap"] and callable(preexec)  # the child switches before it starts bwrap
    with ThreadPoolExecutor(4) as pool:  # the fallback still runs code as that uid, in its cgroup
        results = list(pool.map(lambda _: run_tests(GOOD, TESTS, LIMITS), range(4)))
    assert all(r.passed == 3 for r in results)
    code = "import os\nuid = os.getuid()\n" + GOOD
    assert run_tests(code, ["assert uid == 1000"], LIMITS).passed == (1 if drops_privileges() else 0)


MOUNTINFO = """31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
50 23 0:40 /docker/abc /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd
"""
CGROUP = "8:pids:/\n4:memory:/process_api/e601\n9:name=systemd:/docker/abc/x\n0::/user.slice/u1\n"


def test_the_cgroup_folders_of_this_process_are_read_from_its_mounts():
    from rewards.sandbox.cgroups import _own_folders

    assert _own_folders(MOUNTINFO, CGROUP) == {
        "memory": "/sys/fs/cgroup/memory/process_api/e601",
        "pids": "/sys/fs/cgroup/pids",
        "": "/sys/fs/cgroup/unified/user.slice/u1",
        "name=systemd": "/sys/fs/cgroup/systemd/x",  # a mount of a sub-tree: its root taken off
    }
    assert _own_folders("", CGROUP) == {}  # nothing mounted: nothing to use


def test_a_v2_budget_writes_its_limits_and_a_shell_enters_it_before_the_sandbox(tmp_path):
    """On a cgroup v2 folder (a plain folder stands in: the kernel's files are written as files) a run
    gets a cgroup of its own with the memory, swap, OOM-group and process limits; its command moves
    itself in before anything of the run starts; the cgroup is removed after."""
    base = tmp_path / "cg"
    base.mkdir()
    budget = Budget(256 << 20, 16, Hierarchy(2, (str(base),)))
    (run,) = [p for p in base.iterdir()]
    for name in ("memory.max", "memory.swap.max", "memory.oom.group", "pids.max"):
        assert not (run / name).exists()  # only files the kernel made are written: none here
    budget.close()
    assert list(base.iterdir()) == []
    for name in ("memory.max", "memory.swap.max", "memory.oom.group", "pids.max", "cgroup.procs"):
        (tmp_path / name).touch()
    real = Budget.__new__(Budget)  # the same settings, on a folder that has the kernel's files
    real.memory, real.processes, real.where, real.folders = (
        256 << 20,
        24,
        Hierarchy(2, (str(tmp_path),)),
        [str(tmp_path)],
    )
    for path, value in real._settings():
        Path(path).write_text(value)
    assert {
        n: (tmp_path / n).read_text()
        for n in ("memory.max", "memory.swap.max", "memory.oom.group", "pids.max")
    } == {"memory.max": str(256 << 20), "memory.swap.max": "0", "memory.oom.group": "1", "pids.max": "24"}
    command = real.command(["bwrap", "--x"])
    assert command[:2] == ["/bin/sh", "-c"] and command[-2:] == ["bwrap", "--x"]
    out = subprocess.run([*command[:4], "sh", "-c", "echo $$"], capture_output=True, text=True, check=True)
    assert (tmp_path / "cgroup.procs").read_text().strip() == out.stdout.strip()  # the same process, moved in


def test_a_v1_budget_sets_memory_and_swap_and_pids_in_their_own_folders(tmp_path):
    memory, pids = tmp_path / "memory", tmp_path / "pids"
    memory.mkdir(), pids.mkdir()
    real = Budget.__new__(Budget)
    real.memory, real.processes, real.where = 1 << 30, 40, Hierarchy(1, (str(memory), str(pids)))
    real.folders = [str(memory), str(pids)]
    assert [(Path(p).relative_to(tmp_path).as_posix(), v) for p, v in real._settings()] == [
        ("memory/memory.limit_in_bytes", str(1 << 30)), ("memory/memory.memsw.limit_in_bytes", str(1 << 30)),
        ("pids/pids.max", "40")]  # fmt: skip
    (memory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    (memory / "memory.max_usage_in_bytes").write_text(str(300 << 20))
    real._read_events()
    assert (real.stopped_by, real.peak) == ("memory budget", 300 << 20)


def test_without_a_cgroup_the_watcher_kills_a_run_past_its_budget():
    """The watcher alone (as for a user who may make no cgroup): children that each stay under the
    per-process limit are killed together once they hold more than the run's budget."""
    budget = Budget(128 << 20, 16, Hierarchy(0, (), "test"))
    code = (
        "import os, time\nfor i in range(6):\n  if os.fork() == 0:\n    time.sleep(0.15 * i)\n"
        "    b = b'x' * (60 << 20)\n    time.sleep(20)\nos.wait()\n"
    )  # one allocating at a time
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    budget.watch(proc.pid)
    try:
        assert proc.wait(timeout=15) == -9  # killed, not finished: they would sleep 20 s
    finally:
        budget.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
    assert budget.stopped_by == "memory budget" and 128 << 20 < budget.peak < (128 + 64) << 20


def test_the_readme_sandbox_table_states_the_limits_in_force():
    """The README's table of limits says what Limits() and the harness really set."""
    import re

    solver = (ROOT / "rewards" / "sandbox" / "harness" / "solver.py").read_text()  # a program, not a module
    open_files = int(re.search(r"^MAX_OPEN_FILES = (\d+)", solver, re.M).group(1))
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## The code sandbox") : text.index("## Training from Python")]
    defaults = Limits()
    assert f"| {defaults.wall_seconds:g} s, {defaults.cpu_seconds} s |" in table
    assert f"| {defaults.memory_bytes >> 30} GiB (`Limits.memory_bytes`) |" in table
    assert f"| {defaults.max_processes} (`max_processes`) |" in table
    assert f"| a {defaults.disk_bytes >> 20} MiB tmpfs (`disk_bytes`) |" in table
    assert f"| {defaults.output_bytes >> 10} KiB; {open_files} |" in table


def test_run_cgroups_a_killed_trainer_left_are_removed_and_live_ones_kept(tmp_path):
    from rewards.sandbox.cgroups import remove_stale

    dead = 99_999_999  # above the kernel's largest pid (2**22): no such process
    live = [f"grpo-lite-run-{os.getpid()}-3", f"grpo-lite-trainer-{os.getpid()}", "other"]
    gone = [f"grpo-lite-run-{dead}-0", f"grpo-lite-run-{dead}-7", f"grpo-lite-trainer-{dead}"]
    for name in live + gone:
        (tmp_path / name).mkdir()
    assert sorted(remove_stale(str(tmp_path))) == sorted(gone)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(live)
    assert remove_stale(str(tmp_path / "absent")) == []


@pytest.mark.parametrize("isolation", ["bubblewrap", "unshare"])
def test_the_watcher_counts_what_the_run_wrote_into_its_tmpfs(isolation, monkeypatch):
    """Without a cgroup the watcher sees the run's tmpfs from outside (through /proc/PID/root): 60 MB
    written into /tmp and /work plus 40 MB of memory is over a 96 MiB budget, though no process holds
    more than 40 MB; with the tmpfs not counted it would run to the end."""
    from rewards.sandbox import budget

    monkeypatch.setattr(budget, "hierarchy", lambda: Hierarchy(0, (), "test: the watcher alone"))
    code = ("import time\nfor d in ('/tmp', '/work'):\n  for i in range(500):\n"
            "    open(f'{d}/f{i}', 'wb').write(b'x' * 60000)\nb = b'x' * (40 << 20)\ntime.sleep(3)\n" + GOOD)  # fmt: skip
    result = run_tests(code, TESTS, Limits(memory_bytes=96 << 20, wall_seconds=8, isolation=isolation))
    assert result.stopped_by == "memory budget" and result.passed == 0, result
    assert 96 << 20 < result.peak_memory < 160 << 20


def test_the_watcher_never_counts_the_host_disk_seen_from_a_namespace_being_set_up():
    """Between unshare() and pivot_root the run's process is in a mount namespace of its own whose /tmp
    is still the host's: that disk's usage is not the run's (counted, it killed a probe run at random)."""
    from rewards.sandbox.budget import _host_filesystems, _tmpfs_held

    proc = subprocess.Popen(["unshare", "--user", "--map-root-user", "--mount", "sleep", "20"])
    try:
        own = os.readlink("/proc/self/ns/mnt")
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{proc.pid}/ns/mnt") == own and time.monotonic() < deadline:
            time.sleep(0.01)  # until unshare has made the namespace and exec'd sleep
        assert os.readlink(f"/proc/{proc.pid}/ns/mnt") != own
        assert os.statvfs(f"/proc/{proc.pid}/root/tmp").f_blocks > 0  # the host's /tmp, seen through it
        assert _tmpfs_held([proc.pid], own, _host_filesystems()) == 0
    finally:
        proc.kill()
        proc.wait()
