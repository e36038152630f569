"""FlagReranker's pair tokenization, on the `tokenizers` library, padded to length buckets.

Plain functions with no Triton import, so unit tests, the export's parity gate and the
benchmarks run exactly the code the server runs.

Semantics (FlagEmbedding's FlagReranker, bge-reranker-v2-m3's reference implementation):
query and passage are tokenized separately without special tokens; the query is cut to
`query_max_length` tokens (3/4 of max_length: export/settings.py ServingLimits decides it and
the config carries it), the passage to `max_length`; the pair is joined as
`<s> q </s></s> p </s>` and the passage is cut ('only_second') so the pair fits max_length.
"""

from __future__ import annotations

import bisect
import codecs
import os
import sys
from dataclasses import dataclass

try:  # in a served repository: the copy the export places beside this file
    import contract
except ImportError:  # imported from the source tree (export gates, tests): the client package's
    from reranker_client import contract
import numpy as np
from tokenizers import Encoding, Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # pair_windows.py sits beside this file
import pair_windows  # noqa: E402
import text_cuts  # noqa: E402

SPECIAL_TOKENS_PER_PAIR = 4  # <s> q </s></s> p </s>
# The smallest max_length a request may ask for: the smallest N where a query at its full share
# (N * 3 // 4) still leaves the passage a token; below it FlagReranker's 'only_second' cannot fit
# the pair either. Published to clients (contract.Param.MIN_REQUEST_MAX_LENGTH).
MIN_REQUEST_MAX_LENGTH = 4 * (SPECIAL_TOKENS_PER_PAIR + 1) - 3
assert MIN_REQUEST_MAX_LENGTH - MIN_REQUEST_MAX_LENGTH * 3 // 4 - SPECIAL_TOKENS_PER_PAIR == 1

# Tokenizer work is bounded by what a pair can keep, not by what a caller sends. A text is
# tokenized in chunks that end at safe cuts (text_cuts.py): the first holds about
# FIRST_CHUNK_BYTES_PER_TOKEN bytes for each token the pair can use (XLM-R averages 4-5 bytes
# per token in English and in CJK alike, more in Cyrillic or Devanagari); each further chunk is
# sized from the bytes per token seen so far, CHUNK_MARGIN over what is still missing, until the
# text has yielded enough tokens or ends. Undershooting costs one more small chunk, not a redo.
FIRST_CHUNK_BYTES_PER_TOKEN = 2
CHUNK_MARGIN = 1.15
CHUNK_SLACK_BYTES = 64
# From this round on a chunk is at least as long as everything before it: a text whose tokens
# are much longer than it first looked still finishes in a few rounds.
GEOMETRIC_FROM_ROUND = 3
# Window mode needs character offsets and word ids, so it grows a prefix from the start
# instead (by CUT_GROWTH while the prefix yields no token at all).
CUT_GROWTH = 4


# Truncate mode reads a long text only as far as a pair can use: its first HEAD_BYTES_PER_TOKEN
# bytes per token the pair can keep (XLM-R averages 4-10), ended at a safe cut. The rest is only
# validated as UTF-8, in VALIDATE_PIECE_BYTES pieces (a piece holding a 4-byte character costs a
# 4-byte-per-character string; one whole 256 KiB text would). A head that yields too few tokens
# sends its request down the whole-text path instead.
HEAD_BYTES_PER_TOKEN = 16
VALIDATE_PIECE_BYTES = 16384
# A head with no space cut or forced boundary near its end gets this many tries at a coalesced
# cut (text_cuts.py), each sized from the last, before it is read whole.
COALESCE_TRIES = 3
# The first try's prefixes hold this many bytes per needed token: words without a cut (base64,
# hex, glued identifiers) run 1.5-3 bytes a token; a second try costs as much as the first.
COALESCE_BYTES_PER_TOKEN = 3
# How far past its target end a coalesced cut looks for a plain window to end its prefixes in.
COALESCE_SCAN = 64


def chars_for_bytes(text: str, start: int, nbytes: int) -> int:
    """How many characters of text[start:] fit in nbytes of UTF-8 (at least one)."""
    return max(1, len(text[start : start + nbytes].encode()[:nbytes].decode("utf-8", "ignore")))


class InvalidInput(ValueError):
    """A request item that cannot be scored; the message names the field and the limit."""


