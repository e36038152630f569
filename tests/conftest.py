"""Shared fixtures: a stand-in model built offline, its exported repository, and a real
tritonserver serving it for the whole session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")  # no network here: its retries cost seconds

from common import standin_model  # noqa: E402
from export.__main__ import main as export_main  # noqa: E402
from local_triton.server import TritonServer, free_port  # noqa: E402,F401 - free_port: shared with tests


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long or heavy; run with make test-slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with `make test-slow`")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return standin_model.build(tmp_path_factory.mktemp("models") / "tiny", "tiny")


@pytest.fixture(scope="session")
def python_repo(tiny_model, tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("repos") / "python_fp32"
    assert (
        export_main(["--model", str(tiny_model), "--repo", str(repo), "--backend", "python", "--precision", "fp32"])
        == 0
    )
    return repo


@pytest.fixture(scope="session")
def fp16_repo(tiny_model, tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("fp16") / "repo"
    assert (
        export_main(["--model", str(tiny_model), "--repo", str(repo), "--backend", "python", "--precision", "fp16"])
        == 0
    )
    return repo


def start_server(repo: Path, log_dir: Path, *extra: str) -> TritonServer:
    server = TritonServer(
        repo,
        free_port(),
        free_port(),
        free_port(),
        list(extra),
        log_path=log_dir / f"tritonserver-{os.getpid()}-{free_port()}.log",
    )
    return server.start(timeout=240)


@pytest.fixture(scope="session")
def server(python_repo, tmp_path_factory):
    srv = start_server(python_repo, tmp_path_factory.mktemp("logs"))
    yield srv
    srv.stop()
