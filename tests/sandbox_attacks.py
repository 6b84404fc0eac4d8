"""Attacks on the code sandbox, run as a program so that it can run as root or as another user.

``python tests/sandbox_attacks.py ISOLATION`` runs every case of :func:`cases` through
``rewards.sandbox`` (loaded alone: standard library only, so Debian's ``/usr/bin/python3`` can run
it as an unprivileged user) and prints one JSON object: per case, the passed count, whether the same
attack works with no sandbox at all (the control: an attack that cannot succeed anywhere proves
nothing), and what the host saw (signals received, connections accepted, files written, processes
left). The secret it guards is in this process's own environment (``HF_TOKEN``, as a user exports it)
and in a token file under ``$HOME``.

``python tests/sandbox_attacks.py ISOLATION --resources`` runs the attacks on the run's budgets
(:func:`resource_cases`) one at a time, each watched from outside: the host's available memory and
free disk sampled every few milliseconds during the call, and what is left after it.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(-1, 5) == 4"]
GOOD = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return 0\n"


def load_sandbox():  # type: ignore[no-untyped-def]
    """``rewards.sandbox`` without importing the ``rewards`` package (whose other modules need
    packages Debian's Python lacks): an empty package stands in, so its sandbox package loads alone."""
    if "rewards" not in sys.modules:
        package = types.ModuleType("rewards")
        package.__path__ = [str(ROOT / "rewards")]
        sys.modules["rewards"] = package
    return importlib.import_module("rewards.sandbox")


def leak(probe: str) -> str:
    """A solution that is right only if ``probe`` (which sets ``leaked``) failed to reach the host."""
    return (
        "import os, signal, socket\nleaked = False\ntry:\n"
        + "".join(f"    {line}\n" for line in probe.splitlines())
        + "except Exception:\n    pass\n"
        + "def add(a, b):\n    return -1 if leaked else a + b\n"
    )


def cases(ctx: dict) -> list[dict]:
    """(id, code, tests, passed in the sandbox, control?) — ``control``: the probe leaks when run bare."""
    secret, pid, port, token, run_dir = ctx["secret"], ctx["pid"], ctx["port"], ctx["token"], ctx["run_dir"]
    strs = ["assert shout('a') == 'A!'", "assert shout('ok') == 'OK!'"]
    sorts = ["assert sorted(rev([3, 1, 2])) == [1, 2, 3]", "assert len(rev([1, 2])) == 2"]
    table = [
        # the honest solution scores every test
        ("honest", GOOD, TESTS, 3, False),
        # honest solutions that use objects, exceptions, floats, containers
        ("honest objects", "class Stack:\n  def __init__(s): s.items = []\n  def push(s, x): s.items.append(x)\n"
         "  def pop(s): return s.items.pop()\n  def __len__(s): return len(s.items)\n",
         ["s = Stack(); s.push(1); s.push(2)\nassert s.pop() == 2 and len(s) == 1",
          "try:\n    Stack().pop()\nexcept IndexError:\n    pass\nelse:\n    raise AssertionError"], 2, False),
        ("honest values", "import math\ndef f(x): return {'root': math.sqrt(x), 'pair': (x, [x]), 's': {x}, 'b': b'x'}\n",
         ["assert f(4) == {'root': 2.0, 'pair': (4, [4]), 's': {4}, 'b': b'x'}", "assert math.isnan(f(float('nan'))['root'])"], 2, False),
        # a module the code imported is the judge's own copy in the tests (MBPP's asserts use `math.` unimported)
        ("honest module", "import math\ndef area(r): return math.pi * r * r\n",
         ["assert math.isclose(area(2), 12.566, rel_tol=1e-3)"], 1, False),
        # ... so a fake module under that name changes nothing
        ("fake module", "import types\nmath = types.ModuleType('math')\nmath.isclose = lambda *a, **k: True\n"
         "def area(r): return 0\n", ["assert math.isclose(area(2), 12.566, rel_tol=1e-3)"], 0, False),
        # a wrong solution scores nothing
        ("wrong", WRONG, TESTS, 0, False),
        # an object whose __eq__ always says yes
        ("eq always true", "class Anything:\n  def __eq__(s, o): return True\ndef add(a, b): return Anything()\n", TESTS, 0, False),
        # a subclass of int with a lying __eq__
        ("int subclass", "class I(int):\n  def __eq__(s, o): return True\n  __hash__ = int.__hash__\n"
         "def add(a, b): return I(0)\n", TESTS, 0, False),
        # a subclass of str with a lying __eq__
        ("str subclass", "class S(str):\n  def __eq__(s, o): return True\n  __hash__ = str.__hash__\n"
         "def shout(x): return S('')\n", strs, 0, False),
        # __eq__ returns the object itself, whose __bool__ is True
        ("eq returns truthy self", "class T:\n  def __eq__(s, o): return s\n  def __bool__(s): return True\n"
         "def add(a, b): return T()\n", TESTS, 0, False),
        # shadowing builtins the tests use, in the solution's globals and in builtins itself
        ("shadow builtins", "import builtins\nsorted = lambda x: [1, 2, 3]\nlen = lambda x: 2\n"
         "builtins.sorted = sorted\nbuiltins.len = len\ndef rev(x): return None\n", sorts, 0, False),
        # rebinding the test's names from inside a call (frame introspection)
        ("rebind test names", "import sys\ndef add(a, b):\n  f = sys._getframe(1)\n  while f:\n"
         "    f.f_globals['add'] = lambda a, b: a + b\n    f.f_builtins['AssertionError'] = StopIteration\n"
         "    f = f.f_back\n  return 0\n", TESTS, 0, False),
        # writing pass lines into every descriptor (the results channel is not among them)
        ("forge results", "import os\nfor fd in range(3, 256):\n  try: os.write(fd, b'0\\n1\\n2\\ndone\\n')\n"
         "  except OSError: pass\n" + WRONG, TESTS, 0, False),
        # printing pass markers
        ("print markers", "print('PASSED')\nprint('3 passed')\n" + WRONG, TESTS, 0, False),
        # exiting before the tests run
        ("sys.exit", "import sys\nsys.exit(0)\n" + GOOD, TESTS, 0, False),
        ("os._exit", "import os\nos._exit(0)\n" + GOOD, TESTS, 0, False),
        # an infinite loop: killed at the wall-clock limit
        ("infinite loop", "while True:\n    pass\n" + GOOD, TESTS, 0, False),
        # 16 GB: MemoryError in the sandbox only
        ("16 GB", "x = bytearray(16 * 1024**3)\n" + GOOD, TESTS, 0, False),
        # 200 MB of output: capped, the code still runs
        ("200 MB output", "import sys\nsys.stdout.write('x' * 200_000_000)\n" + GOOD, TESTS, 3, False),
        # reading the tests (file or memory) to hard-code the answers
        ("read the tests", leak("import gc\nleaked = os.path.exists('tests.json') or any(isinstance(o, list) and "
                                "any(isinstance(x, str) and 'add(' in x for x in o) for o in gc.get_objects())"),
         TESTS, 3, False),
        # a secret exported in the parent's environment, read through /proc/<ppid>/environ
        ("parent environ", leak(f"leaked = {secret!r} in open('/proc/{pid}/environ', 'rb').read().decode()"), TESTS, 3, True),
        # the secret in our own environment
        ("own environ", leak(f"leaked = {secret!r} in str(os.environ)"), TESTS, 3, False),
        # a token file under the user's home
        ("token file", leak(f"leaked = {secret!r} in open({token!r}).read()"), TESTS, 3, True),
        # writing into the parent's run directory
        ("write run dir", leak(f"open({run_dir!r} + '/pwned', 'w').write('x')\nleaked = True"), TESTS, 3, True),
        # signalling the parent
        ("signal parent", leak(f"os.kill({pid}, signal.SIGUSR1)\nleaked = True"), TESTS, 3, True),
        # a TCP port the parent listens on at 127.0.0.1
        ("tcp loopback", leak(f"socket.create_connection(('127.0.0.1', {port}), timeout=1).close()\nleaked = True"),
         TESTS, 3, True),
        # the judge's descriptors and memory (it is not dumpable)
        ("judge descriptors", leak("leaked = bool(os.listdir(f'/proc/{os.getppid()}/fd'))"), TESTS, 3, False),
        # capabilities left in the sandbox (they would allow remounting its read-only view)
        ("capabilities", leak("leaked = [l for l in open('/proc/self/status') if l.startswith('CapEff')][0].split()[1] "
                              "!= '0000000000000000'"), TESTS, 3, False),
        # a user namespace of its own inside the sandbox (there it could mount a tmpfs of any size)
        ("nested user namespace", leak("import ctypes\nleaked = ctypes.CDLL(None, use_errno=True).unshare(0x10000000) == 0"),
         TESTS, 3, True),
        # 100 MB into each writable place, in files under the per-file limit (RLIMIT_FSIZE, 64 KB): bounded
        # only by Limits.disk_bytes (64 MB); the files removed either way
        *((f"fill {where}", leak(f"d = {where!r} + f'/grpo-lite-fill-{{os.getpid()}}'\nos.mkdir(d)\ntry:\n"
                                 "    for i in range(1700):\n        with open(f'{d}/{i}', 'wb') as f:\n"
                                 "            f.write(b'x' * 60_000)\n    leaked = True\nfinally:\n"
                                 "    for n in os.listdir(d):\n        os.remove(f'{d}/{n}')\n    os.rmdir(d)"), TESTS, 3, True)
          for where in ("/tmp", "/dev/shm", ".")),
        # the same into /dev (bubblewrap's own is a tmpfs of half the RAM): read-only there; without a
        # sandbox only root may write it, so no control
        ("fill /dev", leak("try:\n    for i in range(1700):\n        with open(f'/dev/grpo-lite-fill-{i}', 'wb') as f:\n"
                           "            f.write(b'x' * 60_000)\n    leaked = True\nfinally:\n    for i in range(1700):\n"
                           "        try:\n            os.remove(f'/dev/grpo-lite-fill-{i}')\n        except OSError:\n"
                           "            break"), TESTS, 3, False),
        # ten children that sleep: none is left afterwards
        ("ten sleepers", f"import subprocess\nfor _ in range(10):\n    subprocess.Popen(['sleep', '{ctx['nap']}'])\n" + GOOD,
         TESTS, 3, False),
    ]  # fmt: skip
    return [dict(zip(("id", "code", "tests", "passed", "control"), row, strict=True)) for row in table]


def processes_with(marker: str) -> int:
    """Processes whose command line contains ``marker`` (read from /proc)."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    count += marker.encode() in f.read().replace(b"\0", b" ")
            except OSError:
                pass
    return count


def main(isolation: str) -> dict:
    sandbox = load_sandbox()
    signals: list[int] = []
    signal.signal(signal.SIGUSR1, lambda n, _: signals.append(n))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    home = Path(os.environ["HOME"])
    token = home / ".cache" / f"grpo-lite-test-{os.getpid()}" / "token"
    token.parent.mkdir(parents=True, exist_ok=True)
    token.write_text(os.environ["HF_TOKEN"])
    run_dir = tempfile.mkdtemp(prefix="grpo-lite-run-")
    ctx = {"secret": os.environ["HF_TOKEN"], "pid": os.getpid(), "port": listener.getsockname()[1],
           "token": str(token), "run_dir": run_dir, "nap": f"{30 + os.getpid() % 1000 / 1000:.3f}"}  # fmt: skip
    limits = sandbox.Limits(cpu_seconds=2, isolation=isolation)  # test_sandbox.LIMITS: the default wall clock
    report: dict = {"capabilities": sandbox.capabilities(isolation).protections, "cases": {}}
    for case in cases(ctx):
        start = time.monotonic()
        result = sandbox.run_tests(case["code"], case["tests"], limits)
        seconds = time.monotonic() - start
        time.sleep(0.2)
        accepted = 0
        try:
            while True:
                listener.accept()[0].close()
                accepted += 1
        except BlockingIOError:
            pass
        report["cases"][case["id"]] = {
            "passed": result.passed,
            "expected": case["passed"],
            "seconds": round(seconds, 2),
            "output_bytes": len(result.output),
            "signals": len(signals),
            "accepted": accepted,
            "run_dir_files": sorted(os.listdir(run_dir)),
            "sleepers_left": processes_with(f"sleep {ctx['nap']}"),
            "control": None,
        }
        if case["control"]:  # the probe alone, with no sandbox: it must leak
            probe = case["code"].split("def add")[0] + "print(leaked)\n"
            with tempfile.TemporaryDirectory() as bare:  # a folder of its own to write in (fill .)
                control = subprocess.run(
                    [sys.executable, "-c", probe], capture_output=True, text=True, cwd=bare
                )
            report["cases"][case["id"]]["control"] = control.stdout.strip()
            for path in Path(run_dir).iterdir():
                path.unlink()
            time.sleep(0.1)
            while True:
                try:
                    listener.accept()[0].close()
                except BlockingIOError:
                    break
        signals.clear()
    token.unlink()
    token.parent.rmdir()
    os.rmdir(run_dir)
    return report


RESOURCE_LIMITS = {"memory_bytes": 256 << 20, "disk_bytes": 32 << 20, "cpu_seconds": 4}
_HOLD = (
    "    time.sleep(4)\n    os._exit(0)\ntime.sleep(2)\n"  # children hold what they took; the parent waits
)


def resource_cases() -> list[tuple[str, str]]:
    """(id, code): attacks on a run's memory, disk and cleanup. Each would hold far more than
    RESOURCE_LIMITS give (256 MiB for the run, 32 MiB each writable place) if only per-process limits
    held; the watcher outside says what the host saw."""
    return [
        # eight children under the per-process limit, 1.2 GB together
        ("fork and allocate", "import os, time\nfor i in range(8):\n  if os.fork() == 0:\n    b = b'x' * (150 << 20)\n"
         + _HOLD + GOOD),
        # memory files in sixteen processes, as many and as large as each may make
        ("memory files", "import os, time\nfor i in range(16):\n  if os.fork() == 0:\n    for j in range(64):\n"
         "      try:\n        fd = os.memfd_create('m')\n        os.write(fd, b'x' * 65536)\n"
         "      except OSError:\n        break\n" + _HOLD + GOOD),
        # every writable place filled, then 200 MB of memory: tmpfs pages are memory too
        ("tmpfs and memory", "import os, time\nfor d in ('/tmp', '/dev/shm', '.'):\n  for i in range(600):\n"
         "    try:\n      open(f'{d}/f{i}', 'wb').write(b'x' * 60000)\n    except OSError:\n      break\n"
         "b = b'x' * (200 << 20)\ntime.sleep(2)\n" + GOOD),
        # a nested user namespace, to mount a tmpfs of any size and fill it
        ("nested namespace tmpfs", "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
         "if libc.unshare(0x10000000 | 0x00020000) == 0:\n  os.makedirs('/tmp/big', exist_ok=True)\n"
         "  libc.mount(b'tmpfs', b'/tmp/big', b'tmpfs', 0, b'size=2g')\n  for i in range(5000):\n"
         "    open(f'/tmp/big/{i}', 'wb').write(b'x' * 60000)\n" + GOOD),
        # a tree 1,500 folders deep, and many small files
        ("deep tree", "import os\nfor _ in range(1500):\n  os.mkdir('d' * 100)\n  os.chdir('d' * 100)\n"
         "os.chdir('/work')\n" + GOOD),
        ("many files", "import os\nfor i in range(100000):\n  try:\n    open(f'/tmp/m{i}', 'w').close()\n"
         "  except OSError:\n    break\n" + GOOD),
        # a writer that leaves the session and goes on writing while the run is cleaned up
        ("writer racing the cleanup", "import os, time\nif os.fork() == 0:\n  os.setsid()\n  i = 0\n  while True:\n"
         "    i += 1\n    try:\n      open(f'w{i % 400}', 'wb').write(b'x' * 60000)\n    except OSError:\n"
         "      time.sleep(0.001)\n" + GOOD),
    ]  # fmt: skip


def _available() -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))


def watched(call, seconds: float = 0.004):  # type: ignore[no-untyped-def]
    """``call()``'s result, and the most memory and disk the host lost while it ran (bytes, from
    MemAvailable and the temp folder's free space, sampled every ``seconds`` by another thread)."""
    import threading

    folder = tempfile.gettempdir()
    base_memory, base_disk = _available(), shutil_free(folder)
    low = {"memory": base_memory, "disk": base_disk}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(seconds):
            low["memory"] = min(low["memory"], _available())
            low["disk"] = min(low["disk"], shutil_free(folder))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = call()
    finally:
        done.set()
        sampler.join()
    return result, base_memory - low["memory"], base_disk - low["disk"], base_disk


def shutil_free(folder: str) -> int:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def main_resources(isolation: str) -> dict:
    sandbox = load_sandbox()
    limits = sandbox.Limits(isolation=isolation, **RESOURCE_LIMITS)
    report: dict = {"budget": sandbox.capabilities(isolation).budget, "limits": RESOURCE_LIMITS, "cases": {}}
    folder = tempfile.gettempdir()
    for name, code in [*resource_cases(), ("honest", GOOD)]:
        before = {p for p in os.listdir(folder) if p.startswith("grpo-lite-sandbox-")}
        result, memory, disk, base_disk = watched(lambda code=code: sandbox.run_tests(code, TESTS, limits))
        time.sleep(0.3)
        report["cases"][name] = {
            "passed": result.passed, "stopped_by": result.stopped_by, "peak_memory": result.peak_memory,
            "host_memory": memory, "host_disk": disk, "disk_left": base_disk - shutil_free(folder),
            "folders_left": sorted({p for p in os.listdir(folder) if p.startswith("grpo-lite-sandbox-")} - before),
            "processes_left": processes_with("/work/main.py"),
        }  # fmt: skip
    return report


if __name__ == "__main__":
    if sys.argv[2:] == ["--resources"]:
        print(json.dumps(main_resources(sys.argv[1])))
    else:
        print(json.dumps(main(sys.argv[1])))
