"""Same inputs for every system: texts cut in advance to what our tokenization keeps.

Our server (FlagReranker semantics) keeps at most query_max_length query tokens and cuts the
passage so the pair fits max_length. Peers truncate differently (sentence-transformers:
longest_first; Infinity: the tokenizer's model_max_length, 8,192) or not at all, so given the
raw texts they score different token sequences. Each text is cut here at the character where
its last kept token ends; the cut pair is then re-tokenized both with our pair tokenizer and
with the Hugging Face tokenizer the peers load, and must give exactly the same ids with
nothing left to truncate. When a cut inside a word re-segments differently, the passage gives
up one more token and is checked again (counted in `recut`).
"""

from __future__ import annotations

from dataclasses import dataclass

SPECIAL = 4  # <s> q </s></s> p </s>


@dataclass(frozen=True)
class SameInputs:
    requests: list[tuple[str, list[str]]]
    lengths: list[list[int]]  # pair tokens (special tokens included), per request, per passage
    cut: int  # pairs whose texts had to be shortened
    recut: int  # of those, pairs that needed more than one cut


def _ids(pair_tokenizer, query: str, passage: str) -> tuple[list[int], bool]:
    q, p = (e.ids for e in pair_tokenizer.tokenizer.encode_batch([query, passage], add_special_tokens=False))
    return pair_tokenizer.join(0, q, p)


def cut_pair(pair_tokenizer, query: str, passage: str) -> tuple[str, str, list[int], int]:
    """(query, passage) cut to what the server keeps, their pair ids, and how many cuts it took."""
    tok = pair_tokenizer.tokenizer
    q_enc, p_enc = tok.encode_batch([query, passage], add_special_tokens=False)
    keep_q = min(len(q_enc.ids), pair_tokenizer.query_max_length)
    keep_p = min(len(p_enc.ids), pair_tokenizer.max_length - keep_q - SPECIAL)
    if keep_q < len(q_enc.ids):
        query = query[: q_enc.offsets[keep_q - 1][1]]
    cuts = 0
    text = passage
    while True:
        if keep_p < len(p_enc.ids):
            text = passage[: p_enc.offsets[keep_p - 1][1]]
            cuts += 1
        ids, truncated = _ids(pair_tokenizer, query, text)
        if not truncated:
            return query, text, ids, cuts
        keep_p -= 1  # the cut word re-segmented into more tokens: give one up and check again
        if keep_p < 1:
            raise ValueError("cannot cut this pair to fit")


def prepare(pair_tokenizer, hf_tokenizer, requests: list[tuple[str, list[str]]]) -> SameInputs:
    out, lengths, cut, recut = [], [], 0, 0
    for query, passages in requests:
        kept, request_lengths = [], []
        q_text = query
        for passage in passages:
            q_text, p_text, ids, cuts = cut_pair(pair_tokenizer, query, passage)
            # What every peer's tokenizer makes of the cut pair (no truncation asked for: the
            # pair must already fit): the very ids our server computes.
            theirs = hf_tokenizer(q_text, p_text, truncation=False)["input_ids"]
            if list(theirs) != ids:
                raise AssertionError(
                    f"Hugging Face tokenizer disagrees with ours on a cut pair ({len(theirs)} vs {len(ids)} ids)"
                )
            cut += cuts > 0
            recut += cuts > 1
            kept.append(p_text)
            request_lengths.append(len(ids))
        out.append((q_text, kept))
        lengths.append(request_lengths)
    return SameInputs(out, lengths, cut, recut)
