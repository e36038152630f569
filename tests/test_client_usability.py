"""What an application sees of the client before any server answers: its logging stays quiet
unless configured, the CLI prints an error once, retry pauses are the caller's to set, errors
name the endpoint, a URL with a scheme is understood, and a missing extra is named. No
tritonserver: calls go to a port where nothing listens, and a missing package is simulated the
way Python itself reports one (None in sys.modules makes its import fail)."""

from __future__ import annotations

import dataclasses
import logging
import re
import subprocess
import sys
import textwrap

import pytest

from reranker_client import InvalidInputError, RerankClient, ServerUnavailableError, TLSOptions
from tests.conftest import free_port


def _python(script: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def dead_url() -> str:
    return f"127.0.0.1:{free_port()}"


def test_an_app_that_never_configured_logging_sees_no_client_log_lines():
    """Issue 28 item 6: the package logger has a NullHandler, so logging's last-resort handler
    does not print the client's WARNINGs (endpoint down, giving up) on an app's stderr."""
    proc = _python(
        f"""
        from reranker_client import RerankClient, ServerUnavailableError
        with RerankClient({dead_url()!r}, retries=2, backoff_base=0.01, backoff_max=0.02) as client:
            for _ in range(3):
                try:
                    client.rerank("q", ["d"])
                except ServerUnavailableError:
                    pass
        print("ok")
        """
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    assert proc.stderr == ""


def test_cli_prints_an_error_once():
    url = dead_url()
    cli = "import sys; from reranker_client.cli import main; sys.exit(main())"
    proc = _python(cli, "--url", url, "--query", "q", "--retries", "2", stdin="doc one\ndoc two\n")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error (ServerUnavailableError)") and url in lines[0]
    verbose = _python(cli, "--url", url, "--query", "q", "--retries", "1", "--verbose", stdin="doc\n")
    assert "marked down" in verbose.stderr  # the log is there when asked for


def test_retry_pauses_follow_backoff_base_and_max(caplog):
    """Issue 28 item 8: pause n is between half and all of min(backoff_max, backoff_base * 2**n)
    (equal jitter: never ~0, which retried an overloaded server at once)."""
    with caplog.at_level(logging.INFO, logger="reranker_client"):
        with RerankClient(dead_url(), retries=3, timeout=30, backoff_base=0.2, backoff_max=0.3) as client:
            with pytest.raises(ServerUnavailableError):
                client.rerank("q", ["d"])
    pauses = [float(m) for m in re.findall(r"retry \d/3 in ([0-9.]+)s", caplog.text)]
    assert len(pauses) == 3, caplog.text
    assert 0.1 <= pauses[0] <= 0.2 and all(0.15 <= p <= 0.3 for p in pauses[1:]), pauses
    with pytest.raises(InvalidInputError, match="backoff_base"):
        RerankClient(dead_url(), backoff_base=1.0, backoff_max=0.5)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_connection_errors_name_the_endpoint(protocol):
    url = dead_url()
    with RerankClient(url, protocol=protocol, retries=0) as client:
        with pytest.raises(ServerUnavailableError, match=re.escape(url)) as caught:
            client.rerank("q", ["d"])
    if protocol == "http":
        assert str(caught.value) == f"cannot connect to {url}: Connection refused"


def test_urls_with_a_scheme_are_understood_or_refused_clearly():
    """http://host:port (what browsers and other SDKs use) is host:port; https:// asks for TLS,
    which needs tls=TLSOptions(...). Never tritonclient's "url should not include the scheme"
    from a half-built object whose __del__ then prints an ignored exception."""
    url = dead_url()
    proc = _python(
        f"""
        from reranker_client import InvalidInputError, RerankClient, ServerUnavailableError
        for protocol in ("http", "grpc"):
            with RerankClient({("http://" + url + "/")!r}, protocol=protocol, retries=0) as client:
                assert client.pool.urls == [{url!r}], client.pool.urls
                try:
                    client.rerank("q", ["d"])
                except ServerUnavailableError as err:
                    assert {url!r} in str(err), err
        for bad in ("https://{url}", "ftp://{url}"):
            try:
                RerankClient(bad, protocol="http")
            except InvalidInputError as err:
                print(type(err).__name__, err)
        print("ok")
        """
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr
    assert "tls=TLSOptions" in proc.stdout and "expected 'host:port'" in proc.stdout
    assert proc.stderr == ""  # no "Exception ignored in ... __del__"


def test_tls_options_docstring_names_only_real_fields():
    doc = TLSOptions.__doc__ or ""
    fields = {f.name for f in dataclasses.fields(TLSOptions)}
    assert all(name in doc for name in fields)
    assert not any(key in doc for key in ("ca_certs", "certfile", "keyfile"))  # TypeError if passed


@pytest.mark.parametrize(
    "module, blocked, extra",
    [("langchain", "langchain_core", "langchain"), ("llamaindex", "llama_index", "llamaindex"),
     ("haystack", "haystack", "haystack")],
)  # fmt: skip
def test_an_adapter_without_its_extra_names_the_extra(module, blocked, extra):
    proc = _python(
        f"""
        import sys
        sys.modules[{blocked!r}] = None  # how Python reports a package that is not installed
        try:
            import reranker_client.integrations.{module}
        except ImportError as err:
            print(type(err).__name__, err)
        """
    )
    assert f'pip install "triton-reranker-client[{extra}]"' in proc.stdout, proc.stdout + proc.stderr


def test_http_without_the_http_extra_is_a_typed_error_naming_it():
    proc = _python(
        """
        import asyncio, sys
        sys.modules["geventhttpclient"] = None
        sys.modules["aiohttp"] = None
        from reranker_client import AsyncRerankClient, InvalidInputError, RerankClient
        for cls in (RerankClient, AsyncRerankClient):
            try:
                cls("localhost:8000", protocol="http")
            except InvalidInputError as err:
                print(err)
        """
    )
    assert proc.stdout.count("triton-reranker-client[http]") == 2, proc.stdout + proc.stderr
