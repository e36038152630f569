"""The client's failure semantics without a Triton server: the error translation table, timeouts
typed as DeadlineExceededError (never retried, never marking an endpoint down) on every Python,
per-call timeouts on every transport, cancellation of a call's other requests when one fails,
use after close(), and logging of retries, failovers and endpoints marked down.

The "servers" here are real sockets on localhost that accept and never answer, or nothing
listening at all: what a hung or stopped Triton looks like to the client."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import socket
import threading
import time

import pytest
from tritonclient.utils import InferenceServerException

from reranker_client import (
    AsyncRerankClient,
    ClientClosedError,
    DeadlineExceededError,
    InvalidInputError,
    ModelNotReadyError,
    OverloadedError,
    PermissionDeniedError,
    RerankClient,
    RerankError,
    ServerUnavailableError,
    __version__,
)
from reranker_client.async_client import _all_or_nothing
from reranker_client.tritonclient_adapter import translate
from tests.conftest import free_port


def grpc_error(code: str, msg: str = "boom") -> InferenceServerException:
    # tritonclient.grpc builds exactly this from a grpc.RpcError (get_error_grpc): str(rpc_error.code()).
    return InferenceServerException(msg=msg, status=f"StatusCode.{code}")


def http_error(code: int, msg: str = "boom") -> InferenceServerException:
    return InferenceServerException(msg=msg, status=str(code))  # tritonclient.http's _get_error


TABLE = [
    (grpc_error("RESOURCE_EXHAUSTED"), OverloadedError),
    (grpc_error("RESOURCE_EXHAUSTED", "Received message larger than max (9000000 vs. 4194304)"), InvalidInputError),
    (http_error(429, "too many requests"), OverloadedError),
    (grpc_error("UNAVAILABLE", "exceeds maximum queue size"), OverloadedError),
    (grpc_error("UNAVAILABLE", "Request timeout expired"), OverloadedError),
    (grpc_error("UNAVAILABLE", "failed to connect to all addresses"), ServerUnavailableError),
    (http_error(503), ServerUnavailableError),
    (http_error(502), ServerUnavailableError),
    (grpc_error("DEADLINE_EXCEEDED", "Deadline Exceeded"), DeadlineExceededError),
    (http_error(408), DeadlineExceededError),
    (grpc_error("PERMISSION_DENIED"), PermissionDeniedError),
    (grpc_error("UNAUTHENTICATED"), PermissionDeniedError),
    (http_error(401), PermissionDeniedError),
    (http_error(403), PermissionDeniedError),
    (grpc_error("INVALID_ARGUMENT", "inference request batch-size must be <= 64"), InvalidInputError),
    (http_error(400, "unexpected shape for input 'query'"), InvalidInputError),
    (http_error(413), InvalidInputError),
    (grpc_error("NOT_FOUND", "Request for unknown model: 'x' is not found"), ModelNotReadyError),
    (
        grpc_error("UNAVAILABLE", "Request for unknown model: 'rerank' has no available versions"),
        ServerUnavailableError,
    ),
    # What tritonserver 2.51 really answers while `rerank` (re)loads after a restart (seen in
    # test_robustness.py::test_faults_under_traffic_lose_nothing): NOT_FOUND, and transient.
    (
        grpc_error("NOT_FOUND", "Request for unknown model: 'rerank' has no available versions"),
        ServerUnavailableError,
    ),
    (grpc_error("CANCELLED"), ServerUnavailableError),
    # tritonserver 2.51's restricted-protocol refusal comes as UNAVAILABLE: a missing key, not an outage.
    (
        grpc_error("UNAVAILABLE", "This protocol is restricted, expecting header 'triton-grpc-protocol-x-api-key'"),
        PermissionDeniedError,
    ),
    (
        grpc_error(
            "INTERNAL", "in ensemble 'rerank', Model cross_encoder - Error when running inference: Server not ready"
        ),
        ServerUnavailableError,
    ),  # a step answering while the server drains for shutdown
    (ConnectionRefusedError(111, "Connection refused"), ServerUnavailableError),
    (BrokenPipeError(), ServerUnavailableError),
    # Every timeout type, on 3.9-3.13: TimeoutError is an OSError from 3.3 and asyncio's and
    # socket's timeouts are aliases of it from 3.11/3.10; none may become ServerUnavailableError.
    (TimeoutError("timed out"), DeadlineExceededError),
    (asyncio.TimeoutError(), DeadlineExceededError),
    (socket.timeout("timed out"), DeadlineExceededError),
    (concurrent.futures.TimeoutError(), DeadlineExceededError),
    (RuntimeError("something else"), RerankError),
]


@pytest.mark.parametrize(
    "raw,expected", TABLE, ids=[f"{type(r).__name__}:{getattr(r, 'status', lambda: '')()}:{r}"[:60] for r, _ in TABLE]
)
def test_translation_table(raw, expected):
    err = translate(raw)
    assert type(err) is expected, (raw, err)


# The code decides where it says what happened, whatever the message says (issue 26 item 6): each
# row's message is one that, read as text, points elsewhere (a message may change with any
# release of Triton, gRPC or the proxy; a caller's text or model name may be echoed in it).
CODE_ONLY = [
    (grpc_error("INVALID_ARGUMENT", "passage[0]: stub process not healthy, server not ready"), InvalidInputError),
    (grpc_error("INVALID_ARGUMENT", "Request timeout expired in the caller's text"), InvalidInputError),
    (grpc_error("INVALID_ARGUMENT", "failed to connect"), InvalidInputError),
    (http_error(400, "exceeds maximum queue size"), InvalidInputError),
    (http_error(422, "server is shutting down"), InvalidInputError),
    (grpc_error("UNAVAILABLE", "unexpected shape for input 'query'"), ServerUnavailableError),
    (grpc_error("UNAVAILABLE", "batch size 70 exceeds 64"), ServerUnavailableError),
    (grpc_error("UNAVAILABLE", ""), ServerUnavailableError),
    (http_error(503, "unexpected datatype"), ServerUnavailableError),
    (grpc_error("DEADLINE_EXCEEDED", "exceeds maximum queue size"), DeadlineExceededError),
    (grpc_error("NOT_FOUND", "server not ready"), ModelNotReadyError),
    (grpc_error("NOT_FOUND", "xyz"), ModelNotReadyError),
    (http_error(404, "failed to connect"), ModelNotReadyError),
    (grpc_error("PERMISSION_DENIED", "Request timeout expired"), PermissionDeniedError),
    (grpc_error("RESOURCE_EXHAUSTED", "unexpected shape"), OverloadedError),
    (http_error(429, "unexpected shape"), OverloadedError),
    (grpc_error("CANCELLED", "unexpected shape"), ServerUnavailableError),
    # The message still decides where the code does not: 2.51 gives a BLS step's error INTERNAL.
    (grpc_error("INTERNAL", "Request timeout expired"), OverloadedError),
    (grpc_error("UNKNOWN", "unexpected shape for input 'query'"), InvalidInputError),
    (http_error(500, "Stub process 'tokenizer_0_0' is not healthy."), ServerUnavailableError),
]


@pytest.mark.parametrize("raw,expected", CODE_ONLY, ids=[f"{r.status()}:{r.message()}"[:60] for r, _ in CODE_ONLY])
def test_the_status_code_decides_whatever_the_message_says(raw, expected):
    err = translate(raw)
    assert type(err) is expected, (raw.status(), raw.message(), err)


def test_the_proxys_size_refusal_is_invalid_input_not_overload():
    """The front proxy answers a body over its cap with RESOURCE_EXHAUSTED (as a rate limit does)
    and its own message: that request can never pass, so it is not retried (before: it matched
    neither size phrase and was retried as overload)."""
    from export.proxy_config import ProxySpec, too_large_message

    assert type(translate(grpc_error("RESOURCE_EXHAUSTED", too_large_message(ProxySpec())))) is InvalidInputError


def test_overload_is_retried_and_timeouts_are_not():
    from reranker_client.endpoints import RETRYABLE

    assert isinstance(translate(http_error(429)), RETRYABLE)
    assert isinstance(translate(grpc_error("RESOURCE_EXHAUSTED")), RETRYABLE)
    assert not isinstance(translate(TimeoutError()), RETRYABLE)
    assert not isinstance(translate(asyncio.TimeoutError()), RETRYABLE)


class SilentServer:
    """Accepts TCP connections, reads whatever comes, never answers: a hung server."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns = []
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)  # held open, never answered

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def silent():
    srv = SilentServer()
    yield srv
    srv.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_sync_per_call_timeout_holds_and_is_typed(silent, protocol):
    """timeout=0.5 on a hung server ends in ~0.5 s as DeadlineExceededError, although the client's
    own timeout is 30 s (sync HTTP's network timeout is fixed per connection: enforced by the
    client's deadline guard). The endpoint is not marked down and the call is not retried."""
    with RerankClient(silent.url, protocol=protocol, timeout=30, retries=3) as client:
        begin = time.monotonic()
        with pytest.raises(DeadlineExceededError, match=re.escape(silent.url)):  # names the endpoint
            client.rerank("q", ["d"], timeout=0.5)
        took = time.monotonic() - begin
        assert took < 2.0, took
        assert client.pool._down_until == {}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_async_timeout_is_deadline_not_unavailable(silent, protocol, caplog):
    """On 3.11+ asyncio.wait_for raises the builtin TimeoutError, an OSError: it must still be a
    DeadlineExceededError, with no retry and no endpoint marked down."""

    async def run():
        async with AsyncRerankClient(silent.url, protocol=protocol, timeout=30, retries=3) as client:
            begin = time.monotonic()
            with pytest.raises(DeadlineExceededError, match=re.escape(silent.url)):  # names the endpoint
                await client.rerank("q", ["d"], timeout=0.5)
            return time.monotonic() - begin, dict(client.pool._down_until)

    with caplog.at_level(logging.INFO, logger="reranker_client"):
        took, down = asyncio.run(run())
    assert took < 2.0 and down == {}
    assert not [r for r in caplog.records if "retry" in r.getMessage() or "marked down" in r.getMessage()]


