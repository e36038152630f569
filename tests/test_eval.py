"""`make eval` / `python -m evaluation` end to end against the real local tritonserver.

The dataset is written here (tests/eval_data.py: ten languages, graded qrels). Numbers are
checked against what must hold whatever the model: an oracle run scores nDCG@10 = 1 exactly,
a reversed run scores the minimum computed here independently, the served run's metrics equal
those of FlagReranker's scores on the same candidates, MTEB (through our adapter) agrees with
our evaluator. Bad input is exercised through the CLI: exit status and message, never a
traceback.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from evaluation import dataset as ds
from evaluation import first_stage, metrics
from export.settings import ServingLimits
from tests import eval_data
from tests.references import flag_scores

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict:
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "client" / "src"), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "evaluation", "--quiet", *map(str, args)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_run(path: Path) -> dict:
    run: dict = {}
    for line in path.read_text("utf-8").splitlines():
        qid, _, did, rank, score, _ = line.split()
        run.setdefault(qid, []).append((did, int(rank), float(score)))
    return run


def ndcg10(ranked_grades) -> float:
    """Independent of pytrec_eval: trec_eval's nDCG (linear gain, 1/log2(rank + 1)) at 10."""

    def dcg(grades):
        return sum(g / math.log2(i + 2) for i, g in enumerate(list(grades)[:10]))

    ideal = dcg(sorted(ranked_grades, reverse=True))
    return dcg(ranked_grades) / ideal if ideal else 0.0


def oracle_metrics(judged, scores, ks) -> dict:
    """Independent of pytrec_eval and of evaluation/metrics.py, from the definitions trec_eval
    uses: rank by score descending, ties by doc id descending; nDCG@10 with linear gain, 1/log2
    discount and the ideal from every judged document; relevant = grade >= 1; MRR@10 and
    Recall@k over that ranking."""
    ranking = [d for d, _ in sorted(scores.items(), key=lambda x: (x[1], x[0]), reverse=True)]
    grades = [judged.get(d, 0) for d in ranking]
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(grades[:10]))
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:10]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    relevant = {d for d, g in judged.items() if g > 0}
    rr = next((1 / (i + 1) for i, d in enumerate(ranking[:10]) if d in relevant), 0.0)
    row = {"nDCG@10": dcg / idcg if idcg else 0.0, "MRR@10": rr}
    for k in ks:
        row[f"Recall@{k}"] = len(relevant & set(ranking[:k])) / len(relevant) if relevant else 0.0
    return row


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return eval_data.write(tmp_path_factory.mktemp("eval") / "synth")


@pytest.fixture(scope="module")
def bm25_run(server, synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_out") / "bm25"
    proc = cli("--url", server.grpc_url, "--data", synth, "--out", out)
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "report.json").read_text("utf-8")), out, proc


def test_bm25_full_path_writes_every_output(bm25_run):
    report, out, proc = bm25_run
    assert "Traceback" not in proc.stderr
    for name in ("report.json", "report.md", "ndcg_delta.png", "reranked.trec", "first_stage.trec"):
        assert (out / name).stat().st_size > 0, name
    assert report["dataset"]["judged_queries"] == len(eval_data.TOPICS)
    assert report["dataset"]["corpus_documents"] == sum(len(d) for _, _, d in eval_data.TOPICS)
    assert report["first_stage"] == "bm25" and report["depth"] == 100
    assert set(report["overall"]["reranked"]) == {"nDCG@10", "MRR@10", "Recall@10", "Recall@100"}
    assert set(report["per_query"]) == {q for q, _, _ in eval_data.TOPICS}
    # The multilingual BM25 finds every query's answer (a \w\w+ tokenizer finds nothing for the
    # Chinese, Japanese and Korean queries, whose words are not space-separated).
    for qid, row in report["per_query"].items():
        assert row["first_stage"]["Recall@10"] == 1.0, qid
    # Reranking a fixed candidate set cannot change recall at the depth.
    assert report["overall"]["first_stage"]["Recall@100"] == report["overall"]["reranked"]["Recall@100"]
    first, reranked = read_run(out / "first_stage.trec"), read_run(out / "reranked.trec")
    assert {q: {d for d, _, _ in r} for q, r in first.items()} == {q: {d for d, _, _ in r} for q, r in reranked.items()}
    for rows in reranked.values():
        assert [r for _, r, _ in rows] == list(range(1, len(rows) + 1))
        assert all(a[2] >= b[2] for a, b in zip(rows, rows[1:]))
    t = report["throughput"]
    assert t["pairs"] == sum(len(r) for r in reranked.values()) and t["queries"] == len(eval_data.TOPICS)
    assert t["truncated_pairs"] == 1  # d-en-4, past max_length, is a candidate of the English query
    assert t["pairs_per_s"] > 0 and 0 < t["latency_ms"]["p50"] <= t["latency_ms"]["max"]
    assert report["published"]["matched"] is False
    assert "No published figure for dataset 'synth'" in report["published"]["statement"]
    md = (out / "report.md").read_text("utf-8")
    assert "| nDCG@10 |" in md and "No published figure" in md and md in proc.stdout
    import matplotlib.image

    assert matplotlib.image.imread(out / "ndcg_delta.png").shape[:2] == (400, 800)


