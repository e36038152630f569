"""The systems compared, each behind one interface: score(query, passages) -> scores.

Padding is counted where each system computes: our server's tokenizer exports it as metrics
(read by the bench), in-process ONNX Runtime counts the batches it runs, and the two PyTorch
peers count every forward() through a hook on their model. Infinity runs out of process and
does not expose it (reported as not measured). Threads are pinned by the caller (bench.py)."""

from __future__ import annotations

import bisect
import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np


def client_chunks(
    query: str, passages: list[str], max_batch_size: int, length_function=None, buckets: list[int] | None = None
) -> list[list[int]]:
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
        chunk = ordered[start : start + batch]
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


class TokenCount:
    """Useful (attention_mask ones) and computed (padded) tokens of what a system ran."""

    def __init__(self) -> None:
        self.useful = self.padded = 0
        self._lock = threading.Lock()

    def add(self, useful: int, padded: int) -> None:
        with self._lock:
            self.useful += useful
            self.padded += padded

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.useful, self.padded


def count_forward(model, counter: TokenCount) -> None:
    """Count the tokens of every forward() of a Hugging Face model: what the peer really ran."""

    def hook(_module, args, kwargs):
        # HF models take keyword tensors; sentence-transformers' modules take one features dict.
        # (a dict or a transformers BatchEncoding, which is a UserDict, not a dict).
        features = kwargs if "attention_mask" in kwargs else (args[0] if args and hasattr(args[0], "get") else {})
        mask = features.get("attention_mask")
        if mask is not None:
            counter.add(int(mask.sum()), int(mask.numel()))

    model.register_forward_pre_hook(hook, with_kwargs=True)


class OnnxRuntimeSystem:
    """In-process ONNX Runtime on the same ONNX file and the same tokens: our path's ceiling."""

    def __init__(self, repo: Path, pair_tokenizer, batch: int, length_function=None, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            # The session options the served Python-backend model uses (cross_encoder/1/model.py): no spinning.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(repo / "cross_encoder" / "1" / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer, self.batch, self.length_function = pair_tokenizer, batch, length_function
        self.tokens = TokenCount()

    def score(self, query: str, passages: list[str]) -> list[float]:
        encodings = self.tokenizer.tokenizer.encode_batch([query] + passages, add_special_tokens=False)
        pairs = [self.tokenizer.join(i, encodings[0].ids, e.ids) for i, e in enumerate(encodings[1:])]
        out = np.empty(len(pairs))
        for rows in client_chunks(query, passages, self.batch, self.length_function, self.tokenizer.buckets):
            batch = self.tokenizer.pad([pairs[i] for i in rows])
            self.tokens.add(int(batch.attention_mask.sum()), int(batch.attention_mask.size))
            logit, _ = self.session.run(None, {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask})
            out[rows] = logit.reshape(-1)
        return out.tolist()


class CrossEncoderSystem:
    """sentence-transformers CrossEncoder. With `chunks` (query, passages) -> [[row, ...], ...] it
    runs one predict() per chunk: fed our client's chunks it pads as our server does (to each
    chunk's longest pair rather than its bucket), so a comparison with it is about the runtime,
    not about how rows were grouped."""

    def __init__(self, model_dir: Path, max_length: int, batch: int = 32, chunks=None):
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(str(model_dir), max_length=max_length, device="cpu")
        self.batch, self.chunks = batch, chunks
        self.tokens = TokenCount()
        # sentence-transformers 5 runs its module chain with a features dict (the HF model's own
        # forward is not called through __call__ there): count at the CrossEncoder module itself.
        count_forward(self.model, self.tokens)

    def _predict(self, query: str, passages: list[str]) -> list[float]:
        return list(
            self.model.predict(
                [(query, p) for p in passages],
                batch_size=self.batch,
                activation_fn=__import__("torch").nn.Identity(),
                show_progress_bar=False,
            )
        )

    def score(self, query: str, passages: list[str]) -> list[float]:
        if self.chunks is None:
            return self._predict(query, passages)
        out = [0.0] * len(passages)
        for rows in self.chunks(query, passages):
            for row, value in zip(rows, self._predict(query, [passages[i] for i in rows])):
                out[row] = float(value)
        return out


class RepeatedForwardCache:
    """Stands in for a Hugging Face model and answers a forward whose inputs equal the previous
    forward's from that forward's output, once. FlagEmbedding 1.4.2's compute_score runs its first
    batch as an "adjust batch size" probe and then runs the same batch again (encoder_only/base.py,
    compute_score_single_gpu); this skips the second run exactly (same tensors, same logits) and
    counts it. Everything else (to(), eval(), config ...) goes to the model."""

    def __init__(self, model):
        self._model, self._last, self._lock, self.skipped = model, None, threading.Lock(), 0

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __call__(self, **inputs):
        import torch

        with self._lock:
            last, self._last = self._last, None
            same = last is not None and last[0].keys() == inputs.keys()
            if same and all(torch.equal(last[0][k], v) for k, v in inputs.items() if isinstance(v, torch.Tensor)):
                self.skipped += 1
                return last[1]
            output = self._model(**inputs)
            self._last = ({k: v for k, v in inputs.items()}, output)
            return output


class FlagRerankerSystem:
    def __init__(self, model_dir: Path, max_length: int, batch: int = 128):
        from FlagEmbedding import FlagReranker

        self.model = FlagReranker(str(model_dir), use_fp16=False, devices="cpu")
        self.max_length, self.batch = max_length, batch
        self.tokens = TokenCount()
        count_forward(self.model.model, self.tokens)  # counts the forwards that really ran
        self.cache = RepeatedForwardCache(self.model.model)
        self.model.model = self.cache

    def skipped_forwards(self) -> int:
        return self.cache.skipped

    def score(self, query: str, passages: list[str]) -> list[float]:
        return list(
            self.model.compute_score([[query, p] for p in passages], max_length=self.max_length, batch_size=self.batch)
        )


class InfinitySystem:
    """infinity-emb in its own venv (its pins clash with ours), over its /rerank REST API."""

    def __init__(self, python: Path, model_dir: Path, port: int, log: Path, batch: int = 32, threads: int = 0):
        self.url = f"http://127.0.0.1:{port}"
        env = dict(os.environ, HF_HUB_OFFLINE="1", INFINITY_ANONYMOUS_USAGE_STATS="0")
        if threads:  # torch in Infinity's process reads these at start (it sets no thread count itself)
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self.process = subprocess.Popen(
            [
                str(python.parent / "infinity_emb"),
                "v2",
                "--model-id",
                str(model_dir),
                "--port",
                str(port),
                "--engine",
                "torch",
                "--device",
                "cpu",
                "--dtype",
                "float32",
                "--batch-size",
                str(batch),
                "--no-bettertransformer",
                "--no-model-warmup",
            ],
            stdout=open(log, "wb"),  # noqa: SIM115 - the server writes it while it runs
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
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
    if (
        python.exists()
        and subprocess.run([str(python), "-c", "import infinity_emb"], capture_output=True).returncode == 0
    ):
        return python
    return None
