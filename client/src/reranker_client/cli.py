"""rerank-client: rerank the documents on stdin (one per line) against --query."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from typing import List, Optional

from . import __version__
from .errors import InvalidInputError, RerankError
from .sync_client import RerankClient
from .tritonclient_adapter import TLSOptions


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="rerank-client", description=__doc__)
    parser.add_argument(
        "--url",
        action="append",
        help="host:port; repeat for several endpoints (default localhost:8001 for grpc, localhost:8000 for http)",
    )
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument("--model", default="rerank")
    parser.add_argument("--query", required=True)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument(
        "--long-documents",
        choices=("truncate", "window"),
        default="truncate",
        help="truncate: cut each document to the server's max_length (FlagReranker); window: "
        "score overlapping windows and keep the best, with its character span",
    )
    parser.add_argument(
        "--window-stride",
        type=int,
        default=None,
        help="window mode: passage tokens between window starts (default: half a window)",
    )
    parser.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="tokens per query+document pair for this call (default: the server's max_length); "
        "FlagReranker's rules at that length; in window mode, each window's",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse a document over the server's byte limit (default: cut it to its head, marked truncated)",
    )
    parser.add_argument("--verbose", action="store_true", help="log retries and failovers to stderr")
    parser.add_argument(
        "--json", action="store_true", help="print a JSON list instead of a table; index = input line from 0"
    )
    # None: the client's default deadline, derived from the server's limits (docs/LONG_DOCUMENTS.md)
    parser.add_argument("--timeout", type=float, default=None)
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--tls", action="store_true", help="connect with TLS (system roots unless --ca-cert)")
    parser.add_argument("--ca-cert", help="PEM root certificate: connect with TLS")
    parser.add_argument("--client-cert", help="PEM client certificate chain for mutual TLS (with --client-key)")
    parser.add_argument("--client-key", help="PEM private key of --client-cert")
    parser.add_argument(
        "--header", action="append", default=[], metavar="NAME=VALUE", help="request header / gRPC metadata; repeatable"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    headers = {}
    for header in args.header:
        name, sep, value = header.partition("=")
        if not sep or not name.strip():
            parser.error(f"--header expects NAME=VALUE, got {header!r}")
        headers[name.strip()] = value
    if bool(args.client_cert) != bool(args.client_key):
        parser.error("--client-cert and --client-key go together (mutual TLS)")
    tls = None
    if args.tls or args.ca_cert or args.client_cert:
        tls = TLSOptions(
            root_certificates=args.ca_cert, certificate_chain=args.client_cert, private_key=args.client_key
        )
    # `index` is the document's input line (from 0, blank lines counted, as an editor's line
    # number minus one); blank lines are skipped, not renumbered.
    lines = [line.rstrip("\r\n") for line in sys.stdin]
    line_of = [n for n, line in enumerate(lines) if line.strip()]
    documents = [lines[n] for n in line_of]
    urls = args.url or ["localhost:8001" if args.protocol == "grpc" else "localhost:8000"]
    try:
        with RerankClient(
            urls,
            protocol=args.protocol,
            model=args.model,
            timeout=args.timeout,
            retries=args.retries,
            tls=tls,
            headers=headers,
        ) as client:
            found = client.rerank(
                args.query,
                documents,
                top_k=args.top_k,
                long_documents=args.long_documents,
                window_stride=args.window_stride,
                strict=args.strict,
                max_length=args.max_length,
            )
    except RerankError as err:
        # Printed once: the library's own log records (retries, endpoint down) reach stderr only
        # with --verbose (the package logger has a NullHandler).
        if isinstance(err, InvalidInputError) and err.index is not None and err.index < len(line_of):
            line = line_of[err.index]
            where = f"documents[{line}] (input line {line + 1})"
            err = InvalidInputError(str(err).replace(f"documents[{err.index}]", where, 1), index=line)
        print(f"error ({type(err).__name__}): {err}", file=sys.stderr)
        return 1
    results = [replace(r, index=line_of[r.index]) for r in found]
    if args.json:
        print(json.dumps([r.to_dict() for r in results], ensure_ascii=False))
        return 0
    window = args.long_documents == "window"
    print(
        f"{'rank':>4}  {'index':>5}  {'score':>7}  {'logit':>8}  {'tokens':>6}  "
        + (f"{'span':>13}  {'windows':>7}  best window" if window else "document")
    )
    for rank, r in enumerate(results, 1):
        if window:
            assert r.span is not None  # window mode always answers a span
            start, end = r.span
            text, where = lines[r.index][start:end], f"{start:>6}-{end:<6}  {r.windows:>7}  "
        else:
            text, where = lines[r.index], ""
        text = text if len(text) <= 70 else text[:67] + "..."
        print(
            f"{rank:>4}  {r.index:>5}  {r.score:7.4f}  {r.logit:8.3f}  {r.tokens:>6}{'*' if r.truncated else ' '} "
            f"{where}{text}"
        )
    if any(r.truncated for r in results):
        print("* truncated (to the server's max_length, or a text over its byte limit cut to its head)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
