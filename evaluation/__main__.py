"""python -m evaluation --url HOST:GRPC_PORT --data DATASET_DIR [--candidates RUN_FILE]

Loads a BEIR-layout dataset, takes first-stage candidates from a TREC run file (or BM25 over
the corpus), reranks the top --depth of every judged query through the live `rerank`
ensemble, and reports nDCG@10, MRR@10 and Recall@k before and after (pytrec_eval), per query
and overall, with throughput and latency, beside the model card's figures when the dataset
is one they cover. Writes report.json, report.md, ndcg_delta.png, reranked.trec and
first_stage.trec to --out.

Exit status: 0 evaluated (input problems that do not stop a run are counted in the report);
1 evaluated, but the server refused one or more queries: the report is written, those queries
keep their first-stage order in the reranked figures and are named (`not_reranked`), so the
reranked numbers are not the reranker's alone; 2 no evaluation (bad dataset or run file,
server unreachable or failing): one message, no traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional, Tuple

from reranker_client import RerankError

from . import dataset as ds
from . import first_stage, metrics, published, report
from .issues import EvalInputError
from .rerank import MODES, connect, make_scorer, rerank

EXIT_OK, EXIT_NOT_ALL_RERANKED, EXIT_NO_EVALUATION = 0, 1, 2


def _ks(text: str) -> List[int]:
    try:
        ks = sorted({int(k) for k in text.split(",") if k.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise argparse.ArgumentTypeError("cut-offs must be >= 1")
    return ks


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evaluation", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--url", required=True, help="host:grpc_port of the Triton server (or host:http_port with --protocol http)"
    )
    p.add_argument("--data", required=True, type=Path, help="dataset folder in the BEIR layout")
    p.add_argument("--candidates", type=Path, help="TREC run file of the first stage; default: BM25 over the corpus")
    p.add_argument("--split", default="test", help="qrels/<split>.tsv (default test; MIRACL: dev)")
    p.add_argument("--depth", type=int, default=100, help="candidates reranked per query (default 100, the card's)")
    p.add_argument("--recall-at", type=_ks, default=None, help="Recall cut-offs, comma-separated (default 10,<depth>)")
    p.add_argument(
        "--mode",
        choices=MODES,
        default="truncate",
        help="how long documents are scored: truncated at max_length, or by their best window",
    )
    p.add_argument(
        "--keep-identical-ids",
        action="store_true",
        help="score a candidate whose document id equals the query id (default: removed, as BEIR's "
        "evaluate(ignore_identical_ids=True) and MTEB's ArguAna/Quora/FiQA/... tasks do)",
    )
    p.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    p.add_argument("--model", default="rerank")
    p.add_argument("--concurrency", type=int, default=4, help="queries in flight (default 4)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per query's rerank call")
    p.add_argument("--dataset-name", help="name matched against the model card's benchmarks (default: folder name)")
    p.add_argument("--out", type=Path, help="output folder (default runs/eval/<dataset name>)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return p


def run(args: argparse.Namespace) -> Tuple[dict, dict, dict]:
    """(report, first-stage run, reranked run)."""
    if args.depth < 1:
        raise EvalInputError(f"--depth must be >= 1, got {args.depth}")
    data = ds.load(args.data, split=args.split, name=args.dataset_name)
    recall_at = args.recall_at or sorted({10, args.depth})
    client = connect(args.url, args.protocol, args.model, timeout=args.timeout)
    with client:
        limits = client.server_limits()
        scorer = make_scorer(args.mode, client)
        t0 = time.perf_counter()
        if args.candidates is not None:
            first = first_stage.from_run(data, args.candidates, args.depth)
        else:
            first = first_stage.bm25(data, args.depth)
        first_s = time.perf_counter() - t0
        first_run = {qid: dict(docs) for qid, docs in first.candidates.items() if docs}

        def progress(done: int, total: int) -> None:
            if not args.quiet and (done == total or done % 50 == 0):
                print(f"reranked {done}/{total} queries", file=sys.stderr)

        reranked = rerank(
            first,
            data.queries,
            scorer,
            data.issues,
            max_text_bytes=limits.max_text_bytes,
            concurrency=args.concurrency,
            progress=progress,
        )
    names = metrics.names(recall_at)
    ignore_identical = not args.keep_identical_ids
    if ignore_identical:
        for pair in metrics.identical_ids(first_run):
            data.issues.add("identical_ids_removed", pair)
    before = metrics.evaluate(data.qrels, first_run, recall_at, ignore_identical)
    after = metrics.evaluate(data.qrels, reranked.run, recall_at, ignore_identical)
    overall_before, overall_after = metrics.mean(before, names), metrics.mean(after, names)
    return (
        {
            "dataset": {
                "name": data.name,
                "path": str(data.root),
                "split": data.split,
                "judged_queries": len(data.qrels),
                "queries_without_relevant": data.issues["queries_without_relevant"],
                "corpus_documents": data.corpus_size,
            },
            "conventions": {
                "queries": "every query with a qrels row and a text counts; one whose rows are all relevance 0 "
                "scores 0 (BEIR and MTEB count the same queries)",
                "identical_ids": "kept" if args.keep_identical_ids else "removed (BEIR's default)",
                "duplicate_document_ids": "the last copy is read (BEIR's and MTEB's loaders)",
            },
            "first_stage": first.name,
            "first_stage_s": first_s,
            "depth": args.depth,
            "mode": args.mode,
            "concurrency": args.concurrency,
            "server": {
                "url": args.url,
                "protocol": args.protocol,
                "model": args.model,
                "max_length": limits.max_length,
                "max_batch_size": limits.max_batch_size,
            },
            "evaluator": "pytrec_eval (trec_eval measures ndcg_cut.10, recip_rank on the top 10, recall.k)",
            "overall": {
                "first_stage": overall_before,
                "reranked": overall_after,
                "delta": {m: overall_after[m] - overall_before[m] for m in names},
            },
            "per_query": {
                qid: {
                    "first_stage": before[qid],
                    "reranked": after[qid],
                    **({"not_reranked": True} if qid in reranked.failed else {}),
                }
                for qid in data.qrels
            },
            "not_reranked": sorted(reranked.failed),
            "throughput": reranked.stats(),
            "issues": data.issues.to_dict(),
            "published": published.compare(
                data.name,
                overall_after[metrics.NDCG],
                overall_before[metrics.NDCG],
                first.name,
                args.depth,
                limits.max_length,
                data.split,
            ),
        },
        first_run,
        reranked.run,
    )


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        result, first_run, reranked_run = run(args)
    except EvalInputError as err:
        print(f"eval: {err}", file=sys.stderr)
        return EXIT_NO_EVALUATION
    except RerankError as err:  # the server failed mid-run (unavailable, overloaded past retries)
        print(f"eval: the server failed during the run: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_NO_EVALUATION
    out = args.out or Path("runs") / "eval" / result["dataset"]["name"]
    files = report.write_all(out, result, first_run, reranked_run)
    print(report.markdown(result))
    print(f"wrote {', '.join(files.values())}")
    for kind, entry in result["issues"].items():
        print(f"note: {kind}: {entry['count']} ({entry['meaning']})", file=sys.stderr)
    if result["not_reranked"]:
        failed = result["not_reranked"]
        print(
            f"eval: {len(failed)} queries could not be reranked (the server refused them: "
            f"{', '.join(failed[:5])}{' ...' if len(failed) > 5 else ''}); their first-stage order is in the "
            "reranked figures",
            file=sys.stderr,
        )
        return EXIT_NOT_ALL_RERANKED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
