"""The tokenizer's work is bounded by what a pair keeps (issue 13): a text is tokenized from a
safe prefix, each distinct text once, and the result is identical to tokenizing everything.

Timing is not asserted here (a shared CI box makes timed tests flaky); `benchmarks/
tokenizer_bound.py` prints the costs. These tests assert the work itself: which texts, and how
many characters of them, reach the tokenizer."""

from __future__ import annotations

import random

import numpy as np
import pytest

from common import calibration_texts, certificate_texts
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


def test_safe_cut_prefix_tokens_are_the_first_tokens_of_the_whole_text(setup):
    """The property `safe_cut` relies on, checked at every cut point it picks on varied text."""
    _, tokenizer = setup
    rng = random.Random(13)
    checked = 0
    for text in multilingual_texts():
        full = tokenizer.tokenizer.encode(text, add_special_tokens=False).ids
        for budget in sorted({rng.randrange(1, len(text) + 1) for _ in range(15)}):
            cut = pt.safe_cut(text, budget)
            if cut is None:
                continue
            assert cut >= budget
            prefix = tokenizer.tokenizer.encode(text[:cut], add_special_tokens=False).ids
            assert prefix == full[: len(prefix)], (text[max(0, cut - 20) : cut + 20], budget)
            checked += 1
    assert checked > 50  # the property was exercised, not skipped


def test_cut_inside_a_word_or_after_spaces_is_never_chosen():
    assert pt.safe_cut("abc  def ghi", 1) == 3  # before the run of spaces, not inside it
    assert pt.safe_cut("abc  def ghi", 4) == 8
    assert pt.safe_cut("abc ) def ghi", 4) == 9  # not after ")": only after a letter or digit
    assert pt.safe_cut("日本語のテキスト", 2) is None  # no space: the whole text is tokenized
    assert pt.safe_cut("short", 100) is None


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
    for start in range(0, len(pairs), 16):  # the tokenizer's real request size range
        chunk = pairs[start : start + 16]
        queries, passages = [q for q, _ in chunk], [p for _, p in chunk]
        expected = full_tokenization(tokenizer, queries, passages)
        got = tokenizer.tokenize_request(queries, passages)
        for name in ("input_ids", "attention_mask", "tokens", "truncated"):
            np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)


class SpyTokenizer:
    """Records every text handed to the `tokenizers` library."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def encode_batch(self, texts, **kwargs):
        self.calls.append(list(texts))
        return self.inner.encode_batch(texts, **kwargs)


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


def test_a_256_kib_passage_reaches_the_tokenizer_only_as_far_as_a_pair_can_use(setup, monkeypatch):
    limits, tokenizer = setup
    spy = SpyTokenizer(tokenizer.tokenizer)
    monkeypatch.setattr(tokenizer, "tokenizer", spy)
    huge = calibration_texts.long_passage(4000)
    huge = huge.encode()[: MAX_TEXT_BYTES - 8].decode("utf-8", "ignore")
    batch = tokenizer.tokenize_request(["Everest?"] * 64, [huge] * 63 + [huge + " x"])
    assert batch.truncated.all() and batch.tokens.max() == limits.max_length
    # Bound: the first cut (8 bytes per needed token) plus at most one growth step, per distinct text.
    bound = (limits.max_length + 1) * pt.FIRST_CUT_BYTES_PER_TOKEN * pt.CUT_GROWTH + 1024
    characters = [len(t) for call in spy.calls for t in call]
    assert max(characters) <= bound < len(huge) // 4, (max(characters), bound, len(huge))
    assert sum(characters) <= 3 * bound  # query + two distinct passages
