"""The int8 gate's padding-invariance and Kendall-tau checks bite (review of issue 31, rv31).

tests/test_int8_gate.py's good-vs-bad test decides on max |d logit| and max |d score| only: with
the padding check in export/parity.run_gate disabled and the int8 tau bound set to 0, it still
passes (every recipe it tries stays above tau 0.96 and pads within 0.06 logit). These tests give
each of those two checks a candidate that only it can refuse: the certificate's rows scored
exactly, except (1) rows scored alone move by more than the int8 logit bound, or (2) the middle
half of the 100-passage list comes back reversed within half a logit (tau ~0.5). No model runs:
the candidate is a lookup of the certificate's own rows.
"""

from __future__ import annotations

import json

import numpy as np

from export import certificate, parity
from reranker_client.certificate import fixture_rows


def _fixture(python_repo) -> dict:
    return json.loads((python_repo / "certificate.json").read_text())


def _lookup(fixture: dict, targets: list[float]):
    """run(input_ids, attention_mask) -> the target logit of each row (keyed by its unpadded ids)."""
    table = {tuple(ids): t for ids, t in zip(fixture_rows(fixture), targets)}
    assert len(table) == len(targets), "certificate rows are not unique: the lookup cannot tell them apart"

    def logits(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return np.array(
            [table[tuple(int(t) for t in ids[mask.astype(bool)])] for ids, mask in zip(input_ids, attention_mask)],
            dtype=np.float32,
        )

    return logits


def test_the_int8_gate_refuses_a_graph_whose_rows_move_when_scored_alone(python_repo):
    fixture = _fixture(python_repo)
    reference = [p["logit"] for p in fixture["pairs"]] + list(fixture["ranking"]["logits"])
    exact = _lookup(fixture, reference)
    shift = certificate.INT8.max_abs_logit + 0.1

    def candidate(input_ids, attention_mask):
        out = exact(input_ids, attention_mask)
        alone = input_ids.shape[0] == 1 and bool(attention_mask.all())  # certificate.score_alone's call
        return out + shift if alone else out

    result = parity.run_gate("int8", fixture, candidate)
    assert result.max_abs_logit == 0.0, "a gate batch was scored like a lone row: the test cannot isolate the check"
    assert result.padding_max_abs_logit > certificate.INT8.max_abs_logit
    assert len(result.failures) == 1 and result.failures[0].startswith("padding changes logits by"), result.failures


def test_the_int8_gate_refuses_a_ranking_reordered_within_the_logit_bound(python_repo):
    fixture = _fixture(python_repo)
    n = len(fixture["ranking"]["logits"])
    # A reference list on the flat part of the sigmoid, 0.4 logit wide: any reordering of it stays
    # within the int8 logit, score and top-10 tie bounds, so only Kendall tau can refuse it.
    fixture["ranking"]["logits"] = list(8.0 + 0.4 * np.arange(n) / (n - 1))
    served = np.array(fixture["ranking"]["logits"])
    middle = slice(n // 5, n // 5 + n // 2)  # the top 10 (the highest references) untouched
    served[middle] = served[middle][::-1]
    pairs = [p["logit"] for p in fixture["pairs"]]
    result = parity.run_gate("int8", fixture, _lookup(fixture, pairs + list(served)))
    assert 0.3 < result.kendall_tau < certificate.INT8.min_kendall_tau, result.kendall_tau
    assert result.max_abs_logit <= certificate.INT8.max_abs_logit and result.top10_same_set and result.top10_order_ok
    assert len(result.failures) == 1 and result.failures[0].startswith("Kendall tau"), result.failures
