"""The local launcher and the deployment's health probe against a real tritonserver (issue 17):

- docker/probe.py (the exec probe shipped in the image) passes on a healthy server, fails within
  its period once a Python backend stub is killed (Triton's own health endpoints keep saying
  200), and its cost is measured;
- `python -m local_triton.server` restarts tritonserver when a stub dies (issue 26), and stops
  its tritonserver on SIGTERM and SIGHUP as on Ctrl-C: no orphan left in its own session, ports
  free.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from export.settings import PROBE_TIMEOUT_S
from local_triton.server import free_port

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "docker" / "probe.py"
PROBE_PERIOD_S = 2.0


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                out.append(int(entry.name))
    return out


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = [
            line for line in (Path("/proc") / str(pid) / "status").read_text().splitlines() if line.startswith("State:")
        ]
    except OSError:
        return False
    return bool(state) and "Z" not in state[0].split()[1]


def _port_free(port: int) -> bool:
    """Nothing listens: a new server could bind it (SO_REUSEADDR, as Triton's servers set it, so
    TIME_WAIT entries left by the probe's closed connections do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _run_probe(http_port: int) -> tuple[int, str, float]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(PROBE), "--url", f"http://127.0.0.1:{http_port}", "--timeout", str(PROBE_TIMEOUT_S)],
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT_S + 10,
    )
    return proc.returncode, proc.stdout.strip(), time.perf_counter() - start


class Launcher:
    """`python -m local_triton.server` as a user starts it; its output collected by a thread."""

    def __init__(self, repo: Path):
        self.ports = [free_port(), free_port(), free_port()]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "local_triton.server",
                str(repo),
                "--http-port",
                str(self.ports[0]),
                "--grpc-port",
                str(self.ports[1]),
                "--metrics-port",
                str(self.ports[2]),
                "--probe-period",
                str(PROBE_PERIOD_S),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if any(text in line for line in self.lines):
                return time.monotonic() - start
            assert self.proc.poll() is None, "".join(self.lines)[-3000:]
            time.sleep(0.1)
        raise AssertionError(f"no {text!r} after {timeout}s:\n" + "".join(self.lines)[-3000:])

    def server_pid(self) -> int:
        [pid] = [p for p in _children(self.proc.pid) if "tritonserver" in _cmdline(p)]
        return pid

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def launcher(python_repo):
    started = Launcher(python_repo)
    yield started
    started.kill()


def _stop_and_check(launcher: Launcher, signum: int, exit_code: int = 0) -> None:
    server = launcher.server_pid()
    assert _alive(server) and not any(_port_free(p) for p in launcher.ports)
    launcher.proc.send_signal(signum)
    try:
        code = launcher.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:  # say where the launcher was (CI saw one such stop once, under load)
        launcher.proc.kill()
        tail = "".join(launcher.lines)[-3000:]
        raise AssertionError(f"launcher still running 60 s after the signal:\n{tail}") from None
    assert code == exit_code, "".join(launcher.lines)[-3000:]
    deadline = time.monotonic() + 10
    while _alive(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(server), f"tritonserver {server} left running after {signal.Signals(signum).name}"
    assert all(_port_free(p) for p in launcher.ports), subprocess.run(
        ["ss", "-tanp"], capture_output=True, text=True
    ).stdout[-3000:]
    assert any("stopping tritonserver" in line for line in launcher.lines)


def _stubs(server_pid: int, model: str = "") -> list[int]:
    return [
        p
        for p in _children(server_pid)
        if "triton_python_backend_stub" in _cmdline(p) and f"/{model}" in _cmdline(p) and _alive(p)
    ]


def test_probe_sees_a_dead_stub_that_health_endpoints_miss(python_repo, tmp_path):
    """A bare server (no launcher to heal it): with the cross-encoder's stubs killed, Triton's
    own ready endpoint still says 200; the probe fails within its timeout."""
    from tests.conftest import start_server

    server = start_server(python_repo, tmp_path)
    try:
        http = server.http_port
        # Healthy: the probe passes; its cost, as the kubelet pays it (a python3 process per run).
        runs = [_run_probe(http) for _ in range(5)]
        assert all(code == 0 for code, _, _ in runs), runs
        exec_ms = sorted(seconds for _, _, seconds in runs)[2] * 1000
        sys.path.insert(0, str(PROBE.parent))
        import probe as probe_module  # noqa: E402 - the same file, in process: the request alone

        start = time.perf_counter()
        for _ in range(20):
            assert probe_module.probe(f"http://127.0.0.1:{http}", timeout_s=PROBE_TIMEOUT_S)[0]
        request_ms = (time.perf_counter() - start) / 20 * 1000
        print(
            f"\nprobe cost: {exec_ms:.0f} ms per exec (median of 5, python3 start included), "
            f"{request_ms:.1f} ms per request (mean of 20, tiny stand-in model on CPU)"
        )
        # Kill the cross-encoder's Python stubs, as the OOM killer did once.
        cross_encoders = _stubs(server.process.pid, "cross_encoder")
        assert cross_encoders  # one stub per instance (settings.CROSS_ENCODER_INSTANCES)
        for stub in cross_encoders:
            os.kill(stub, signal.SIGKILL)
        # Triton's own health endpoint still says ready: the reason the probe exists.
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=5) as response:
            ready_status = response.status
        assert ready_status == 200
        code, reason, seconds = _run_probe(http)
        assert code == 1, reason
        assert seconds < PROBE_TIMEOUT_S + 2
        print(f"after the stub kill: /v2/health/ready {ready_status}; probe exit {code} in {seconds:.2f}s: {reason}")
    finally:
        server.stop(timeout=5)


