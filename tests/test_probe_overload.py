"""Overload sheds load, it does not fail probes (issue 27 item 5), and gRPC connections are
recycled (item 9): against the real local tritonserver (2.51, the binary in nvidia-pytriton).

A repository of two deliberately slow one-instance Python models with the probe's interface
(query, passage -> score), configured from typed code like every config here:
- `rerank_queue_full`: a queue of one request, so a third concurrent request hits
  Triton's "Exceeds maximum queue size";
- `rerank_queue_timeout`: a 300 ms queue timeout that the request may not override, so a request
  waiting behind a busy instance gets Triton's "Request timeout expired".
docker/probe.py must read both as busy (exit 0), a real answer as healthy, a refused connection
as failed. The same server runs with --grpc-max-connection-age so a connected gRPC channel gets
a GOAWAY and reconnects.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from local_triton.server import free_port
from tests.conftest import start_server

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "docker" / "probe.py"
BUSY_S = 3.0  # how long one execute holds the only instance (the probe lands well inside it)
AGE_MS, GRACE_MS = 1500, 500

MODEL_PY = f"""
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        time.sleep({BUSY_S})  # the instance is busy: the next requests queue
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("score", np.full((1, 1), 0.5, np.float32))])
            for _ in requests
        ]
"""


def _config(name: str, policy: mc.ModelQueuePolicy) -> str:
    config = mc.ModelConfig(
        name=name,
        backend="python",
        max_batch_size=1,
        input=[
            mc.ModelInput(name="query", data_type=mc.TYPE_STRING, dims=[1]),
            mc.ModelInput(name="passage", data_type=mc.TYPE_STRING, dims=[1]),
        ],
        output=[mc.ModelOutput(name="score", data_type=mc.TYPE_FP32, dims=[1])],
        instance_group=[mc.ModelInstanceGroup(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)],
        dynamic_batching=mc.ModelDynamicBatching(default_queue_policy=policy),
    )
    return text_format.MessageToString(config)


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("slow_repo")
    policies = {
        "rerank_queue_full": mc.ModelQueuePolicy(max_queue_size=1, timeout_action=mc.ModelQueuePolicy.REJECT),
        "rerank_queue_timeout": mc.ModelQueuePolicy(
            timeout_action=mc.ModelQueuePolicy.REJECT,
            default_timeout_microseconds=300_000,
            allow_timeout_override=False,  # the probe's own (longer) deadline does not apply
        ),
    }
    for name, policy in policies.items():
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(_config(name, policy))
        (repo / name / "1" / "model.py").write_text(MODEL_PY)
    server = start_server(
        repo,
        tmp_path_factory.mktemp("logs"),
        f"--grpc-max-connection-age={AGE_MS}",
        f"--grpc-max-connection-age-grace={GRACE_MS}",
    )
    yield server
    server.stop()


def _probe(url: str, model: str, timeout: float = 8) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, str(PROBE), f"--url={url}", f"--model={model}", f"--timeout={timeout}"],
        capture_output=True,
        text=True,
        timeout=timeout + 10,
    )
    return proc.returncode, proc.stdout.strip()


def _occupy(url: str, model: str, count: int) -> list[threading.Thread]:
    """count requests in flight at once (the first runs, the others queue); errors ignored."""
    sys.path.insert(0, str(PROBE.parent))
    import probe  # docker/probe.py: the same request body

    def one():
        request = urllib.request.Request(
            f"{url}/v2/models/{model}/infer", data=probe.request_body(30), headers={"Content-Type": "application/json"}
        )
        try:
            urllib.request.urlopen(request, timeout=30).read()
        except OSError:
            pass

    threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
        time.sleep(0.2)  # in order: the first is executing before the next arrives
    return threads


def test_probe_healthy_then_busy_when_the_queue_is_full(slow_server):
    url = f"http://{slow_server.http_url}"
    code, reason = _probe(url, "rerank_queue_full")
    assert code == 0 and reason.startswith("ok:"), reason
    threads = _occupy(url, "rerank_queue_full", 2)  # one executing, one filling the queue
    code, reason = _probe(url, "rerank_queue_full")
    assert code == 0 and reason.startswith("busy:") and "queue size" in reason.lower(), reason
    for thread in threads:
        thread.join(30)


def test_probe_busy_when_a_request_times_out_in_the_queue(slow_server):
    url = f"http://{slow_server.http_url}"
    threads = _occupy(url, "rerank_queue_timeout", 1)
    code, reason = _probe(url, "rerank_queue_timeout")
    assert code == 0 and reason.startswith("busy:") and "timeout" in reason.lower(), reason
    for thread in threads:
        thread.join(30)


def test_probe_fails_when_nothing_answers():
    code, reason = _probe(f"http://127.0.0.1:{free_port()}", "rerank", timeout=2)
    assert code == 1 and "refused" in reason.lower(), reason


def test_grpc_connections_get_a_goaway_and_reconnect(slow_server):
    """--grpc-max-connection-age: an idle-or-busy client connection is closed by the server
    after its age (GOAWAY: the channel drops to IDLE) and the next call reconnects, which is when
    grpc-go/grpc-java re-resolve the headless Service."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    states: list[grpc.ChannelConnectivity] = []
    channel = grpc.insecure_channel(slow_server.grpc_url)
    channel.subscribe(states.append, try_to_connect=True)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10).live
    ready_at = len(states)
    deadline = time.monotonic() + (AGE_MS + GRACE_MS) / 1000 * 3
    while time.monotonic() < deadline and grpc.ChannelConnectivity.IDLE not in states[ready_at:]:
        time.sleep(0.1)
    assert grpc.ChannelConnectivity.IDLE in states[ready_at:], states  # the server sent GOAWAY
    assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10).live  # reconnected
    # Connectivity callbacks arrive on gRPC's own thread, possibly after the call returned.
    deadline = time.monotonic() + 10
    while states.count(grpc.ChannelConnectivity.READY) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert states.count(grpc.ChannelConnectivity.READY) >= 2, states
    channel.close()


