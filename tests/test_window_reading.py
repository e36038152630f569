"""Window mode reads boundedly (issue 26, finding 5): a request is read only as far as the windows
it may still use, so a passage that cannot fit (or a request that cannot) is refused or capped
after reading that much, not after tokenizing glued words whole; and each passage's tokens are
copied out of the tokenizer once, not once per window.

Work is asserted (characters handed to the tokenizer, tokens copied out of it), not time: the
box is shared. `python -m benchmarks.trust_boundary` prints the times."""

from __future__ import annotations

import random

import pytest

from common.adversarial_texts import glued_word
from common.pair_tokenizer import load_pair_tokenizer
from common.serving_code import pair_tokenization_module
from export.settings import MAX_TEXT_BYTES, MAX_WINDOWS_PER_PASSAGE, MAX_WINDOWS_PER_REQUEST, ServingLimits

pt = pair_tokenization_module()
QUERY = "what is this?"


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return load_pair_tokenizer(tiny_model, ServingLimits(max_length=512))


@pytest.fixture(scope="module")
def huge(tokenizer):
    return glued_word(tokenizer.cuts, random.Random(3), MAX_TEXT_BYTES - 64)


class CountingEncoding:
    """An Encoding that counts the tokens its list getters copy out."""

    def __init__(self, inner, counter):
        self.inner, self.counter = inner, counter

    def __len__(self):
        return len(self.inner)

    def __getattr__(self, name):
        value = getattr(self.inner, name)
        if name in ("ids", "offsets", "word_ids"):
            self.counter["copied"] += len(value)
        return value


class Spy:
    """The `tokenizers` object: characters handed to it, tokens copied out of its encodings."""

    def __init__(self, inner):
        self.inner, self.counter = inner, {"handed": 0, "copied": 0}

    def encode_batch(self, texts, **kwargs):
        self.counter["handed"] += sum(len(t) for t in texts)
        return [CountingEncoding(e, self.counter) for e in self.inner.encode_batch(texts, **kwargs)]

    def __getattr__(self, name):
        return getattr(self.inner, name)


def spy_on(tokenizer, monkeypatch) -> dict:
    spy = Spy(tokenizer.tokenizer)
    monkeypatch.setattr(tokenizer, "tokenizer", spy)
    return spy.counter


