"""Run the REST service (rest/: reranker_rest) for real: uvicorn on a free port, in a thread
of the test process, in front of a real tritonserver."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

import uvicorn

from local_triton.server import free_port
from reranker_rest import Settings, create_app

# The query and documents the REST tests send (tests/test_rest.py, tests/test_rest_compat.py).
QUERY = "what is the capital of France?"
DOCS = [
    "Paris is the capital and largest city of France.",
    "Berlin is the capital of Germany.",
    "Der Eiffelturm steht in Paris.",
    "Bananas are rich in potassium.",
    "巴黎是法国的首都。",
    "The Seine flows through Paris.",
]


@contextmanager
def rest_service(triton_url: str, **settings) -> Iterator[str]:
    """Yield the service's base URL (http://127.0.0.1:PORT) until the block ends."""
    port = free_port()
    config = Settings(triton_urls=(triton_url,), host="127.0.0.1", port=port, **settings)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config), host=config.host, port=port, log_level="warning", access_log=False, lifespan="on"
        )
    )
    # uvicorn installs no signal handlers outside the main thread: a thread is enough.
    thread = threading.Thread(target=server.run, name=f"rest-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the REST service did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