def _run_with(server, synth, tmp_path, run: dict, *extra: str):
    path = eval_data.write_run(tmp_path / "candidates.trec", run)
    out = tmp_path / "out"
    proc = cli("--url", server.grpc_url, "--data", synth, "--candidates", path, "--out", out, *extra)
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "report.json").read_text("utf-8")), out, proc


def test_oracle_run_scores_exactly_one(server, synth, tmp_path):
    oracle = {q: {d: float(g) for d, g in docs.items()} for q, docs in eval_data.qrels().items()}
    report, _, _ = _run_with(server, synth, tmp_path, oracle)
    for qid, row in report["per_query"].items():
        assert row["first_stage"]["nDCG@10"] == 1.0 and row["first_stage"]["MRR@10"] == 1.0, qid
    assert report["overall"]["first_stage"]["nDCG@10"] == 1.0


def test_reversed_run_scores_the_computed_minimum(server, synth, tmp_path):
    qrels = eval_data.qrels()
    reversed_run, expected = {}, {}
    for qid, _, docs in eval_data.TOPICS:
        order = sorted((d for d, _, _, _ in docs), key=lambda d: (qrels[qid].get(d, 0), d))  # worst first
        reversed_run[qid] = {d: float(len(order) - i) for i, d in enumerate(order)}
        grades = [qrels[qid].get(d, 0) for d in order]
        expected[qid] = ndcg10(grades)
        # It is the minimum over every ordering of these candidates.
        assert expected[qid] == pytest.approx(min(ndcg10(p) for p in itertools.permutations(grades)), abs=1e-12)
    report, _, _ = _run_with(server, synth, tmp_path, reversed_run)
    for qid, value in expected.items():
        assert report["per_query"][qid]["first_stage"]["nDCG@10"] == pytest.approx(value, abs=1e-12), qid
        assert value < 1.0
    assert report["overall"]["first_stage"]["nDCG@10"] == pytest.approx(np.mean(list(expected.values())), abs=1e-12)


def test_served_metrics_equal_flagreranker_on_the_same_candidates(bm25_run, tiny_model):
    report, out, _ = bm25_run
    texts, queries = eval_data.texts(), eval_data.queries()
    candidates = read_run(out / "first_stage.trec")
    served = {q: {d: s for d, _, s in rows} for q, rows in read_run(out / "reranked.trec").items()}
    pairs = [(q, d) for q, rows in candidates.items() for d, _, _ in rows]
    logits = flag_scores(tiny_model, [(queries[q], texts[d]) for q, d in pairs], normalize=False)
    reference: dict = {}
    for (q, d), logit in zip(pairs, logits):
        reference.setdefault(q, {})[d] = float(logit)
        assert abs(served[q][d] - logit) < 1e-4, (q, d)
    for q, docs in reference.items():  # a near tie could swap legitimately; none here, so ranks must agree
        values = sorted(docs.values())
        assert min((b - a for a, b in zip(values, values[1:])), default=1.0) > 1e-3, q
    qrels = eval_data.qrels()
    expected = {q: oracle_metrics(qrels[q], reference.get(q, {}), [10, 100]) for q in qrels}
    for qid, row in expected.items():
        for name, value in row.items():
            assert report["per_query"][qid]["reranked"][name] == pytest.approx(value, abs=1e-12), (qid, name)
    for name in metrics.names([10, 100]):
        mean = sum(row[name] for row in expected.values()) / len(expected)
        assert report["overall"]["reranked"][name] == pytest.approx(mean, abs=1e-12), name
    # Reranking reorders: at least one query's reranked nDCG differs from its first stage's.
    assert any(r["reranked"]["nDCG@10"] != r["first_stage"]["nDCG@10"] for r in report["per_query"].values())


