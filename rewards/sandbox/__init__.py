"""Running model-written Python with its unit tests, isolated from the machine that trains on it.

On Linux with unprivileged user namespaces (current distributions, Colab) each run gets:

- its own **user, mount, PID, network, IPC and UTS namespaces** — through bubblewrap (``bwrap``,
  Debian/Ubuntu package ``bubblewrap``) when it is installed, else through the same setup made by
  :mod:`rewards.sandbox.harness` itself. The code sees a read-only ``/usr`` and interpreter, a private
  ``/tmp`` and working directory, a ``/proc`` of its own PID namespace (no other process, environment
  or descriptor of the host is visible or signalable), no network (not even the host's loopback), and
  nothing of the user's home, tokens or run directory;
- **no root**: started as root, each concurrent run switches to a uid of its own (61000…) before the
  namespaces are made, when some Python on the machine is readable by other users (the trainer's own,
  else ``/usr/bin/python3``); otherwise it keeps root's uid inside namespaces with no capabilities,
  and the process-count limit does not bind (root is exempt from it) — :func:`capabilities` says so;
- **limits**: wall clock (every process is killed: process group, PID namespace, cgroup), CPU time,
  **one memory budget for the whole run** (1 GiB: all its processes, memory files and tmpfs pages, in
  a cgroup of its own where one can be made, else watched from outside: :mod:`rewards.sandbox.budget`),
  processes, output (64 KiB kept), every writable place a small tmpfs; a scrubbed environment; stdin
  closed; a run that hits a limit keeps the tests it passed before (``RunResult.stopped_by`` says why);
- **a judge it cannot lie to** (``rewards/sandbox/harness/``): the tests run in a separate process
  on genuine builtin values; what the code returns crosses a pipe as plain data, so an object whose
  ``__eq__`` always says yes, a lying subclass of ``int``/``str``, shadowed builtins, names rebound in
  the tests' namespace, printing "PASSED", exiting early, reading the tests file and introspecting
  frames to forge results all fail. Out of scope: a solution that special-cases the test inputs it
  is called with (it sees its own arguments), and equality between two objects the solution itself
  made (only the solution's ``__eq__`` can answer that).

Without user namespaces (or with ``isolation="none"``) only the limits, the scrubbed environment,
the judge and — as root — a uid of its own and no network remain; that is said once, loudly, at
first use, and ``Limits(require_isolation=True)`` refuses to run code at all there. macOS: the same
minus the uid switch (untested). Windows: not supported (no ``resource`` module).

The package: :mod:`.limits` (settings and results), :mod:`.plan` (what this machine allows),
:mod:`.cgroups` and :mod:`.budget` (the run's memory and process budget), :mod:`.run` (one run),
:mod:`.cleanup` (a removal that cannot fail), ``harness/`` (the judge's program, run inside).
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import sys
import warnings

from rewards.sandbox.cgroups import hierarchy
from rewards.sandbox.limits import ISOLATIONS, CodeResult, Limits, RunResult, SandboxUnavailable
from rewards.sandbox.plan import PROTECTIONS, Capabilities, Plan, capabilities_of, plans_for
from rewards.sandbox.run import _run

__all__ = ["CodeResult", "Limits", "RunResult", "SandboxUnavailable", "capabilities", "drops_privileges",
           "run_code", "run_tests"]  # fmt: skip


@functools.cache
def _plan_and_capabilities(isolation: str) -> tuple[Plan | None, Capabilities, str]:
    """The first plan that runs a trivial program correctly here; its capabilities; why others failed."""
    failures = []
    for plan in plans_for(isolation):
        if plan.isolation == "bubblewrap" and not shutil.which("bwrap"):
            failures.append("bubblewrap: bwrap not installed (apt-get install bubblewrap)")
            continue
        if plan.isolation == "none" and not hasattr(os, "fork"):
            failures.append("none: this system cannot fork")
            continue
        result = _run("x = 1\n", ["assert x == 1", "assert x == 2"], Limits(wall_seconds=20), plan)
        if (result.passed, result.total) == (1, 2):
            return plan, capabilities_of(plan, "; ".join(failures), hierarchy()), ""
        failures.append(f"{plan.isolation}: {result.output.strip()[-300:] or 'no result'}")
    system = platform.system()
    empty = Capabilities(system, "unavailable", "-", sys.executable, dict.fromkeys(PROTECTIONS, False))
    return None, empty, "; ".join(failures)


def capabilities(isolation: str = "auto") -> Capabilities:
    """Which protections sandboxed code gets here (probed once by running a trivial program).

    >>> print(capabilities())  # doctest: +SKIP
    code sandbox on Linux: isolation=bubblewrap, runs as a uid of its own per run (61000+), ...
      [x] wall-clock kill of every process it starts
      ...
    """
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation={isolation!r}: expected one of {', '.join(ISOLATIONS)}")
    return _plan_and_capabilities(isolation)[1]


_warned: set[str] = set()


def _plan_for(limits: Limits) -> Plan:
    plan, caps, failures = _plan_and_capabilities(limits.isolation)
    if plan is None:
        raise SandboxUnavailable(
            f"code sandbox: isolation={limits.isolation!r} is not available here: {failures}"
        )
    if limits.require_isolation and plan.isolation == "none":
        raise SandboxUnavailable(
            f"code sandbox: Limits(require_isolation=True) and no namespaces can be made here "
            f"({failures}); not running model-written code.\n{caps}"
        )
    if caps.missing and str(caps) not in _warned:
        _warned.add(str(caps))
        warnings.warn(
            f"model-written code will run WITHOUT: {'; '.join(caps.missing)}.\n{caps}\n"
            "Install bubblewrap or enable unprivileged user namespaces; "
            "Limits(require_isolation=True) refuses to run code instead.",
            RuntimeWarning,
            stacklevel=3,
        )
    return plan


def drops_privileges() -> bool:
    """True when runs switch to an unprivileged uid of their own (we are root and some Python here is
    readable by other users)."""
    plan, _, _ = _plan_and_capabilities("auto")
    return plan is not None and plan.per_run_uid


def run_tests(code: str, tests: list[str], limits: Limits = Limits()) -> RunResult:
    """Run ``code`` then each test in ``tests`` in the sandbox; count the tests that passed."""
    return _run(code, tests, limits, _plan_for(limits))


# The program the sandbox runs for ``run_code``: the code itself is a string literal, executed in a
# namespace of its own; the flag it leaves is read by the judge, in a process the code cannot reach.
_RUNNER = """import ast, sys, traceback
grpo_lite_ok = False
def _main(source):
    tree = ast.parse(source, "<code>")
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    scope = {"__name__": "__main__", "__builtins__": __builtins__}
    exec(compile(tree, "<code>", "exec"), scope)
    if last is not None:
        value = eval(compile(ast.Expression(last.value), "<code>", "eval"), scope)
        if value is not None:
            print(repr(value))
try:
    _main(%r)
    grpo_lite_ok = True
except BaseException as error:
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == "<code>"]
    if frames:
        print("Traceback (most recent call last):\\n" + "".join(traceback.format_list(frames)), end="")
    print("".join(traceback.format_exception_only(type(error), error)), end="")
sys.stdout.flush()
"""


def run_code(code: str, limits: Limits = Limits()) -> CodeResult:
    """Run ``code`` in the sandbox as a program (same isolation and limits as :func:`run_tests`) and
    return what it printed. A last bare expression is printed as its ``repr``; an exception prints
    its traceback (from the code's own lines); the output is cut to ``limits.output_bytes``."""
    result = _run(_RUNNER % code, ["assert grpo_lite_ok is True"], limits, _plan_for(limits))
    return CodeResult(result.output, result.passed == 1, result.timed_out, result.stopped_by)