def test_launcher_heals_a_dead_stub(launcher):
    """Issue 26 finding 4: with one of two cross-encoder stubs dead, about half of all requests
    failed for as long as anyone watched while the health endpoints said 200 and the probe
    flapped. The launcher watches the stubs and restarts tritonserver: measured here, the
    seconds from the kill until requests succeed again, every one of them."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from common.raw_rerank import rerank_inputs

    launcher.wait_for("ready: model `rerank` is serving", 300)
    url = f"127.0.0.1:{launcher.ports[1]}"
    old_server = launcher.server_pid()
    [victim, *_] = _stubs(old_server, "cross_encoder")
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    launcher.wait_for("restarting tritonserver", 30)
    assert any("cross_encoder" in line and "died" in line for line in launcher.lines), launcher.lines[-5:]
    # Every request succeeds again: 20 in a row (with one stub of two dead, about half failed).
    streak, failures, deadline = 0, 0, time.monotonic() + 300
    while streak < 20:
        assert time.monotonic() < deadline, "".join(launcher.lines)[-3000:]
        client = grpcclient.InferenceServerClient(url)
        try:
            out = client.infer("rerank", rerank_inputs(["q"] * 4, ["a", "b", "c", "d"]))
            assert out.as_numpy("score").shape == (4, 1)
            streak += 1
            if streak == 1:
                healed_s = time.monotonic() - killed_at
        except InferenceServerException:
            streak, failures = 0, failures + 1
            time.sleep(0.2)
        finally:
            client.close()
    print(f"\ndead stub -> every request succeeding again: {healed_s:.1f} s ({failures} failed meanwhile)")
    assert launcher.server_pid() != old_server
    assert not _alive(old_server)
    _stop_and_check(launcher, signal.SIGTERM)


def test_launcher_stops_server_on_sighup(launcher):
    launcher.wait_for("ready: model `rerank` is serving", 300)
    _stop_and_check(launcher, signal.SIGHUP)


def test_sigterm_under_traffic_fails_nothing_a_client_cannot_retry(launcher):
    """The local analogue of a rolling update: requests are in flight when the launcher gets
    SIGTERM. Measured on Triton 2.51: it drains the ensemble, but refuses the length router's
    in-server (BLS) calls once shutdown began ("Server not ready"), so a request caught inside
    the router fails. What must hold: every failure is one our client types as retryable
    (ServerUnavailableError: it goes to another endpoint), never a wrong or partial answer. In a
    cluster the chart's preStop pause takes the pod out of the Service before SIGTERM, so
    normally nothing is in flight."""
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from common.raw_rerank import rerank_inputs
    from reranker_client.errors import ServerUnavailableError
    from reranker_client.tritonclient_adapter import translate

    launcher.wait_for("ready: model `rerank` is serving", 300)
    url = f"127.0.0.1:{launcher.ports[1]}"
    passages = [" ".join(["the tide rises and falls twice a day"] * 40)] * 64  # a few hundred ms each on CPU
    outcomes: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def caller() -> None:
        client = grpcclient.InferenceServerClient(url)
        while not stop.is_set():
            try:
                result = client.infer("rerank", rerank_inputs(["why are there tides?"] * 64, passages))
                logits = result.as_numpy("logit")
                outcome = "ok" if logits.shape == (64, 1) and np.isfinite(logits).all() else "bad answer"
            except InferenceServerException as err:
                typed = translate(err)
                outcome = "retryable" if isinstance(typed, ServerUnavailableError) else f"lost: {err}"
            with lock:
                outcomes.append(outcome)
            if outcome != "ok":
                return

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while outcomes.count("ok") < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    launcher.proc.send_signal(signal.SIGTERM)  # requests are in flight now
    assert launcher.proc.wait(timeout=90) == 0, "".join(launcher.lines)[-3000:]
    stop.set()
    for t in threads:
        t.join(timeout=60)
    print(f"\noutcomes around SIGTERM: {outcomes.count('ok')} ok, {outcomes.count('retryable')} retryable failures")
    assert outcomes.count("ok") >= 4
    assert all(o in ("ok", "retryable") for o in outcomes), outcomes


def test_stub_watch_counts_instances_the_server_should_run(server):
    """Review of issue 26: a stub killed after its model loaded but before the server was ready
    was never in the watch's snapshot, so it was never healed. The watch now compares the stubs
    it finds with the Python-backend instances the server's own configs declare."""
    sys.path.insert(0, str(ROOT / "docker"))
    import stub_watch

    expected = stub_watch.expected_stubs(f"http://{server.http_url}")
    found = {}
    for stub in stub_watch.stubs(server.process.pid):
        found[stub.model] = found.get(stub.model, 0) + 1
    assert expected == found and expected.get("cross_encoder", 0) >= 1, (expected, found)
    assert "rerank" not in expected  # the ensembles run no stub
    assert stub_watch.StubWatch(server.process.pid, expected).dead() == []
    # One instance more than is running: reported as gone before the server was ready.
    short = dict(expected, cross_encoder=expected["cross_encoder"] + 1)
    [missing] = stub_watch.StubWatch(server.process.pid, short).dead()
    assert missing.model == "cross_encoder" and "gone before the server was ready" in stub_watch.describe([missing])
