"""The code sandbox under bounded attacks: each ends within its limit with the right reward."""

import os
import resource
import time

import pytest

from rewards import code_unit_tests, extract_code
from rewards.sandbox import Limits, drops_privileges, run_tests

TESTS = ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(0, 0) == 0"]
GOOD = "def add(a, b):\n    return a + b\n"
LIMITS = Limits(wall_seconds=3.0, cpu_seconds=2)

ATTACKS = [
    # (code, expected passed, what it probes)
    (GOOD, 3, "a correct solution"),
    ("def add(a, b):\n    return a - b\n", 1, "a partly wrong solution: only add(0, 0) passes"),
    ("while True:\n    pass\n" + GOOD, 0, "an infinite loop: killed at the limit"),
    ("x = bytearray(16 * 1024**3)\n" + GOOD, 0, "allocating 16 GB: MemoryError in the child only"),
    ("import sys\nsys.exit(0)\n" + GOOD, 0, "sys.exit before the asserts run"),
    ("import os\nos._exit(0)\n" + GOOD, 0, "os._exit before the asserts run"),
    ("print('PASSED')\nprint('3 passed')\ndef add(a, b):\n    return 0\n", 1, "printing pass markers"),
    (
        "import sys\nsys.stdout.write('x' * 200_000_000)\n" + GOOD,
        3,
        "printing 200 MB: capped, the code still runs",
    ),
    (
        "import os\nassert not any('TOKEN' in k for k in os.environ)\n" + GOOD,
        3,
        "no secret in the environment",
    ),
]


@pytest.mark.parametrize(("code", "passed"), [a[:2] for a in ATTACKS], ids=[a[2] for a in ATTACKS])
def test_attacks(code, passed, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token_but_secret")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    result = run_tests(code, TESTS, LIMITS)
    assert result.passed == passed
    assert time.monotonic() - start < LIMITS.wall_seconds + 2
    assert (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 100_000
    )  # KiB: parent memory intact


def test_output_is_capped():
    result = run_tests("print('y' * 1_000_000)\n" + GOOD, TESTS, LIMITS)
    assert len(result.output) <= LIMITS.output_bytes


def children_alive(marker: str) -> int:
    """Processes whose command line contains ``marker`` (read from /proc: no procps needed)."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    count += marker.encode() in f.read().replace(b"\0", b" ")
            except OSError:  # the process ended meanwhile
                pass
    return count


def test_spawned_children_are_killed():
    # 10 children that outlive the code, then a correct solution: all asserts pass, no child survives.
    code = "import subprocess\nfor _ in range(10):\n    subprocess.Popen(['sleep', '31.5'])\n" + GOOD
    assert run_tests(code, TESTS, LIMITS).passed == 3
    time.sleep(0.2)
    assert children_alive("sleep 31.5") == 0


def test_fifty_children_hit_the_process_limit_and_leave_nothing():
    code = "import subprocess\nfor _ in range(50):\n    subprocess.Popen(['sleep', '32.5'])\n" + GOOD
    start = time.monotonic()
    result = run_tests(code, TESTS, Limits(wall_seconds=3.0, cpu_seconds=2, max_processes=16))
    assert time.monotonic() - start < 5
    # Under its own uid the process limit makes Popen fail, so the code raises before defining add;
    # as root (which no process limit binds) all 50 start and the asserts pass.
    assert result.passed == (0 if drops_privileges() else 3)
    time.sleep(0.2)
    assert children_alive("sleep 32.5") == 0


def test_no_network_as_root():
    code = "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)\n" + GOOD
    expected = 0 if os.geteuid() == 0 else None  # in a new network namespace even loopback is down
    if expected is None:
        pytest.skip("network isolation needs root")
    assert run_tests(code, TESTS, LIMITS).passed == expected


def test_working_directory_is_removed():
    code = "import os\nopen('marker.txt', 'w').write(os.getcwd())\nprint(os.getcwd())\n" + GOOD
    result = run_tests(code, TESTS, LIMITS)
    workdir = result.output.strip().splitlines()[0]
    assert result.passed == 3 and not os.path.exists(workdir)


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
    ]
    tests = [TESTS, TESTS, TESTS, []]
    scores = code_unit_tests(["p"] * 4, completions, tests=tests, workers=3)
    assert scores == [1.0, pytest.approx(1 / 3), 0.0, 0.0]  # no asserts -> 0.0