def _kept(err: InvalidInput) -> InvalidInput:
    """A refusal to keep as a result, without its traceback. A traceback holds the frames it passed
    through and, by their f_back, every caller's: in the tokenizer stub that is execute() with its
    requests, whose inputs live in the stub's /dev/shm region, and execute() holds the results.
    That cycle kept every refused request's text (up to a whole message) until Python's cyclic GC
    ran: a burst of 16-31 MiB passages, one request per execute, grew a region to 256 MiB
    (issue 26 item 5)."""
    return err.with_traceback(None)


@dataclass(frozen=True)
class PairBatch:
    input_ids: np.ndarray  # int64 [B, L], L = the smallest bucket that fits the longest pair
    attention_mask: np.ndarray  # int64 [B, L]
    tokens: np.ndarray  # int32 [B, 1]: tokens of each pair, special tokens included
    truncated: np.ndarray  # bool [B, 1]: query or passage lost tokens to max_length


@dataclass(frozen=True)
class WindowBatch:
    """Window mode: one row per window, and which passage (request row) each window belongs to."""

    pairs: PairBatch  # tokens: the window's pair; truncated: the query was cut, or the passage needs
    # more than max_windows_per_passage windows and only its first ones are scored
    owner: np.ndarray  # int32 [W, 1]: the request row of the passage
    span: np.ndarray  # int32 [W, 2]: (start, end) character offsets of the window in its passage


@dataclass(frozen=True)
class PassageTokens:
    """Window mode: a passage's first tokens (`read_passages`), as lists."""

    ids: list[int]
    offsets: list[tuple[int, int]]  # character offsets of each token in the passage
    starts: list[bool]  # where a pre-tokenizer word begins (pair_windows.word_starts)
    complete: bool  # every token of the passage is here


# The phrase of the per-request window error: a client splits the request when it sees it.
WINDOWS_PER_REQUEST_ERROR = contract.WINDOWS_PER_REQUEST_ERROR


