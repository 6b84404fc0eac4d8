"""`make demo` / `make test` on a fresh machine: which torch build the Makefile installs first.

Without an NVIDIA GPU (no working `nvidia-smi`) it is the CPU build CI uses (from PyTorch's CPU
index), so a laptop does not download PyPI's multi-GB CUDA build; with one, requirements.txt as it
stands. `nvidia-smi` is faked here both ways; CI itself runs the CPU branch for real (`.ci/run`
goes through `make test`, and the Makefile refuses a CUDA build there)."""

import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAKE = shutil.which("make") or "make"


def make(*args: str, path: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH", "MAKEFLAGS", "MFLAGS")} | {"PATH": path}
    return subprocess.run([MAKE, "-s", "-C", str(ROOT), *args], env=env, capture_output=True, text=True)


@pytest.mark.parametrize(("exit_code", "build"), [(0, "pypi"), (9, "cpu")])
def test_the_torch_build_follows_whether_nvidia_smi_sees_a_gpu(tmp_path, exit_code, build):
    fake = tmp_path / "nvidia-smi"  # exit 9: installed, but no GPU or no driver (as nvidia-smi says)
    fake.write_text(f"#!/bin/sh\nexit {exit_code}\n")
    fake.chmod(0o755)
    out = make("torch-build", path=f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert (out.returncode, out.stdout.strip()) == (0, build), out.stderr


def test_no_nvidia_smi_at_all_means_the_cpu_build(tmp_path):
    (tmp_path / "echo").symlink_to(shutil.which("echo"))  # a PATH with echo only: no nvidia-smi anywhere
    out = make("torch-build", path=str(tmp_path))
    assert (out.returncode, out.stdout.strip()) == (0, "cpu"), out.stderr


def test_forcing_the_build_and_refusing_an_unknown_one(tmp_path):
    path = os.environ["PATH"]
    assert make("torch-build", "TORCH=pypi", path=path).stdout.strip() == "pypi"
    venv = tmp_path / "venv"
    out = make(f"VENV={venv}", "TORCH=cuda", f"{venv}/.installed", path=path)
    assert out.returncode != 0 and "TORCH must be cpu or pypi, got 'cuda'" in out.stderr
    assert not venv.exists()  # refused before anything was created


def test_the_cpu_index_is_used_only_when_it_answers(tmp_path):
    """An index that does not answer is asked once (10 s at most), not by pip for torch and each of
    its deps with pip's timeout: CI's network reaches its package mirror only."""
    import http.server
    import threading

    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "index.html").write_text("<a>torch-2.13.0+cpu</a>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        path, url = os.environ["PATH"], f"http://127.0.0.1:{server.server_address[1]}"
        assert make("torch-from", f"TORCH_CPU_INDEX={url}", path=path).stdout.strip() == "cpu-index"
        assert make("torch-from", f"TORCH_CPU_INDEX={url}/nowhere", path=path).stdout.strip() == "configured"
    finally:
        server.shutdown()
        server.server_close()
    closed = make("torch-from", f"TORCH_CPU_INDEX={url}", path=path)  # nothing listens there now
    assert (closed.returncode, closed.stdout.strip()) == (0, "configured"), closed.stderr
