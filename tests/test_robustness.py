"""Bad input, overload, faults and TLS against the real tritonserver: every request is
answered right or with a clear error, and nothing is lost."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from common.raw_rerank import raw_rerank, rerank_inputs
from export.settings import DEFAULT_MAX_BATCH_SIZE as MAX_BATCH
from export.settings import MAX_TEXT_BYTES, QUEUE_TIMEOUT_US, ServingLimits
from export.triton_config import to_pbtxt
from reranker_client import (
    DeadlineExceededError,
    InvalidInputError,
    ModelNotReadyError,
    OverloadedError,
    PermissionDeniedError,
    RerankClient,
    RerankError,
    ServerUnavailableError,
    TLSOptions,
)
from tests.conftest import free_port, start_server
from tests.server_helpers import bad_and_good_together

GOOD_Q = ["Wie hoch ist der Mount Everest?"] * 3
GOOD_P = ["Der Everest ist 8849 Meter hoch.", "Paris ist die Hauptstadt Frankreichs.", "🏔️ 8849 m"]


@pytest.fixture(scope="module")
def good_scores(server):
    return raw_rerank(server.grpc_url, GOOD_Q, GOOD_P)["score"]


def _inputs(module, spec):
    inputs = []
    for name, dtype, array in spec:
        tensor = module.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def _bytes(*rows):
    return np.array([[r] for r in rows], dtype=np.object_)


BAD_REQUESTS = {
    # name: (model, input spec, words the error must contain)
    "empty query": (
        "rerank",
        [("query", "BYTES", _bytes(b"")), ("passage", "BYTES", _bytes(b"p"))],
        ["query[0]", "empty"],
    ),
    "empty passage": (
        "rerank",
        [("query", "BYTES", _bytes(b"q", b"q")), ("passage", "BYTES", _bytes(b"p", b""))],
        ["passage[1]", "empty"],
    ),
    "whitespace only": (
        "rerank",
        [("query", "BYTES", _bytes(b" \t\n")), ("passage", "BYTES", _bytes(b"p"))],
        ["query[0]", "whitespace"],
    ),
    "invalid utf-8": (
        "rerank",
        [("query", "BYTES", _bytes(b"q")), ("passage", "BYTES", _bytes(b"ok \xc3\x28"))],
        ["passage[0]", "UTF-8"],
    ),
    "NUL byte": (
        "rerank",
        [("query", "BYTES", _bytes(b"q\x00q")), ("passage", "BYTES", _bytes(b"p"))],
        ["query[0]", "NUL"],
    ),
    "10 MB passage": (
        "rerank",
        [("query", "BYTES", _bytes(b"q")), ("passage", "BYTES", _bytes(b"x" * 10_000_000))],
        ["passage[0]", "10000000 bytes", str(MAX_TEXT_BYTES)],
    ),
    "batch sizes differ": (
        "rerank",
        [("query", "BYTES", _bytes(b"q", b"q")), ("passage", "BYTES", _bytes(b"p", b"p", b"p"))],
        ["batch size", "query"],
    ),
    "batch above max_batch_size": (
        "rerank",
        [
            ("query", "BYTES", _bytes(*[b"q"] * (MAX_BATCH + 1))),
            ("passage", "BYTES", _bytes(*[b"p"] * (MAX_BATCH + 1))),
        ],
        ["batch-size", f"<= {MAX_BATCH}"],
    ),
    "wrong dtype": (
        "rerank",
        [("query", "INT32", np.array([[1]], dtype=np.int32)), ("passage", "BYTES", _bytes(b"p"))],
        ["query", "INT32", "BYTES"],
    ),
    "wrong shape": (
        "rerank",
        [
            ("query", "BYTES", np.array([[b"q", b"q"]], dtype=np.object_)),
            ("passage", "BYTES", np.array([[b"p", b"p"]], dtype=np.object_)),
        ],
        ["shape", "[-1,1]"],
    ),
    "missing input": ("rerank", [("query", "BYTES", _bytes(b"q"))], ["missing", "passage"]),
    "unknown model": (
        "no_such_model",
        [("query", "BYTES", _bytes(b"q")), ("passage", "BYTES", _bytes(b"p"))],
        ["unknown model", "no_such_model"],
    ),
}


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_clear_error_while_valid_request_succeeds(server, good_scores, case, protocol):
    model, spec, words = BAD_REQUESTS[case]
    module = grpcclient if protocol == "grpc" else httpclient
    url = server.grpc_url if protocol == "grpc" else server.http_url
    client = module.InferenceServerClient(url)
    message, scores = bad_and_good_together(
        lambda: client.infer(model, _inputs(module, spec)), lambda: raw_rerank(server.grpc_url, GOOD_Q, GOOD_P)["score"]
    )
    for word in words:
        assert word in message, (word, message)
    np.testing.assert_allclose(scores, good_scores, atol=1e-6)
    assert server.is_ready()


def test_text_over_8192_tokens_is_truncated_and_flagged(server):
    huge = " ".join(["Der Mount Everest ist der höchste Berg der Erde."] * 2000)  # ~100 KB, >8192 tokens
    out = raw_rerank(server.grpc_url, ["Everest?", huge], [huge, "short passage"])
    assert out["truncated"].tolist() == [True, True]
    max_length = ServingLimits().max_length  # what the session's repository was exported with
    assert out["tokens"][0] == max_length  # passage cut to fill max_length
    assert out["tokens"][1] < max_length and np.isfinite(out["score"]).all()


def test_bad_input_through_the_client(server, good_scores):
    with RerankClient(server.grpc_url, retries=0) as client:
        for query, docs, field in [
            ("", ["d"], "query"),
            ("q", [""], "documents[0]"),
            ("q", [" \n"], "documents[0]"),
            ("q", [b"\xff"], "documents[0]"),
            ("q", ["ok", None], "documents[1]"),
        ]:
            with pytest.raises(InvalidInputError, match=field.replace("[", r"\[").replace("]", r"\]")):
                client.rerank(query, docs)
        with pytest.raises(InvalidInputError, match=r"documents\[1\]: contains a NUL"):  # the caller's index
            client.rerank("q", ["ok", "a\x00b"])
        with pytest.raises(InvalidInputError, match=f"10000000 bytes exceeds the limit of {MAX_TEXT_BYTES}"):
            client.rerank("q", ["x" * 10_000_000], strict=True)  # default: cut to its head, flagged
        np.testing.assert_allclose(client.score(list(zip(GOOD_Q, GOOD_P))), good_scores, atol=1e-6)
    with RerankClient(server.grpc_url, model="no_such_model", retries=0) as client:
        with pytest.raises(ModelNotReadyError):
            client.rerank("q", ["d"])
    assert server.is_ready()


def _repository_with_small_queue(source: Path, target: Path, queue: int) -> Path:
    import shutil

    shutil.copytree(source, target)
    path = target / "cross_encoder" / "config.pbtxt"
    config = text_format.Parse(path.read_text(), mc.ModelConfig())
    config.dynamic_batching.default_queue_policy.max_queue_size = queue
    config.dynamic_batching.max_queue_delay_microseconds = 20_000  # hold requests: a slow model
    path.write_text(to_pbtxt(config))
    return target


def test_overload_is_shed_fast_and_clients_stay_within_deadline(python_repo, tmp_path, good_scores):
    repo = _repository_with_small_queue(python_repo, tmp_path / "repo", queue=2)
    srv = start_server(repo, tmp_path)
    try:
        # Raw: 24 requests at once into a queue of 2 -> some are rejected, quickly.
        def raw_call(_):
            client = grpcclient.InferenceServerClient(srv.grpc_url)
            start = time.perf_counter()
            try:
                scores = client.infer("rerank", rerank_inputs(GOOD_Q, GOOD_P)).as_numpy("score").reshape(-1)
                return "ok", time.perf_counter() - start, scores
            except InferenceServerException as err:
                return str(err), time.perf_counter() - start, None

        with ThreadPoolExecutor(24) as pool:
            raw = list(pool.map(raw_call, range(24 * 8)))
        rejected = [r for r in raw if r[0] != "ok"]
        answered = [r for r in raw if r[0] == "ok"]
        assert rejected and all("exceeds maximum queue size" in r[0].lower() for r in rejected), rejected[:2]
        assert answered and all(np.allclose(r[2], good_scores, atol=1e-6) for r in answered)
        shed_ms, answer_ms = (np.median([r[1] for r in group]) * 1e3 for group in (rejected, answered))
        print(
            f"\nraw: {len(answered)} answered, {len(rejected)} rejected; "
            f"median rejection time {shed_ms:.1f} ms, median answer time {answer_ms:.1f} ms"
        )
        # Shed fast: a full queue refuses at enqueue (max_queue_size); no refusal waited out the
        # queue policy's timeout (QUEUE_TIMEOUT_US, which would answer "Request timeout expired").
        assert max(r[1] for r in rejected) < QUEUE_TIMEOUT_US / 1e6

        # Capacity: what the server answers per second under a closed loop of 4 callers.
        with RerankClient(srv.grpc_url, timeout=10, retries=8, max_concurrency=64) as client:

            def closed_loop(_):
                done, until = 0, time.monotonic() + 2.0
                while time.monotonic() < until:
                    try:
                        client.score(list(zip(GOOD_Q, GOOD_P)))
                        done += 1
                    except RerankError:
                        pass
                return done

            with ThreadPoolExecutor(4) as pool:
                capacity = sum(pool.map(closed_loop, range(4))) / 2.0

            # Open loop at 4x capacity for 4 s; every caller has a 3 s deadline and retries
            # with backoff on the typed overload error.
            deadline_s, rate = 3.0, 4 * capacity
            outcomes, late, slowest = {"correct": 0, "overloaded/deadline": 0, "wrong": 0, "other": 0}, [], [0.0]
            lock = threading.Lock()

            def call(_):
                start = time.monotonic()
                try:
                    scores = client.score(list(zip(GOOD_Q, GOOD_P)), timeout=deadline_s)
                    kind = "correct" if np.allclose(scores, good_scores, atol=1e-6) else "wrong"
                except (OverloadedError, DeadlineExceededError):
                    kind = "overloaded/deadline"
                except RerankError:
                    kind = "other"
                elapsed = time.monotonic() - start
                with lock:
                    outcomes[kind] += 1
                    slowest[0] = max(slowest[0], elapsed)
                    if elapsed > deadline_s + 0.5:
                        late.append(elapsed)

            total = int(rate * 4.0)
            with ThreadPoolExecutor(96) as pool:
                t0 = time.monotonic()
                for i in range(total):
                    time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
                    pool.submit(call, i)
        print(
            f"client at 4x capacity ({capacity:.0f} -> {rate:.0f} requests/s): {outcomes}; "
            f"slowest call {slowest[0]:.2f}s (deadline {deadline_s}s)"
        )
        assert sum(outcomes.values()) == total
        assert outcomes["wrong"] == 0 and outcomes["other"] == 0 and not late
        assert outcomes["correct"] > 0
        assert srv.is_ready()
    finally:
        srv.stop()


def _stub_pids(server_pid: int, model: str) -> list[int]:
    """Python-backend stub processes of `model` started by this server (not by other servers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if (
            ppid == server_pid
            and cmdline
            and cmdline[0].endswith(b"triton_python_backend_stub")
            and any(f"/{model}/".encode() in part for part in cmdline)
        ):
            pids.append(int(entry.name))
    return pids


RETRIES_UNDER_FAULTS = 40


class _GiveUps(logging.Handler):
    """The client's "giving up after N tries" warnings (reranker_client/base.py `_retry_pause`),
    from every thread."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.tries: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("giving up after"):
            self.tries.append(int(record.args[0]))


def test_faults_under_traffic_lose_nothing(python_repo, tmp_path, good_scores):
    """Stubs killed, then the whole server restarted, under 4 callers: no answer is wrong or
    untyped, and a fault the client may retry (ServerUnavailableError, "stub process",
    UNAVAILABLE) reaches a caller only once the retry budget is spent - each such error has its
    "giving up after 41 tries" warning; a deadline may still pass (DeadlineExceededError)."""
    ports = (free_port(), free_port(), free_port())
    from local_triton.server import TritonServer

    def fresh():
        return TritonServer(python_repo, *ports, log_path=tmp_path / "triton.log").start(240)

    srv = fresh()
    counts = {"sent": 0, "correct": 0, "clear_error": 0, "wrong": 0, "lost": 0}
    errors: dict[str, int] = {}
    stop = threading.Event()
    lock = threading.Lock()

    def traffic():
        with RerankClient(srv.grpc_url, timeout=45, retries=RETRIES_UNDER_FAULTS) as client:
            while not stop.is_set():
                with lock:
                    counts["sent"] += 1
                try:
                    scores = client.score(list(zip(GOOD_Q, GOOD_P)))
                    kind = "correct" if np.allclose(scores, good_scores, atol=1e-6) else "wrong"
                except RerankError as err:
                    kind = "clear_error"
                    with lock:
                        errors[type(err).__name__ + ": " + str(err)[:120]] = (
                            errors.get(type(err).__name__ + ": " + str(err)[:120], 0) + 1
                        )
                except Exception:  # noqa: BLE001 - anything untyped counts as lost
                    kind = "lost"
                with lock:
                    counts[kind] += 1

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    give_ups = _GiveUps()
    client_logger = logging.getLogger("reranker_client")
    client_logger.addHandler(give_ups)
    try:
        for t in threads:
            t.start()
        time.sleep(1.5)
        stubs = _stub_pids(srv.process.pid, "tokenizer")
        assert stubs, "no tokenizer stub process found"
        for pid in stubs:
            os.kill(pid, signal.SIGKILL)
        time.sleep(4)
        srv.stop()  # whole-server restart under traffic
        time.sleep(1)
        srv = fresh()
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
        srv.stop()
        client_logger.removeHandler(give_ups)
    print(f"\nfaults: {counts}\nerrors: {errors}\ngave up after: {give_ups.tries}")
    answered = counts["correct"] + counts["clear_error"] + counts["wrong"] + counts["lost"]
    assert answered == counts["sent"] and counts["lost"] == 0 and counts["wrong"] == 0
    assert counts["correct"] > 20
    retryable = sum(n for kind, n in errors.items() if kind.startswith(("ServerUnavailableError", "OverloadedError")))
    assert retryable == len(give_ups.tries), (retryable, give_ups.tries, errors)
    assert all(tries == RETRIES_UNDER_FAULTS + 1 for tries in give_ups.tries), give_ups.tries
    assert all(kind.startswith(("ServerUnavailableError", "DeadlineExceededError")) for kind in errors), errors


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def test_grpc_tls_and_auth_header(python_repo, tmp_path, good_scores):
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        cwd=tmp_path,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
        cwd=tmp_path,
    )
    (tmp_path / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "1",
        "-extfile",
        "san.ext",
        cwd=tmp_path,
    )
    srv = start_server(
        python_repo,
        tmp_path,
        "--grpc-use-ssl=true",
        f"--grpc-server-cert={tmp_path / 'server.crt'}",
        f"--grpc-server-key={tmp_path / 'server.key'}",
        f"--grpc-root-cert={tmp_path / 'ca.crt'}",
        "--grpc-restricted-protocol=inference:x-api-key=s3cret",
        "--http-restricted-api=inference:x-api-key=s3cret",
    )
    try:
        tls = TLSOptions(root_certificates=str(tmp_path / "ca.crt"))
        # Triton's gRPC restriction reads the header `triton-grpc-protocol-<key>`.
        grpc_key = {"triton-grpc-protocol-x-api-key": "s3cret"}
        with RerankClient(srv.grpc_url, tls=tls, headers=grpc_key, retries=0) as client:
            np.testing.assert_allclose(client.score(list(zip(GOOD_Q, GOOD_P))), good_scores, atol=1e-6)
        with RerankClient(srv.grpc_url, tls=tls, retries=0) as client:  # no key: refused
            with pytest.raises(PermissionDeniedError, match="restricted"):
                client.score(list(zip(GOOD_Q, GOOD_P)))
        with RerankClient(srv.grpc_url, headers=grpc_key, retries=0, timeout=5) as client:  # plaintext
            with pytest.raises(ServerUnavailableError):
                client.score(list(zip(GOOD_Q, GOOD_P)))
        with RerankClient(srv.http_url, protocol="http", retries=0) as client:  # HTTP needs the key too
            with pytest.raises(PermissionDeniedError):
                client.score(list(zip(GOOD_Q, GOOD_P)))
        with RerankClient(srv.http_url, protocol="http", headers={"x-api-key": "s3cret"}, retries=0) as client:
            np.testing.assert_allclose(client.score(list(zip(GOOD_Q, GOOD_P))), good_scores, atol=1e-6)
    finally:
        srv.stop()


def test_no_remote_code_and_no_pickle_loading_anywhere():
    root = Path(__file__).resolve().parent.parent
    sources = [
        p
        for d in ("export", "model_repository", "client", "local_triton", "loadtest", "benchmarks")
        for p in (root / d).rglob("*.py")
    ]
    offenders = []
    for path in sources:
        text = path.read_text()
        for needle in ("trust_remote_code=True", "import pickle", "torch.load(", "pickle.load", "allow_pickle=True"):
            if needle in text:
                offenders.append(f"{path.relative_to(root)}: {needle}")
    assert not offenders
    assert "trust_remote_code=False" in (root / "export" / "model_loading.py").read_text()
