"""Issue 29 item 3: a request may ask for its own max_length (the optional `max_length` input of
both ensembles), applied by the serving tokenizer with FlagReranker's rules, through the real
tritonserver: scores equal FlagReranker.compute_score(pairs, max_length=N); a smaller max_length
pads to smaller buckets; out-of-range values are refused naming the field and the limit."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from common.calibration_texts import TOPICS, long_passage, pairs
from common.raw_rerank import rerank_inputs
from export.settings import ServingLimits
from reranker_client import AsyncRerankClient, InvalidInputError, RerankClient, contract
from tests.references import flag_scores, flag_token_ids
from tests.window_reference import reference_windows

LIMITS = ServingLimits()  # the session server's export (max_length 512)
QUERY = TOPICS[0][1]
# Short and long passages, and a query long enough to be cut at the smaller lengths.
DOCS = [p for _, p in pairs()[:5]] + [long_passage(4), long_passage(20, offset=3)]  # the last: ~900 tokens
LONG_QUERY = long_passage(12, offset=5)  # ~600 tokens: over the query share at every N


@pytest.mark.parametrize("max_length", [64, 128, LIMITS.max_length - 1])
def test_scores_equal_flagreranker_at_the_requested_max_length(server, tiny_model, max_length):
    with RerankClient(server.grpc_url) as client:
        got = client.score_details([(QUERY, d) for d in DOCS] + [(LONG_QUERY, DOCS[0])], max_length=max_length)
    asked = [(QUERY, d) for d in DOCS] + [(LONG_QUERY, DOCS[0])]
    expected = flag_scores(tiny_model, asked, max_length=max_length, normalize=False)
    np.testing.assert_allclose([r.logit for r in got], expected, atol=1e-4)
    ids = flag_token_ids(tiny_model, asked, max_length)
    assert [r.tokens for r in got] == [len(i) for i in ids]
    assert max(r.tokens for r in got) <= max_length
    assert got[-1].truncated and got[-2].truncated  # the long passage, the long query


def test_the_async_client_and_http_send_it_too(server, tiny_model):
    async def ranked():
        async with AsyncRerankClient(server.http_url, protocol="http") as client:
            return await client.rerank(QUERY, DOCS, max_length=64)

    got = sorted(asyncio.run(ranked()), key=lambda r: r.index)
    expected = flag_scores(tiny_model, [(QUERY, d) for d in DOCS], max_length=64, normalize=False)
    np.testing.assert_allclose([r.logit for r in got], expected, atol=1e-4)


def test_window_mode_windows_are_the_requested_max_length(server, tiny_model):
    """Decision: in window mode the request's max_length is each window's pair length."""
    passage = long_passage(6)
    with RerankClient(server.grpc_url) as client:
        (result,) = client.rerank(QUERY, [passage], long_documents="window", max_length=128)
    ref = reference_windows(tiny_model, QUERY, passage, 128)
    assert result.windows == len(ref.spans) > 1
    assert abs(result.logit - ref.best) < 1e-4
    assert result.tokens <= 128


def _tokenize(server, queries, passages, max_length):
    """The tokenizer model called directly: the padded width it gives a request."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inputs = rerank_inputs(queries, passages)
    if max_length is not None:
        tensor = grpcclient.InferInput(contract.REQUEST_MAX_LENGTH.name, [len(queries), 1], "INT32")
        tensor.set_data_from_numpy(np.full((len(queries), 1), max_length, dtype=np.int32))
        inputs.append(tensor)
    answer = client.infer(contract.TOKENIZER, inputs)
    return answer.as_numpy(contract.INPUT_IDS.name).shape[1]


def test_a_smaller_max_length_pads_to_a_smaller_bucket(server):
    """The work stays bounded by the buckets (and so by the length classes): a request at 64
    tokens is padded to the 64 bucket, not to the export's 512."""
    passages = [long_passage(10)] * 3
    assert _tokenize(server, [QUERY] * 3, passages, None) == LIMITS.max_length
    assert _tokenize(server, [QUERY] * 3, passages, 64) == 64
    assert _tokenize(server, [QUERY] * 3, passages, 100) == min(b for b in LIMITS.buckets if b >= 100)


def _raw(server, max_lengths):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inputs = rerank_inputs([QUERY] * len(max_lengths), DOCS[: len(max_lengths)])
    tensor = grpcclient.InferInput(contract.REQUEST_MAX_LENGTH.name, [len(max_lengths), 1], "INT32")
    tensor.set_data_from_numpy(np.asarray(max_lengths, dtype=np.int32).reshape(-1, 1))
    return client.infer(contract.ENSEMBLE, inputs + [tensor])


@pytest.mark.parametrize(
    "values, message",
    [
        ([LIMITS.max_length + 1] * 2, f"max_length: {LIMITS.max_length + 1} must be in 17..{LIMITS.max_length}"),
        ([16, 16], f"max_length: 16 must be in 17..{LIMITS.max_length}"),
        ([64, 128], "max_length: one value per request, every row the same"),
    ],
)
def test_out_of_range_values_are_refused_naming_the_field_and_limit(server, values, message):
    with pytest.raises(Exception) as refused:
        _raw(server, values)
    assert "INVALID_ARG" in str(refused.value.status()) and message in str(refused.value)
    assert grpcclient.InferenceServerClient(server.grpc_url).is_server_ready()


def test_the_client_checks_the_published_range_before_sending(server):
    with RerankClient(server.grpc_url) as client:
        assert client.server_limits().min_request_max_length == 17
        with pytest.raises(InvalidInputError, match=f"max_length: 600 must be in 17..{LIMITS.max_length}"):
            client.rerank(QUERY, DOCS, max_length=600)
        with pytest.raises(InvalidInputError, match="max_length: a positive int"):
            client.rerank(QUERY, DOCS, max_length=0)
