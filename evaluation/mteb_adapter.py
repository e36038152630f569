"""MTEB's cross-encoder interface over our client: MTEB reranking tasks score through the server.

    import mteb
    from evaluation.mteb_adapter import TritonCrossEncoder

    model = TritonCrossEncoder("gpu-node:8001")
    tasks = mteb.get_tasks(tasks=["MIRACLReranking"], languages=["deu"])
    mteb.evaluate(model, tasks)            # datasets come from the Hugging Face Hub

or `python -m evaluation.mteb_adapter --url gpu-node:8001 --task MIRACLReranking --language deu`.

MTEB 2.x (`mteb.models.models_protocols.CrossEncoderProtocol`) calls
`predict(inputs1, inputs2, *, task_metadata, hf_split, hf_subset, prompt_type)` with two
DataLoaders of the same length whose batches carry `{"text": [...]}` (queries, documents:
title and text joined); it wants one relevance score per pair. MTEB 1.x and
sentence-transformers call `predict(pairs)` with a list of (query, document) pairs: both are
accepted. mteb is not imported unless `mteb_model_meta` is read, so the adapter works
against the protocol without mteb installed.

Scores are the served logits (FlagReranker's normalize=False): only the order matters to
nDCG, and float32 sigmoids near 1 would turn distinct documents into ties.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from reranker_client import RerankClient

MODEL_NAME = "BAAI/bge-reranker-v2-m3"
# MTEB may hand over a document whose title and text are both empty; the server rejects an
# empty text (INVALID_ARGUMENT), so such a pair is not sent and gets a score below any logit.
EMPTY_SCORE = -1e4
PAIRS_PER_CALL = 1024  # one client call: it splits into max_batch_size requests, sent concurrently


class TritonCrossEncoder:
    """A CrossEncoder for MTEB whose scores come from the live `rerank` ensemble."""

    def __init__(
        self,
        model_name: str = "localhost:8001",
        revision: Optional[str] = None,
        device: Optional[str] = None,
        *,
        protocol: str = "grpc",
        model: str = "rerank",
        timeout: float = 300.0,
        client: Optional[RerankClient] = None,
        **client_kwargs: Any,
    ) -> None:
        """model_name: the server's host:port (MTEB's `__init__(model_name, revision, device)`
        signature; `device` is the server's business and is ignored)."""
        self.url = model_name
        self.revision = revision or "served"
        self.client = client or RerankClient(
            model_name, protocol=protocol, model=model, timeout=timeout, **client_kwargs
        )
        self._meta = None

    @property
    def mteb_model_meta(self):
        if self._meta is None:
            from mteb.models.model_meta import ModelMeta

            self._meta = ModelMeta.create_empty(
                overwrites=dict(
                    name=MODEL_NAME,
                    revision=self.revision,
                    loader=None,
                    framework=["PyTorch"],
                    max_tokens=self.client.server_limits().max_length,
                    reference=f"triton://{self.url}",
                    model_type=["cross-encoder"],
                )
            )
        return self._meta

    def predict(
        self,
        inputs1: Any,
        inputs2: Any = None,
        *,
        task_metadata: Any = None,
        hf_split: Optional[str] = None,
        hf_subset: Optional[str] = None,
        prompt_type: Any = None,
        **kwargs: Any,
    ) -> np.ndarray:
        if inputs2 is None:  # MTEB 1.x / sentence-transformers: a list of (query, document) pairs
            pairs = [(str(q), str(d)) for q, d in inputs1]
        else:
            pairs = list(zip(_texts(inputs1), _texts(inputs2), strict=True))
        return self.score_pairs(pairs)

    def score_pairs(self, pairs: Sequence[Tuple[str, str]]) -> np.ndarray:
        scores = np.full(len(pairs), EMPTY_SCORE, dtype=np.float64)
        rows = [i for i, (q, d) in enumerate(pairs) if q.strip() and d.strip()]
        for start in range(0, len(rows), PAIRS_PER_CALL):
            chunk = rows[start : start + PAIRS_PER_CALL]
            results = self.client.score_details([pairs[i] for i in chunk])
            scores[chunk] = [r.logit for r in results]
        return scores

    def close(self) -> None:
        self.client.close()


def _texts(loader: Iterable) -> List[str]:
    """Texts of an MTEB DataLoader (batches of {"text": [...]}) or of a plain list of strings."""
    out: List[str] = []
    for batch in loader:
        if isinstance(batch, str):
            out.append(batch)
        elif isinstance(batch, dict):
            out.extend(str(t) for t in batch["text"])
        else:
            raise TypeError(f"expected batches of {{'text': [...]}} or strings, got {type(batch).__name__}")
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.mteb_adapter",
        description="Run MTEB reranking tasks through the served model (needs the Hub).",
    )
    p.add_argument("--url", required=True)
    p.add_argument("--task", action="append", required=True, help="MTEB task name, e.g. MIRACLReranking; repeat")
    p.add_argument("--language", action="append", help="ISO 639-3 code, e.g. deu; repeat (default: all)")
    p.add_argument("--out", default="runs/mteb", help="MTEB results folder")
    args = p.parse_args(argv)
    import mteb

    tasks = mteb.get_tasks(tasks=args.task, languages=args.language)
    model = TritonCrossEncoder(args.url)
    try:
        result = mteb.evaluate(model, tasks, cache=mteb.ResultCache(args.out))
    finally:
        model.close()
    for task_result in result.task_results:
        print(
            task_result.task_name,
            {
                split: [round(s.get("main_score", float("nan")), 4) for s in scores]
                for split, scores in task_result.scores.items()
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
