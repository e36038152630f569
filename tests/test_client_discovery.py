"""Client-side gRPC load balancing (issue 17): `dns:///host:port` makes every address the name
resolves to an endpoint and re-resolves it, so pods the autoscaler adds behind the chart's
headless Service get traffic. Real client, real server; the resolver hook changes DNS answers."""

from __future__ import annotations

import socket
import time

import pytest

from reranker_client import RerankClient
from reranker_client.endpoints import DNS_REFRESH_S, EndpointPool
from reranker_client.errors import ServerUnavailableError

DOCS = ["Everest is 8,849 m tall.", "Paris is in France.", "K2 is the second highest mountain."]


def test_dns_url_through_the_system_resolver(server):
    with RerankClient(f"dns:///localhost:{server.grpc_port}") as client:
        assert client.pool.urls  # localhost resolved by getaddrinfo
        assert all(u.endswith(f":{server.grpc_port}") for u in client.pool.urls)
        assert len(client.rerank("how tall is Everest?", DOCS)) == 3


@pytest.fixture(scope="module")
def all_loopback_server(python_repo, tmp_path_factory):
    """Bound to every address (the shared server binds 127.0.0.1 only), so 127.0.0.2 and
    127.0.0.3 reach it too and stand in for pods the autoscaler adds."""
    from local_triton.server import TritonServer, free_port

    srv = TritonServer(
        python_repo,
        free_port(),
        free_port(),
        free_port(),
        [],
        host="0.0.0.0",
        log_path=tmp_path_factory.mktemp("logs") / "tritonserver.log",
    ).start(timeout=240)
    yield srv
    srv.stop()


def test_endpoints_follow_changing_dns_answers(all_loopback_server):
    server = all_loopback_server
    answers = {"rr-bge-reranker-headless": ["127.0.0.1"]}
    asked = []

    def resolver(host, port):
        asked.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return list(answers[host])

    client = RerankClient(f"dns:///rr-bge-reranker-headless:{server.grpc_port}", resolver=resolver)
    picked = []
    original_pick = client.pool.pick
    client.pool.pick = lambda avoid=None: picked.append(original_pick(avoid)) or picked[-1]
    client.pool.refresh_s = 0.2  # the test's clock; DNS_REFRESH_S in production
    with client:
        assert client.pool.urls == [f"127.0.0.1:{server.grpc_port}"]
        assert len(client.rerank("how tall is Everest?", DOCS)) == 3
        # Scale-up: two new pods (other loopback addresses reach the same real server).
        answers["rr-bge-reranker-headless"] = ["127.0.0.2", "127.0.0.3"]
        time.sleep(0.3)
        picked.clear()
        for _ in range(4):
            assert len(client.rerank("how tall is Everest?", DOCS)) == 3
        assert client.pool.urls == [f"127.0.0.2:{server.grpc_port}", f"127.0.0.3:{server.grpc_port}"]
        assert set(picked) == set(client.pool.urls)  # both new pods got requests, the old none
        # A DNS failure keeps the last known endpoints.
        answers.clear()
        time.sleep(0.3)
        assert len(client.rerank("how tall is Everest?", DOCS)) == 3
        assert client.pool.urls == [f"127.0.0.2:{server.grpc_port}", f"127.0.0.3:{server.grpc_port}"]
    assert len(asked) >= 3


def test_refresh_period_and_empty_answers():
    assert 0 < DNS_REFRESH_S < 10  # below the chart's preStop pause (export/settings.py PRESTOP_SLEEP_S)
    with pytest.raises(ServerUnavailableError):
        EndpointPool([], discover=("nowhere", 8001), resolver=lambda h, p: [])
    pool = EndpointPool([], discover=("svc", 8001), resolver=lambda h, p: ["fd00::1", "10.0.0.1"])
    assert pool.urls == ["[fd00::1]:8001", "10.0.0.1:8001"]