def test_problems_that_do_not_stop_a_run_are_counted(server, tmp_path):
    data = eval_data.write(
        tmp_path / "messy", extra_docs=[("d-empty", "", "   ")], extra_qrels=[("q-en", "d-missing", 1)]
    )
    run = eval_data.all_docs_run()
    run["q-fr"]["d-empty"] = 10.0  # an empty document, ranked first by the first stage
    run["q-de"]["d-ghost"] = 5.0  # not in the corpus
    del run["q-ko"]  # a judged query with no candidates
    run["q-unjudged"] = {"d-en-1": 1.0}
    report, out, proc = _run_with(server, data, tmp_path, run)
    assert "Traceback" not in proc.stderr
    counts = {k: v["count"] for k, v in report["issues"].items()}
    assert counts == {
        "qrels_doc_not_in_corpus": 1,
        "empty_documents_in_corpus": 1,
        "empty_candidates": 1,
        "candidate_not_in_corpus": 1,
        "queries_without_candidates": 1,
        "run_query_not_judged": 1,
    }
    assert report["issues"]["qrels_doc_not_in_corpus"]["examples"] == ["d-missing"]
    assert "note: qrels_doc_not_in_corpus: 1" in proc.stderr
    assert report["per_query"]["q-ko"] == {
        "first_stage": dict.fromkeys(report["overall"]["reranked"], 0.0),
        "reranked": dict.fromkeys(report["overall"]["reranked"], 0.0),
    }
    reranked = read_run(out / "reranked.trec")
    assert reranked["q-fr"][-1][0] == "d-empty"  # not sent, ranked last
    assert "d-ghost" not in {d for d, _, _ in reranked["q-de"]}
    sent = sum(len(r) for r in reranked.values()) - 1
    assert report["throughput"]["pairs"] == sent
    assert "## Input problems" in proc.stdout and "empty_candidates: 1" in proc.stdout


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_folder", "no such dataset folder"),
        ("no_corpus", "missing corpus.jsonl (BEIR layout"),
        ("no_queries", "missing queries.jsonl"),
        ("no_qrels", "missing qrels/test.tsv"),
        ("bad_corpus_line", "corpus.jsonl:2: not a JSON object"),
        ("bad_run_line", "candidates.trec:1: expected 6 columns"),
        ("no_judged_query", "nothing to evaluate"),
        ("unreachable", "cannot reach"),
    ],
)
def test_fatal_input_gives_a_message_and_exit_2(server, tmp_path, case, message):
    skip = {"no_corpus": {"corpus.jsonl"}, "no_queries": {"queries.jsonl"}, "no_qrels": {"qrels"}}.get(case, set())
    data = eval_data.write(tmp_path / "d", skip=skip) if case != "no_folder" else tmp_path / "absent"
    args = ["--url", server.grpc_url, "--data", data, "--out", tmp_path / "out"]
    if case == "bad_corpus_line":
        lines = (data / "corpus.jsonl").read_text("utf-8").splitlines(keepends=True)
        (data / "corpus.jsonl").write_text(lines[0] + "{not json\n" + "".join(lines[2:]), "utf-8")
    elif case == "bad_run_line":
        (tmp_path / "candidates.trec").write_text("q-en d-en-1 1\n", "utf-8")
        args += ["--candidates", tmp_path / "candidates.trec"]
    elif case == "no_judged_query":
        (data / "qrels" / "test.tsv").write_text("q-en\td-en-1\t0\n", "utf-8")
    elif case == "unreachable":
        from tests.conftest import free_port

        args[1] = f"localhost:{free_port()}"
    proc = cli(*args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message in proc.stderr and proc.stderr.startswith("eval: ")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "report.json").exists()


