"""Write an ir_datasets dataset in the BEIR layout `python -m evaluation` reads.

    python -m evaluation.export_ir_datasets miracl/de/dev datasets/miracl-de
    python -m evaluation.export_ir_datasets beir/scifact/test datasets/scifact

ir_datasets downloads the dataset on first use (MIRACL's corpus from the Hugging Face Hub,
BEIR's from its mirror) and caches it in ~/.ir_datasets; this needs network access. The
qrels split is the last part of the id (dev, test) unless --split says otherwise. Documents,
queries and qrels are streamed to disk one record at a time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional


def write_beir(dataset, out: Path, split: str) -> dict:
    """`dataset`: anything with ir_datasets' docs_iter(), queries_iter() and qrels_iter()."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "qrels").mkdir(exist_ok=True)
    counts = {"docs": 0, "queries": 0, "qrels": 0}
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as handle:
        for doc in dataset.docs_iter():
            record = {"_id": doc.doc_id, "title": getattr(doc, "title", "") or "", "text": doc.text}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            counts["docs"] += 1
    with (out / "queries.jsonl").open("w", encoding="utf-8") as handle:
        for query in dataset.queries_iter():
            handle.write(json.dumps({"_id": query.query_id, "text": query.text}, ensure_ascii=False) + "\n")
            counts["queries"] += 1
    with (out / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for qrel in dataset.qrels_iter():
            handle.write(f"{qrel.query_id}\t{qrel.doc_id}\t{qrel.relevance}\n")
            counts["qrels"] += 1
    return counts


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.export_ir_datasets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dataset_id", help="an ir_datasets id with docs, queries and qrels, e.g. miracl/de/dev")
    p.add_argument("out", type=Path)
    p.add_argument("--split", help="qrels file name (default: the id's last part)")
    args = p.parse_args(argv)
    import ir_datasets

    dataset = ir_datasets.load(args.dataset_id)
    missing = [what for what in ("docs", "queries", "qrels") if not getattr(dataset, f"has_{what}")()]
    if missing:
        print(
            f"export: {args.dataset_id} has no {', '.join(missing)}; pick an id with a split, e.g. miracl/de/dev",
            file=sys.stderr,
        )
        return 2
    counts = write_beir(dataset, args.out, args.split or args.dataset_id.rsplit("/", 1)[-1])
    print(f"wrote {args.out}: {counts['docs']} documents, {counts['queries']} queries, {counts['qrels']} judgements")
    return 0


if __name__ == "__main__":
    sys.exit(main())
