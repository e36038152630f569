"""Prometheus counters a Python-backend model adds to off its request path.

Every pb_utils metric call is a synchronous round trip from the stub to the server process: the
stub writes the message into shared memory and waits for the server's reply (python_backend
r24.10 src/metric.cc Metric::SendIncrementRequest -> src/pb_stub.h Stub::SendMessage, which
blocks on `cv.wait` until the parent has applied the value). Measured inside the served stubs
here: ~0.08 ms per call on idle cores, up to ~0.4 ms on two busy ones. The tokenizer made three
per response and the class model one per batch: ~0.35 ms of a small request's ~4 ms of serving
overhead (benchmarks/overhead_attribution.py), and the same on a GPU, where the request's own
work is a few ms.

So `add` only sums in memory, and a daemon thread sends the sums every `flush_s` (1 s: far finer
than any Prometheus scrape interval); `close` (the model's finalize) stops the thread and sends
what is left. A counter lags its traffic by at most ~flush_s and loses nothing while the model is
loaded. A second thread in a stub is what the backend provides for: the stub's main loop releases
the GIL while it waits for the next request "so that other threads in the user's Python model can
make progress" (src/pb_stub.cc 248-253), Stub::SendMessage serialises senders on the stub's
`stub_to_parent_message_mu_`, and the shared-memory pool allocates under its own interprocess
mutex (src/shm_manager.h Construct).

No Triton import: the metrics are passed in (anything with `increment(value)`), so tests run it
directly.
"""

from __future__ import annotations

import threading
from typing import Callable

FLUSH_S = 1.0


class DeferredCounters:
    def __init__(self, metrics: dict, flush_s: float = FLUSH_S, log: Callable[[str], None] | None = None) -> None:
        """`metrics`: counter name -> its pb_utils metric (the caller keeps the families alive)."""
        self._metrics = dict(metrics)
        self._pending = dict.fromkeys(self._metrics, 0)
        self._lock = threading.Lock()  # add() runs on the model's thread, flush() on the flusher's
        self._flush_s = flush_s
        self._log = log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deferred-counters", daemon=True)
        self._thread.start()

    def add(self, name: str, value: int) -> None:
        """Count `value` more on counter `name`; sent within ~flush_s (no round trip here)."""
        with self._lock:
            self._pending[name] += value

    def flush(self) -> None:
        """Send every non-zero sum now (one metric call per counter that moved)."""
        with self._lock:
            due, self._pending = self._pending, dict.fromkeys(self._metrics, 0)
        for name, value in due.items():
            if not value:
                continue
            try:
                self._metrics[name].increment(value)
            except Exception as err:  # noqa: BLE001 - keep the count for the next flush, keep serving
                with self._lock:
                    self._pending[name] += value
                if self._log is not None:
                    self._log(f"{name}: increment failed, kept for the next flush: {err}")

    def close(self) -> None:
        """Stop the flusher and send what is left (call from the model's finalize)."""
        self._stop.set()
        self._thread.join(timeout=10 * self._flush_s)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._flush_s):
            self.flush()