def _run_make_eval(*variables: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`make eval` with these NAME=value variables (PY: this interpreter). -o: the shared .venv
    is already set up (make test's first step); do not reinstall it here."""
    return subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", "eval", f"PY={sys.executable}", *variables],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_make_eval_runs_in_seconds(server, synth, tmp_path):
    start = time.monotonic()
    proc = _run_make_eval(f"URL={server.grpc_url}", f"DATA={synth}", f"EVAL_OUT={tmp_path / 'out'}")
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert "| nDCG@10 |" in proc.stdout and (tmp_path / "out" / "report.json").exists()
    assert elapsed < 60, elapsed
    usage = _run_make_eval(timeout=60)
    assert usage.returncode == 2 and "usage: make eval URL=" in usage.stdout + usage.stderr


def test_published_figures_match_by_name_and_say_what_differs():
    from evaluation import published

    # Exact names only: a set of the card's tables, under the names BEIR, MTEB and MIRACL use.
    assert published.match("miracl-de") == (published.MIRACL, "de")
    assert published.match("MIRACL_ar") == (published.MIRACL, "ar")
    assert published.match("scifact") == (published.BEIR, "scifact")
    assert published.match("beir-fiqa") == (published.BEIR, "fiqa")
    assert published.match("webis-touche2020") == (published.BEIR, "touche")
    assert published.match("dbpedia-entity") == (published.BEIR, "dbpedia")
    assert published.match("T2Retrieval") == (published.CMTEB, "T2Retrieval")
    for other in (
        "MIRACLReranking",
        "MIRACLRetrieval",
        "miracl",
        "miracl-xx",
        "bioasq",
        "robust04",
        "signal1m",
        "trec-news",
        "synth",
        "my-scifact-copy",
        "scifact2",
        "cqadupstack-android",
    ):
        assert published.match(other) is None, other
    # The card's set lists, exactly: 15 BEIR sets, 8 C-MTEB retrieval sets, 18 MIRACL languages.
    assert len(published.BEIR.sets) == 15 and len(published.CMTEB.sets) == 8 and len(published.MIRACL.sets) == 18
    # Per-set figures transcribed from the tables: each table's own average is the mean of its row.
    for bench in published.BENCHMARKS:
        rows = list(zip(*bench.sets.values()))
        assert round(sum(rows[0]) / len(rows[0]), 2) == bench.average, bench.name
        assert round(sum(rows[1]) / len(rows[1]), 2) == bench.first_stage_average, bench.name
    assert published.BEIR.sets["scifact"] == (73.08, 74.64) and published.MIRACL.sets["de"] == (62.64, 56.8)
    assert (published.BEIR.first_stage, published.BEIR.first_stage_average) == ("bge-en-v1.5 large", 54.31)
    assert (published.CMTEB.first_stage, published.CMTEB.first_stage_average) == ("bge-zh-v1.5 large", 70.46)

    entry = published.compare("miracl-de", 0.7, 0.6, "bm25", 100, 512, "test")
    assert entry["published_ndcg10"] == 62.64 and entry["published_first_stage_ndcg10"] == 56.8
    assert entry["published_first_stage"] == "bge-m3" and entry["published_average"] == 72.84
    assert entry["measured_ndcg10"] == 70.0 and entry["measured_first_stage_ndcg10"] == 60.0
    text = " ".join(entry["conditions_that_differ"])
    assert "max_length 512" in text and "BM25" in text and "bge-m3" in text and "dev" in text
    assert "62.64" in entry["statement"] and "bge-m3 (56.8)" in entry["statement"]
    same = published.compare("scifact", 0.7, 0.6, "run:bge-en.trec", 100, 1024, "test")
    assert same["published_ndcg10"] == 73.08 and same["published_first_stage"] == "bge-en-v1.5 large"
    assert not any("max_length" in c or "split" in c for c in same["conditions_that_differ"])
    assert published.compare("msmarco", 0.5, 0.4, "bm25", 100, 1024, "test")["conditions_that_differ"][-1] == (
        "split test, the card's BEIR figures are on dev"
    )
    none = published.compare("MIRACLReranking", 0.5, 0.4, "bm25", 100, 1024)
    assert none["matched"] is False and "No published figure for dataset 'MIRACLReranking'" in none["statement"]


def _beir_evaluate(qrels, run, ks, ignore_identical_ids=True):
    """BEIR's own evaluator (beir 2.2.0, pinned): {our metric name: value}; it rounds to 5 digits."""
    from beir.retrieval.evaluation import EvaluateRetrieval

    copy = {q: dict(d) for q, d in run.items()}  # it pops identical ids from the dict it is given
    ndcg, _, recall, _ = EvaluateRetrieval.evaluate(qrels, copy, ks, ignore_identical_ids=ignore_identical_ids)
    return {"nDCG@10": ndcg["NDCG@10"], **{f"Recall@{k}": recall[f"Recall@{k}"] for k in ks}}


@pytest.mark.parametrize("keep_identical_ids", [False, True])
def test_queries_counted_and_identical_ids_as_beir_evaluate(tmp_path, keep_identical_ids):
    """The same queries as BEIR's loader (0-grade-only ones included, scoring 0) and the same
    numbers as BEIR's EvaluateRetrieval.evaluate, with identical ids removed (the default) or kept."""
    from beir.datasets.data_loader import GenericDataLoader

    root, run = eval_data.write_conventions_set(tmp_path / "conventions")
    data = ds.load(root)
    _, beir_queries, beir_qrels = GenericDataLoader(data_folder=str(root)).load(split="test")
    assert data.qrels == beir_qrels and data.queries.keys() == beir_queries.keys()
    assert "q-zero" in data.qrels and data.issues["queries_without_relevant"] == 1
    ours = metrics.evaluate(data.qrels, run, [10, 100], ignore_identical_ids=not keep_identical_ids)
    assert set(ours) == set(beir_qrels)
    assert ours["q-zero"] == dict.fromkeys(metrics.names([10, 100]), 0.0)
    overall = metrics.mean(ours, metrics.names([10, 100]))
    beir = _beir_evaluate(beir_qrels, run, [10, 100], ignore_identical_ids=not keep_identical_ids)
    for name, value in beir.items():
        assert overall[name] == pytest.approx(value, abs=5e-6), name
    # The conventions change the numbers on this set (so the comparison above can fail).
    other = _beir_evaluate(beir_qrels, run, [10, 100], ignore_identical_ids=keep_identical_ids)
    assert other["nDCG@10"] != pytest.approx(beir["nDCG@10"], abs=1e-4)
    judged_only = {q: r for q, r in ours.items() if any(g > 0 for g in data.qrels[q].values())}
    assert metrics.mean(judged_only, ["nDCG@10"])["nDCG@10"] != pytest.approx(beir["nDCG@10"], abs=1e-4)
    if not keep_identical_ids:
        assert ours["d-ru-3"]["nDCG@10"] == 0.0  # its only candidate was itself
        assert metrics.identical_ids(run) == ["d-de-2/d-de-2", "d-ru-3/d-ru-3"]


def test_metrics_against_an_independent_oracle():
    """nDCG@10, MRR@10 and Recall@k of metrics.evaluate against plain Python written from the
    definitions (trec_eval's: linear gain, log2 discount, ideal from every judged document;
    relevant = grade >= 1; ties by doc id descending), on runs with ties, unjudged and missing
    relevant documents, and a query absent from the run."""
    qrels = {
        "a": {"d1": 2, "d2": 1, "d3": 0, "d9": 1},  # d9 never retrieved
        "b": {"d4": 1},
        "c": {"d5": 1, "d6": 3},
        "z": {"d7": 1},  # not in the run: 0
    }
    run = {
        "a": {"d3": 5.0, "d2": 4.0, "dx": 4.0, "d1": 1.0, "dy": 0.5},  # dx ties d2: dx ranks first
        "b": {f"n{i}": float(20 - i) for i in range(10)} | {"d4": 0.1},  # d4 at rank 11: past MRR@10
        "c": {"d6": 2.0, "d5": 1.0},
    }

    got = metrics.evaluate(qrels, run, [1, 3, 10, 100])
    for q in qrels:
        expected = oracle_metrics(qrels[q], run.get(q, {}), [1, 3, 10, 100])
        for name, value in expected.items():
            assert got[q][name] == pytest.approx(value, abs=1e-12), (q, name)
    # The cases bite: a tie broken by doc id, a relevant document just past the cut-off.
    assert got["a"]["Recall@3"] == pytest.approx(1 / 3) and got["a"]["MRR@10"] == pytest.approx(1 / 3)
    assert got["b"]["MRR@10"] == 0.0 and got["b"]["Recall@10"] == 0.0 and got["b"]["Recall@100"] == 1.0


def test_duplicate_document_ids_are_named_and_the_last_copy_read(tmp_path):
    """Both first stages read the last copy of a repeated id, as BEIR's loader does, and the
    report names the ids; BM25 indexes each id once (its scores equal those over a corpus
    holding only the last copy)."""
    from beir.datasets.data_loader import GenericDataLoader

    root, run = eval_data.write_conventions_set(tmp_path / "dup")
    data = ds.load(root)
    eval_data.write_run(tmp_path / "run.trec", run)
    first = first_stage.from_run(data, tmp_path / "run.trec", depth=100)
    beir_corpus = GenericDataLoader(data_folder=str(root)).load_corpus()
    assert first.texts["d-es-2"] == ds.document_text(beir_corpus["d-es-2"])
    assert first.texts["d-es-2"].startswith("El Tajo nace")
    assert data.issues["duplicate_document_ids"] == 2
    assert data.issues.examples["duplicate_document_ids"] == ["d-es-2 (x2)", "d-ko-3 (x2)"]
    assert data.corpus_size == len(beir_corpus)

    bm25_data = ds.load(root)
    bm25 = first_stage.bm25(bm25_data, depth=100)
    assert bm25_data.issues["duplicate_document_ids"] == 2 and bm25_data.corpus_size == len(beir_corpus)
    lines = (root / "corpus.jsonl").read_text("utf-8").splitlines(keepends=True)
    first_copy = next(i for i, line in enumerate(lines) if json.loads(line)["_id"] == "d-es-2")
    single = tmp_path / "single"
    single.mkdir()
    for name in ("queries.jsonl", "qrels"):
        (single / name).symlink_to(root / name)
    (single / "corpus.jsonl").write_text("".join(lines[:first_copy] + lines[first_copy + 1 :]), "utf-8")
    reference = first_stage.bm25(ds.load(single), depth=100)
    for qid, docs in bm25.candidates.items():
        assert [d for d, _ in docs] == [d for d, _ in reference.candidates[qid]], qid
        assert [s for _, s in docs] == pytest.approx([s for _, s in reference.candidates[qid]], rel=1e-6), qid
    assert bm25.texts["d-es-2"].startswith("El Tajo nace")


def test_corpus_is_streamed_not_held(tmp_path):
    """A run-file evaluation keeps only its candidates' texts: peak memory far below the corpus."""
    import tracemalloc

    root = tmp_path / "big"
    root.mkdir()
    filler = "lorem ipsum dolor sit amet " * 20
    with (root / "corpus.jsonl").open("w", encoding="utf-8") as handle:
        for i in range(20_000):
            handle.write(json.dumps({"_id": f"d{i}", "title": "", "text": f"{i} {filler}"}) + "\n")
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "lorem 7"}) + "\n", "utf-8")
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("q1\td7\t1\n", "utf-8")
    eval_data.write_run(tmp_path / "run.trec", {"q1": {f"d{i}": float(-i) for i in range(100)}})
    size = (root / "corpus.jsonl").stat().st_size
    data = ds.load(root)
    tracemalloc.start()
    first = first_stage.from_run(data, tmp_path / "run.trec", depth=100)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert data.corpus_size == 20_000 and len(first.texts) == 100
    assert peak < size / 10, (peak, size)  # the corpus (~11 MB) never sits in memory