def _sleeper_recording_cancellation(cancelled: list[int]):
    """A request that never finishes on its own: records its number when cancelled."""

    async def slow(i):
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise

    return slow


def test_one_failed_request_cancels_the_others():
    """_all_or_nothing is what AsyncRerankClient runs a call's requests with."""
    cancelled: list[int] = []
    slow = _sleeper_recording_cancellation(cancelled)

    async def fails():
        await asyncio.sleep(0.05)
        raise OverloadedError("chunk 2 failed")

    async def run():
        begin = time.monotonic()
        with pytest.raises(OverloadedError, match="chunk 2"):
            await _all_or_nothing([slow(0), slow(1), fails(), slow(3)], time.monotonic() + 60, 60)
        return time.monotonic() - begin

    assert asyncio.run(run()) < 2.0
    assert sorted(cancelled) == [0, 1, 3]  # cancelled and awaited before the error reached us


def test_deadline_and_caller_cancellation_cancel_every_request():
    cancelled: list[int] = []
    slow = _sleeper_recording_cancellation(cancelled)

    async def run():
        with pytest.raises(DeadlineExceededError):
            await _all_or_nothing([slow(0), slow(1)], time.monotonic() + 0.2, 0.2)
        assert sorted(cancelled) == [0, 1]
        cancelled.clear()
        task = asyncio.ensure_future(_all_or_nothing([slow(2), slow(3)], time.monotonic() + 60, 60))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert sorted(cancelled) == [2, 3]

    asyncio.run(run())


