"""Subword pieces: Viterbi segmentation, byte fallback, and agreement with SentencePiece."""
import pickle
from collections import Counter

import pytest

from skulmfit.subword import BYTE_PIECES, UnigramSegmenter, _train_sentencepiece, learn_unigram
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


def test_learnt_vocabulary_agrees_with_sentencepiece():
    spm = pytest.importorskip("sentencepiece", reason="learning a subword vocabulary needs sentencepiece")
    counts = Counter(t for doc in tokenize_many(TEXT.split(". ")) for t in doc)
    model = _train_sentencepiece(counts, 400, character_coverage=1.0, max_piece_length=16, threads=1, seed=0)
    processor = spm.SentencePieceProcessor(model_proto=model)
    seg = learn_unigram(counts, 400, character_coverage=1.0)
    assert set(BYTE_PIECES) <= set(seg.pieces) and not set(SPECIAL_TOKENS) & set(seg.pieces)
    words = [w for w in counts if w not in SPECIAL_TOKENS] + ["unseen", "foxdog", "bavarian", "ü", "12345"]
    for word in words:
        assert list(seg.segment(word)) == processor.encode(word, out_type=str), word


def test_too_small_a_vocabulary_is_refused():
    with pytest.raises(ValueError, match="at least 320"):
        learn_unigram({"a": 3}, 300)
