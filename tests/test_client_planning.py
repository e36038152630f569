"""The client's request packing (no server needed)."""

from __future__ import annotations

import random

import pytest

from reranker_client import InvalidInputError
from reranker_client.planning import assemble, chunk_bounds, plan_chunks, top, validate_query_documents


def _cost(lengths, bounds, request_cost):
    return sum((end - start) * lengths[end - 1] + request_cost for start, end in bounds)


@pytest.mark.parametrize("seed", range(5))
def test_chunk_bounds_cover_everything_within_batch_limit_and_beat_fixed_chunks(seed):
    rng = random.Random(seed)
    lengths = sorted(rng.randint(20, 600) for _ in range(rng.randint(1, 300)))
    bounds = chunk_bounds(lengths, max_batch_size=64, request_cost=200)
    assert bounds[0][0] == 0 and bounds[-1][1] == len(lengths)
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert all(0 < end - start <= 64 for start, end in bounds)
    fixed = [(s, min(s + 64, len(lengths))) for s in range(0, len(lengths), 64)]
    assert _cost(lengths, bounds, 200) <= _cost(lengths, fixed, 200)


def test_plan_chunks_keeps_every_row_once_and_assemble_restores_order():
    docs = [("x" * random.Random(i).randint(1, 400)) for i in range(1000)]
    pairs = validate_query_documents("q", docs)
    chunks = plan_chunks(pairs, 64)
    rows = sorted(r for c in chunks for r in c.rows)
    assert rows == list(range(1000)) and all(len(c.rows) <= 64 for c in chunks)
    answered = [
        (
            c,
            {
                "score": [float(r) for r in c.rows],
                "logit": [0.0] * len(c.rows),
                "tokens": [1] * len(c.rows),
                "truncated": [False] * len(c.rows),
            },
        )
        for c in chunks
    ]
    results = assemble(1000, answered)
    assert [r.index for r in results] == list(range(1000)) and [r.score for r in results] == list(range(1000))
    assert [r.index for r in top(results, 3)] == [999, 998, 997]


def test_assemble_refuses_to_drop_rows():
    chunks = plan_chunks(validate_query_documents("q", ["a", "b", "c"]), 2)
    with pytest.raises(RuntimeError, match="no result for rows"):
        assemble(
            3,
            [
                (
                    chunks[0],
                    {
                        "score": [0.1] * len(chunks[0].rows),
                        "logit": [0] * len(chunks[0].rows),
                        "tokens": [1] * len(chunks[0].rows),
                        "truncated": [0] * len(chunks[0].rows),
                    },
                )
            ],
        )


def test_pair_tokens_follow_the_published_rules(tiny_model):
    from reranker_client.lengths import token_counter
    from reranker_client.server_limits import ServerLimits

    count = token_counter(str(tiny_model / "tokenizer.json"))
    limits = ServerLimits(max_batch_size=8, max_length=64, query_max_length=48, special_tokens_per_pair=4)
    assert limits.pair_tokens(count("hi"), count("there")) == count("hi") + count("there") + 4 < 64
    assert limits.pair_tokens(count("hi"), count("word " * 500)) == 64
    assert limits.pair_tokens(count("word " * 500), count("x")) == 48 + count("x") + 4  # the query's share


def test_documents_must_be_a_list_of_strings():
    with pytest.raises(InvalidInputError, match="documents: expected a list"):
        validate_query_documents("q", "one string")