def _make_eval(server, data: Path, candidates: Path, out: Path) -> dict:
    proc = _run_make_eval(f"URL={server.grpc_url}", f"DATA={data}", f"CANDIDATES={candidates}", f"EVAL_OUT={out}")
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "report.json").read_text("utf-8"))


def test_make_eval_equals_beir_and_mteb_on_self_ids_zero_grade_queries_and_duplicate_ids(server, tmp_path):
    """`make eval` on a set with self-ids, a query whose qrels are all 0 and repeated document
    ids gives, before and after reranking, the numbers of BEIR's EvaluateRetrieval.evaluate
    (beir 2.2.0, its GenericDataLoader reading the same files) on the runs it writes, and a real
    MTEB reranking evaluation (mteb.evaluate, ignore_identical_ids=True as for ArguAna, Quora,
    FiQA, ...) scoring the same candidates through the server with TritonCrossEncoder."""
    import mteb
    from beir.datasets.data_loader import GenericDataLoader
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
    from mteb.abstasks.task_metadata import TaskMetadata
    from mteb.models.models_protocols import CrossEncoderProtocol

    from evaluation.mteb_adapter import EMPTY_SCORE, TritonCrossEncoder

    root, run = eval_data.write_conventions_set(tmp_path / "conventions")
    candidates = eval_data.write_run(tmp_path / "candidates.trec", run)
    report = _make_eval(server, root, candidates, tmp_path / "out")
    counts = {k: v["count"] for k, v in report["issues"].items()}
    assert counts["identical_ids_removed"] == 2 and counts["duplicate_document_ids"] == 2
    assert counts["queries_without_relevant"] == 1 and report["dataset"]["queries_without_relevant"] == 1
    assert report["conventions"]["identical_ids"].startswith("removed")

    corpus, queries, qrels = GenericDataLoader(data_folder=str(root)).load(split="test")
    assert set(report["per_query"]) == set(qrels)  # BEIR's queries, 0-grade one included
    ks = [10, 100]
    for stage, trec in (("first_stage", "first_stage.trec"), ("reranked", "reranked.trec")):
        written = {}
        for qid, rows in read_run(tmp_path / "out" / trec).items():
            written[qid] = {did: score for did, _, score in rows}
        assert set(written) == set(qrels)  # every query in the run BEIR is given: BEIR counts them all
        beir = _beir_evaluate(qrels, written, ks)
        for name, value in beir.items():
            assert report["overall"][stage][name] == pytest.approx(value, abs=5e-6), (stage, name)
    # The reranked run scored the copy of d-es-2 that BEIR holds (the last), not the first.
    served = {d: s for d, _, s in read_run(tmp_path / "out" / "reranked.trec")["q-es"]}
    client_scores = TritonCrossEncoder(server.grpc_url)
    try:
        again = client_scores.score_pairs([(queries["q-es"], ds.document_text(corpus["d-es-2"]))])
    finally:
        client_scores.close()
    assert served["d-es-2"] == pytest.approx(float(again[0]), abs=1e-5)

    corpus_rows = [json.loads(line) for line in (root / "corpus.jsonl").read_text("utf-8").splitlines()]

    class ConventionsReranking(AbsTaskRetrieval):
        ignore_identical_ids = True
        metadata = TaskMetadata(
            name="SynthConventionsReranking",
            type="Reranking",
            main_score="ndcg_at_10",
            description="offline",
            reference="https://example.org",
            dataset={"path": "NA", "revision": "NA"},
            category="t2t",
            eval_splits=["test"],
            eval_langs=["eng-Latn"],
            date=("2026-01-01", "2026-01-01"),
            dialect=[],
            domains=[],
            task_subtypes=[],
            license="cc-by-4.0",
            annotations_creators="derived",
            modalities=["text"],
            sample_creation="found",
            bibtex_citation="",
        )

        def load_data(self, num_proc=None, **kwargs):
            query_rows = [json.loads(line) for line in (root / "queries.jsonl").read_text("utf-8").splitlines()]
            self.dataset = {
                "default": {
                    "test": RetrievalSplitData(
                        queries=Dataset.from_list([{"id": q["_id"], "text": q["text"]} for q in query_rows]),
                        # Every line, repeated ids included, in file order: MTEB keeps the last.
                        corpus=Dataset.from_list(
                            [{"id": d["_id"], "title": d["title"], "text": d["text"]} for d in corpus_rows]
                        ),
                        relevant_docs={q: dict(docs) for q, docs in qrels.items()},
                        top_ranked={q: list(docs) for q, docs in run.items()},
                    )
                }
            }
            self.data_loaded = True

    model = TritonCrossEncoder(server.grpc_url)
    try:
        assert isinstance(model, CrossEncoderProtocol)
        assert model.mteb_model_meta.name == "BAAI/bge-reranker-v2-m3"
        result = mteb.evaluate(model, ConventionsReranking(), cache=None, show_progress_bar=False)
        scores = result.task_results[0].scores["test"][0]
        # The legacy call (MTEB 1.x, sentence-transformers): a list of pairs; empty text is not sent.
        pair = (queries["q-en"], ds.document_text(corpus["d-en-1"]))
        legacy = model.predict([pair, (pair[0], "  ")])
        assert legacy[1] == EMPTY_SCORE
    finally:
        model.close()
    ours = report["overall"]["reranked"]
    for mteb_name, name in (
        ("ndcg_at_10", "nDCG@10"),
        ("mrr_at_10", "MRR@10"),
        ("recall_at_10", "Recall@10"),
        ("recall_at_100", "Recall@100"),
    ):
        assert scores[mteb_name] == pytest.approx(ours[name], abs=5e-6), name
    served = {d: s for d, _, s in read_run(tmp_path / "out" / "reranked.trec")["q-en"]}
    assert legacy[0] == pytest.approx(served["d-en-1"], abs=1e-5)