def whole_windows(tokenizer, passage: str, stride: int):
    """(ids, span) of the first max_windows_per_passage windows of the passage read whole."""
    import pair_windows

    whole = tokenizer.tokenizer.encode(passage, add_special_tokens=False)
    q = tokenizer.tokenizer.encode(QUERY, add_special_tokens=False).ids
    width = tokenizer.window_width(len(q))
    bounds = pair_windows.window_bounds(pair_windows.word_starts(whole.word_ids), width, stride or width // 2)
    rows = [
        ([tokenizer.cls_id, *q, tokenizer.sep_id, tokenizer.sep_id, *whole.ids[s:e], tokenizer.sep_id], (s, e))
        for s, e in bounds[:MAX_WINDOWS_PER_PASSAGE]
    ]
    return rows, whole.offsets, len(bounds)


def test_a_request_of_glued_passages_over_the_window_limit_is_refused_after_reading_its_share(
    tokenizer, huge, monkeypatch
):
    """64 distinct 256 KiB glued words (no space, no forced boundary) need 64 x 32 windows; the
    request may hold 256. Each passage is read for its share (256 // 64 = 4 windows, up to a
    coalesced cut), and the request is refused naming both numbers. Before: every passage was
    tokenized whole (64 x 256 KiB handed to the tokenizer, ~7-70 s on this box)."""
    passages = [(str(i) + huge)[: len(huge)].encode() for i in range(64)]
    counter = spy_on(tokenizer, monkeypatch)
    [result] = tokenizer.tokenize_window_requests([([QUERY] * 64, passages, [0] * 64)])
    assert isinstance(result, pt.InvalidInput), result
    assert f"over the limit of {MAX_WINDOWS_PER_REQUEST} windows per request" in str(result)
    # Per passage: `longest` prefixes of a coalesced cut for the share's tokens (as truncate mode's
    # bound in test_bounded_tokenization), far below the passage itself.
    longest = tokenizer.cuts.longest
    width = tokenizer.window_width(len(tokenizer.tokenizer.encode(QUERY, add_special_tokens=False).ids))
    need = 3 * (width // 2) + width + 1  # 4 windows at the default stride (PairTokenizer.window_need)
    prefix = pt.COALESCE_BYTES_PER_TOKEN * need + 4 * longest + pt.COALESCE_SCAN
    bound = (2 * longest + 1) * prefix * pt.CHUNK_MARGIN
    per_passage = (counter["handed"] - len(QUERY)) / 64
    assert per_passage <= bound < len(huge) / 2, (per_passage, bound, len(huge))


def test_a_glued_passage_capped_at_its_first_windows_is_read_to_a_coalesced_cut(tokenizer, huge, monkeypatch):
    """A 256 KiB glued word at stride 50 needs thousands of windows; it is scored on its first 32,
    read to a coalesced cut just past them: the same rows and spans as reading it whole, at a
    fraction of the characters. A short passage beside it is untouched."""
    expected, offsets, windows = whole_windows(tokenizer, huge, 50)
    assert windows > MAX_WINDOWS_PER_PASSAGE
    counter = spy_on(tokenizer, monkeypatch)
    [batch] = tokenizer.tokenize_window_requests([([QUERY, QUERY], [huge, "a short passage"], [50, 50])])
    assert batch.owner.reshape(-1).tolist() == [0] * MAX_WINDOWS_PER_PASSAGE + [1]
    assert batch.pairs.truncated.reshape(-1).tolist() == [True] * MAX_WINDOWS_PER_PASSAGE + [False]
    for row, (ids, (start, end)) in enumerate(expected):
        assert batch.pairs.input_ids[row, : len(ids)].tolist() == ids, row
        assert tuple(batch.span[row]) == (offsets[start][0], offsets[end - 1][1]), row
    assert counter["handed"] < len(huge) / 2, (counter["handed"], len(huge))


def test_each_passage_is_copied_out_of_the_tokenizer_once_not_once_per_window(tokenizer, huge, monkeypatch):
    """Found in review: the windows' spans read `encoding.offsets` once per window, and the
    tokenizers library copies every token on each access: 32 copies of a 256 KiB glued word's
    ~90,000 offsets per passage (8 such passages took 21 s here, now ~2 s). The rows are those of
    reading each passage whole."""
    passages = [(str(i) + huge)[: len(huge)] for i in range(8)]
    whole_tokens = sum(len(tokenizer.tokenizer.encode(p, add_special_tokens=False).ids) for p in passages)
    expected, _, _ = whole_windows(tokenizer, passages[7], 0)
    counter = spy_on(tokenizer, monkeypatch)
    [batch] = tokenizer.tokenize_window_requests([([QUERY] * 8, passages, [0] * 8)])
    assert batch.pairs.input_ids.shape[0] == 8 * MAX_WINDOWS_PER_PASSAGE
    for row, (ids, _) in enumerate(expected):
        assert batch.pairs.input_ids[7 * MAX_WINDOWS_PER_PASSAGE + row, : len(ids)].tolist() == ids, row
    # ids, offsets and word ids: three copies of what was read, at most, and never per window.
    assert counter["copied"] <= 3 * whole_tokens + 3 * len(QUERY), (counter["copied"], whole_tokens)


def test_passages_past_their_share_get_what_the_others_leave_and_the_same_rows_as_alone(tokenizer):
    """16 passages share 256 windows (16 each): 8 short ones take one window, 8 long ones need
    ~25 and are read again for what the others leave. Every row equals that pair tokenized in a
    request of its own; one more long passage puts the request over the limit, named exactly."""
    from common import calibration_texts

    short = [f"Kurzer Text {i} über Berge." for i in range(8)]
    long = [calibration_texts.long_passage(120, offset=i) for i in range(8)]
    passages = [p for pair in zip(short, long) for p in pair]
    [batch] = tokenizer.tokenize_window_requests([([QUERY] * 16, passages, [0] * 16)])
    alone = tokenizer.tokenize_window_requests([([QUERY], [p], [0]) for p in passages])
    windows = [len(a.owner) for a in alone]
    assert windows[::2] == [1] * 8 and all(16 < w <= MAX_WINDOWS_PER_PASSAGE for w in windows[1::2]), windows
    assert batch.owner.reshape(-1).tolist() == [i for i, w in enumerate(windows) for _ in range(w)]
    row = 0
    for a in alone:
        n = len(a.owner)
        width = a.pairs.input_ids.shape[1]
        assert (batch.pairs.input_ids[row : row + n, :width] == a.pairs.input_ids).all()
        assert (batch.span[row : row + n] == a.span).all() and (
            batch.pairs.tokens[row : row + n] == a.pairs.tokens
        ).all()
        row += n
    over = passages + [long[0]] * (1 + (MAX_WINDOWS_PER_REQUEST - sum(windows)) // windows[1])
    [refused] = tokenizer.tokenize_window_requests([([QUERY] * len(over), over, [0] * len(over))])
    assert isinstance(refused, pt.InvalidInput) and "windows per request" in str(refused), refused