class PairTokenizer:
    def __init__(
        self,
        tokenizer_json: str,
        max_length: int,
        query_max_length: int,
        buckets: list[int],
        max_text_bytes: int,
        max_windows_per_passage: int = 0,
        max_windows_per_request: int = 0,
    ) -> None:
        if not buckets or buckets[-1] != max_length:
            raise ValueError(f"the largest bucket must equal max_length={max_length}: {buckets}")
        self.tokenizer = Tokenizer.from_file(tokenizer_json)
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.max_length = max_length
        self.query_max_length = query_max_length
        self.buckets = list(buckets)
        self.max_text_bytes = max_text_bytes
        self.max_windows_per_passage = max_windows_per_passage
        self.max_windows_per_request = max_windows_per_request
        self.cuts = text_cuts.TextCuts(self.tokenizer)
        self.cls_id = self._token_id("<s>")
        self.sep_id = self._token_id("</s>")
        self.pad_id = self._token_id("<pad>")

    def _token_id(self, token: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise ValueError(f"tokenizer has no {token!r} token: not an XLM-RoBERTa tokenizer")
        return token_id

    def _wire_bytes(self, field: str, index: int, raw: object) -> bytes:
        if isinstance(raw, str):  # a Python caller's text (Triton sends bytes)
            try:
                raw = raw.encode("utf-8")
            except UnicodeEncodeError as err:
                raise InvalidInput(
                    f"{field}[{index}]: not valid UTF-8 ({err.reason} at character {err.start})"
                ) from None
        if not isinstance(raw, (bytes, bytearray)):
            raise InvalidInput(f"{field}[{index}]: expected a UTF-8 string, got {type(raw).__name__}")
        if len(raw) > self.max_text_bytes:
            raise InvalidInput(
                f"{field}[{index}]: {len(raw)} bytes exceeds the limit of {self.max_text_bytes} bytes per text"
            )
        return bytes(raw)

    @staticmethod
    def _refuse_utf8(field: str, index: int, err: UnicodeDecodeError, offset: int = 0) -> InvalidInput:
        return InvalidInput(f"{field}[{index}]: not valid UTF-8 ({err.reason} at byte {offset + err.start})")

    def decode_text(self, field: str, index: int, raw: object) -> str:
        """Validate one wire item (bytes) and return it as text, or raise InvalidInput."""
        data = self._wire_bytes(field, index, raw)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise self._refuse_utf8(field, index, err) from None
        if "\x00" in text:
            raise InvalidInput(f"{field}[{index}]: contains a NUL character")
        if not text or text.isspace():  # isspace stops at the first other character: no copy
            raise InvalidInput(f"{field}[{index}]: is empty or whitespace only")
        return text

    def decode_head(self, field: str, index: int, raw: object, need: int) -> tuple[str, bool]:
        """Validate one wire item whole, as `decode_text` does, but decode only what `need` tokens
        can use: (text, partial). partial: text is the item's start up to a safe cut within its
        first need * HEAD_BYTES_PER_TOKEN bytes; else it is the whole text."""
        data = self._wire_bytes(field, index, raw)
        head_bytes = need * HEAD_BYTES_PER_TOKEN
        if len(data) <= head_bytes or not self.cuts.applies:
            return self.decode_text(field, index, data), False
        decoder = codecs.getincrementaldecoder("utf-8")()
        start = 0  # the byte where the current decode call's input begins (a pending character's too)
        try:
            head = decoder.decode(data[:head_bytes])
            if not data.isascii():
                for piece in range(head_bytes, len(data), VALIDATE_PIECE_BYTES):
                    start = piece - len(decoder.getstate()[0])
                    decoder.decode(data[piece : piece + VALIDATE_PIECE_BYTES])
                start = len(data) - len(decoder.getstate()[0])
                decoder.decode(b"", final=True)
        except UnicodeDecodeError as err:
            raise self._refuse_utf8(field, index, err, start) from None
        if b"\x00" in data:  # after UTF-8, in decode_text's order of refusals
            raise InvalidInput(f"{field}[{index}]: contains a NUL character")
        cut = None
        if not head.isspace():
            cut = self.cuts.last_cut(head)
            if cut is None:  # a long word with no space and no forced boundary near the head's end
                # What reading the whole text would cost, in characters (at the head's bytes per
                # character): coalescing is tried only where it is cheaper.
                whole_chars = len(data) * len(head) // max(1, len(head.encode()))
                cut = self.coalesced_cut(head, need, whole_chars // 2)
        if cut is None:  # no safe cut in the head (or a blank head): read it all
            return self.decode_text(field, index, data), False
        return head[:cut], True

    def coalesced_cut(self, head: str, need: int, budget: int | None = None) -> int | None:
        """A coalesced cut (text_cuts.py) in `head` with at least `need` tokens before it, or None.
        Each try tokenizes `longest` prefixes of about the length that holds `need` tokens; where
        the prefixes' paths part long before their ends (ties that only the rest of the text
        decides), it gives up at once rather than grow. budget: the characters all tries may hand
        the tokenizer (None: no limit); a try that would pass it is not made (at a large
        max_length, reading a 256 KiB word whole is cheaper than `longest` long prefixes)."""
        cuts = self.cuts
        limit = len(head) - cuts.added_reach
        # Room for the paths to meet before the prefixes' ends, however few tokens are needed, and
        # past the head's last space: a blob after some prose is coalesced within the blob.
        m = chars_for_bytes(head, 0, need * COALESCE_BYTES_PER_TOKEN) + 4 * cuts.longest
        m = max(m, head.rfind(" ") + 1 + 4 * cuts.longest)
        spent = 0
        for _ in range(COALESCE_TRIES):
            m = min(m, limit)
            windows = (cuts.coalescence_ends(head, end) for end in range(m, min(m + COALESCE_SCAN, limit) + 1))
            ends = next(filter(None, windows), None)
            if ends is None:
                return None
            spent += sum(ends)
            if budget is not None and spent > budget:
                return None
            encodings = self.tokenizer.encode_batch([head[:j] for j in ends], add_special_tokens=False)
            common = cuts.common_ends(encodings, ends[0])
            for b in reversed(common[need - 1 :]):
                if cuts.prefix_cut(head, b):
                    return b
            if not common or common[-1] < ends[0] // 2 or ends[-1] >= limit:
                return None
            m = int(ends[-1] * need / len(common) * CHUNK_MARGIN) + cuts.longest
        return None

    def lengths_for(self, max_length: int | None) -> tuple[int, int]:
        """(max_length, query_max_length) of a request: the export's, or a shorter one the request
        asks for, with FlagReranker's rule for the query's share (compute_score(max_length=N) cuts
        the query to N * 3 // 4)."""
        if max_length is None:
            return self.max_length, self.query_max_length
        return max_length, max_length * 3 // 4

    def check_max_length(self, max_length: int) -> int:
        """A request's own max_length: any from the smallest that holds a pair up to the export's."""
        least = MIN_REQUEST_MAX_LENGTH
        if not least <= max_length <= self.max_length:
            raise InvalidInput(
                f"max_length: {max_length} must be in {least}..{self.max_length} (the export's max_length)"
            )
        return max_length

    def join(self, index: int, q: list[int], p: list[int], max_length: int | None = None) -> tuple[list[int], bool]:
        """`<s> q </s></s> p </s>` within max_length (the export's, or the request's own), and
        whether anything was cut."""
        max_length, query_max_length = self.lengths_for(max_length)
        truncated = len(q) > query_max_length or len(p) > max_length
        q = q[:query_max_length]
        p = p[:max_length]
        overflow = len(q) + len(p) + SPECIAL_TOKENS_PER_PAIR - max_length
        if overflow > 0:  # 'only_second': the passage gives up the tokens
            p = p[: len(p) - overflow]
            truncated = True
        if not q or not p:
            raise InvalidInput(f"{'query' if not q else 'passage'}[{index}]: produces no tokens")
        return [self.cls_id, *q, self.sep_id, self.sep_id, *p, self.sep_id], truncated

    def bucket_for(self, length: int) -> int:
        """The smallest configured bucket that holds `length` tokens."""
        position = bisect.bisect_left(self.buckets, length)
        if position == len(self.buckets):
            raise InvalidInput(f"{length} tokens exceeds max_length={self.max_length}")
        return self.buckets[position]

    def pad(self, pairs: list[tuple[list[int], bool]]) -> PairBatch:
        """Pad every pair of one request to the request's bucket."""
        lengths = [len(ids) for ids, _ in pairs]
        width = self.bucket_for(max(lengths))
        input_ids = np.full((len(pairs), width), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(pairs), width), dtype=np.int64)
        for row, (ids, _) in enumerate(pairs):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        return PairBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            tokens=np.asarray(lengths, dtype=np.int32).reshape(-1, 1),
            truncated=np.asarray([t for _, t in pairs], dtype=bool).reshape(-1, 1),
        )

    @staticmethod
    def _check_pairing(raw_queries: list[object], raw_passages: list[object]) -> None:
        if len(raw_queries) != len(raw_passages):
            raise InvalidInput(
                f"query has {len(raw_queries)} items but passage has {len(raw_passages)}: they must match"
            )
        if not raw_queries:
            raise InvalidInput("query: the request holds no pairs")

    def _decode_request(self, raw_queries: list[object], raw_passages: list[object]) -> tuple[list[str], list[str]]:
        self._check_pairing(raw_queries, raw_passages)
        queries = [self.decode_text("query", i, q) for i, q in enumerate(raw_queries)]
        passages = [self.decode_text("passage", i, p) for i, p in enumerate(raw_passages)]
        return queries, passages

    def encode_bounded(self, texts: list[str], needs: list[int]) -> list[list[int]]:
        """Token ids of each text, exact for its first needs[i] tokens (all of them when the text
        has fewer), tokenized chunk by chunk. Every chunk starts at the text's start or at a space
        cut (`text_cuts`), where the whole text's tokenization restarts too, so the chunks' ids
        joined are the whole text's. A chunk that ends at a cut inside a word is kept only if it
        completes the text's need; else the next round redoes it longer. One `encode_batch` call
        per round, over every text still short of tokens."""
        ids: list[list[int]] = [[] for _ in texts]
        done = [0] * len(texts)  # characters whose tokens are in ids: 0 or a space cut
        bytes_per_token = [0.0] * len(texts)  # seen in the text's latest chunk
        chunk_bytes = [0] * len(texts)  # the size of that chunk
        pending = [i for i, text in enumerate(texts) if text]
        round_ = 1
        while pending:
            chunks, ends, again = [], [], []
            for i in pending:
                missing = needs[i] - len(ids[i])
                if round_ == 1:
                    nbytes = missing * FIRST_CHUNK_BYTES_PER_TOKEN
                else:
                    nbytes = int(missing * bytes_per_token[i] * CHUNK_MARGIN) + CHUNK_SLACK_BYTES
                    if round_ >= GEOMETRIC_FROM_ROUND:
                        nbytes = max(nbytes, 2 * chunk_bytes[i])
                start = done[i]
                end = self.cuts.cut(texts[i], start + chars_for_bytes(texts[i], start, nbytes))
                chunks.append(texts[i][start:end])
                ends.append(len(texts[i]) if end is None else end)
            for i, chunk, end, encoding in zip(
                pending, chunks, ends, self.tokenizer.encode_batch(chunks, add_special_tokens=False)
            ):
                got = encoding.ids
                chunk_bytes[i] = len(chunk.encode())
                bytes_per_token[i] = chunk_bytes[i] / max(1, len(got))
                if len(ids[i]) + len(got) >= needs[i] or end == len(texts[i]):
                    ids[i] += got
                    continue
                if texts[i][end] == " ":  # the next chunk goes on from here
                    ids[i] += got
                    done[i] = end
                again.append(i)
            pending = again
            round_ += 1
        return ids

    def encode_bounded_full(self, texts: list[str], needs: list[int]) -> list[Encoding]:
        """Like `encode_bounded`, with the whole Encoding (ids, character offsets, word ids) of a
        prefix of each text that grows from a safe cut to a later one. Tokens before a safe cut
        have the whole text's ids and offsets."""
        encodings: list[Encoding | None] = [None] * len(texts)
        budgets = [need * FIRST_CHUNK_BYTES_PER_TOKEN for need in needs]
        pending = list(range(len(texts)))
        tried: set[int] = set()  # texts that had their one try at a coalesced cut
        while pending:
            cuts = [self._full_cut(texts[i], needs[i], budgets[i], i, tried) for i in pending]
            prefixes = [texts[i] if cut is None else texts[i][:cut] for i, cut in zip(pending, cuts)]
            again = []
            for i, cut, prefix, encoding in zip(
                pending, cuts, prefixes, self.tokenizer.encode_batch(prefixes, add_special_tokens=False)
            ):
                got = len(encoding)  # no copy of the ids
                if cut is None or got >= needs[i]:
                    encodings[i] = encoding
                else:
                    size = len(prefix.encode())
                    budgets[i] = int(size * needs[i] / got * CHUNK_MARGIN) if got else size * CUT_GROWTH
                    budgets[i] = max(budgets[i], size + CHUNK_SLACK_BYTES)
                    again.append(i)
            pending = again
        return encodings  # type: ignore[return-value]

    def _full_cut(self, text: str, need: int, budget: int, index: int, tried: set[int]) -> int | None:
        """Where `encode_bounded_full` ends a text's prefix: the nearest safe cut past `budget`
        bytes, or, inside a long word with no space or forced boundary near (glued words: base64,
        hex, identifiers), once per text, a coalesced cut with `need` tokens before it, as
        truncate mode's `decode_head` finds one (only where it is cheaper than reading the text
        whole). None: the whole text."""
        at = chars_for_bytes(text, 0, budget)
        cut = self.cuts.cut(text, at)
        if at >= len(text) or (cut is not None and cut - at <= text_cuts.MID_WORD_SCAN) or index in tried:
            return cut
        tried.add(index)
        head = text[: chars_for_bytes(text, 0, need * HEAD_BYTES_PER_TOKEN)]
        coalesced = self.coalesced_cut(head, need, len(text) // 2) if len(head) < len(text) else None
        return cut if coalesced is None else coalesced

    def tokenize_requests(
        self,
        requests: list[tuple[list[object], list[object]]],
        heads: bool = True,
        max_lengths: list[int | None] | None = None,
    ) -> list[PairBatch | InvalidInput]:
        """Tokenize many requests in one batch; a bad request fails alone. Each distinct text is
        tokenized once (a rerank request repeats its query for every pair), and only as far as a
        pair can use it: query_max_length + 1 tokens of a query, max_length + 1 of a passage (the
        extra token tells whether the text was truncated). heads: long texts are decoded only as
        far as that (`decode_head`); a request where that was too little is redone whole.
        max_lengths: per request, None (the export's max_length) or a shorter one the request
        asks for (FlagReranker's compute_score(max_length=N) rules; padded to the same buckets)."""
        if max_lengths is None:
            max_lengths = [None] * len(requests)
        results: list[PairBatch | InvalidInput | None] = [None] * len(requests)
        slot: dict[str, int] = {}  # text -> its index in `texts`
        texts: list[str] = []
        needs: list[int] = []
        # (request, query slots, passage slots, slots read only in part)
        spans: list[tuple[int, list[int], list[int], list[int]]] = []

        def place(text: str, need: int) -> int:
            index = slot.setdefault(text, len(texts))
            if index == len(texts):
                texts.append(text)
                needs.append(need)
            else:
                needs[index] = max(needs[index], need)
            return index

        for r, (raw_queries, raw_passages) in enumerate(requests):
            try:  # the whole request is read before any of it is placed: a bad item costs no tokenizing
                self._check_pairing(raw_queries, raw_passages)
                own = max_lengths[r]
                max_length, query_max_length = self.lengths_for(None if own is None else self.check_max_length(own))
                read = [
                    (
                        need,
                        *(self.decode_head(field, i, raw, need) if heads else (self.decode_text(field, i, raw), False)),
                    )
                    for field, items, need in (
                        ("query", raw_queries, query_max_length + 1),
                        ("passage", raw_passages, max_length + 1),
                    )
                    for i, raw in enumerate(items)
                ]
            except InvalidInput as err:
                results[r] = _kept(err)
                continue
            slots = [place(text, need) for need, text, _ in read]
            partial = [s for s, (_, _, cut_short) in zip(slots, read) if cut_short]
            spans.append((r, slots[: len(raw_queries)], slots[len(raw_queries) :], partial))
        encoded = self.encode_bounded(texts, needs) if texts else []
        redo = [r for r, _, _, partial in spans if any(len(encoded[s]) < needs[s] for s in partial)]
        redone = set(redo)
        for r, query_slots, passage_slots, _ in spans:
            if r in redone:
                continue
            try:
                results[r] = self.pad(
                    [
                        self.join(i, encoded[q], encoded[p], max_lengths[r])
                        for i, (q, p) in enumerate(zip(query_slots, passage_slots))
                    ]
                )
            except InvalidInput as err:
                results[r] = _kept(err)
        if redo:
            again = self.tokenize_requests([requests[r] for r in redo], False, [max_lengths[r] for r in redo])
            for r, result in zip(redo, again):
                results[r] = result
        return results  # type: ignore[return-value]

    def window_width(self, query_tokens: int, max_length: int | None = None) -> int:
        """Passage tokens of one window beside a query of `query_tokens` (before its cut), in
        windows of the export's max_length or of the request's own (`max_length`)."""
        max_length, query_max_length = self.lengths_for(max_length)
        return max_length - min(query_tokens, query_max_length) - SPECIAL_TOKENS_PER_PAIR

    def window_need(
        self, query_tokens: int, stride: int, windows: int | None = None, max_length: int | None = None
    ) -> int:
        """Passage tokens that decide the first `windows` (default max_windows_per_passage)
        windows and whether there are more: window k starts at most k strides in (each start moves
        at most one stride, pair_windows.py) and holds at most a window's width, so the last kept
        window ends by (N - 1) * stride + width, and one token past it says the passage goes on.
        Windows are of the export's max_length or of the request's own (`max_length`)."""
        width = self.window_width(query_tokens, max_length)
        stride = min(max(1, stride or width // 2), max(1, width))  # an invalid stride fails later
        windows = self.max_windows_per_passage if windows is None else windows
        return (windows - 1) * stride + width + 1

    def window_bounds(
        self,
        index: int,
        query_tokens: int,
        encoding: PassageTokens,
        stride: int,
        limit: int,
        max_length: int | None = None,
    ) -> list[tuple[int, int]]:
        """The passage's windows (token ranges), at most limit + 1 of them: limit + 1 says it needs
        more than `limit`. `encoding` holds at least `window_need(..., limit)` tokens (or all)."""
        width = self.window_width(query_tokens, max_length)
        if not encoding.ids:
            raise InvalidInput(f"passage[{index}]: produces no tokens")
        stride = stride or max(1, width // 2)  # 0: the default, half a window
        if not 1 <= stride <= width:
            raise InvalidInput(
                f"window_stride[{index}]: {stride} must be in 1..{width}, the passage tokens "
                f"of one window beside this query"
            )
        return pair_windows.window_bounds(encoding.starts, width, stride, limit)

    def window_rows(
        self,
        query: list[int],
        query_cut: bool,
        text: str,
        encoding: PassageTokens,
        bounds: list[tuple[int, int]],
        max_length: int | None = None,
    ) -> list[tuple[list[int], bool, tuple[int, int]]]:
        """(pair ids, truncated, character span) of the windows `window_bounds` found.

        A passage that needs more than max_windows_per_passage windows is scored on its FIRST
        max_windows_per_passage windows and every one of its rows is flagged truncated (the
        reduce step keeps its best window's flag, so the passage's result says it was not read
        whole). Why the first windows and not a spread over the document: they are contiguous, so
        the reading stays bounded to a prefix (nothing past the last window is tokenized), the
        scored text is one span a caller can show, and a document's opening (title, abstract,
        summary) is where relevance is most often stated: it is also what truncate mode scores."""
        query = query[: self.lengths_for(max_length)[1]]
        limit = self.max_windows_per_passage
        capped = len(bounds) > limit
        ids = encoding.ids
        return [
            (
                [self.cls_id, *query, self.sep_id, self.sep_id, *ids[start:end], self.sep_id],
                query_cut or capped,
                pair_windows.char_span(text, encoding.offsets, start, end),
            )
            for start, end in bounds[:limit]
        ]

    def read_passages(self, texts: list[str], needs: list[int]) -> list[PassageTokens]:
        """The first needs[i] tokens of each passage (all where it has fewer), read boundedly
        (`encode_bounded_full`), as plain lists converted once: an Encoding's getters copy every
        token on each access."""
        out = []
        for need, encoding in zip(needs, self.encode_bounded_full(texts, needs)):
            ids = encoding.ids
            starts = pair_windows.word_starts(encoding.word_ids[:need])
            out.append(PassageTokens(ids[:need], encoding.offsets[:need], starts, len(ids) < need))
        return out

    def tokenize_window_requests(self, requests: list[tuple]) -> list[WindowBatch | InvalidInput]:
        """Window mode: (queries, passages, strides[, max_length]) per request -> one row per
        window. max_length (None: the export's) is each window's pair length: a request's own
        max_length gives narrower windows, each scored by FlagReranker's rules at that length.

        Passages are read only as far as the windows a request may still use reach, so a request
        over max_windows_per_request is refused after reading about that many windows' worth, not
        its passages whole: first every passage for its share of the request's windows
        (max_windows_per_request // passages, at most max_windows_per_passage); a request whose
        passages already need more in all is refused there. Then each passage that needs more than
        its share, one at a time, for what the others leave (at most max_windows_per_passage: a
        longer passage is scored on its first windows and flagged truncated). In all, about
        2 x (max_windows_per_request + passages) windows' worth of tokens per request."""
        if self.max_windows_per_passage < 1 or self.max_windows_per_request < 1:
            return [InvalidInput("window mode is not configured on this server") for _ in requests]
        results: list[WindowBatch | InvalidInput | None] = [None] * len(requests)
        decoded = []
        for r, (raw_queries, raw_passages, strides, *own) in enumerate(requests):
            try:
                queries, passages = self._decode_request(raw_queries, raw_passages)
                if len(strides) != len(passages):
                    raise InvalidInput(f"window_stride has {len(strides)} items but passage has {len(passages)}")
                for i, stride in enumerate(strides):
                    if stride < 0:
                        raise InvalidInput(f"window_stride[{i}]: {stride} is negative")
                max_length = own[0] if own else None
                if max_length is not None:
                    self.check_max_length(max_length)
                decoded.append((r, queries, passages, [int(s) for s in strides], max_length))
            except InvalidInput as err:
                results[r] = _kept(err)
        queries = sorted({q for _, qs, _, _, _ in decoded for q in qs})
        query_ids = dict(zip(queries, self.encode_bounded(queries, [self.query_max_length + 1] * len(queries))))
        budget = self.max_windows_per_request
        # Round 1, one batch for every request: each passage for its request's share.
        shares = {r: max(1, min(self.max_windows_per_passage, budget // len(ps))) for r, _, ps, _, _ in decoded}
        passage_need: dict[str, int] = {}  # a passage repeated in several pairs: the most any of them uses
        for r, qs, ps, strides, max_length in decoded:
            for q, p, stride in zip(qs, ps, strides):
                need = self.window_need(len(query_ids[q]), stride, shares[r], max_length)
                passage_need[p] = max(passage_need.get(p, 0), need)
        passages = sorted(passage_need)
        read = dict(zip(passages, self.read_passages(passages, [passage_need[p] for p in passages])))
        for r, qs, ps, strides, max_length in decoded:
            query_max_length = self.lengths_for(max_length)[1]
            try:
                bounds = self._request_windows(r, qs, ps, strides, query_ids, read, shares[r], max_length)
                rows, owner, spans = [], [], []
                for i, (q, p) in enumerate(zip(qs, ps)):
                    q_ids = query_ids[q]
                    for ids, cut, span in self.window_rows(
                        q_ids, len(q_ids) > query_max_length, p, read[p], bounds[i], max_length
                    ):
                        rows.append((ids, cut))
                        owner.append(i)
                        spans.append(span)
                results[r] = WindowBatch(
                    self.pad(rows),
                    np.asarray(owner, dtype=np.int32).reshape(-1, 1),
                    np.asarray(spans, dtype=np.int32).reshape(-1, 2),
                )
            except InvalidInput as err:
                results[r] = _kept(err)
        return results  # type: ignore[return-value]

    def _request_windows(
        self,
        r: int,
        queries: list[str],
        passages: list[str],
        strides: list[int],
        query_ids: dict[str, list[int]],
        read: dict[str, PassageTokens],
        share: int,
        max_length: int | None = None,
    ) -> list[list[tuple[int, int]]]:
        """Every pair's windows within the request's budget (see tokenize_window_requests), or
        InvalidInput naming the request's windows and the limit. `read` holds each passage's
        tokens for `share` windows and gains longer reads of the passages that need more."""
        budget, cap = self.max_windows_per_request, self.max_windows_per_passage
        for i, q in enumerate(queries):
            if not query_ids[q]:
                raise InvalidInput(f"query[{i}]: produces no tokens")
        bounds = [
            self.window_bounds(i, len(query_ids[q]), read[p], stride, share, max_length)
            for i, (q, p, stride) in enumerate(zip(queries, passages, strides))
        ]
        # Rows each pair needs: exactly, or at least limit + 1 where it needs more than its limit
        # (its share, then what the others leave) and that limit is below the per-passage cap.
        least = [min(len(b), share + 1, cap) for b in bounds]
        exact = [len(b) <= share or share == cap for b in bounds]
        for i in [i for i, known in enumerate(exact) if not known]:
            self._refuse_windows(sum(least), budget, all(exact))
            q, p, stride = queries[i], passages[i], strides[i]
            limit = min(cap, budget - (sum(least) - least[i]))  # what the other pairs leave
            need = self.window_need(len(query_ids[q]), stride, limit, max_length)
            if not read[p].complete and len(read[p].ids) < need:
                [read[p]] = self.read_passages([p], [need])
            bounds[i] = self.window_bounds(i, len(query_ids[q]), read[p], stride, limit, max_length)
            least[i] = min(len(bounds[i]), limit + 1, cap)
            exact[i] = len(bounds[i]) <= limit or limit == cap
        self._refuse_windows(sum(least), budget, all(exact))
        return bounds

    @staticmethod
    def _refuse_windows(windows: int, budget: int, exact: bool) -> None:
        if windows > budget:
            raise InvalidInput(
                f"passage: the request needs {'' if exact else 'at least '}{windows} windows, over the limit of "
                f"{budget} {WINDOWS_PER_REQUEST_ERROR} (send fewer passages per request)"
            )

    def tokenize_request(self, raw_queries: list[object], raw_passages: list[object]) -> PairBatch:
        """Validate, tokenize and pad one request; raises InvalidInput."""
        result = self.tokenize_requests([(raw_queries, raw_passages)])[0]
        if isinstance(result, InvalidInput):
            raise result
        return result
