"""The serving tokenizer reproduces FlagReranker's pair tokenization exactly."""

from __future__ import annotations

import numpy as np
import pytest

from common import calibration_texts
from common.pair_tokenizer import load_pair_tokenizer
from export.settings import MAX_TEXT_BYTES, ServingLimits
from tests.references import flag_token_ids


@pytest.fixture(scope="module", params=[64, 512])
def setup(request, tiny_model):
    limits = ServingLimits(max_length=request.param)
    return limits, load_pair_tokenizer(tiny_model, limits), tiny_model


def test_token_ids_equal_flagreranker(setup):
    limits, tokenizer, model_dir = setup
    pairs = calibration_texts.pairs()
    batch = tokenizer.tokenize_request([q for q, _ in pairs], [p for _, p in pairs])
    expected = flag_token_ids(model_dir, pairs, limits.max_length)
    assert batch.tokens.ravel().tolist() == [len(ids) for ids in expected]
    for row, ids in enumerate(expected):
        assert batch.input_ids[row, : len(ids)].tolist() == ids
        assert (batch.input_ids[row, len(ids) :] == tokenizer.pad_id).all()
        assert batch.attention_mask[row].sum() == len(ids)
    assert batch.input_ids.shape[1] in limits.buckets
    assert batch.truncated.any() and not batch.truncated.all()


def test_long_query_cut_to_three_quarters(setup):
    limits, tokenizer, _ = setup
    query = calibration_texts.long_passage(30)
    [(ids, truncated)] = [
        tokenizer.join(
            0, *[e.ids for e in tokenizer.tokenizer.encode_batch([query, "short passage"], add_special_tokens=False)]
        )
    ]
    first_sep = ids.index(tokenizer.sep_id)
    assert first_sep - 1 == limits.query_max_length  # <s> + query tokens
    assert truncated and len(ids) <= limits.max_length


def test_truncated_flag_only_when_cut(setup):
    _, tokenizer, _ = setup
    batch = tokenizer.tokenize_request(["short query"], ["short passage"])
    assert not batch.truncated.any()
    assert batch.input_ids.shape == (1, tokenizer.bucket_for(int(batch.tokens[0, 0])))


@pytest.mark.parametrize(
    "query, passage, message",
    [
        ("", "p", "query[0]: is empty"),
        ("   \n", "p", "query[0]: is empty"),
        ("q", " ", "passage[0]: is empty"),
        (b"\xff\xfe", "p", "query[0]: not valid UTF-8"),
        ("q", "a\x00b", "passage[0]: contains a NUL"),
        (
            "q",
            "x" * (MAX_TEXT_BYTES + 1),
            f"passage[0]: {MAX_TEXT_BYTES + 1} bytes exceeds the limit of {MAX_TEXT_BYTES}",
        ),
    ],
)
def test_bad_items_name_field_and_limit(setup, query, passage, message):
    _, tokenizer, _ = setup
    from pair_tokenization import InvalidInput

    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        tokenizer.tokenize_request([query], [passage])


def test_one_bad_request_does_not_spoil_the_batch(setup):
    _, tokenizer, _ = setup
    from pair_tokenization import InvalidInput

    results = tokenizer.tokenize_requests(
        [(["good query"], ["good passage"]), ([""], ["passage"]), (["q1", "q2"], ["p1"]), (["another"], ["fine text"])]
    )
    assert not isinstance(results[0], InvalidInput) and not isinstance(results[3], InvalidInput)
    assert isinstance(results[1], InvalidInput) and "query[0]" in str(results[1])
    assert isinstance(results[2], InvalidInput) and "must match" in str(results[2])
    alone = tokenizer.tokenize_request(["good query"], ["good passage"])
    np.testing.assert_array_equal(results[0].input_ids, alone.input_ids)


def test_a_refused_request_is_not_kept_alive_by_its_refusal(setup):
    """Issue 26 item 5: a refusal kept as a result must not pin its caller's frame (in the stub:
    execute() and its requests' /dev/shm inputs) in a reference cycle until the cyclic GC runs."""
    import gc
    import weakref

    _, tokenizer, _ = setup
    from pair_tokenization import InvalidInput

    class Inputs(list):  # stands for execute()'s requests: alive only through its frame
        pass

    def execute():
        requests = Inputs([b"x" * (MAX_TEXT_BYTES + 1)])
        results = tokenizer.tokenize_requests([(["q"], list(requests))]) + tokenizer.tokenize_window_requests(
            [(["q"], list(requests), [0])]
        )
        return weakref.ref(requests), [str(r) for r in results if isinstance(r, InvalidInput)]

    gc.disable()
    try:
        alive, refusals = execute()
        assert len(refusals) == 2 and all("exceeds the limit" in r for r in refusals), refusals
        assert alive() is None, "the refusal's traceback keeps execute()'s requests alive"
    finally:
        gc.enable()


