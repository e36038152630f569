"""The parity certificate end to end: the fixture every export writes, `make verify` /
`python -m reranker_client.verify` against a real tritonserver (fp32 and fp16 exports), and the
negatives: another model's certificate, an unreachable URL, a missing fixture. The comparison's
checks each shown to fail on their own."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from common import calibration_texts, standin_model
from export.__main__ import main as export_main
from export.settings import ServingLimits
from reranker_client import certificate as cert
from reranker_client.verify import main as verify_main
from tests.conftest import start_server

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def other_model_repo(tmp_path_factory) -> Path:
    """Same geometry and tokenizer recipe, other random weights: a model the server does not serve."""
    model = standin_model.build(tmp_path_factory.mktemp("models") / "seed1", "tiny", seed=1)
    repo = tmp_path_factory.mktemp("repos") / "seed1"
    assert export_main(["--model", str(model), "--repo", str(repo), "--backend", "python", "--precision", "fp32"]) == 0
    return repo


@pytest.fixture(scope="module")
def fp16_server(fp16_repo, tmp_path_factory):
    srv = start_server(fp16_repo, tmp_path_factory.mktemp("logs"))
    yield srv
    srv.stop()


def test_fixture_is_held_out_multilingual_small_and_complete(python_repo):
    path = python_repo / cert.FILENAME
    fixture = cert.load_fixture(python_repo)
    assert path.stat().st_size < 400_000  # well under 1 MB at max_length 512
    assert len(set(fixture["languages"]) - {"mixed-long"}) >= 15
    tokens = [p["tokens"] for p in fixture["pairs"]]
    limits = ServingLimits()
    assert min(tokens) <= 16 and max(tokens) == limits.max_length
    assert any(p["truncated"] and p["id"].startswith("length-") for p in fixture["pairs"])  # passage past max_length
    assert any(p["truncated"] and p["id"] == "long-query" for p in fixture["pairs"])  # query cut at 3/4
    assert len(fixture["ranking"]["passages"]) == 100 == len(set(fixture["ranking"]["passages"]))
    assert len(fixture["ranking"]["logits"]) == 100 and all(np.isfinite(fixture["ranking"]["logits"]))
    # Held out: no certificate text appears in the texts that chose fp16 ranges or fp32 nodes.
    calibration = set(calibration_texts.corpus_lines())
    texts = {t for q, p in cert.all_texts(fixture) for t in (q, p)}
    assert not texts & calibration
    assert set(fixture["thresholds"]) == {"fp32", "fp16", "int8"}
    assert len(fixture["model"]["files_sha256"]["model.safetensors"]) == 64
    assert len(fixture["model"]["served_sha256"]["cross_encoder/1/model.onnx"]) == 64
    assert fixture["served"] == {**fixture["served"], "backend": "python", "precision": "fp32"}


def test_verify_passes_against_the_server_it_was_exported_for(server, python_repo, tmp_path, capsys):
    report = tmp_path / "report.json"
    assert verify_main(["--url", server.grpc_url, "--repo", str(python_repo), "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("PASS") and "Kendall tau" in out and "worst languages" in out
    doc = json.loads(report.read_text())
    assert doc["passed"] and doc["precision"] == "fp32" and doc["non_finite"] == 0
    assert doc["max_abs_logit"] <= doc["thresholds"]["max_abs_logit"] and doc["token_mismatches"] == 0
    assert doc["top10_same_set"] and doc["top10_order_ok"] and doc["kendall_tau"] >= 0.99
    assert len(doc["per_language"]) >= 15 and doc["pairs"] == len(cert.fixture_rows(cert.load_fixture(python_repo)))


def test_verify_over_http_too(server, python_repo):
    assert verify_main(["--url", server.http_url, "--protocol", "http", "--repo", str(python_repo)]) == 0


def test_make_verify_fails_with_another_models_certificate(server, other_model_repo, tmp_path):
    """Serve A, verify with B's certificate: exit 1 and the worst pairs are named."""
    report = tmp_path / "b.json"
    proc = subprocess.run(
        ["make", "-s", "verify", f"URL={server.grpc_url}", f"REPO={other_model_repo}", f"REPORT={report}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "FAIL" in proc.stdout and "worst pairs:" in proc.stdout and "max |d logit|" in proc.stdout
    assert not json.loads(report.read_text())["passed"]


def test_make_verify_passes_for_the_fp16_export_and_fails_for_another_model(
    fp16_server, fp16_repo, other_model_repo, capsys
):
    assert verify_main(["--url", fp16_server.grpc_url, "--repo", str(fp16_repo)]) == 0
    out = capsys.readouterr().out
    assert "fp16 thresholds" in out
    # Another model's fp32 certificate with fp16 thresholds still fails: the weights differ by more
    # than any precision explains.
    assert verify_main(["--url", fp16_server.grpc_url, "--repo", str(other_model_repo), "--precision", "fp16"]) == 1


def test_unreachable_url_fails_in_seconds_naming_it(python_repo, capsys):
    from local_triton.server import free_port

    url = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    assert verify_main(["--url", url, "--repo", str(python_repo), "--connect-timeout", "3"]) == 2
    assert time.monotonic() - start < 10
    assert f"cannot reach {url}" in capsys.readouterr().err


def test_missing_fixture_names_the_path_and_the_fix(tmp_path, capsys):
    assert verify_main(["--url", "127.0.0.1:1", "--repo", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / cert.FILENAME) in err and "make export" in err


def test_certificate_for_another_max_length_is_refused(server, python_repo, tmp_path, capsys):
    fixture = json.loads((python_repo / cert.FILENAME).read_text())
    fixture["max_length"] = 1024
    path = tmp_path / "c.json"
    path.write_text(json.dumps(fixture))
    assert verify_main(["--url", server.grpc_url, "--fixture", str(path)]) == 2
    assert "max_length 512" in capsys.readouterr().err


def test_verify_cli_entry_point_is_installed():
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "rerank-verify"), "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "--fixture" in proc.stdout


# --- the comparison: each check can fail on its own ---


def _fixture(ranking: np.ndarray, pairs: int = 3) -> dict:
    return {
        "thresholds": {
            "fp16": {"max_abs_logit": 0.1, "max_abs_score": 0.01, "tie_logit": 0.1, "min_kendall_tau": 0.95}
        },
        "pairs": [{"id": f"p{i}", "language": "xx", "tokens": 10, "logit": 0.0} for i in range(pairs)],
        "ranking": {"logits": list(ranking), "tokens": [10] * len(ranking)},
    }


def test_top10_order_fails_on_its_own_inside_the_logit_bound():
    ranking = np.linspace(10.0, 0.0, 100)  # neighbours 0.101 apart
    fixture = _fixture(ranking)
    served = ranking.copy()
    served[0], served[1] = ranking[0] - 0.06, ranking[1] + 0.06  # swap #1 and #2: error 0.06 < 0.1
    report = cert.compare(fixture, [0, 0, 0], served, "fp16")
    assert report.max_abs_logit <= 0.1 and report.max_abs_score <= 0.01
    assert report.top10_same_set and not report.top10_order_ok
    assert report.failures == ["top-10 order on the 100-passage list differs from PyTorch beyond ties of 0.1 logits"]


def test_kendall_tau_matches_scipy_and_fails_below_its_bound():
    from scipy.stats import kendalltau

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=100), rng.normal(size=100)
    b[:10] = a[:10]  # some ties with a's order
    assert cert.kendall_tau(a, b) == pytest.approx(kendalltau(a, b).statistic, abs=1e-12)
    ranking = np.linspace(1.0, 0.0, 100)
    served = ranking.copy()
    served[20:] = 0.4 - ranking[20:] * 0.5  # the tail's order reversed, every value within 0.4 logits
    report = cert.compare(_fixture(ranking), [0, 0, 0], served, "fp16")
    assert any(f.startswith("Kendall tau") for f in report.failures)


def test_nan_is_reported_as_nan_not_as_a_ranking_problem():
    ranking = np.linspace(10.0, 0.0, 100)
    served = ranking.copy()
    served[0] = np.nan
    report = cert.compare(_fixture(ranking), [0.0, np.inf, 0.0], served, "fp16")
    assert report.non_finite == 2 and len(report.failures) == 1
    assert report.failures[0].startswith("2 NaN/Inf logits") and "p1" in report.failures[0]


def test_a_logit_or_a_score_beyond_its_bound_fails_naming_it():
    """Each bound of the comparison fails on its own: one pair 0.2 logits off (the logit bound,
    naming the pair), one pair 0.09 off near logit 0 (inside the logit bound, but its sigmoid
    moves 0.022, past the score bound); the unchanged list passes."""
    ranking = np.linspace(10.0, 0.0, 100)
    fixture = _fixture(ranking)
    assert cert.compare(fixture, [0.0, 0.0, 0.0], ranking, "fp16").failures == []
    logit_off = cert.compare(fixture, [0.0, 0.2, 0.0], ranking, "fp16")
    assert logit_off.failures[0].startswith("max |d logit| 0.2 > 0.1; worst pairs: p1 (xx, 10 tokens")
    score_off = cert.compare(fixture, [0.0, 0.0, 0.09], ranking, "fp16")
    assert score_off.max_abs_logit <= 0.1
    assert score_off.failures == [f"max |d score| {score_off.max_abs_score:.3g} > 0.01"]