def test_calls_after_close_raise_a_typed_error():
    client = RerankClient(f"127.0.0.1:{free_port()}")
    client.close()
    with pytest.raises(ClientClosedError):
        client.rerank("q", ["d"])
    with pytest.raises(RuntimeError):  # ClientClosedError is one, as the bare error it replaced
        client.ready()
    client.close()  # closing twice is harmless

    async def run():
        aclient = AsyncRerankClient(f"127.0.0.1:{free_port()}")
        await aclient.close()
        with pytest.raises(ClientClosedError):
            await aclient.rerank("q", ["d"])

    asyncio.run(run())


def test_retries_failovers_and_endpoints_marked_down_are_logged(caplog):
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    with caplog.at_level(logging.INFO, logger="reranker_client"):
        with RerankClient(dead, retries=2, timeout=10) as client:
            with pytest.raises(ServerUnavailableError):
                client.rerank("q", ["d"])
    messages = [r.getMessage() for r in caplog.records if r.name == "reranker_client"]
    # Two endpoints, three failed tries: each endpoint is marked down once per rest, not per failure.
    assert sum("marked down" in m for m in messages) == 2, messages
    assert {r.levelname for r in caplog.records if "marked down" in r.getMessage()} == {"WARNING"}
    assert sum(m.startswith("retry ") for m in messages) == 2, messages
    assert any(m.startswith("failing over from") for m in messages), messages
    assert any(m.startswith("giving up after 3 tries") for m in messages), messages
    assert all(dead[0] in m or dead[1] in m for m in messages if "marked down" in m)


def test_unreadable_certificate_is_a_configuration_error_not_an_outage():
    from reranker_client import TLSOptions

    for protocol in ("grpc", "http"):
        with RerankClient(
            f"127.0.0.1:{free_port()}",
            protocol=protocol,
            retries=3,
            tls=TLSOptions(root_certificates="/nonexistent/ca.pem"),
        ) as client:
            with pytest.raises(InvalidInputError, match="tls"):
                client.rerank("q", ["d"])
            assert client.pool._down_until == {}


def test_options_are_checked():
    with pytest.raises(InvalidInputError, match="max_concurrency"):
        RerankClient("localhost:1", max_concurrency=0)


def test_version_comes_from_the_package_metadata():
    from importlib.metadata import version

    assert __version__ == version("triton-reranker-client")


def test_cli_header_without_equals_is_a_clear_usage_error(capsys):
    from reranker_client.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--query", "q", "--header", "authorization"])
    assert exit_.value.code == 2
    assert "--header expects NAME=VALUE, got 'authorization'" in capsys.readouterr().err


def test_cli_mutual_tls_options_reach_the_client(capsys, monkeypatch, tmp_path):
    import io

    from reranker_client.cli import main

    with pytest.raises(SystemExit):
        main(["--query", "q", "--client-cert", "c.pem"])  # a key is required with a certificate
    assert "--client-cert and --client-key go together" in capsys.readouterr().err
    # The files are read when the connection is built: a missing key is reported as a TLS error.
    for protocol in ("grpc", "http"):
        monkeypatch.setattr("sys.stdin", io.StringIO("a document\n"))
        assert (
            main(
                [
                    "--query",
                    "q",
                    "--protocol",
                    protocol,
                    "--url",
                    f"127.0.0.1:{free_port()}",
                    "--client-cert",
                    str(tmp_path / "c.pem"),
                    "--client-key",
                    str(tmp_path / "k.pem"),
                ]
            )
            == 1
        )
        err = capsys.readouterr().err
        assert "InvalidInputError" in err and "tls" in err, err
