"""The code gates every change passes: ruff (lint and format) over the repository, and mypy
(strict on the client package, which ships py.typed; standard elsewhere). Settings live in the
root pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(*cmd: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_ruff_lint_passes():
    proc = _run(str(BIN / "ruff"), "check", ".")
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_ruff_format_is_applied():
    proc = _run(str(BIN / "ruff"), "format", "--check", ".")
    assert proc.returncode == 0, "run `ruff format .`:\n" + proc.stdout[-4000:]


def test_mypy_strict_on_the_client():
    proc = _run(
        str(BIN / "mypy"),
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "-p",
        "reranker_client",
        cwd=ROOT / "client" / "src",
    )
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_mypy_on_the_rest_of_the_project():
    proc = _run(
        str(BIN / "mypy"), "common", "export", "local_triton", "loadtest", "evaluation", "benchmarks", "rest/src"
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
