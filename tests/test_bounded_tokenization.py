"""The tokenizer's work is bounded by what a pair keeps (issue 13): a text is tokenized in chunks
that end at safe cuts (model_repository/tokenizer/1/text_cuts.py), each distinct text once, and
the result is identical to tokenizing everything.

Timing is not asserted here (a shared CI box makes timed tests flaky); `benchmarks/
trust_boundary.py` prints the costs. These tests assert the work itself: which texts, and how
many characters of them, reach the tokenizer."""

from __future__ import annotations

import random

import numpy as np
import pytest

from common import calibration_texts, certificate_texts
from common.adversarial_texts import doubled_character, glued_word
from common.pair_tokenizer import load_pair_tokenizer
from common.serving_code import pair_tokenization_module
from export.settings import MAX_TEXT_BYTES, ServingLimits

pt = pair_tokenization_module()

# Texts that stress the normalisation around cut points: runs of spaces, tabs and newlines,
# `` and '' (rewritten to "), NBSP, combining marks, compatibility characters (½, ﬁ, full-width
# letters), a ligature that NFKC expands into several words (U+FDFA), emoji, RTL and CJK
# without spaces.
TRICKY = [
    "a  b   c\t\td\n\ne ``quoted'' text ﬁne ½ cup ＡＢＣ full width",
    "e\u0301te\u0301 cafe\u0301  na\u00efve \u00a0nbsp\u00a0 here \u200b zero width",
    "\ufdfa bracket ﬀ word  -- 1,234.5 m² ×10⁻³ 👩‍👩‍👧 family 🏔️ peak",
    "شاهد الفيلم الجديد في السينما  اليوم مع الأصدقاء",
    "東京は日本の首都です。人口は約1400万人です。 Tokyo is big.",
    "Привет,  мир!  Как дела? Всё хорошо.\n\nНовая строка.",
]


def multilingual_texts() -> list[str]:
    texts = list(TRICKY)
    for i in range(12):
        texts.append(calibration_texts.long_passage(3 + 7 * i, offset=i) + " " + TRICKY[i % len(TRICKY)])
    query, passages = certificate_texts.ranking_list()
    texts += [query, *passages[:20], certificate_texts.long_passage(30, offset=2)]
    return texts


@pytest.fixture(scope="module", params=[64, 512])
def setup(request, tiny_model):
    limits = ServingLimits(max_length=request.param)
    return limits, load_pair_tokenizer(tiny_model, limits)


def encode(tokenizer, text):
    return tokenizer.tokenizer.encode(text, add_special_tokens=False).ids


def cjk_texts() -> list[str]:
    return [
        "東京は日本の首都です。人口は約千四百万人です。大阪は日本第二の都市で、食べ物が有名です。" * 40,
        "中文文本没有空格但是有很多字符我们需要切分它们。北京是中国的首都。" * 40,
        "日本語のテキストには空白がありません。<mask>東京</s>大阪" * 30,
        # A word that starts at an added token, not at a space (found in review: a cut inside
        # 富士山 right after <s> once kept '▁', '富' where the whole has '▁富士山').
        "日本で一番高い山は<s>富士山</s>です。東京から近い日本で一番高い山" * 20,
        "an" * 5 + "<s>العربي" + "an" * 300,
        "東京" + "龘" * 300 + "は日本の首都です。" + "龘!" * 200 + "大阪",  # unknown characters, fused
    ]


