"""Review of issue 28 (a Dify/LiteLLM user's mistakes): a trailing slash and a URL without a port.

No tritonserver needed: the REST app runs in-process (starlette TestClient) against an
unreachable Triton, and the client refuses the URL before dialling."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from reranker_client import RerankClient
from reranker_client.errors import InvalidInputError
from reranker_rest import Settings, create_app


@pytest.fixture(scope="module")
def app_client():
    app = create_app(Settings(triton_urls=("127.0.0.1:1",), timeout_s=2))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize("path", ["/v1/rerank/", "/v2/rerank/", "/rerank/"])
def test_a_trailing_slash_gets_a_hint_not_a_redirect(app_client, path):
    """The cohere SDK, LiteLLM and httpx do not follow a 307 on POST: they would show an empty
    307. The answer is a 404 that names the route without the slash."""
    r = app_client.post(path, json={"query": "q", "documents": ["a"]}, follow_redirects=False)
    assert r.status_code == 404, (r.status_code, r.headers.get("location"))
    assert f"drop the trailing slash ({path.rstrip('/')})" in r.text, r.text


@pytest.mark.parametrize("url", ["127.0.0.1", "triton", "grpc://triton", "http://triton/"])
def test_a_url_without_a_port_is_refused_naming_the_ports(url):
    """Without a port gRPC dials 443; the client refuses it and names Triton's ports."""
    with pytest.raises(InvalidInputError, match="has no port.*8001"):
        RerankClient(url, timeout=2, retries=0).rerank("q", ["a"])


@pytest.mark.parametrize("url", ["127.0.0.1:8001", "[::1]:8001", "http://triton:8000", "dns:///triton:8001"])
def test_urls_with_a_port_are_accepted(url):
    from reranker_client.endpoints import bare_url

    assert bare_url(url, tls=False).endswith(url.rsplit(":", 1)[1])