def test_window_mode_rows_errors_and_bounded_reading(setup):
    limits, tokenizer, _ = setup
    from pair_tokenization import InvalidInput

    # Several windows, fewer than the per-passage limit: ~1,700 tokens at 512, ~330 at 64.
    query, passage = "Everest?", calibration_texts.long_passage(40 if limits.max_length >= 512 else 6)
    [batch] = tokenizer.tokenize_window_requests([([query], [passage], [0])])
    width = limits.max_length - len(tokenizer.tokenizer.encode(query, add_special_tokens=False).ids) - 4
    assert batch.owner.reshape(-1).tolist() == [0] * len(batch.owner) and len(batch.owner) > 1
    assert (batch.pairs.tokens <= limits.max_length).all() and not batch.pairs.truncated.any()
    starts, ends = batch.span[:, 0], batch.span[:, 1]
    assert starts[0] == 0 and ends[-1] == len(passage) and (starts[1:] <= ends[:-1]).all()  # overlapping cover
    [error] = tokenizer.tokenize_window_requests([([query], [passage], [width + 1])])
    assert isinstance(error, InvalidInput) and f"must be in 1..{width}" in str(error)


@pytest.mark.parametrize("stride", [0, 7])
def test_a_passage_over_the_window_limit_is_scored_on_its_first_windows_read_bounded(setup, monkeypatch, stride):
    """Issue 29: a passage needing more than max_windows_per_passage windows degrades to its first
    windows, every one flagged truncated, instead of failing its request; the other passage of the
    request is untouched; and the tokenizer reads only as far as those windows reach."""
    import pair_windows

    from tests.test_bounded_tokenization import SpyTokenizer

    limits, tokenizer, _ = setup
    query, short = "Everest?", "Der Mount Everest ist der höchste Berg der Erde."
    huge = " ".join([short] * 5000)  # ~60,000 tokens: thousands of windows at either max_length
    whole = tokenizer.tokenizer.encode(huge, add_special_tokens=False)
    q = tokenizer.tokenizer.encode(query, add_special_tokens=False).ids
    spy = SpyTokenizer(tokenizer.tokenizer)
    monkeypatch.setattr(tokenizer, "tokenizer", spy)
    [batch] = tokenizer.tokenize_window_requests([([query, query], [huge, short], [stride, stride])])
    n = tokenizer.max_windows_per_passage
    owner = batch.owner.reshape(-1).tolist()
    assert owner == [0] * n + [1]
    assert batch.pairs.truncated.reshape(-1).tolist() == [True] * n + [False]
    # The same windows as over the whole passage, read unbounded: its first n.
    width = limits.max_length - len(q) - 4
    bounds = pair_windows.window_bounds(pair_windows.word_starts(whole.word_ids), width, stride or width // 2)
    assert len(bounds) > n
    for row, (start, end) in enumerate(bounds[:n]):
        expected = [tokenizer.cls_id, *q, tokenizer.sep_id, tokenizer.sep_id, *whole.ids[start:end], tokenizer.sep_id]
        assert batch.pairs.input_ids[row, : len(expected)].tolist() == expected
        assert tuple(batch.span[row]) == pair_windows.char_span(huge, whole.offsets, start, end)
    # Bounded: the longest text handed to the tokenizer stays within a few windows' worth of the
    # last kept window's end (the reading grows in steps), far from the whole passage.
    last_end = batch.span[n - 1][1]
    handed = max(len(t) for call in spy.calls for t in call)
    assert handed < 2 * last_end + 4096 < len(huge), (handed, last_end, len(huge))


def test_a_request_may_ask_for_a_shorter_max_length_with_flagrerankers_rules(setup):
    """Issue 29 item 3 (tokenizer part): a request's own max_length N <= the export's gives
    FlagReranker's compute_score(max_length=N) tokenization (query cut to N * 3 // 4, passage
    'only_second'), padded to the export's buckets; requests with other lengths in the same
    batch are unaffected; N out of range fails that request alone, naming the field and range."""
    limits, tokenizer, model_dir = setup
    from pair_tokenization import InvalidInput

    pairs = calibration_texts.pairs()[:6] + [
        (calibration_texts.long_passage(12), "short passage"),  # a query cut at every N
        ("Everest?", calibration_texts.long_passage(25)),  # a passage cut at every N
    ]
    queries, passages = [q for q, _ in pairs], [p for _, p in pairs]
    lengths = sorted({17, 32, 33, limits.max_length // 2 + 1, limits.max_length - 1})
    results = tokenizer.tokenize_requests(
        [(queries, passages)] * (len(lengths) + 2), max_lengths=[*lengths, None, limits.max_length + 1]
    )
    for n, batch in zip([*lengths, limits.max_length], results):
        expected = flag_token_ids(model_dir, pairs, n)
        assert batch.tokens.ravel().tolist() == [len(ids) for ids in expected], n
        for row, ids in enumerate(expected):
            assert batch.input_ids[row, : len(ids)].tolist() == ids, (n, row)
        assert batch.input_ids.shape[1] in limits.buckets
        assert batch.truncated[-2:].all() and max(map(len, expected)) <= n
    assert isinstance(results[-1], InvalidInput)
    assert f"max_length: {limits.max_length + 1} must be in 17..{limits.max_length}" in str(results[-1])
