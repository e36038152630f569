"""python -m reranker_rest [--triton-url URL[,URL]] [--host H] [--port P]: serve in the
foreground with uvicorn; every other setting comes from REST_* environment variables."""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

import uvicorn

from .app import create_app
from .settings import Settings, split_list


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="reranker-rest", description=__doc__)
    parser.add_argument("--triton-url", help="host:port[,host:port] or dns:///host:port (REST_TRITON_URL)")
    parser.add_argument("--host", help="bind address (REST_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (REST_PORT, default 8080)")
    args = parser.parse_args(argv)
    settings = Settings.from_env(
        triton_urls=split_list(args.triton_url) if args.triton_url else None, host=args.host, port=args.port
    )
    # One process: the async client multiplexes every request over its gRPC channels; scale
    # with replicas (chart) rather than workers.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
