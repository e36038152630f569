"""Where a text may be cut so that the tokens of the part before the cut are exactly the first
tokens of the whole text.

The tokenizer's work is bounded by what a pair can keep, not by what a caller sends: a 256 KiB
passage is tokenized only as far as max_length tokens reach (pair_tokenization.encode_bounded).

Why a cut is safe, for XLM-R's pipeline (`TextCuts.applies` checks the tokenizer has it):
added tokens (<s>, <mask>, ...) split out of the raw text -> normalise (sentencepiece's
precompiled NFKC charsmap, applied one grapheme cluster at a time; strip trailing white space
of each part; replace runs of spaces with one '▁') -> pre-tokenise (Metaspace: split on spaces, each word becomes
'▁word') -> Unigram (Viterbi over each word's lattice of vocabulary pieces). No cut falls inside
an added token.

- A *space cut*, before a space whose left neighbour ends its grapheme cluster (a letter,
  digit, mark, punctuation or symbol; not a control, format character or joining letter) and
  normalises to neither nothing nor white space: the charsmap works within grapheme clusters
  and the space starts one of its own, so the left part normalises as it does in the whole; it
  ends a word there, and Unigram never looks across words. The whole text's tokenization
  restarts there too: a text that starts with that space begins its first word with '▁' exactly
  as the whole does, so the text after a space cut can be tokenized on its own and its tokens
  appended.
- A *forced boundary* q inside a word: the characters of a window around q (one more than the
  longest run of such characters in any vocabulary piece, each side) each form their own
  grapheme cluster and normalise to themselves (so the normalised text there is the raw text,
  and the charsmap never works across q), no added token ends in the window or spans q, and no
  vocabulary piece spans q (a piece reaching past the window would need a longer run; a word's
  leading '▁' piece cannot reach q either: the window holds no space and no added token's end,
  so the word starts at least one window before q). Every segmentation of the word then splits
  at q, and Viterbi's best path to q is the same in the prefix and in the whole: the prefix
  keeps its tokens. A character where no single-character piece starts is a one-character
  unknown node: fusing unknown
  neighbours afterwards only stretches the prefix's last token, whose id (unk) the whole has at
  the same place. (The text after q, tokenized alone, would get a '▁' the whole has not: it is
  never tokenized alone.) This is what bounds CJK written without spaces.
- A *coalesced cut* b, for a head with neither (a long word where every position lies inside
  some piece: base64, hex, identifiers glued from the vocabulary's pieces). Take an end m whose
  window (`longest` characters before it, `added_reach` after) holds only plain characters and
  no added token's end, and tokenize every prefix text[:j], j in (m - longest, m]. Each is
  Viterbi's best path to j, the same in the whole text (the forward pass up to j sees the same
  characters in the same order). Every segmentation of the whole has a boundary at some such j
  (a piece spanning them all would hold a run of longest + 1 plain characters), and its tokens
  up to there are that best path. So the tokens all the prefixes share, identical in id and
  offsets, are the whole's first tokens. b is the end of one of them where text[:b] itself is
  a valid prefix (plain characters on both sides, no added token across it) and the next
  shared token starts at b: its tokens are Viterbi's best path to b, which the whole takes. (A
  token's end offset is not always a lattice position: the '▁' Metaspace prepends to a word is
  aligned with the word's first character, so a lone '▁' token "ends" after that character;
  found in review, where text[:1] of "ar..." gave '▁a' and the whole '▁', 'ar'.) Where paths
  do not coalesce (ties: in 256
  KiB of "aaaa", whether the odd 'a' goes first depends on the run's length), there is no cut.
Anything else is not cut: the text is tokenized whole, which the byte limit per text still
bounds.
"""

from __future__ import annotations

import json
import os
import unicodedata
from functools import lru_cache

from tokenizers import Tokenizer

# Characters that form a grapheme cluster alone (grapheme break property Other): letters,
# digits, punctuation and symbols, less those that join a neighbour (Unicode 16, what the
# tokenizers library segments by): Hangul jamo, Lo/Lm letters that are SpacingMark, Prepend or
# Extend, emoji modifiers and regional indicators. Marks, controls, format characters and
# spaces are never in a cut window, nor is a character Python's Unicode data does not know
# (category Cn), nor '▁', the pre-tokenizer's word mark.
_LONE_CATEGORIES = frozenset("LNPS")
_JOINING = frozenset(
    [0x0E33, 0x0EB3, 0x0D4E, 0xFF9E, 0xFF9F, 0x111C2, 0x111C3, 0x1193F, 0x11941, 0x11A3A, 0x11D46, 0x11F02]
    + [*range(0x11A84, 0x11A8A), *range(0x1F3FB, 0x1F400), *range(0x1F1E6, 0x1F200), ord("▁")]
)
_JAMO = ((0x1100, 0x11FF), (0x3130, 0x318F), (0xA960, 0xA97F), (0xD7B0, 0xD7FF))
# How far past the budget a cut is looked for inside a word before settling for the next space.
MID_WORD_SCAN = 256