def test_ir_datasets_export_writes_the_layout_we_read(tmp_path):
    """The download step's writer, fed ir_datasets' own record types (the download itself needs
    the network): its output loads, with titles joined as BEIR does."""
    from ir_datasets.formats import GenericDoc, GenericQuery, TrecQrel

    from evaluation.export_ir_datasets import write_beir

    class InMemory:  # the three iterators every ir_datasets dataset with a split offers
        def docs_iter(self):
            return iter([GenericDoc("d1", "Zugspitze ist 2962 m hoch."), GenericDoc("d2", "Berlin.")])

        def queries_iter(self):
            return iter([GenericQuery("q1", "Wie hoch ist die Zugspitze?")])

        def qrels_iter(self):
            return iter([TrecQrel("q1", "d1", 1, "0"), TrecQrel("q1", "d2", 0, "0")])

    counts = write_beir(InMemory(), tmp_path / "miracl-de", "dev")
    assert counts == {"docs": 2, "queries": 1, "qrels": 2}
    data = ds.load(tmp_path / "miracl-de", split="dev")
    assert data.qrels == {"q1": {"d1": 1, "d2": 0}} and data.queries == {"q1": "Wie hoch ist die Zugspitze?"}
    assert [(d, t) for d, t, _ in ds.scan_corpus(data)] == [("d1", "Zugspitze ist 2962 m hoch."), ("d2", "Berlin.")]


