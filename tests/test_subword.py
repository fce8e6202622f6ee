"""Subword pieces: Viterbi segmentation, byte fallback, and agreement with SentencePiece."""
import math
import pickle
import random
import string
import time
from collections import Counter

import pytest

from skulmfit.pretrained import load_bundled
from skulmfit.subword import (BYTE_PIECES, UNKNOWN_PENALTY, WORD_START, UnigramSegmenter, _train_sentencepiece,
                              learn_unigram)
from skulmfit.tokenizer import SPECIAL_TOKENS, tokenize_many

PIECES = {"▁un": -3.0, "▁the": -1.0, "watch": -5.0, "able": -4.0, "▁": -6.0, "▁unwatch": -9.5,
          "a": -7.0, "b": -7.0, "ab": -20.0}


def make(pieces=PIECES):
    return UnigramSegmenter([*pieces, *BYTE_PIECES], [*pieces.values(), *[0.0] * 256])


def test_the_most_probable_segmentation_wins():
    seg = make()
    assert seg.segment("unwatchable") == ("▁un", "watch", "able")  # -12 beats ▁unwatch + able (-13.5)
    assert seg.segment("ab") == ("▁", "a", "b")  # -20 for "ab" loses to -14 for "a" + "b"
    assert seg.segment("the") == ("▁the",)


