"""rerank-verify: certify a live deployment against the certificate its repository carries.

Sends the certificate's held-out texts through the served `rerank` ensemble (the same path
every caller takes: tokenizer model, batching, padding, the engine the GPU really runs) and
compares the answers with the fp32 PyTorch logits recorded at export. Works against any
backend (ONNX Runtime CPU, the TensorRT accelerator, a TensorRT plan), over TLS and with auth
headers like the client. Catches a stale TensorRT engine cache too: an engine built from other
weights answers other logits.

    python -m reranker_client.verify --url host:8001 --repo runs/model_repository
    python -m reranker_client.verify --url host:8001 --fixture certificate.json --report out.json

Exit status: 0 certified; 1 a threshold was missed (the report names the worst pairs);
2 no verdict (missing fixture, unreachable server, wrong model).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from . import tritonclient_adapter
from .certificate import (
    Fixture,
    FixtureError,
    all_texts,
    compare,
    describe,
    fixture_path,
    load_fixture,
    served_precision,
)
from .errors import RerankError
from .sync_client import RerankClient
from .tritonclient_adapter import InferKwargs, TLSOptions

EXIT_PASS, EXIT_FAIL, EXIT_NO_VERDICT = 0, 1, 2


def reachable(
    url: str, protocol: str, tls: Optional[TLSOptions], headers: Dict[str, str], timeout: float
) -> Optional[str]:
    """None when the server answers `live` within `timeout`, else why not (fails in seconds,
    not after the client's whole retry budget)."""
    try:
        client = tritonclient_adapter.make_sync_client(protocol, url, tls, timeout)
        try:
            kwargs: InferKwargs = {"client_timeout": timeout} if protocol == "grpc" else {}
            if not client.is_server_live(headers=headers, **kwargs):
                return "the server answered but is not live"
        finally:
            client.close()
    except Exception as err:  # noqa: BLE001 - any failure here means no verdict
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None


def verify(
    url: str,
    fixture: Fixture,
    protocol: str = "grpc",
    model: str = "rerank",
    tls: Optional[TLSOptions] = None,
    headers: Optional[Dict[str, str]] = None,
    timeout: float = 120.0,
    precision: Optional[str] = None,
) -> Dict[str, Any]:
    """The report as a dict (see certificate.Report) plus where and how it was measured."""
    precision = served_precision(fixture, precision)
    texts = all_texts(fixture)
    with RerankClient(
        url, protocol=protocol, model=model, timeout=timeout, tls=tls, headers=headers, retries=1
    ) as client:
        limits = client.server_limits()
        if limits.max_length != fixture["max_length"]:
            raise FixtureError(
                f"the server's {model} serves max_length {limits.max_length}, the certificate "
                f"was made for {fixture['max_length']}: it belongs to another export"
            )
        start = time.perf_counter()
        results = client.score_details(texts, timeout=timeout)
        seconds = time.perf_counter() - start
    n = len(fixture["pairs"])
    logits = [r.logit for r in results]
    report = compare(fixture, logits[:n], logits[n:], precision)
    expected_tokens = [p["tokens"] for p in fixture["pairs"]] + list(fixture["ranking"]["tokens"])
    token_mismatches = [i for i, (r, t) in enumerate(zip(results, expected_tokens)) if r.tokens != t]
    doc = report.to_dict()
    if token_mismatches:
        doc["failures"].append(
            f"{len(token_mismatches)} pairs tokenized to other lengths than at export "
            f"(first rows {token_mismatches[:5]}): the server's tokenizer differs"
        )
        doc["passed"] = False
    doc.update(
        url=url,
        protocol=protocol,
        model=model,
        seconds=round(seconds, 3),
        served=fixture.get("served"),
        certified_model=fixture.get("model"),
        token_mismatches=len(token_mismatches),
    )
    return doc


def summary(doc: Dict[str, Any]) -> str:
    return (
        f"{'PASS' if doc['passed'] else 'FAIL'}: {doc['url']} ({doc['model']}) vs certificate, "
        f"{doc['precision']} thresholds, {doc['pairs']} pairs in {doc['seconds']:.1f}s\n" + describe(doc)
    )


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rerank-verify", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True, help="host:port of the server (gRPC port unless --protocol http)")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument("--model", default="rerank")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--repo", type=Path, help="the exported repository (reads <repo>/certificate.json)")
    source.add_argument("--fixture", type=Path, help="a certificate.json file")
    parser.add_argument("--report", type=Path, help="write the full report here as JSON")
    parser.add_argument(
        "--precision",
        choices=("fp16", "fp32", "int8"),
        default=None,
        help="thresholds to apply (default: the precision the repository was exported for)",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for the whole certificate")
    parser.add_argument("--connect-timeout", type=float, default=5.0)
    parser.add_argument("--ca-cert", help="PEM root certificate: connect with TLS")
    parser.add_argument("--header", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    headers = dict(h.split("=", 1) for h in args.header)
    tls = TLSOptions(root_certificates=args.ca_cert) if args.ca_cert else None
    try:
        fixture = load_fixture(args.repo if args.repo is not None else args.fixture)
    except FixtureError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_NO_VERDICT
    problem = reachable(args.url, args.protocol, tls, headers, args.connect_timeout)
    if problem:
        print(
            f"error: cannot reach {args.url} over {args.protocol} within {args.connect_timeout:g}s: {problem}",
            file=sys.stderr,
        )
        return EXIT_NO_VERDICT
    try:
        doc = verify(args.url, fixture, args.protocol, args.model, tls, headers, args.timeout, args.precision)
    except (FixtureError, RerankError) as err:
        print(f"error: {args.url}: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_NO_VERDICT
    doc["fixture"] = str(fixture_path(args.repo if args.repo is not None else args.fixture))
    print(summary(doc))
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return EXIT_PASS if doc["passed"] else EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
