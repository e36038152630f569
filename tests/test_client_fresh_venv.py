"""The client installed alone, in a fresh venv, with the newest tritonclient and numpy 2, against
the local server: what a RAG app that already uses numpy 2 gets from `pip install
"triton-reranker-client[http]"`. Also: no torch/transformers pulled in, the CLI is installed.

The venv's third-party packages come from PyPI once and are cached under runs/, keyed by the
client's pyproject.toml, the requirement below and the Python version, so reruns take seconds;
the client itself is reinstalled from the working tree every run (no network)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from common import calibration_texts
from common.raw_rerank import raw_rerank

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "client"
# What an app with numpy 2 asks for; tritonclient is left to pip (the newest that installs here).
REQUIREMENTS = ["numpy>=2", "setuptools>=68"]
MIN_TRITONCLIENT_FOR_NUMPY2 = (2, 56)


def _venv_dir() -> Path:
    key = hashlib.sha256(
        (CLIENT / "pyproject.toml").read_bytes() + json.dumps(REQUIREMENTS).encode() + sys.version.encode()
    ).hexdigest()[:16]
    return ROOT / "runs" / f"venv-client-latest-{key}"


def _pip(python: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def _pypi_reachable() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/tritonclient/", timeout=15).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def fresh_python() -> Path:
    venv = _venv_dir()
    python = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        if not _pypi_reachable():
            pytest.skip("PyPI is unreachable: cannot build the fresh venv with the newest tritonclient and numpy 2")
        building = venv.with_name(venv.name + f".building-{os.getpid()}")
        shutil.rmtree(building, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(building)], check=True)
        # The client and its dependencies as a user gets them (no pins: the newest that fit).
        pip = _pip(building / "bin" / "python", f"{CLIENT}[http]", *REQUIREMENTS)
        assert pip.returncode == 0, pip.stderr[-3000:]
        (building / ".installed").write_text("\n".join(REQUIREMENTS) + "\n")
        shutil.rmtree(venv, ignore_errors=True)
        building.rename(venv)  # atomic: a half-built venv is never taken for a cached one
    # The client from the working tree, every run: no build isolation, no network.
    pip = _pip(python, "--no-deps", "--no-build-isolation", "--force-reinstall", str(CLIENT), timeout=300)
    assert pip.returncode == 0, pip.stderr[-3000:]
    return python


SMOKE = textwrap.dedent("""
    import asyncio, importlib.metadata as md, importlib.util, json, sys
    import numpy
    import reranker_client
    from reranker_client import AsyncRerankClient, RerankClient

    grpc_url, http_url, query, docs, expected = json.loads(sys.argv[1])
    report = {"numpy": numpy.__version__, "tritonclient": md.version("tritonclient"),
              "protobuf": md.version("protobuf"), "client": reranker_client.__version__,
              "torch": importlib.util.find_spec("torch") is not None,
              "transformers": importlib.util.find_spec("transformers") is not None}

    def check(results):
        assert sorted(r.index for r in results) == list(range(len(docs)))
        assert max(abs(r.score - expected[r.index]) for r in results) < 1e-5

    for protocol, url in (("grpc", grpc_url), ("http", http_url)):
        with RerankClient(url, protocol=protocol) as client:
            check(client.rerank(query, docs))

        async def run():
            async with AsyncRerankClient(url, protocol=protocol) as client:
                return await client.rerank(query, docs)
        check(asyncio.run(run()))
    print(json.dumps(report))
""")


def test_client_alone_with_newest_tritonclient_and_numpy2(fresh_python, server):
    query, docs = calibration_texts.hundred_passages()
    docs = docs[:40]
    expected = raw_rerank(server.grpc_url, [query] * len(docs), docs)["score"].tolist()
    args = json.dumps([server.grpc_url, server.http_url, query, docs, expected])
    run = subprocess.run([str(fresh_python), "-c", SMOKE, args], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"\nfresh venv: {report}")
    assert int(report["numpy"].split(".")[0]) >= 2
    assert tuple(int(x) for x in report["tritonclient"].split(".")[:2]) >= MIN_TRITONCLIENT_FOR_NUMPY2
    assert not report["torch"] and not report["transformers"]
    pyproject_version = next(
        line.split('"')[1]
        for line in (CLIENT / "pyproject.toml").read_text().splitlines()
        if line.startswith("version")
    )
    assert report["client"] == pyproject_version  # __version__ single-sourced from the metadata
    assert (fresh_python.parent / "rerank-client").exists()