def test_uncovered_characters_become_their_utf8_bytes():
    seg = make()
    assert seg.segment("é") == ("▁", "<0xC3>", "<0xA9>")
    assert seg.segment("the😀") == ("▁the", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>")
    assert seg.segment("a\u0000b") == ("▁", "a", "<0x00>", "b")
    assert seg.segment("a\ud800") == ("▁", "a", "<0xED>", "<0xA0>", "<0x80>")  # a lone surrogate
    # The text "<0x41>" is seven characters, not the byte 0x41.
    assert "<0x41>" not in seg.segment("<0x41>")


def test_special_tokens_stay_whole_and_pieces_mark_word_starts():
    seg = make()
    assert seg.segment_tokens(["xxbos", "xxmaj", "the", "xxrep", "unwatchable"]) == \
        ["xxbos", "xxmaj", "▁the", "xxrep", "▁un", "watch", "able"]
    assert seg.segment_tokens([]) == []


def test_segmentations_are_cached_and_stay_equal():
    seg = make()
    first = seg.segment("unwatchable")
    assert seg.segment("unwatchable") is first
    long_word = "ab" * 100  # longer words are not cached, but still segmented
    assert "".join(seg.segment(long_word)) == "▁" + long_word


@pytest.mark.parametrize("pieces, scores, message", [
    (["a"], [0.0, 1.0], "1 pieces but 2 scores"),
    (["a", "a", *BYTE_PIECES], [0.0] * 258, "unique"),
    (["", *BYTE_PIECES], [0.0] * 257, "non-empty"),
    (["xxbos", *BYTE_PIECES], [0.0] * 257, "special"),
    (["a", *BYTE_PIECES], [float("nan")] + [0.0] * 256, "finite"),
    (["a", *BYTE_PIECES[:-1]], [0.0] * 256, "byte pieces"),
])
def test_bad_vocabularies_are_refused(pieces, scores, message):
    with pytest.raises(ValueError, match=message):
        UnigramSegmenter(pieces, scores)


def test_round_trips_through_dict_and_pickle():
    seg = make()
    seg.segment("unwatchable")
    for copy in (UnigramSegmenter.from_dict(seg.to_dict()), pickle.loads(pickle.dumps(seg))):
        assert copy == seg and copy.segment("unwatchable") == seg.segment("unwatchable")
    assert len(pickle.dumps(seg)) < len(pickle.dumps(seg.to_dict())) + 200  # the cache is not pickled


TEXT = ("The quick brown fox jumps over the lazy dog. Foxes jump; dogs sleep. Jumping foxes and sleeping dogs "
        "were seen in the forests of Bavaria and Saxony in 1999, 2001 and 2013. ") * 20


@pytest.fixture(scope="module")
def learnt_pair():
    """A vocabulary learnt from TEXT by :func:`learn_unigram`, and SentencePiece's own model of it."""
    spm = pytest.importorskip("sentencepiece", reason="learning a subword vocabulary needs sentencepiece")
    counts = Counter(t for doc in tokenize_many(TEXT.split(". ")) for t in doc)
    model = _train_sentencepiece(counts, 400, character_coverage=1.0, max_piece_length=16, threads=1, seed=0)
    return counts, learn_unigram(counts, 400, character_coverage=1.0), spm.SentencePieceProcessor(model_proto=model)


def test_learnt_vocabulary_agrees_with_sentencepiece(learnt_pair):
    counts, seg, processor = learnt_pair
    assert set(BYTE_PIECES) <= set(seg.pieces) and not set(SPECIAL_TOKENS) & set(seg.pieces)
    words = [w for w in counts if w not in SPECIAL_TOKENS] + ["unseen", "foxdog", "bavarian", "ü", "12345"]
    for word in words:
        assert list(seg.segment(word)) == processor.encode(word, out_type=str), word


def test_long_run_on_words_agree_with_sentencepiece(learnt_pair):
    """Words glued together and random strings, up to 2,000 characters: SentencePiece's own Viterbi
    gives the same pieces."""
    counts, seg, processor = learnt_pair
    rng = random.Random(0)
    vocabulary = sorted(w for w in counts if w not in SPECIAL_TOKENS and w.isalnum())
    glued = ["".join(rng.choices(vocabulary, k=rng.randint(2, 300))) for _ in range(30)]
    letters = sorted(set(TEXT.lower()) - set(string.whitespace))
    random_strings = ["".join(rng.choices(letters, k=rng.randint(1, 2000))) for _ in range(30)]
    for word in glued + random_strings:
        assert list(seg.segment(word)) == processor.encode(word, out_type=str), word[:80]


def test_too_small_a_vocabulary_is_refused():
    with pytest.raises(ValueError, match="at least 320"):
        learn_unigram({"a": 3}, 300)


# ----------------------------------------------------------------------------- the bundled vocabulary, long words

def scan_over_every_piece_length(score: dict[str, float], word: str) -> tuple[str, ...]:
    """The segmentation as skulmfit computed it before the trie: for each end, every start up to the
    longest piece before it. A plain reference to compare the faster walk with; ``score`` maps each
    piece but the byte pieces to its score."""
    longest, unknown = max(map(len, score)), min(score.values()) - UNKNOWN_PENALTY
    text = WORD_START + word
    best, start = [0.0] + [-math.inf] * len(text), [0] * (len(text) + 1)
    for end in range(1, len(text) + 1):
        for begin in range(max(0, end - longest), end):
            s = score.get(text[begin:end])
            if s is not None and best[begin] + s > best[end]:
                best[end], start[end] = best[begin] + s, begin
        if best[end] == -math.inf:
            best[end], start[end] = best[end - 1] + unknown, end - 1
    pieces, end = [], len(text)
    while end > 0:
        piece = text[start[end]:end]
        bytes_ = piece.encode("utf-8", "surrogatepass")
        pieces += [piece] if piece in score else reversed([BYTE_PIECES[b] for b in bytes_])
        end = start[end]
    return tuple(reversed(pieces))


@pytest.fixture(scope="module")
def bundled_tokenizer():
    return load_bundled("wiki-en-sub").tokenizer


#: The bundled model's pieces of a few texts, as skulmfit gave them before the trie walk.
BUNDLED_PIECES = {
    "Unwatchable, overlong and self-indulgent.":
        "xxbos xxmaj ▁un wa tch able ▁ , ▁over long ▁and ▁self ▁- ▁indulg ent ▁.",
    "Café Müller in Zürich, 1999: naïve façades!":
        "xxbos xxmaj ▁café xxmaj ▁ müller ▁in xxmaj ▁zürich ▁ , ▁ 1999 ▁: ▁na ï ve ▁fa ç ade s ▁ !",
    "Москва — столица России.":
        "xxbos xxmaj ▁ <0xD0> <0xBC> о с <0xD0> <0xBA> <0xD0> <0xB2> а ▁ — ▁ с <0xD1> <0x82> о л и <0xD1> <0x86> "
        "а xxmaj ▁ р о с с и и ▁.",
    "https://example.com/a?b=c 😀👍🏽 東京":
        "xxbos ▁http s : / / ex amp le . com / a ? b = c ▁ <0xF0> <0x9F> <0x98> <0x80> ▁ <0xF0> <0x9F> <0x91> "
        "<0x8D> <0xF0> <0x9F> <0x8F> <0xBD> ▁ <0xE6> <0x9D> <0xB1> <0xE4> <0xBA> <0xAC>",
    "aGVsbG8gd29ybGQ0xyz": "xxbos ▁ag v s b g 8 g d 2 9 y b g q 0 x y z",
}


def test_ordinary_texts_keep_their_pieces(bundled_tokenizer):
    texts = list(BUNDLED_PIECES)
    assert [" ".join(doc) for doc in bundled_tokenizer.tokenize_many(texts)] == list(BUNDLED_PIECES.values())


def test_the_trie_walk_equals_the_scan_over_every_piece_length(bundled_tokenizer):
    """Every word of a varied sample (prose, accents, other scripts, emoji, numbers, URLs, random
    strings of several alphabets and lengths) is cut exactly as before."""
    seg = bundled_tokenizer.segmenter
    prose = ("The film's première in São Paulo drew 12,000 people; critics called it 'unwatchable' and "
             "'a masterpiece' alike. Die Straße war naß. Это было давно. 東京タワー 🎬🍿 e-mail me@example.org "
             "or see www.example.com/path?q=1 #hashtag @user 3.14159 1st 2nd co-operate naïveté")
    words = {t for doc in tokenize_many([prose]) for t in doc if t not in SPECIAL_TOKENS}
    rng = random.Random(0)
    alphabets = [string.ascii_lowercase, string.ascii_lowercase + string.digits, "etaoinshrdlu", "éèàüößçñ",
                 "абвгдеж", "日本語中文", "😀👍🏽", string.punctuation]
    words |= {"".join(rng.choices(rng.choice(alphabets), k=rng.randint(1, 60))) for _ in range(2000)}
    byte_pieces = set(BYTE_PIECES)
    score = {p: s for p, s in zip(seg.pieces, seg.scores) if p not in byte_pieces}
    for word in sorted(words):
        assert seg.segment(word) == scan_over_every_piece_length(score, word), word


def test_segmenting_a_long_word_does_not_cost_the_longest_piece_per_character():
    """A 200,000-character word under a vocabulary with 1,000-character pieces: the scan over every
    piece length looked up 1,000 strings per character (200 million: a minute on a busy 2-core
    machine); the trie walk stops where no piece continues, after a step or two (0.2 s)."""
    letters = string.ascii_lowercase
    long_pieces = ["".join(random.Random(i).choices(letters, k=1000)) for i in range(20)]
    pieces = [*letters, WORD_START, *long_pieces]
    seg = UnigramSegmenter([*pieces, *BYTE_PIECES], [-3.0] * len(pieces) + [0.0] * 256)
    word = "".join(random.Random(99).choices(letters, k=200_000))
    start = time.perf_counter()
    segmentation = seg.segment(word)
    elapsed = time.perf_counter() - start
    assert segmentation == (WORD_START, *word)
    assert elapsed < 10, f"{elapsed:.1f} s"
