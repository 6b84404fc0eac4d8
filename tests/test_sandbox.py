"""The code sandbox under attack, as root and as an unprivileged user, with each isolation.

The attacks themselves are the table in ``tests/sandbox_attacks.py`` (one comment per case); it runs
as a separate program so that the secret it guards sits in a real parent's environment and so that it
can run as another user with Debian's world-readable ``/usr/bin/python3``.
"""

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


def run_attacks(as_user: bool, isolation: str, program_root: Path = ROOT) -> dict:
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
    done = subprocess.run([python, str(attacks), isolation], capture_output=True, text=True, env=env,
                          cwd=program_root, timeout=300, **kwargs)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def can_run_as_user() -> bool:
    return os.geteuid() == 0 and shutil.which("useradd") is not None and os.access(SYSTEM_PYTHON, os.X_OK)


SETUPS = [(False, "bubblewrap"), (False, "unshare"), (True, "bubblewrap"), (True, "unshare"), (True, "none")]


@pytest.fixture(scope="module")
def reports():
    """Every setup's report, run side by side (each is a separate program)."""
    if not shutil.which("bwrap"):
        pytest.fail("bubblewrap is not installed (apt-get install bubblewrap): .ci/run installs it")
    if not can_run_as_user():
        pytest.skip("the unprivileged half needs root, useradd and /usr/bin/python3")  # not in CI
    unprivileged_user(), unprivileged_user(USER + "-plain")  # made once, before the runs start side by side
    copy = readable_copy()
    try:
        with ThreadPoolExecutor(len(SETUPS)) as pool:
            runs = pool.map(lambda s: run_attacks(*s, program_root=copy if s[0] else ROOT), SETUPS)
            return dict(zip(SETUPS, runs, strict=True))
    finally:
        shutil.rmtree(copy, ignore_errors=True)


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
    assert all(report["capabilities"].values()), report["capabilities"]
    assert failures(report) == []
    assert report["cases"]["infinite loop"]["seconds"] < LIMITS.wall_seconds + 1.5
    assert report["cases"]["200 MB output"]["output_bytes"] <= LIMITS.output_bytes


def test_without_namespaces_the_judge_holds_and_capabilities_say_what_leaks(reports):
    # An unprivileged user with isolation="none": limits and the judge still hold; the host is exposed,
    # exactly where capabilities() says a protection is missing.
    report = reports[(True, "none")]
    missing = {name for name, on in report["capabilities"].items() if not on}
    assert missing == set(GUARDED_BY.values()) | {"own IPC namespace"}
    assert failures(report, cases=set(report["cases"]) - set(GUARDED_BY)) == []
    leaked = {name for name in GUARDED_BY if report["cases"][name]["passed"] == 0}
    assert leaked == {name for name, protection in GUARDED_BY.items() if protection in missing}


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

    monkeypatch.setattr(sandbox_module, "_free_uids", [])  # which uids come back, seen from here
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
        assert len(sandbox_module._free_uids) == 1  # the run's uid given back


def test_remove_tree_takes_any_depth_and_never_raises(tmp_path):
    from rewards.sandbox_cleanup import remove_tree

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
    assert caps.isolation == "bubblewrap" and caps.missing == []  # bwrap installed, root, /usr/bin/python3
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
    """Popen vforks only when it switches no ids (a fork of the trainer's GBs costs ~50 ms with the
    GIL held); setpriv switches instead where it is installed, Popen's own arguments where not. The
    switch itself is held by the attacks above (root runs get the per-run uid: the process limit)."""
    sandbox, which = sandbox_module, shutil.which
    assert sandbox._switched(["bwrap", "x"], None) == (["bwrap", "x"], None)
    command, left = sandbox._switched(["bwrap", "x"], 61005)
    assert left is None and command[1:] == [
        "--reuid=61005",
        "--regid=61005",
        "--clear-groups",
        "--",
        "bwrap",
        "x",
    ]
    assert os.path.basename(command[0]) == "setpriv"
    monkeypatch.setattr(
        sandbox.shutil, "which", lambda name, **k: None if name == "setpriv" else which(name, **k)
    )
    assert sandbox._switched(["bwrap"], 61005) == (["bwrap"], 61005)  # Popen's user, group, no groups
    with ThreadPoolExecutor(4) as pool:  # the fallback still runs code as that uid
        assert all(r.passed == 3 for r in pool.map(lambda _: run_tests(GOOD, TESTS, LIMITS), range(4)))
