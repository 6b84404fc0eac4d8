"""The built-in ``python`` tool: the model's code runs in ``rewards``' sandbox, never in this process.

Same isolation as ``rewards.code_unit_tests`` (namespaces, no network, a private filesystem, a uid of
its own, CPU/memory/process/output limits, a wall clock); ``rewards.sandbox.capabilities()`` says which
are in force on this machine.
"""

from __future__ import annotations

from rewards.sandbox import CodeResult, Limits, run_code


def python(code: str) -> str:
    """Run Python code in a sandbox and return what it prints (the value of a last bare expression is
    shown too; an exception shows its traceback). No network, no files outside a scratch folder.

    Args:
        code: the Python program to run.
    """
    return run_python(code, Limits()).output


def run_python(code: str, limits: Limits) -> CodeResult:
    """``python`` with the trainer's limits (time, output), and whether the code raised or timed out."""
    return run_code(code, limits)
