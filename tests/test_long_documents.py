"""Long documents against the real tritonserver: window mode (max window score and its span),
every max_length up to 8,192 (length classes), and batches bounded by tokens. References are
independent of our code: FlagReranker, and the window rule re-implemented over the
transformers tokenizer's offsets (tests/window_reference.py)."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from common.calibration_texts import TOPICS, long_passage, pairs
from common.raw_rerank import rerank_inputs
from export.settings import MAX_BATCH_TOKENS, MAX_WINDOWS_PER_PASSAGE, MAX_WINDOWS_PER_REQUEST, ServingLimits
from export.tensorrt_profiles import length_classes
from reranker_client import InvalidInputError, RerankClient
from reranker_client.contract import WINDOW_ENSEMBLE
from tests.conftest import start_server
from tests.long_context_repo import serve_at
from tests.references import flag_reranker, flag_scores, flag_token_ids
from tests.server_helpers import metric
from tests.shape_metrics import class_shape_metrics
from tests.window_reference import reference_windows, window_spans

QUERY = TOPICS[0][1]
LONG = [long_passage(12), long_passage(40, offset=3), long_passage(25, offset=7)]  # ~600, ~1,700, ~1,000 tokens


def _window_inputs(queries, passages, stride=0):
    inputs = rerank_inputs(queries, passages)
    strides = grpcclient.InferInput("window_stride", [len(passages), 1], "INT32")
    strides.set_data_from_numpy(np.full((len(passages), 1), stride, dtype=np.int32))
    return inputs + [strides]


@pytest.mark.parametrize("stride", [None, 100])
def test_window_score_is_the_max_over_independent_windows(server, tiny_model, stride):
    with RerankClient(server.grpc_url) as client:
        results = sorted(
            client.rerank(QUERY, LONG, long_documents="window", window_stride=stride), key=lambda r: r.index
        )
    tokenizer = flag_reranker(str(tiny_model)).tokenizer
    for result, passage in zip(results, LONG):
        ref = reference_windows(tiny_model, QUERY, passage, ServingLimits().max_length, stride)
        assert result.windows == len(ref.spans) > 1
        assert abs(result.logit - ref.best) < 1e-4, (result.logit, ref.best)
        # The span is the best window's (any window within the tolerance of the best: near-ties).
        near_best = [span for span, logit in zip(ref.spans, ref.logits) if logit >= ref.best - 1e-4]
        assert result.span in near_best, (result.span, near_best)
        best_text = passage[result.span[0] : result.span[1]]
        assert result.tokens == len(flag_token_ids(tiny_model, [(QUERY, best_text)])[0])
        assert not result.truncated
        # Windows cover the passage: the first starts at its start, the last ends at its end.
        assert ref.spans[0][0] == 0 and ref.spans[-1][1] == len(passage.rstrip())
        assert len(tokenizer(best_text, add_special_tokens=False)["input_ids"]) <= 512


def test_async_client_window_mode_matches_the_sync_client(server):
    import asyncio

    from reranker_client import AsyncRerankClient

    async def run():
        async with AsyncRerankClient(server.grpc_url) as client:
            return await client.rerank(QUERY, LONG, long_documents="window", window_stride=150)

    with RerankClient(server.grpc_url) as client:
        expected = client.rerank(QUERY, LONG, long_documents="window", window_stride=150)
    got = asyncio.run(run())
    assert [(r.index, r.span, r.windows) for r in got] == [(r.index, r.span, r.windows) for r in expected]
    np.testing.assert_allclose([r.logit for r in got], [r.logit for r in expected], atol=1e-6)


def test_passage_in_one_window_scores_exactly_as_truncate_with_whole_span(server):
    short = [(q, p.strip()) for q, p in pairs() if len(p) < 400][:12]
    with RerankClient(server.grpc_url) as client:
        window = client.score_details(short, long_documents="window")
        truncate = client.score_details(short)
    for (_, p), w, t in zip(short, window, truncate):
        assert w.windows == 1 and w.span == (0, len(p)) and t.span is None
        assert abs(w.logit - t.logit) <= 1e-6 and w.tokens == t.tokens and w.truncated == t.truncated


def test_a_passage_over_the_window_limit_degrades_alone_and_strict_refuses_it(server, tiny_model):
    """Issue 29: the failure unit is the document. Stride 20 over ~1,700 tokens needs ~60 windows,
    over the per-passage limit: that document is scored on its first MAX_WINDOWS_PER_PASSAGE
    windows (the best of them, by an independent reference) and flagged truncated; the call
    returns every document; strict=True refuses it, naming the document and the limit."""
    stride = 20
    documents = [LONG[0], LONG[1], "Mount Everest is the highest mountain on Earth."]
    max_length = ServingLimits().max_length
    with RerankClient(server.grpc_url, retries=0) as client:
        results = sorted(
            client.rerank(QUERY, documents, long_documents="window", window_stride=stride), key=lambda r: r.index
        )
        with pytest.raises(InvalidInputError) as err:
            client.rerank(QUERY, documents, long_documents="window", window_stride=stride, strict=True)
    assert [r.index for r in results] == [0, 1, 2]
    long_one = results[1]
    spans = window_spans(tiny_model, QUERY, LONG[1], max_length, stride)
    assert len(spans) > MAX_WINDOWS_PER_PASSAGE
    first = spans[:MAX_WINDOWS_PER_PASSAGE]
    logits = flag_scores(tiny_model, [(QUERY, LONG[1][a:b]) for a, b in first], max_length=max_length, normalize=False)
    assert long_one.truncated and long_one.windows == MAX_WINDOWS_PER_PASSAGE
    assert abs(long_one.logit - float(logits.max())) < 1e-4, (long_one.logit, float(logits.max()))
    assert long_one.span in [span for span, logit in zip(first, logits) if logit >= logits.max() - 1e-4]
    # The other documents are scored whole, as without the long one.
    assert not results[0].truncated and 1 < results[0].windows < MAX_WINDOWS_PER_PASSAGE
    assert not results[2].truncated and results[2].windows == 1
    assert "documents[1]" in str(err.value)
    assert f"over the limit of {MAX_WINDOWS_PER_PASSAGE} windows per passage" in str(err.value)
    assert server.is_ready()


def test_window_limits_published_and_errors_name_both_numbers(server):
    with RerankClient(server.grpc_url, retries=0) as client:
        limits = client.server_limits()
        assert (limits.max_windows_per_passage, limits.max_windows_per_request) == (
            MAX_WINDOWS_PER_PASSAGE,
            MAX_WINDOWS_PER_REQUEST,
        )
        assert limits.max_batch_tokens == MAX_BATCH_TOKENS
        assert limits.length_classes == [(c.max_length, c.max_batch) for c in length_classes(ServingLimits())]
    # Per request, on the wire: 64 passages of ~6 windows each.
    many = [LONG[1]] * 64
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        with pytest.raises(InferenceServerException) as err:
            client.infer(WINDOW_ENSEMBLE, _window_inputs([QUERY] * 64, many))
    finally:
        client.close()
    needed = int(re.search(r"needs (?:at least )?(\d+) windows", str(err.value)).group(1))
    assert needed > MAX_WINDOWS_PER_REQUEST
    assert f"over the limit of {MAX_WINDOWS_PER_REQUEST} windows per request" in str(err.value)
    # The client packs by its estimate; told every text is 1 token (a wrong estimate), it sends the
    # same 64 passages at once, sees the per-request error and splits the request instead of failing.
    with RerankClient(server.grpc_url, token_counter=lambda text: 1) as fooled, RerankClient(server.grpc_url) as plain:
        split = sorted(fooled.rerank(QUERY, many, long_documents="window"), key=lambda r: r.index)
        packed = sorted(plain.rerank(QUERY, many, long_documents="window"), key=lambda r: r.index)
    assert [r.span for r in split] == [r.span for r in packed]
    np.testing.assert_allclose([r.logit for r in split], [r.logit for r in packed], atol=1e-5)
    assert server.is_ready()


# --- max_length 8,192: three length classes on the same exported graph ---


@pytest.fixture(scope="module")
def long_server(python_repo, tiny_model, tmp_path_factory):
    """The session's stand-in at max_length 8,192: its graph exported again at 8,192, three
    length classes (tests/long_context_repo.py says why not a full export)."""
    repo = serve_at(python_repo, tiny_model, tmp_path_factory.mktemp("long") / "repo", 8192)
    srv = start_server(repo, tmp_path_factory.mktemp("long-logs"))
    yield srv
    srv.stop()


LIMITS_8192 = ServingLimits(max_length=8192)


def _passage_of(model_dir, tokens: int) -> str:
    tokenizer = flag_reranker(str(model_dir)).tokenizer
    for paragraphs in range(tokens // 45, tokens // 30):
        text = long_passage(paragraphs)
        if len(tokenizer(text, add_special_tokens=False)["input_ids"]) >= tokens:
            return text
    raise AssertionError("no passage long enough")


def test_max_length_8192_pair_equals_flagreranker(long_server, tiny_model):
    from reranker_client.contract import CROSS_ENCODER

    passage = _passage_of(tiny_model, 6000)
    with RerankClient(long_server.grpc_url) as client:
        (result,) = client.score_details([(QUERY, passage)])
    expected = flag_scores(tiny_model, [(QUERY, passage)], max_length=8192, normalize=False)[0]
    ids = flag_token_ids(tiny_model, [(QUERY, passage)], max_length=8192)[0]
    assert 6000 <= result.tokens == len(ids) < 8192 and not result.truncated
    assert abs(result.logit - expected) < 1e-4, (result.logit, expected)
    # It ran in the longest class, padded to its bucket, alone.
    shapes = class_shape_metrics(long_server.metrics_url, length_classes(LIMITS_8192)[-1].model)
    assert shapes["max_length"] >= len(ids) and shapes["min_length"] > 2048
    assert metric(long_server.metrics_url, "reranker_batch_max_rows", CROSS_ENCODER) >= 1  # the warm-up


def test_class_models_refuse_shapes_outside_their_profile(long_server):
    classes = length_classes(LIMITS_8192)
    client = grpcclient.InferenceServerClient(long_server.grpc_url)

    def call(model, rows, length):
        inputs = [grpcclient.InferInput(n, [rows, length], "INT64") for n in ("input_ids", "attention_mask")]
        inputs[0].set_data_from_numpy(np.zeros((rows, length), np.int64))
        inputs[1].set_data_from_numpy(np.ones((rows, length), np.int64))
        client.infer(model, inputs)

    try:
        with pytest.raises(InferenceServerException, match=f"min_length={classes[-1].min_length}"):
            call(classes[-1].model, 1, 512)  # a short row sent to the long class
        with pytest.raises(InferenceServerException, match=f"max_length={classes[0].max_length}"):
            call(classes[0].model, 1, 1024)  # a long row sent to the short class
        with pytest.raises(InferenceServerException, match="batch"):
            call(classes[-1].model, classes[-1].max_batch + 1, 4096)  # Triton refuses it before the model
    finally:
        client.close()
    assert long_server.is_ready()


def test_mixed_concurrent_requests_stay_correct_and_batches_stay_under_the_token_bound(long_server, tiny_model):
    """Short, medium and long passages (all three length classes), truncate and window mode,
    from 6 threads at once. Each result equals FlagReranker at max_length 8,192 (every passage
    fits in one window, so window mode must equal truncate mode); afterwards each class model's
    recorded batches stay inside its class, and under MAX_BATCH_TOKENS."""
    passages = (
        [p for _, p in pairs()[:8]]
        + [long_passage(20, offset=i) for i in range(4)]
        + [long_passage(60, offset=i) for i in range(3)]
    )  # ~30-200, ~800, ~2,500 tokens
    expected = flag_scores(tiny_model, [(QUERY, p) for p in passages], max_length=8192, normalize=False)
    order = np.argsort([len(p) for p in passages])
    requests = [list(order[i : i + 3]) for i in range(0, len(order), 3)]
    errors, lock = [], threading.Lock()
    classes = length_classes(LIMITS_8192)
    before = {c.model: metric(long_server.metrics_url, "nv_inference_count", c.model) for c in classes}

    def worker(seed: int):
        with RerankClient(long_server.grpc_url) as client:
            for k, rows in enumerate(requests[seed % 2 :: 2]):
                mode = "window" if (seed + k) % 2 else "truncate"
                got = client.score_details([(QUERY, passages[i]) for i in rows], long_documents=mode)
                for row, result in zip(rows, got):
                    if abs(result.logit - expected[row]) > 1e-4 or (mode == "window") != (result.span is not None):
                        with lock:
                            errors.append((mode, row, result.logit, expected[row]))

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(worker, range(6)))
    assert not errors, errors[:5]
    assert long_server.is_ready()
    for length_class in classes:
        ran = metric(long_server.metrics_url, "nv_inference_count", length_class.model) - before[length_class.model]
        assert ran > 0, f"{length_class.model} got none of this traffic"  # every class (profile) is reached
        shapes = class_shape_metrics(long_server.metrics_url, length_class.model)
        assert shapes["max_rows"] <= length_class.max_batch
        assert length_class.min_length <= shapes["min_length"] <= shapes["max_length"] <= length_class.max_length
        assert shapes["max_tokens"] <= min(MAX_BATCH_TOKENS, length_class.max_tokens)


@pytest.mark.slow
def test_full_export_at_8192_serves_a_6000_token_pair(tiny_model, tmp_path):
    """The real export path at max_length 8,192 (certificate and gates included, ~2 min and ~5 GB
    here since the gates batch by tokens), served and checked against FlagReranker."""
    from export.__main__ import cpu_export

    repo = tmp_path / "repo"
    assert cpu_export(str(tiny_model), str(repo), "--max-length", "8192") == 0
    assert sorted(p.name for p in repo.iterdir() if p.name.startswith("cross_encoder")) == [
        c.model for c in length_classes(LIMITS_8192)
    ]
    passage = _passage_of(tiny_model, 6000)
    srv = start_server(repo, tmp_path)
    try:
        with RerankClient(srv.grpc_url) as client:
            (result,) = client.score_details([(QUERY, passage)])
    finally:
        srv.stop()
    expected = flag_scores(tiny_model, [(QUERY, passage)], max_length=8192, normalize=False)[0]
    assert abs(result.logit - expected) < 1e-4 and result.tokens >= 6000
