"""The client's default deadline covers one call on an idle server at every max_length (issue 29
item 4): when the caller sets no timeout, a call that can reach a longer length class gets the
client's DEFAULT_TIMEOUT_S plus how much longer the server itself lets that class's requests
queue (its published `class_queue_timeouts_us` over the first class's). An explicit timeout, on
the client or per call, stays the deadline. The published values are checked against the queue
policies Triton really applies (the class models' configs), so the client derives from what the
server does, not from a copy."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from reranker_client import RerankClient, contract
from reranker_client.base import DEFAULT_TIMEOUT_S, Job
from reranker_client.server_limits import server_limits_from

# The committed 8,192 export (make configs): three length classes, 512 / 2,048 / 8,192.
LONG_CONTEXT = Path(__file__).parent / "golden" / "long_context"


def _config(repo: Path, model: str) -> mc.ModelConfig:
    return text_format.Parse((repo / model / "config.pbtxt").read_text(), mc.ModelConfig())


def _queue_timeout_s(repo: Path, model: str) -> float:
    return _config(repo, model).dynamic_batching.default_queue_policy.default_timeout_microseconds / 1e6


def _class_models(repo: Path) -> list[str]:
    router = _config(repo, contract.LENGTH_ROUTER)
    return router.parameters[contract.Param.CLASS_MODELS].string_value.split(",")


def _limits(repo: Path):
    return server_limits_from(SimpleNamespace(config=_config(repo, contract.ENSEMBLE)))


def test_the_published_class_timeouts_are_the_queue_policies_triton_applies():
    limits = _limits(LONG_CONTEXT)
    assert [t / 1e6 for t in limits.class_queue_timeouts_us] == [
        _queue_timeout_s(LONG_CONTEXT, m) for m in _class_models(LONG_CONTEXT)
    ]
    assert len(limits.class_queue_timeouts_us) == len(limits.length_classes) == 3


@pytest.mark.parametrize("max_length", [None, 8192, 4096, 2048, 1024, 512, 64])
def test_the_default_budget_grows_by_the_reached_class_queue_timeout(max_length):
    limits = _limits(LONG_CONTEXT)
    models = _class_models(LONG_CONTEXT)
    length = max_length or limits.max_length
    reached = next(m for (bound, _), m in zip(limits.length_classes, models) if length <= bound)
    extra = _queue_timeout_s(LONG_CONTEXT, reached) - _queue_timeout_s(LONG_CONTEXT, models[0])
    assert limits.default_budget_s(DEFAULT_TIMEOUT_S, max_length) == pytest.approx(DEFAULT_TIMEOUT_S + extra)
    if length > limits.length_classes[0][0]:
        assert extra > 0  # the long classes really get more than the 30 s default


def test_an_explicit_timeout_is_the_deadline_and_none_is_derived():
    """The call's (deadline, budget) after the server's limits are read (both clients use it)."""
    limits = _limits(LONG_CONTEXT)
    expected = limits.default_budget_s(DEFAULT_TIMEOUT_S, None)
    assert expected > DEFAULT_TIMEOUT_S
    job = Job(pairs=[("q", "p")])
    with RerankClient("localhost:1") as derived:
        deadline, budget = derived._start(None)
        new_deadline, new_budget = derived._lengthened(job, limits, deadline, budget)
        assert (budget, new_budget) == (DEFAULT_TIMEOUT_S, pytest.approx(expected))
        assert new_deadline - deadline == pytest.approx(expected - DEFAULT_TIMEOUT_S)
        # A shorter per-request max_length reaches only the first class: no lengthening.
        short = Job(pairs=[("q", "p")], max_length=limits.length_classes[0][0])
        assert derived._lengthened(short, limits, deadline, budget)[1] == DEFAULT_TIMEOUT_S
        # A per-call timeout is authoritative.
        own = Job(pairs=[("q", "p")], timeout=7.0)
        deadline, budget = derived._start(own.timeout)
        assert derived._lengthened(own, limits, deadline, budget) == (deadline, 7.0)
    with RerankClient("localhost:1", timeout=DEFAULT_TIMEOUT_S) as explicit:  # set, even if equal
        deadline, budget = explicit._start(None)
        assert explicit._lengthened(job, limits, deadline, budget) == (deadline, DEFAULT_TIMEOUT_S)


def test_a_served_export_publishes_its_class_timeouts(server, python_repo):
    """Through the real server: what the client reads equals the class models' queue policies of
    the served repository, and a one-class export's default stays DEFAULT_TIMEOUT_S."""
    with RerankClient(server.grpc_url) as client:
        limits = client.server_limits()
    assert [t / 1e6 for t in limits.class_queue_timeouts_us] == [
        _queue_timeout_s(python_repo, m) for m in _class_models(python_repo)
    ]
    if len(limits.length_classes) == 1:
        assert limits.default_budget_s(DEFAULT_TIMEOUT_S) == DEFAULT_TIMEOUT_S
    # Sync HTTP without a timeout of its own (no socket timeout; deadline_guard bounds the call).
    with RerankClient(server.http_url, protocol="http") as client:
        assert client.timeout is None
        assert sorted(r.index for r in client.rerank("highest mountain", ["Everest is 8,849 m.", "Paris"])) == [0, 1]


def test_the_async_http_client_has_no_60_s_cap_of_its_own():
    """tritonclient.http.aio caps every request at its conn_timeout (60 s by default, aiohttp's
    total timeout): the client must lift it, or a derived 198 s deadline (or a caller's 120 s)
    ends at 60 s over async HTTP; asyncio.wait_for bounds each call by its own deadline."""
    import asyncio

    from reranker_client.tritonclient_adapter import _make_client

    async def session_timeout():
        client = _make_client("http", True, "127.0.0.1:1", None, None)
        try:
            return client._stub.timeout.total
        finally:
            await client.close()

    assert asyncio.run(session_timeout()) is None