def test_every_cut_keeps_the_whole_texts_tokens(setup):
    """The property the bounded tokenizer relies on, at every cut `cut` picks on varied text: the
    prefix's tokens are the whole text's first tokens, and after a space cut the rest, tokenized
    on its own, is the whole text's remaining tokens."""
    _, tokenizer = setup
    rng = random.Random(13)
    kinds = {"space": 0, "inside a word": 0, "head": 0}
    adversarial = [
        "abc<mask>def ghi <mask> jkl</s>mno " * 20,
        "a <s> b<pad>c " * 40,
        ". ! ? 👍 e\u0301 ﬁ ＡＢ ½ \u0301 ‍ \u00a0 \u3000 ▁ " * 30,
    ]
    for text in multilingual_texts() + cjk_texts() + adversarial:
        full = encode(tokenizer, text)
        for at in sorted({rng.randrange(1, len(text) + 1) for _ in range(20)}):
            cut = tokenizer.cuts.cut(text, at)
            if cut is None:
                continue
            assert cut >= at
            prefix = encode(tokenizer, text[:cut])
            assert prefix == full[: len(prefix)], (text[max(0, cut - 20) : cut + 20], at)
            if text[cut] == " ":
                kinds["space"] += 1
                assert prefix + encode(tokenizer, text[cut:]) == full, (text[max(0, cut - 20) : cut + 20], at)
            else:
                kinds["inside a word"] += 1
        # A head (the text's start, as truncate mode decodes it) ends at its last safe cut,
        # chosen without seeing the rest: still a cut of the whole text.
        for end in sorted({rng.randrange(1, len(text) + 1) for _ in range(5)}):
            cut = tokenizer.cuts.last_cut(text[:end])
            if cut is not None:
                kinds["head"] += 1
                prefix = encode(tokenizer, text[:cut])
                assert cut <= end and prefix == full[: len(prefix)], (text[max(0, cut - 20) : cut + 20], end)
    assert min(kinds.values()) > 20, kinds  # every kind exercised


def test_forced_boundaries_hold_on_random_words_built_from_the_vocabulary(setup):
    """Adversarial: words glued from the vocabulary's own pieces over small alphabets, so pieces
    overlap everywhere; every position `forced_boundary` accepts is checked."""
    _, tokenizer = setup
    cuts = tokenizer.cuts
    rng = random.Random(5)
    letters = sorted({c for piece in cuts.pieces for c in piece if cuts._plain(c)})
    checked = 0
    for _ in range(60):
        alphabet = rng.sample(letters, rng.randint(3, 30))
        pieces = [p for p in cuts.pieces if all(c in alphabet for c in p)] + alphabet
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(50, 300)))
        full = encode(tokenizer, text)
        for q in range(1, len(text)):
            if cuts.forced_boundary(text, q):
                prefix = encode(tokenizer, text[:q])
                assert prefix == full[: len(prefix)], (text[max(0, q - 15) : q + 15], q)
                checked += 1
    assert checked > 1000
    for text in cjk_texts():  # every accepted position of the CJK texts, added tokens included
        full = encode(tokenizer, text)
        for q in range(1, len(text)):
            if cuts.forced_boundary(text, q):
                prefix = encode(tokenizer, text[:q])
                assert prefix == full[: len(prefix)], (text[max(0, q - 15) : q + 15], q)


def test_a_piece_longer_than_the_window_through_a_mark_cannot_hide_a_crossing(tiny_model, tmp_path):
    """Found in review: the window's width once counted only pieces made wholly of lone
    characters, so a piece of 13 letters plus a combining mark could span a cut unchecked. The
    width is now one more than the longest run of lone characters in any piece."""
    import json

    spec = json.loads((tiny_model / "tokenizer.json").read_text())
    spec["model"]["vocab"].append(["q" * 13 + "\u0301", 0.0])
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    tokenizer = load_pair_tokenizer(tmp_path, ServingLimits())
    text = "q" * 30 + "\u0301qqqqq" + " tail" * 50
    full = encode(tokenizer, text)
    accepted = [q for q in range(1, len(text)) if tokenizer.cuts.forced_boundary(text, q)]
    for q in accepted:
        prefix = encode(tokenizer, text[:q])
        assert prefix == full[: len(prefix)], q
    assert tokenizer.cuts.longest >= 14 and 18 not in accepted