def _run_scores(path: Path) -> dict:
    scores = {}
    for line in path.read_text("utf-8").splitlines():
        qid, _, did, _, score, _ = line.split()
        scores[(qid, did)] = float(score)
    return scores


def test_window_mode_runs_through_the_window_ensemble(server, tiny_model, tmp_path):
    """--mode window scores through `rerank_windows`. Oracles independent of the server's code: a
    document that fits in one window (fewer UTF-8 bytes than max_length tokens, since every token
    covers at least a byte) gets exactly its truncate-mode score; a document far past max_length
    gets FlagReranker's best score over windows cut by tests/window_reference.py - which its
    truncated score is not (a scorer left in truncate mode fails here)."""
    from common.calibration_texts import long_passage
    from tests.window_reference import reference_windows

    long_text = long_passage(30)
    data = eval_data.write(tmp_path / "d", extra_docs=[("d-long", "", long_text)])
    run = eval_data.all_docs_run()
    run["q-en"]["d-long"] = 0.5
    candidates = eval_data.write_run(tmp_path / "candidates.trec", run)
    runs, reports = {}, {}
    for mode in ("truncate", "window"):
        out = tmp_path / mode
        proc = cli("--url", server.grpc_url, "--data", data, "--candidates", candidates, "--out", out, "--mode", mode)
        assert proc.returncode == 0, proc.stderr
        reports[mode] = json.loads((out / "report.json").read_text())
        assert reports[mode]["mode"] == mode
        runs[mode] = _run_scores(out / "reranked.trec")
    queries = {q["_id"]: q["text"] for q in map(json.loads, (data / "queries.jsonl").read_text("utf-8").splitlines())}
    docs = {d["_id"]: d for d in map(json.loads, (data / "corpus.jsonl").read_text("utf-8").splitlines())}
    assert runs["truncate"].keys() == runs["window"].keys()
    max_length = ServingLimits().max_length
    short = 0
    for (qid, did), score in runs["truncate"].items():
        size = len(queries[qid].encode()) + len(f"{docs[did]['title']} {docs[did]['text']}".encode()) + 8
        if size < max_length:
            short += 1
            assert abs(runs["window"][(qid, did)] - score) < 1e-5, (qid, did)
    assert short >= len(runs["truncate"]) // 2  # the check covered most of the run
    windows = reference_windows(tiny_model, queries["q-en"], long_text, max_length)
    assert len(windows.texts) > 2
    assert runs["window"][("q-en", "d-long")] == pytest.approx(windows.best, abs=1e-4)
    assert abs(runs["truncate"][("q-en", "d-long")] - windows.best) > 1e-2  # the two modes differ here
    # Truncate mode reports the pairs it cut; window mode reads every token.
    assert reports["truncate"]["throughput"]["truncated_pairs"] >= 2  # d-long and d-en-4
    assert reports["window"]["throughput"]["truncated_pairs"] == 0


