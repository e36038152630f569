"""The systems compared, each behind one interface: score(query, passages) -> scores, plus how
it pads (for the padding-efficiency column)."""

from __future__ import annotations

import bisect
import os
import subprocess
import time
from pathlib import Path

import numpy as np


def client_chunks(query: str, passages: list[str], max_batch_size: int, length_function=None,
                  buckets: list[int] | None = None) -> list[list[int]]:
    """The rows of each request the client sends for one rerank call (its own planner)."""
    from reranker_client import planning

    pairs = planning.validate_query_documents(query, passages)
    length = None
    if length_function is not None:
        length = lambda q, p: length_function(q.decode(), p.decode())  # noqa: E731
    return [chunk.rows for chunk in planning.plan_chunks(pairs, max_batch_size, length, buckets)]


def padded_tokens_of_chunks(lengths: list[int], chunks: list[list[int]], buckets: list[int]) -> int:
    total = 0
    for rows in chunks:
        width = max(lengths[i] for i in rows)
        total += buckets[bisect.bisect_left(buckets, width)] * len(rows)
    return total


def padded_tokens(lengths: list[int], batch: int, buckets: list[int] | None = None) -> int:
    """Tokens computed when pairs are sorted by length, cut into batches and padded to the longest
    (or to its bucket). Used for every system, with each one's batch size."""
    ordered = sorted(lengths)
    total = 0
    for start in range(0, len(ordered), batch):
        chunk = ordered[start:start + batch]
        width = max(chunk)
        if buckets:
            width = buckets[bisect.bisect_left(buckets, width)]
        total += width * len(chunk)
    return total


class TritonClientSystem:
    """Our path: client -> tritonserver -> tokenizer + cross_encoder (Python backend, ORT CPU)."""

    def __init__(self, url: str, token_counter=None):
        from reranker_client import RerankClient

        self.client = RerankClient(url, timeout=600, max_concurrency=2, token_counter=token_counter)

    def score(self, query: str, passages: list[str]) -> list[float]:
        return [r.logit for r in sorted(self.client.rerank(query, passages), key=lambda r: r.index)]


class OnnxRuntimeSystem:
    """In-process ONNX Runtime on the same ONNX file and the same tokens: our path's ceiling."""

    def __init__(self, repo: Path, pair_tokenizer, batch: int, length_function=None):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(repo / "cross_encoder" / "1" / "model.onnx"),
                                            providers=["CPUExecutionProvider"])
        self.tokenizer, self.batch, self.length_function = pair_tokenizer, batch, length_function

    def score(self, query: str, passages: list[str]) -> list[float]:
        encodings = self.tokenizer.tokenizer.encode_batch([query] + passages, add_special_tokens=False)
        pairs = [self.tokenizer.join(i, encodings[0].ids, e.ids) for i, e in enumerate(encodings[1:])]
        out = np.empty(len(pairs))
        for rows in client_chunks(query, passages, self.batch, self.length_function, self.tokenizer.buckets):
            batch = self.tokenizer.pad([pairs[i] for i in rows])
            logit, _ = self.session.run(None, {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask})
            out[rows] = logit.reshape(-1)
        return out.tolist()


class CrossEncoderSystem:
    def __init__(self, model_dir: Path, max_length: int, batch: int = 32):
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(str(model_dir), max_length=max_length, device="cpu")
        self.batch = batch

    def score(self, query: str, passages: list[str]) -> list[float]:
        return list(self.model.predict([(query, p) for p in passages], batch_size=self.batch,
                                       activation_fn=__import__("torch").nn.Identity()))


class FlagRerankerSystem:
    def __init__(self, model_dir: Path, max_length: int, batch: int = 128):
        from FlagEmbedding import FlagReranker

        self.model = FlagReranker(str(model_dir), use_fp16=False, devices="cpu")
        self.max_length, self.batch = max_length, batch

    def score(self, query: str, passages: list[str]) -> list[float]:
        return list(self.model.compute_score([[query, p] for p in passages], max_length=self.max_length,
                                             batch_size=self.batch))


class InfinitySystem:
    """infinity-emb in its own venv (its pins clash with ours), over its /rerank REST API."""

    def __init__(self, python: Path, model_dir: Path, port: int, log: Path, batch: int = 32):
        self.url = f"http://127.0.0.1:{port}"
        env = dict(os.environ, HF_HUB_OFFLINE="1", INFINITY_ANONYMOUS_USAGE_STATS="0")
        self.process = subprocess.Popen(
            [str(python.parent / "infinity_emb"), "v2", "--model-id", str(model_dir), "--port", str(port),
             "--engine", "torch", "--device", "cpu", "--dtype", "float32", "--batch-size", str(batch),
             "--no-bettertransformer", "--no-model-warmup"],
            stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self._wait()

    def _wait(self, timeout: float = 300) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"infinity exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2):
                    return
            except OSError:
                time.sleep(1)
        raise TimeoutError("infinity did not become healthy")

    def score(self, query: str, passages: list[str]) -> list[float]:
        import json
        import urllib.request

        body = json.dumps({"query": query, "documents": passages, "raw_scores": True}).encode()
        request = urllib.request.Request(self.url + "/rerank", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=600) as response:
            results = json.loads(response.read())["results"]
        out = [0.0] * len(passages)
        for r in results:
            out[r["index"]] = r["relevance_score"]
        return out

    def close(self) -> None:
        import signal

        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(30)


def infinity_python(venv: Path) -> Path | None:
    python = venv / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", "import infinity_emb"], capture_output=True).returncode == 0:
        return python
    return None


