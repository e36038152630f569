#!/usr/bin/env python3
"""Health probe that tells the truth: one query-passage pair through the `rerank` ensemble.

Triton's /v2/health/{live,ready} and the model's ready endpoint keep answering 200 after a
Python backend stub dies (seen on 2.51: the `cross_encoder` stub killed, every inference then
answers "Stub process ... is not healthy" for 90+ s while all health endpoints say OK). A pod
in that state is a black hole. This probe runs a real inference instead, with a short timeout.

    python3 probe.py [--url http://127.0.0.1:8000] [--model rerank] [--timeout 3] [--verdict FILE]

With --verdict (readiness only, never liveness): unhealthy until the launcher's
self-certification (self_certify.py) has written FILE and it says ready, so a pod whose engine
failed its certificate stays out of the Service without being restarted.

Exit 0: the ensemble answered with a finite score, or shed the request because its queue is
full (the server is alive and busy: restarting it under load would only move the load).
Exit 1: anything else (connection refused, timeout, a stub error, a malformed answer); the
reason goes to stdout, where the kubelet records it in the pod's events.

Standard library only: it runs in the serving image (kubelet exec probe, compose
healthcheck) and in the local launcher.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 3.0  # export/settings.py PROBE_TIMEOUT_S; the image does not ship export/
# Triton's answers when load is shed (dynamic_batching default_queue_policy): alive, busy.
OVERLOADED = ("exceeds maximum queue size", "request timeout expired")


def request_body(timeout_s: float) -> bytes:
    return json.dumps(
        {
            "inputs": [
                {"name": "query", "shape": [1, 1], "datatype": "BYTES", "data": ["health probe"]},
                {"name": "passage", "shape": [1, 1], "datatype": "BYTES", "data": ["a short passage"]},
            ],
            "outputs": [{"name": "score"}],
            # Triton rejects the request itself ("Request timeout expired") before our socket
            # gives up, so a long queue reads as busy rather than as dead.
            "parameters": {"timeout": int(timeout_s * 0.8 * 1e6)},
        }
    ).encode()


def probe(url: str = DEFAULT_URL, model: str = "rerank", timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[bool, str]:
    """(healthy, reason)."""
    request = urllib.request.Request(
        f"{url.rstrip('/')}/v2/models/{model}/infer",
        data=request_body(timeout_s),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as err:
        detail = err.read().decode("utf-8", "replace")[:300]
        if any(marker in detail.lower() for marker in OVERLOADED):
            return True, f"busy: {detail}"
        return False, f"HTTP {err.code}: {detail}"
    except (OSError, ValueError) as err:  # refused, reset, timeout, bad JSON
        return False, f"{type(err).__name__}: {err}"
    try:
        [output] = [o for o in answer["outputs"] if o["name"] == "score"]
        score = float(output["data"][0])
    except (KeyError, IndexError, TypeError, ValueError) as err:
        return False, f"malformed answer ({err}): {str(answer)[:300]}"
    if not math.isfinite(score) or not 0.0 <= score <= 1.0:
        return False, f"score {score} is not a probability"
    return True, f"ok: score {score:.4f}"


def certified(verdict_path: str) -> tuple[bool, str]:
    """(ready, reason) from the launcher's self-certification verdict file."""
    try:
        with open(verdict_path, encoding="utf-8") as f:
            verdict = json.load(f)
    except FileNotFoundError:
        return False, f"self-certification pending: no verdict at {verdict_path} yet"
    except (OSError, ValueError) as err:
        return False, f"unreadable verdict {verdict_path}: {err}"
    if verdict.get("ready") is True:
        return True, "certified" if verdict.get("passed") else "certificate FAILED (mode warn: serving anyway)"
    problems = [f"{m}: {e.get('detail')}" for m, e in verdict.get("engines", {}).items() if not e.get("taken")]
    problems += verdict.get("certificate", {}).get("failures", [])
    return False, "self-certification FAILED: " + "; ".join(problems)[:600]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--model", default="rerank")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S)
    parser.add_argument("--verdict", default=None, help="readiness: also require the self-certification verdict")
    args = parser.parse_args(argv)
    if args.verdict:
        ok, why = certified(args.verdict)
        if not ok:
            print(why, flush=True)
            return 1
    healthy, reason = probe(args.url, args.model, args.timeout)
    print(reason, flush=True)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
