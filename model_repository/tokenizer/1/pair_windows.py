"""Overlapping windows over a passage's tokens, cut at word boundaries (window mode).

Plain functions with no Triton import; the tokenizer model calls them and the tests check them.

The rule (docs/SERVING.md "Long documents"): a window holds at most `width` passage tokens (what fits
beside the query in max_length). Windows start and end at word boundaries (the tokenizer's
pre-tokenizer words: XLM-R splits on spaces), so a window's text, cut from the passage by its
character span and tokenized again, gives the same tokens: the span a result cites is exactly
what was scored. The first window starts at token 0; each window ends at the last word
boundary within `width` tokens; the next one starts at the last word boundary within `stride`
tokens of the previous start (never after the previous end, so no token is skipped). Only a
single word longer than the window (text without spaces, such as Chinese or Japanese) is cut
inside the word. The last window ends at the passage's end.
"""

from __future__ import annotations

from typing import Sequence


def word_starts(word_ids: Sequence[int | None]) -> list[bool]:
    """True where a token begins a new pre-tokenizer word."""
    return [i == 0 or word_ids[i] != word_ids[i - 1] for i in range(len(word_ids))]


def _last_start_at_or_before(starts: Sequence[bool]) -> list[int]:
    last, out = 0, []
    for i, is_start in enumerate(starts):
        if is_start:
            last = i
        out.append(last)
    return out


def window_bounds(starts: Sequence[bool], width: int, stride: int, limit: int | None = None) -> list[tuple[int, int]]:
    """[start, end) token ranges of every window over len(starts) tokens (see the module doc).
    limit: stop once limit + 1 windows are known (enough to tell the passage needs more than
    `limit`); the first `limit` are the same as without it."""
    n = len(starts)
    if width < 1 or not 1 <= stride <= width:
        raise ValueError(f"need 1 <= stride ({stride}) <= width ({width})")
    last_start = _last_start_at_or_before(starts)
    windows, start = [], 0
    while True:
        end = min(start + width, n)
        if end < n and last_start[end] > start:  # end just before the word that would not fit
            end = last_start[end]
        windows.append((start, end))
        if end >= n or (limit is not None and len(windows) > limit):
            return windows
        target = min(start + stride, end)
        start = last_start[target] if last_start[target] > start else target


def char_span(text: str, offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """Character offsets (Python str indices) of tokens [start, end) in `text`. A word's first
    token covers the space before it; the span leaves that space out."""
    begin, finish = offsets[start][0], offsets[end - 1][1]
    while begin < finish and text[begin].isspace():
        begin += 1
    return begin, finish