def test_window_mode_counts_degraded_documents_and_a_refused_query_exits_1(server, tmp_path):
    """Issue 29: in window mode a document over the per-passage window limit is scored (on its
    first windows) and counted, its query reranked; a query the server refuses (a NUL character)
    is named as not reranked and the run exits 1, never a silent 0 with first-stage order."""
    from reranker_client import RerankClient

    long_text = "Mount Everest is the highest mountain on Earth and stands in the Himalayas. " * 800  # ~60 KB
    topics = [
        (qid, query, docs + [("d-en-long", "", long_text, 1)] if qid == "q-en" else docs)
        for qid, query, docs in eval_data.TOPICS
    ] + [("q-nul", "Where is the Matterhorn?\x00", [("d-nul-1", "", "The Matterhorn is in the Alps.", 2)])]
    data = eval_data.write(tmp_path / "d", topics=topics)
    run = eval_data.all_docs_run(topics)
    path = eval_data.write_run(tmp_path / "candidates.trec", run)
    out = tmp_path / "out"
    proc = cli("--url", server.grpc_url, "--data", data, "--candidates", path, "--out", out, "--mode", "window")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "1 queries could not be reranked" in proc.stderr
    report = json.loads((out / "report.json").read_text("utf-8"))
    assert report["not_reranked"] == ["q-nul"] and report["per_query"]["q-nul"]["not_reranked"]
    assert "not_reranked" not in report["per_query"]["q-en"]
    issues = report["issues"]
    assert issues["failed_queries"]["count"] == 1
    assert issues["documents_scored_in_part"] == {
        "count": 1,
        "examples": ["q-en/d-en-long"],
        "meaning": issues["documents_scored_in_part"]["meaning"],
    }
    assert report["throughput"]["degraded_documents"] == 1 and report["throughput"]["failed_queries"] == 1
    # q-en was reranked with the long document scored as the client's window mode scores it.
    reranked = _run_scores(out / "reranked.trec")
    with RerankClient(server.grpc_url) as client:
        [direct] = client.score_details([(topics[0][1], long_text.strip())], long_documents="window")
    assert direct.truncated and abs(reranked[("q-en", "d-en-long")] - direct.logit) < 1e-5
    assert reranked[("q-en", "d-en-long")] != run["q-en"]["d-en-long"]