def test_where_cuts_are_and_are_not_taken(setup):
    _, tokenizer = setup
    cut = tokenizer.cuts.cut
    assert cut("abc  def ghi", 1) == 3  # before the run of spaces, not inside it
    assert cut("abc  def ghi", 4) == 8
    assert cut("abc \u200b def ghi", 4) == 9  # not after a zero-width space (format, normalised away)
    assert cut("abc \u00a0 def ghi", 4) == 9  # not after NBSP: it normalises to a space
    assert cut(". " * 1000, 10) == 11  # after punctuation: it ends its own grapheme cluster
    assert cut("short", 100) is None
    cjk = cjk_texts()[0]
    inside = cut(cjk, 200)
    assert inside is not None and 200 <= inside < 200 + 256 and cjk[inside] != " "
    # Every position inside a piece ("ss" is one): no cut, the text is tokenized whole.
    assert "ss" in tokenizer.cuts.pieces and cut("s" * 5000, 100) is None
    # Characters the vocabulary lacks fuse into one unknown token: cut all the same (same ids).
    assert "龘" not in tokenizer.cuts.pieces and cut("龘" * 5000, 100) == 100


def test_a_tokenizer_of_another_kind_is_never_cut(tiny_model, tmp_path):
    """The safety argument is about XLM-R's pipeline; any other tokenizer is tokenized whole."""
    import json

    spec = json.loads((tiny_model / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = {"type": "Whitespace"}
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    other = load_pair_tokenizer(tmp_path, ServingLimits())
    assert not other.cuts.applies and other.cuts.cut("abc def " * 1000, 10) is None
    # A single_word added token looks at the character before it, which no cut window checks.
    spec = json.loads((tiny_model / "tokenizer.json").read_text())
    next(token for token in spec["added_tokens"] if token["content"] == "<mask>")["single_word"] = True
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    assert not load_pair_tokenizer(tmp_path, ServingLimits()).cuts.applies


def full_tokenization(tokenizer, queries, passages):
    """Today's algorithm before issue 13: every text tokenized whole, then joined and padded."""
    encodings = tokenizer.tokenizer.encode_batch(list(queries) + list(passages), add_special_tokens=False)
    n = len(queries)
    return tokenizer.pad([tokenizer.join(i, encodings[i].ids, encodings[n + i].ids) for i in range(n)])


def test_bounded_result_identical_to_full_tokenization(setup):
    _, tokenizer = setup
    texts = multilingual_texts()
    pairs = calibration_texts.pairs()
    pairs += [(texts[i], texts[-1 - i]) for i in range(len(texts))]
    pairs += [(q, p * 40) for q, p in pairs[:10]]  # over max_length: cut, truncated flag set
    assert_same_as_full_tokenization(tokenizer, pairs, 16)  # the tokenizer's real request size range


def assert_same_as_full_tokenization(tokenizer, pairs, per_request):
    for start in range(0, len(pairs), per_request):
        chunk = pairs[start : start + per_request]
        queries, passages = [q for q, _ in chunk], [p for _, p in chunk]
        expected = full_tokenization(tokenizer, queries, passages)
        got = tokenizer.tokenize_request(queries, passages)
        for name in ("input_ids", "attention_mask", "tokens", "truncated"):
            np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)


def long_texts() -> list[str]:
    """Texts past the head that truncate mode decodes (HEAD_BYTES_PER_TOKEN per needed token),
    including one whose head yields too few tokens (runs of spaces collapse to one token), so its
    request takes the whole-text path."""
    spaced = calibration_texts.long_passage(400)
    return [
        spaced,
        cjk_texts()[0] * 4,
        ("word" + " " * 300) * 300,
        "x" * 20 + spaced,
        TRICKY[2] * 200,
    ]


def test_long_texts_read_in_part_give_the_full_tokenization(setup, monkeypatch):
    _, tokenizer = setup
    texts = long_texts()
    assert min(len(t.encode()) for t in texts) > (tokenizer.max_length + 1) * pt.HEAD_BYTES_PER_TOKEN
    redone = []
    real = tokenizer.tokenize_requests

    def spy(requests, heads=True, max_lengths=None):
        if not heads:
            redone.append(len(requests))
        return real(requests, heads, max_lengths)

    monkeypatch.setattr(tokenizer, "tokenize_requests", spy)
    assert_same_as_full_tokenization(tokenizer, [(q, p) for q in ("Everest?", texts[0]) for p in texts], 4)
    assert redone  # the collapsed-spaces text sent its requests down the whole-text path


def test_bad_bytes_past_the_head_are_refused_as_in_a_whole_decode(setup):
    """Only the head is decoded to text, but every byte is validated: the same refusal, with the
    same byte position, as decoding the whole item."""
    _, tokenizer = setup
    rng = random.Random(7)
    base = ("Ärger über 東京 👩 " * 20000).encode()[:200_000]
    refused = 0
    for _ in range(100):
        data = bytearray(base)
        data[rng.randrange(len(data))] = rng.choice([0xFF, 0xC3, 0x80, 0xE6, 0xF0])
        try:
            bytes(data).decode()
            expected = None
        except UnicodeDecodeError as err:
            expected = f"passage[0]: not valid UTF-8 ({err.reason} at byte {err.start})"
        try:
            tokenizer.decode_head("passage", 0, bytes(data), tokenizer.max_length + 1)
            got = None
        except pt.InvalidInput as err:
            got = str(err)
        assert got == expected
        refused += expected is not None
    assert refused > 50
    with pytest.raises(pt.InvalidInput, match="unexpected end of data at byte 200000"):
        tokenizer.decode_head("passage", 0, base + "東".encode()[:2], tokenizer.max_length + 1)
    with pytest.raises(pt.InvalidInput, match=r"passage\[0\]: contains a NUL character"):
        tokenizer.decode_head("passage", 0, base[:150_000] + b"\x00" + base[:10], tokenizer.max_length + 1)
    # Both faults: UTF-8 is refused first, as a whole decode does (found in review).
    with pytest.raises(pt.InvalidInput, match="invalid start byte at byte 2000"):
        tokenizer.decode_head("passage", 0, b"a " * 1000 + b"\xff" + b"b\x00" + b"c" * 20_000, tokenizer.max_length + 1)
    with pytest.raises(pt.InvalidInput, match=r"query\[0\]: not valid UTF-8 \(surrogates not allowed at character 1\)"):
        tokenizer.tokenize_request(["a\ud800b"], ["passage"])


class SpyTokenizer:
    """Records every text handed to the `tokenizers` library."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def encode_batch(self, texts, **kwargs):
        self.calls.append(list(texts))
        return self.inner.encode_batch(texts, **kwargs)


def test_a_bad_item_costs_no_tokenizing(setup, monkeypatch):
    """A request is placed for tokenizing only once every item has decoded (found in review:
    the items before a bad one were tokenized for nothing)."""
    _, tokenizer = setup
    spy = SpyTokenizer(tokenizer.tokenizer)
    monkeypatch.setattr(tokenizer, "tokenizer", spy)
    big = calibration_texts.long_passage(200).encode()
    results = tokenizer.tokenize_requests([(["q"] * 3, [big, big + b" x", b"\xff"])])
    assert isinstance(results[0], pt.InvalidInput) and "passage[2]: not valid UTF-8" in str(results[0])
    assert spy.calls == []


def test_each_distinct_query_is_tokenized_once(setup, monkeypatch):
    _, tokenizer = setup
    spy = SpyTokenizer(tokenizer.tokenizer)
    monkeypatch.setattr(tokenizer, "tokenizer", spy)
    query = "Wie hoch ist der Mount Everest?"
    passages = [f"Passage {i} über Berge." for i in range(40)]
    tokenizer.tokenize_requests([([query] * 40, passages), ([query] * 2, passages[:2])])
    encoded = [t for call in spy.calls for t in call]
    assert encoded.count(query) == 1
    assert sorted(encoded) == sorted({query, *passages})


@pytest.mark.parametrize("script", ["spaced", "cjk"])
def test_a_256_kib_passage_reaches_the_tokenizer_only_as_far_as_a_pair_can_use(setup, monkeypatch, script):
    """A 256 KiB passage costs the tokenizer what a max_length one does: the characters handed
    to it are those of the prefix holding max_length + 1 tokens, plus at most one chunk's margin
    (spaced text continues chunk by chunk) or one redone prefix (CJK cut inside words)."""
    limits, tokenizer = setup
    source = calibration_texts.long_passage(4000) if script == "spaced" else cjk_texts()[0] * 40
    huge = source.encode()[: MAX_TEXT_BYTES - 8].decode("utf-8", "ignore")
    need = limits.max_length + 1
    full = tokenizer.tokenizer.encode(huge[:200_000], add_special_tokens=False)
    needed_chars = full.offsets[need - 1][1]  # the prefix holding `need` tokens
    spy = SpyTokenizer(tokenizer.tokenizer)
    monkeypatch.setattr(tokenizer, "tokenizer", spy)
    batch = tokenizer.tokenize_request(["Everest?"] * 64, [huge] * 63 + [huge + " x"])
    assert batch.truncated.all() and batch.tokens.max() == limits.max_length
    handed = [text for call in spy.calls for text in call]
    assert handed.count("Everest?") == 1  # 64 pairs, one query: tokenized once
    per_passage = (sum(len(text) for text in handed) - len("Everest?")) / 2  # two distinct passages
    margin = 256 + pt.CHUNK_SLACK_BYTES  # a cut may fall up to 256 characters past its target
    bound = (2.3 if script == "cjk" else 1.2) * needed_chars + margin
    assert per_passage <= bound < len(huge) // 20, (per_passage, needed_chars, len(huge))


def test_coalesced_cuts_keep_the_whole_texts_tokens(setup):
    """Where a word has no space and no forced boundary, a coalesced cut (text_cuts.py) still ends
    a prefix whose tokens are the whole text's first tokens, at least `need` of them. Checked on
    glued words, alone and with marks, unknown characters, added tokens and NBSP strewn in."""
    _, tokenizer = setup
    cuts = tokenizer.cuts
    rng = random.Random(11)
    strewn = ["\u0301", "龘", "<mask>", "\u00a0", "ﬁ", "é", "!"]
    accepted = declined = 0
    for trial in range(120):
        word = glued_word(cuts, rng, rng.randint(300, 4000))
        if trial % 2:
            chars = list(word)
            for _ in range(rng.randint(1, 12)):
                chars.insert(rng.randrange(len(chars)), rng.choice(strewn))
            word = "".join(chars)
        else:
            assert not any(cuts.forced_boundary(word, q) for q in range(1, len(word)))
        text = rng.choice(["", "Intro words. ", "<s>", "x <mask>"]) + word
        need = rng.choice([1, 2, 3, rng.randint(4, 700)])  # small needs end near a word's start
        cut = tokenizer.coalesced_cut(text, need)
        if cut is None:
            declined += 1
            continue
        full = encode(tokenizer, text)
        prefix = encode(tokenizer, text[:cut])
        assert len(prefix) >= need and prefix == full[: len(prefix)], (trial, need, text[cut - 20 : cut + 20])
        accepted += 1
    assert accepted > 80, (accepted, declined)


def test_ties_only_the_whole_text_decides_get_no_coalesced_cut(setup, monkeypatch):
    """256 KiB of one character whose double is a piece: whether the odd one goes first depends
    on the run's length, so the first token depends on the last byte. No cut is exact there;
    the coalesced cut declines after one try, and the text is tokenized whole."""
    _, tokenizer = setup
    doubled = doubled_character(tokenizer.cuts)
    assert encode(tokenizer, doubled * 4001)[:2] != encode(tokenizer, doubled * 4000)[:2]
    spy = SpyTokenizer(tokenizer.tokenizer)
    monkeypatch.setattr(tokenizer, "tokenizer", spy)
    assert tokenizer.coalesced_cut(doubled * 20000, tokenizer.max_length + 1) is None
    assert len(spy.calls) == 1 and len(spy.calls[0]) == tokenizer.cuts.longest  # one try of `longest` prefixes


def test_a_256_kib_glued_word_is_read_only_as_far_as_a_pair_can_use(setup, monkeypatch):
    """A 256 KiB word with no space and no forced boundary (base64's shape): the tokenizer sees
    `longest` prefixes of about what max_length + 1 tokens need, not the whole, and the pairs are
    those of tokenizing everything."""
    limits, tokenizer = setup
    huge = glued_word(tokenizer.cuts, random.Random(3), MAX_TEXT_BYTES - 64)
    need = limits.max_length + 1
    needed_chars = tokenizer.tokenizer.encode(huge[:20000], add_special_tokens=False).offsets[need - 1][1]
    passages = [huge, "0" + huge]
    expected = full_tokenization(tokenizer, ["what is this?"] * 2, passages)
    spy = SpyTokenizer(tokenizer.tokenizer)
    monkeypatch.setattr(tokenizer, "tokenizer", spy)
    got = tokenizer.tokenize_request(["what is this?"] * 2, passages)
    for name in ("input_ids", "attention_mask", "tokens", "truncated"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)
    handed = sum(len(text) for call in spy.calls for text in call) / 2
    # Per passage: up to two tries of `longest` prefixes, each about 3 bytes per needed token (plus
    # room for the paths to meet and the scan for a plain window), then the cut head itself.
    longest = tokenizer.cuts.longest
    prefix = pt.COALESCE_BYTES_PER_TOKEN * need + 4 * longest + pt.COALESCE_SCAN
    bound = (2 * longest + 1) * prefix * pt.CHUNK_MARGIN
    assert needed_chars < handed <= bound < len(huge) // 5, (handed, bound, needed_chars)


def shared_ends_checked(tokenizer, text: str, m: int) -> int:
    """Every end `common_ends` offers at m that `prefix_cut` accepts is a cut: text[:b] has the
    whole text's first tokens. Returns how many were checked."""
    cuts = tokenizer.cuts
    ends = cuts.coalescence_ends(text, m)
    if ends is None:
        return 0
    encodings = tokenizer.tokenizer.encode_batch([text[:j] for j in ends], add_special_tokens=False)
    full = encode(tokenizer, text)
    checked = 0
    for b in cuts.common_ends(encodings, ends[0]):
        if cuts.prefix_cut(text, b):
            prefix = encode(tokenizer, text[:b])
            assert prefix == full[: len(prefix)], (text[max(0, b - 20) : b + 20], b, m)
            checked += 1
    return checked


def test_a_shared_token_end_is_a_cut_only_where_the_next_token_starts(tiny_model):
    """Found in review: the '▁' Metaspace prepends to a word carries its first character's
    offsets, so a lone '▁' token seemed to end after that character, and text[:1] of "ar..."
    gave '▁a' where the whole has '▁', 'ar'. Every shared end offered, at every window, on the
    review's texts and on glued words after added tokens and spaces."""
    tokenizer = load_pair_tokenizer(tiny_model, ServingLimits(max_length=64))
    rng = random.Random(17)
    texts = [
        "argengesteitaredagusluanainsuathtasthepi",
        "<s>argengesteitaredagusluanainsuathtasthepi",
        "x <mask>anseprminthteligeprongeiourbothtetorarad",
    ]
    texts += [rng.choice(["", "<s>", "x <mask>", "a b "]) + glued_word(tokenizer.cuts, rng, 80) for _ in range(30)]
    checked = sum(shared_ends_checked(tokenizer, text, m) for text in texts for m in range(14, len(text) - 6))
    assert checked > 1000


def test_at_a_large_max_length_a_glued_word_is_read_whole_not_coalesced(tiny_model, monkeypatch):
    """Found in review: at max_length 8,192, `longest` prefixes of ~3 bytes per needed token hand
    the tokenizer more than the whole 256 KiB word. Coalescing is tried only within half the
    whole text's characters; past that the word is read whole, once."""
    tokenizer = load_pair_tokenizer(tiny_model, ServingLimits(max_length=8192))
    huge = glued_word(tokenizer.cuts, random.Random(5), MAX_TEXT_BYTES - 64)
    expected = full_tokenization(tokenizer, ["what is this?"], [huge])
    spy = SpyTokenizer(tokenizer.tokenizer)
    monkeypatch.setattr(tokenizer, "tokenizer", spy)
    got = tokenizer.tokenize_request(["what is this?"], [huge])
    np.testing.assert_array_equal(got.input_ids, expected.input_ids)
    handed = sum(len(text) for call in spy.calls for text in call) - len("what is this?")
    assert len(huge) <= handed <= 1.05 * len(huge), (handed, len(huge))
