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


def start_proxy(server: TritonServer, state: Path):
    """A real NGINX front proxy, rendered as the chart ships it, in front of `server` on
    loopback ports. Returns (spec, process)."""
    import shutil
    import subprocess
    import time
    import urllib.request

    from export.proxy_config import ProxySpec, render

    spec = ProxySpec(
        http_port=free_port(),
        grpc_port=free_port(),
        listen_address="127.0.0.1",
        triton_http=f"127.0.0.1:{server.http_port}",
        triton_grpc=f"127.0.0.1:{server.grpc_port}",
        state_dir=str(state),
    )
    conf = state / "nginx.conf"
    conf.write_text(render(spec))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    process = subprocess.Popen(
        [nginx, "-c", str(conf), "-p", str(state), "-e", "stderr", "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=open(state / "nginx.log", "wb"),  # noqa: SIM115 - nginx writes it while it runs
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{spec.http_port}/v2/health/ready", timeout=2)
            break
        except OSError:
            time.sleep(0.1)
    return spec, process


@pytest.fixture(scope="session")
def proxy(server, tmp_path_factory):
    """The session server behind the real front proxy (shared by the trust-boundary and
    hostile-request tests)."""
    import signal

    spec, process = start_proxy(server, tmp_path_factory.mktemp("nginx"))
    yield spec
    process.send_signal(signal.SIGQUIT)  # graceful stop of this nginx master and its worker
    process.wait(20)


@pytest.fixture(scope="module")
def rest(server):
    """The REST service (rest/) in front of the session server, one per test module
    (tests/test_rest.py, tests/test_rest_compat.py)."""
    from tests.rest_helpers import rest_service

    with rest_service(server.grpc_url) as url:
        yield url


@pytest.fixture(scope="session")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    """Every chart values file rendered and validated by the real tools (deploy/validate.py in
    .venv-deploy: helm, strict kubernetes-validate, checkov, yamllint), once per session:
    {variant: [objects]}."""
    import subprocess

    import yaml

    root = Path(__file__).resolve().parent.parent
    out = tmp_path_factory.mktemp("rendered")
    proc = subprocess.run(
        [str(root / ".venv-deploy" / "bin" / "python"), "deploy/validate.py", str(out)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    return {p.stem: [d for d in yaml.safe_load_all(p.read_text()) if d] for p in sorted(out.glob("*.yaml"))}
