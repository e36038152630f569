"""A scripted mutation check (make test-slow): break a copy of the code that three guarantees rest
on - the client's retry logic, the tokenizer's bounded reading, the certificate comparison - one
breakage at a time, and require the tests that guard it to fail on the copy.

Each mutant is a one-line change a refactor could plausibly make. The copy is the working tree
without its virtual environments; the tests run there with the copy's packages first on the
path (the editable client install is shadowed by the copy's `client/src`). Before any mutant,
each selection must pass on the unbroken copy, so a failure is the mutant's doing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

RETRY_TESTS = (
    "tests/test_client_errors.py::test_retries_failovers_and_endpoints_marked_down_are_logged",
    "tests/test_client_errors.py::test_overload_is_retried_and_timeouts_are_not",
)
BOUNDED_TESTS = (
    "tests/test_bounded_tokenization.py",
    "-k",
    "reaches_the_tokenizer_only_as_far or glued_word_is_read_only_as_far",
)
CERTIFICATE_TESTS = ("tests/test_certificate.py", "-k", "beyond_its_bound or top10_order or kendall or nan_is")


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


BASE = "client/src/reranker_client/base.py"
TOKENIZER = "model_repository/tokenizer/1/pair_tokenization.py"
CERTIFICATE = "client/src/reranker_client/certificate.py"

MUTANTS = [
    Mutant("retries disabled", BASE, "if attempt >= self.retries:", "if True:", RETRY_TESTS),
    Mutant(
        "nothing is retryable",
        BASE,
        "retryable = isinstance(err, RETRYABLE) or",
        "retryable = False and isinstance(err, RETRYABLE) or",
        RETRY_TESTS,
    ),
    Mutant(
        "UNAVAILABLE/overload not retryable",
        "client/src/reranker_client/endpoints.py",
        "RETRYABLE = (ServerUnavailableError,)",
        "RETRYABLE = ()",
        RETRY_TESTS,
    ),
    Mutant("failed endpoint never rested", BASE, "if self.pool.mark_down(url):", "if False:", RETRY_TESTS),
    Mutant(
        "whole texts read",
        TOKENIZER,
        "if len(data) <= head_bytes or not self.cuts.applies:",
        "if True:",
        BOUNDED_TESTS,
    ),
    Mutant(
        "whole texts tokenized",
        TOKENIZER,
        "encoded = self.encode_bounded(texts, needs) if texts else []",
        "encoded = [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)] if texts else []",
        BOUNDED_TESTS,
    ),
    Mutant(
        "head 64x longer",
        TOKENIZER,
        "head_bytes = need * HEAD_BYTES_PER_TOKEN",
        "head_bytes = need * HEAD_BYTES_PER_TOKEN * 64",
        BOUNDED_TESTS,
    ),
    Mutant(
        "logit bound unchecked",
        CERTIFICATE,
        "if not report.max_abs_logit <= limits.max_abs_logit:",
        "if False:",
        CERTIFICATE_TESTS,
    ),
    Mutant(
        "score bound unchecked",
        CERTIFICATE,
        "if not report.max_abs_score <= limits.max_abs_score:",
        "if False:",
        CERTIFICATE_TESTS,
    ),
    Mutant("top-10 order unchecked", CERTIFICATE, "elif not order_ok:", "elif False:", CERTIFICATE_TESTS),
    Mutant(
        "served compared with itself",
        CERTIFICATE,
        "d_logit = np.where(finite, np.abs(served - reference), np.inf)",
        "d_logit = np.where(finite, np.abs(served - served), np.inf)",
        CERTIFICATE_TESTS,
    ),
]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("mutation") / "tree"
    ignore = shutil.ignore_patterns(".venv", ".venv-deploy", "runs", ".git", ".cache", "__pycache__", ".ruff_cache")
    shutil.copytree(ROOT, copy, ignore=ignore, symlinks=True)
    return copy


def run_tests(tree: Path, selection: tuple[str, ...]) -> subprocess.CompletedProcess:
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join([str(tree / "client" / "src"), str(tree)])
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *selection],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
@pytest.mark.parametrize("selection", [RETRY_TESTS, BOUNDED_TESTS, CERTIFICATE_TESTS], ids=["retry", "bounded", "cert"])
def test_guarding_tests_pass_on_the_unbroken_copy(pristine, selection):
    proc = run_tests(pristine, selection)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    # The copy's code is what ran, not the installed one.
    assert str(pristine) in run_tests_probe(pristine)


def run_tests_probe(tree: Path) -> str:
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join([str(tree / "client" / "src"), str(tree)])
    return subprocess.run(
        [sys.executable, "-c", "import reranker_client.base as b; print(b.__file__)"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


@pytest.mark.slow
@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_each_breakage_fails_the_tests_that_guard_it(pristine, tmp_path, mutant):
    tree = tmp_path / "tree"
    shutil.copytree(pristine, tree, symlinks=True)
    path = tree / mutant.path
    source = path.read_text()
    assert source.count(mutant.old) == 1, f"{mutant.path}: the mutated line moved; update the mutant"
    path.write_text(source.replace(mutant.old, mutant.new))
    proc = run_tests(tree, mutant.tests)
    assert proc.returncode == 1 and " failed" in proc.stdout, (
        f"mutant '{mutant.name}' survived:\n" + proc.stdout[-3000:] + proc.stderr[-2000:]
    )