def _longest_lone_run(piece: str) -> int:
    longest = run = 0
    for ch in piece:
        run = run + 1 if _lone_character(ch) else 0
        longest = max(longest, run)
    return longest


@lru_cache(maxsize=65536)
def _lone_character(ch: str) -> bool:
    code = ord(ch)
    if code in _JOINING or any(lo <= code <= hi for lo, hi in _JAMO):
        return False
    return unicodedata.category(ch)[0] in _LONE_CATEGORIES


class TextCuts:
    def __init__(self, tokenizer: Tokenizer) -> None:
        spec = json.loads(tokenizer.to_str())
        self.applies = self._is_xlmr_pipeline(spec)
        self.pieces = {piece for piece, _ in spec["model"]["vocab"]} if self.applies else set()
        # The window's width: one more than the longest run of lone characters in any piece (after
        # a word's leading '▁'). A piece spanning q and reaching past the window would hold a run
        # of width + 1 window characters (all lone), so every piece that can span q lies inside
        # the window, where `forced_boundary` looks each one up.
        self.longest = 1 + max((_longest_lone_run(piece.removeprefix("▁")) for piece in self.pieces), default=0)
        self.normalizer = tokenizer.normalizer
        self._identity: dict[str, bool] = {}
        self._word_end: dict[str, bool] = {}
        # Added tokens (<s>, <mask>, ...) are split out of the text (raw, or normalised for
        # `normalized` ones) before pre-tokenization: a cut must not fall inside one, and the text
        # after one starts a new word (with its own '▁'), so none may end inside a cut window.
        self.added = [token["content"] for token in spec.get("added_tokens", [])]
        self.added_reach = max([1, *(len(token) for token in self.added)])
        self.added_ends = {token[-1] for token in self.added if token}

    @staticmethod
    def _is_xlmr_pipeline(spec: dict) -> bool:
        """The pipeline the safety argument above is about; any other tokenizer is never cut."""
        normalizer = spec.get("normalizer") or {}
        steps = normalizer.get("normalizers", [normalizer])
        kinds = [step.get("type") for step in steps]
        replaces_spaces_only = all(
            step.get("pattern") in ({"Regex": " {2,}"}, {"String": "  "}) for step in steps if step["type"] == "Replace"
        )
        stripped_right_only = all(not step.get("strip_left") for step in steps if step["type"] == "Strip")
        pre = spec.get("pre_tokenizer") or {}
        # A single_word added token would look at the character before it: no cut window checks that.
        no_single_word = not any(token.get("single_word") for token in spec.get("added_tokens", []))
        return (
            no_single_word
            and spec.get("model", {}).get("type") == "Unigram"
            and not spec["model"].get("byte_fallback")
            and set(kinds) <= {"Precompiled", "Strip", "Replace"}
            and replaces_spaces_only
            and stripped_right_only
            and pre.get("type") == "Metaspace"
            and pre.get("split", True)
            and pre.get("prepend_scheme") == "always"
        )

    def _plain(self, ch: str) -> bool:
        """A lone character (its own grapheme cluster) that normalises to itself."""
        known = self._identity.get(ch)
        if known is None:
            known = _lone_character(ch) and self.normalizer.normalize_str(ch) == ch
            self._identity[ch] = known
        return known

    def forced_boundary(self, text: str, q: int) -> bool:
        """Every segmentation of the word around q splits at q (see the module docstring)."""
        width = self.longest
        start, end = q - width, q + max(width, self.added_reach)
        # Unknown characters need no check: each is a one-character unknown node, and fusing
        # neighbouring unknown tokens afterwards only stretches the prefix's last token, whose id
        # (unk) the whole text has at the same place.
        if text[q - 1 : q + 1] in self.pieces:  # the shortest crossing, and in glued words the usual one
            return False
        # Window characters normalise to themselves, so an added token (raw or normalised) that
        # ends in the window, or spans q, shows its last character there.
        if not self._plain_run(text, start, end) or self._added_end_in(text, start, q + self.added_reach):
            return False
        pieces = self.pieces
        for s in range(q - 1, q - width, -1):  # short spans first: most crossings are short
            for e in range(q + 1, s + width + 1):
                if text[s:e] in pieces:
                    return False
        return True

    def coalescence_ends(self, text: str, m: int) -> range | None:
        """The prefix ends j a coalesced cut at m tokenizes (see the module docstring), or None
        where the window around m is not plain."""
        start, end = m - self.longest, m + self.added_reach
        if not self._plain_run(text, start, end) or self._added_end_in(text, start, end):
            return None
        return range(start + 1, m + 1)

    def prefix_cut(self, text: str, b: int) -> bool:
        """text[:b] normalises and splits as the whole text's start does: plain characters on both
        sides of b (own grapheme clusters, each normalising to itself, never to white space), and
        no added token (raw or normalised) ending in the `added_reach` characters from b, so none
        spans b."""
        end = b + self.added_reach
        return self._plain_run(text, b - 1, end) and not self._added_end_in(text, b, end)

    def _plain_run(self, text: str, start: int, end: int) -> bool:
        """text[start:end] lies inside the text and holds only plain characters."""
        return start >= 0 and end <= len(text) and all(self._plain(ch) for ch in text[start:end])

    def _added_end_in(self, text: str, start: int, end: int) -> bool:
        """Some character of text[start:end] is the last character of an added token."""
        return any(ch in self.added_ends for ch in text[start:end])

    @staticmethod
    def common_ends(encodings: list, before: int) -> list[int]:
        """The end offsets of the leading tokens every encoding shares (same id, same offsets) that
        end before `before` and where the next shared token starts."""
        shared = os.path.commonprefix([list(zip(e.ids, e.offsets)) for e in encodings])
        # Only where the next shared token starts at or after the end: a lone '▁' token's offsets
        # cover the word's first character, which the next token starts with (module docstring).
        return [end for (_, (_, end)), (_, (start, _)) in zip(shared, shared[1:]) if start >= end and end < before]

    def _inside_added_token(self, text: str, q: int) -> bool:
        return any(text.find(token, max(0, q - len(token) + 1), q + len(token) - 1) != -1 for token in self.added)

    def _ends_word(self, ch: str) -> bool:
        """A character that can end the text before a space cut: its grapheme cluster ends there
        (anything but a control, a format character, a space or a joining letter), and it
        normalises to something that is neither empty nor white space."""
        known = self._word_end.get(ch)
        if known is None:
            known = ord(ch) not in _JOINING and unicodedata.category(ch)[0] in "LMNPS"
            if known:
                normal = self.normalizer.normalize_str(ch)
                known = bool(normal) and not any(c.isspace() or c == "▁" for c in normal)
            self._word_end[ch] = known
        return known

    def _space_cut(self, text: str, i: int) -> bool:
        return self._ends_word(text[i - 1]) and not self._inside_added_token(text, i)

    def last_cut(self, text: str) -> int | None:
        """The last safe cut within 2 * MID_WORD_SCAN of the end of `text` that stays safe whatever
        follows (`text` may be the start of a longer text: no check looks past its end), or None."""
        limit = len(text) - self.added_reach
        lowest = max(1, limit - 2 * MID_WORD_SCAN)
        space = text.rfind(" ", lowest, limit + 1)
        while space != -1 and not self._space_cut(text, space):
            space = text.rfind(" ", lowest, space)
        for q in range(limit, max(space, lowest - 1), -1):  # a later cut inside a word first
            if self._plain(text[q]) and self.forced_boundary(text, q):
                return q
        return space if space != -1 else None

    def cut(self, text: str, at: int) -> int | None:
        """The nearest safe cut at index >= at, or None (tokenize to the end). A space cut is taken
        when one is near; inside a long word a forced boundary within MID_WORD_SCAN is."""
        if not self.applies or at >= len(text):
            return None
        at = max(at, 1)
        space = text.find(" ", at)
        while space != -1 and not self._space_cut(text, space):
            space = text.find(" ", space + 1)
        if space != -1 and space - at <= MID_WORD_SCAN:
            return space
        stop = min(len(text), at + MID_WORD_SCAN, space if space != -1 else len(text))
        for q in range(at, stop):
            if self._plain(text[q]) and self.forced_boundary(text, q):
                return q
        return space if space != -1 else None
