"""The client repeats no server rule: it reads every limit from the served ensemble, and a
rule changed at export reaches it without a code change. The sync and async clients have one
constructor and the same public API, and close() leaves nothing for interpreter shutdown."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from typing import get_type_hints

import pytest

from export.__main__ import cpu_export
from export.settings import ServingLimits
from reranker_client import AsyncRerankClient, ClientConfig, RerankClient
from reranker_client.lengths import token_counter
from tests.conftest import start_server


@pytest.fixture(scope="module")
def changed_rules_server(tiny_model, tmp_path_factory, monkeypatch_module):
    """An export whose query share is 1/2 instead of FlagReranker's 3/4, at max_length 128."""
    monkeypatch_module.setattr(ServingLimits, "query_max_length", property(lambda self: self.max_length // 2))
    repo = tmp_path_factory.mktemp("rules") / "repo"
    assert cpu_export(str(tiny_model), str(repo), "--max-length", "128") == 0
    monkeypatch_module.undo()
    srv = start_server(repo, tmp_path_factory.mktemp("logs"))
    yield srv, repo
    srv.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_client_follows_rules_changed_at_export(changed_rules_server):
    server, repo = changed_rules_server
    count = token_counter(str(repo / "tokenizer" / "1" / "tokenizer.json"))
    long_text = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 40
    pairs = [(long_text, "short passage"), ("short query", long_text), ("hi", "there")]
    with RerankClient(server.grpc_url, token_counter=count) as client:
        limits = client.server_limits()
        assert (limits.max_length, limits.query_max_length, limits.special_tokens_per_pair) == (128, 64, 4)
        assert limits.buckets[-1] == 128 and limits.max_batch_size == ServingLimits().max_batch_size
        served = client.score_details(pairs)
    predicted = [limits.pair_tokens(count(q), count(p)) for q, p in pairs]
    assert [r.tokens for r in served] == predicted
    assert served[0].truncated and served[0].tokens == 64 + count("short passage") + 4  # the 1/2 share


def test_sync_and_async_clients_share_constructor_and_api():
    public = {name for name in dir(RerankClient) if not name.startswith("_")}
    assert public == {name for name in dir(AsyncRerankClient) if not name.startswith("_")}
    for name in public - {"ASYNCIO"}:
        sync, asyn = getattr(RerankClient, name), getattr(AsyncRerankClient, name)
        if callable(sync):
            assert inspect.signature(sync) == inspect.signature(asyn), name
    assert "__init__" not in {
        k for k, v in vars(RerankClient).items() if k == "__init__" and "url" in inspect.signature(v).parameters
    }
    config = ClientConfig(url="localhost:1", timeout=3.0, max_concurrency=2)
    for cls in (RerankClient, AsyncRerankClient):
        client = cls.from_config(config)
        assert client.config is config and client.timeout == 3.0 and client.max_concurrency == 2


def test_call_methods_show_their_declared_parameters():
    """Both clients' rerank/score/score_details take their parameters from one declaration
    (signatures.same_parameters): inspect and typing see those, not (*args, **kwargs), and the
    async ones stay coroutine functions."""
    assert list(inspect.signature(RerankClient.rerank).parameters) == [
        "self", "query", "documents", "top_k", "return_documents", "timeout", "long_documents", "window_stride",
        "strict", "max_length",
    ]  # fmt: skip
    for name in ("rerank", "score", "score_details"):
        sync, asyn = getattr(RerankClient, name), getattr(AsyncRerankClient, name)
        kinds = {p.kind for p in inspect.signature(sync).parameters.values()}
        assert kinds == {inspect.Parameter.POSITIONAL_OR_KEYWORD}, name
        assert get_type_hints(sync) == get_type_hints(asyn), name
        assert inspect.iscoroutinefunction(asyn) and not inspect.iscoroutinefunction(sync), name
        # Types, not strings that only resolve in base.py (found in review: a signature reader
        # evaluating them in the client's module failed on `Sequence`).
        for method in (sync, asyn):
            signature = inspect.signature(method)
            assert not any(isinstance(p.annotation, str) for p in signature.parameters.values()), name
            assert not isinstance(signature.return_annotation, str), name


def test_close_leaves_nothing_for_interpreter_shutdown(server):
    """A RAG app imports torch, scores inside `with RerankClient(...)`, exits: stderr stays empty
    (a tritonclient object closed a second time at shutdown used to print an exception)."""
    script = textwrap.dedent(f"""
        import torch  # noqa: F401 - as every RAG app does; it changes module teardown order
        from reranker_client import RerankClient
        with RerankClient({server.grpc_url!r}) as client:
            scores = client.score([("query", f"document {{i}}") for i in range(200)])
        assert len(scores) == 200
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok"
    assert proc.stderr == ""
