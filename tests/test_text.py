"""The model's tokenizer: word or subword, described in JSON, equal by content."""
import pytest

from skulmfit.subword import BYTE_PIECES, UnigramSegmenter
from skulmfit.text import Tokenizer, read_part
from skulmfit.tokenizer import tokenize_many
from skulmfit.vocab import Vocab

SEGMENTER = UnigramSegmenter(["▁the", "▁film", "▁", "s", *BYTE_PIECES], [-1.0, -2.0, -5.0, -3.0, *[0.0] * 256])


def test_word_tokenizer_is_fastai_rules():
    texts = ["The films!", "", "NO WAY"]
    assert Tokenizer().tokenize_many(texts) == tokenize_many(texts)
    assert not Tokenizer().subword


def test_subword_tokenizer_cuts_words_after_the_rules():
    tokens = Tokenizer(SEGMENTER).tokenize_many(["The films!"])[0]
    assert tokens == ["xxbos", "xxmaj", "▁the", "▁film", "s", "▁", "<0x21>"]
    vocab = Vocab.from_pieces(SEGMENTER.pieces)
    assert not (vocab.numericalize(tokens) == vocab.unk_id).any()


@pytest.mark.parametrize("tokenizer", [Tokenizer(), Tokenizer(SEGMENTER)])
def test_json_description_round_trips(tokenizer):
    import json
    assert Tokenizer.from_dict(json.loads(json.dumps(tokenizer.to_dict()))) == tokenizer


def test_files_without_a_tokenizer_are_word_level_and_unknown_kinds_are_refused():
    assert Tokenizer.from_dict(None) == Tokenizer()
    with pytest.raises(ValueError, match="unknown tokenizer kind 'bpe'"):
        Tokenizer.from_dict({"kind": "bpe"})


def test_vocabulary_must_hold_every_piece():
    Tokenizer(SEGMENTER).check_vocabulary(Vocab.from_pieces(SEGMENTER.pieces).itos)
    Tokenizer().check_vocabulary(["anything"])
    with pytest.raises(ValueError, match="lacks 1 of the tokenizer's pieces"):
        Tokenizer(SEGMENTER).check_vocabulary(Vocab.from_pieces(SEGMENTER.pieces[1:]).itos)


def test_a_long_document_is_read_as_its_first_and_last_tokens():
    doc = [str(i) for i in range(10)]
    assert read_part(doc, 4) == ["0", "1", "8", "9"]
    assert read_part(doc, 5) == ["0", "1", "7", "8", "9"]  # the odd token goes to the end, the forward model's
    assert read_part(doc, 10) is doc and read_part(doc, None) is doc