def _wait_idle(states, since: int, seconds: float) -> bool:
    import grpc

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if grpc.ChannelConnectivity.IDLE in states[since:]:
            return True
        time.sleep(0.1)
    return False


def test_proxy_recycles_grpc_connections(slow_server, tmp_path):
    """With the front proxy, clients hold their connection to nginx: its gRPC server block's
    keepalive_time (export/proxy_config.py) closes it after the age, at the end of a request,
    and the next call reconnects. Real nginx, the generated config with a 1 s age."""
    import shutil
    import signal

    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    from export.proxy_config import ProxySpec, render

    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    spec = ProxySpec(
        http_port=free_port(),
        grpc_port=free_port(),
        listen_address="127.0.0.1",
        triton_http=slow_server.http_url,
        triton_grpc=slow_server.grpc_url,
        state_dir=str(tmp_path),
        grpc_connection_age_s=1,
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(render(spec))
    process = subprocess.Popen(
        [nginx, "-c", str(conf), "-p", str(tmp_path), "-e", "stderr", "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        states: list = []
        channel = grpc.insecure_channel(f"127.0.0.1:{spec.grpc_port}")
        channel.subscribe(states.append, try_to_connect=True)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        deadline = time.monotonic() + 20
        while True:  # nginx starting
            try:
                assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=5).live
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        since = len(states)
        assert not _wait_idle(states, since, 0.5)  # young: kept open
        time.sleep(1.0)  # past the age; the next request is the connection's last
        assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=5).live
        assert _wait_idle(states, since, 5), states  # GOAWAY: the channel dropped to IDLE
        assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=5).live  # reconnected
        channel.close()
    finally:
        process.send_signal(signal.SIGQUIT)
        process.wait(20)
