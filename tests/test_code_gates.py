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


def test_mypy_checks_the_arguments_of_client_calls(tmp_path):
    """The clients' calls take their parameters from one declaration through a ParamSpec
    (signatures.same_parameters): a caller's arguments are still type-checked."""
    caller = tmp_path / "caller.py"
    caller.write_text(
        "from reranker_client import AsyncRerankClient, RerankClient\n"
        "async def caller(client: AsyncRerankClient, sync: RerankClient) -> None:\n"
        "    reveal_type(await client.rerank('q', ['d'], top_k=2))\n"
        "    await client.rerank('q', ['d'], top_k='2')\n"
        "    sync.score_details([('q', 'd')], window_stride='8')\n"
    )
    proc = _run(
        str(BIN / "mypy"), "--config-file", str(ROOT / "pyproject.toml"), str(caller), cwd=ROOT / "client" / "src"
    )
    assert proc.returncode == 1, proc.stdout[-4000:]
    assert 'caller.py:3: note: Revealed type is "list[reranker_client.results.RerankResult]"' in proc.stdout
    assert 'caller.py:4: error: Argument "top_k" to "rerank" of "AsyncRerankClient"' in proc.stdout
    assert 'caller.py:5: error: Argument "window_stride" to "score_details" of "RerankClient"' in proc.stdout


def test_mypy_on_the_rest_of_the_project():
    proc = _run(
        str(BIN / "mypy"), "common", "export", "local_triton", "loadtest", "evaluation", "benchmarks", "rest/src"
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
