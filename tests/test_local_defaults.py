"""Local defaults (issue 13): the local server binds loopback unless asked, and Make variables
reach shell recipes only quoted and validated."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from local_triton.server import TritonServer

ROOT = Path(__file__).resolve().parent.parent


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent; picks the outgoing interface
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_local_server_binds_loopback_by_default(server):
    command = TritonServer(Path("repo")).command()
    assert {"--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"} <= set(command)
    assert server.is_ready()
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to probe")
    for port in (server.http_port, server.grpc_port, server.metrics_port):
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((address, port)) != 0, f"port {port} answers on {address}"


@pytest.mark.parametrize(
    "assignment",
    [
        "MAX_LENGTH=512; touch {marker}",
        "HOST=127.0.0.1; touch {marker}",
        "HTTP_PORT=8000 && touch {marker}",
        'REPO=runs/x"; touch {marker}; "',
        "MODEL=$(shell touch {marker})",
        "BACKEND=python`touch {marker}`",
    ],
)
@pytest.mark.parametrize("target", ["export", "serve", "demo"])
def test_make_refuses_shell_in_variables(tmp_path, assignment, target):
    marker = tmp_path / "ran"
    proc = subprocess.run(
        ["make", "--no-print-directory", target, assignment.format(marker=marker)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "must be" in proc.stderr or "characters outside" in proc.stderr, proc.stderr
    assert not marker.exists()


def test_a_killed_server_leaves_no_shared_memory_behind(python_repo, tmp_path):
    """The Python backend's /dev/shm regions outlive a killed server (Triton never unlinks them;
    at ~100 MB each, every killed local server used to leak a few hundred MB of RAM until reboot).
    Each local server names its regions with its own prefix and `stop` removes them."""
    import os
    import signal

    from tests.conftest import start_server

    server = start_server(python_repo, tmp_path)
    regions = list(Path("/dev/shm").glob(f"{server.shm_prefix}*"))
    assert regions, "the Python backend created no region under this server's prefix"
    os.killpg(server.process.pid, signal.SIGKILL)  # a crash: nothing gets to clean up
    server.process.wait()
    assert all(region.exists() for region in regions)
    server.stop()
    assert not list(Path("/dev/shm").glob(f"{server.shm_prefix}*"))
