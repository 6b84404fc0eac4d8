"""The program that runs inside the code sandbox (standard library only; copied into each run's directory).

It is two processes that share nothing but a pair of pipes:

- the **judge** (the process this program starts as) reads the tests, holds the only channel to the
  trainer and runs the tests. It never runs model-written code.
- the **solution** process is forked from the judge *before* the tests are read, so no copy of
  them is in its memory, and the tests file is deleted before the solution's code starts. It runs
  the model-written code, then answers the judge's requests ("call ``add`` with ``(1, 2)``") with
  plain data.

Values cross the pipes as tagged JSON built only from exact builtin types (``None``, ``bool``,
``int``, ``float``, ``complex``, ``str``, ``bytes``, ``list``, ``tuple``, ``dict``, ``set``,
``frozenset``). Anything else the solution returns — a subclass of ``int`` or ``str``, an object
whose ``__eq__`` always says yes — stays in the solution process and reaches the judge as an opaque
handle that equals nothing but itself and has no truth value. The judge's own ``==``, ``sorted``,
``len`` … run on genuine values in a process the solution cannot reach (it is not dumpable, so it
cannot be traced or have its memory or descriptors read), so a test passes only when the values
really are what the test expects, and printing markers, exiting early, rebinding the tests' names
or builtins, or introspecting frames changes nothing but the solution's own process.

With ``--confine SPEC`` it first builds the namespaces itself (user, mount, PID, network, IPC, UTS;
a read-only view of the interpreter and ``/usr``, a private ``/tmp``, a fresh ``/proc``) when
bubblewrap is not installed, then drops every capability and goes on as the judge.

The program is this folder, copied whole into each run's ``/work`` (``main.py`` the entry): the wire
format (``wire.py``), the solution process (``solver.py``), the judge (``judge.py``) and the
confinement without bubblewrap (``confine.py``). It runs with ``python -I -S``, so the folder is on
``sys.path`` only while those are imported: the judge's own imports (of modules the code named) never
see ``/work``, where the code may write files.
"""

from __future__ import annotations

import json
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # -I ignores PYTHONDONTWRITEBYTECODE; /work holds only the run's files
sys.path.insert(0, _HERE)
try:
    from confine import confine
    from judge import judge, run_without_namespaces
finally:
    sys.path.remove(_HERE)


def main(argv: list[str]) -> None:
    if argv[0] == "--confine":
        argv = confine(json.loads(argv[1]))
    results, limits = int(argv[0]), json.loads(argv[1])
    if limits.get("uid") is not None or limits.get("plain"):
        run_without_namespaces(results, limits)
    else:
        judge(results, limits)
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
