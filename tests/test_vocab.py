import json
import pickle

import numpy as np
import pytest

from skulmfit.tokenizer import SPECIAL_TOKENS
from skulmfit.vocab import Vocab

FILLERS = ["xxfake", "xxfake1", "xxfake2", "xxfake3", "xxfake4", "xxfake5", "xxfake6"]


def test_specials_come_first_in_fastai_order():
    vocab = Vocab.from_counts({"movie": 5, "xxbos": 100, "xxmaj": 50})
    assert vocab.itos[:9] == list(SPECIAL_TOKENS)
    assert vocab.itos[9] == "movie"   # specials counted in the corpus are not repeated
    assert (vocab.unk_id, vocab.pad_id, vocab.bos_id) == (0, 1, 2)
    assert vocab.stoi["xxpad"] == 1


def test_min_freq():
    vocab = Vocab.from_counts({"a": 3, "b": 2, "c": 10}, min_freq=3)
    assert vocab.itos[9:11] == ["c", "a"]
    assert "b" not in vocab
    assert "b" in Vocab.from_counts({"a": 3, "b": 2}, min_freq=2)


def test_max_size_counts_the_specials():
    counts = {f"w{i:02d}": 100 - i for i in range(20)}
    vocab = Vocab.from_counts(counts, max_size=12)
    assert vocab.itos[9:12] == ["w00", "w01", "w02"]
    assert vocab.itos[12:] == FILLERS[:4]
    assert len(Vocab.from_counts(counts, max_size=9)) == 16


def test_ties_are_broken_by_token_whatever_the_input_order():
    counts = {"pear": 5, "apple": 5, "fig": 7, "banana": 5}
    expected = ["fig", "apple", "banana", "pear"]
    assert Vocab.from_counts(counts).itos[9:13] == expected
    assert Vocab.from_counts(dict(reversed(counts.items()))).itos[9:13] == expected


@pytest.mark.parametrize("n_tokens, size", [(0, 16), (7, 16), (8, 24), (15, 24), (23, 32)])
def test_size_is_padded_to_a_multiple_of_8(n_tokens, size):
    vocab = Vocab.from_counts({f"t{i}": 3 for i in range(n_tokens)})
    assert len(vocab) == size
    assert vocab.itos[9 + n_tokens:] == FILLERS[: size - 9 - n_tokens]


def test_fillers_never_clash_with_corpus_tokens():
    vocab = Vocab.from_counts({"xxfake": 9, "xxfake1": 9})
    assert vocab.itos[9:] == ["xxfake", "xxfake1", "xxfake2", "xxfake3",
                              "xxfake4", "xxfake5", "xxfake6"]


def test_build_counts_the_documents():
    docs = [["xxbos", "a", "b", "a"], ["xxbos", "a", "c", "b"]]
    vocab = Vocab.build(docs, min_freq=2)
    assert vocab.itos[9:11] == ["a", "b"]
    assert "c" not in vocab
    assert vocab == Vocab.build(iter(docs), min_freq=2)


def test_build_rejects_untokenized_text():
    with pytest.raises(TypeError, match=r"docs\[1\] is a str"):
        Vocab.build([["a"], "raw text"])


def test_numericalize_maps_unknown_tokens_to_0():
    vocab = Vocab.build([["xxbos", "a", "b", "a", "b", "a"]], min_freq=2)
    ids = vocab.numericalize(["xxbos", "b", "zebra", "a", "xxpad"])
    assert ids.dtype == np.int32
    assert ids.tolist() == [2, 10, 0, 9, 1]
    assert vocab.numericalize([]).dtype == np.int32
    assert vocab.numericalize([]).shape == (0,)
    assert [a.tolist() for a in vocab.numericalize_many([["a"], [], ["q", "b"]])] == [
        [9], [], [0, 10]]
    with pytest.raises(TypeError):
        vocab.numericalize("a b")


def test_round_trip_through_list_json_and_pickle():
    vocab = Vocab.from_counts({"héllo": 4, "world": 3, "😀": 5})
    saved = json.loads(json.dumps(vocab.to_list()))
    assert Vocab(saved) == vocab
    assert pickle.loads(pickle.dumps(vocab)) == vocab
    assert vocab.to_list() is not vocab.itos


def test_dunder_methods():
    vocab = Vocab.from_counts({"a": 5, "b": 4})
    assert len(vocab) == 16
    assert "a" in vocab and "xxunk" in vocab and "zebra" not in vocab
    assert vocab == Vocab(vocab.to_list())
    assert vocab != Vocab.from_counts({"a": 5})
    assert vocab != vocab.to_list()
    assert repr(vocab) == "Vocab(size=16, tokens=['a', 'b', 'xxfake', 'xxfake1', 'xxfake2', ...])"


@pytest.mark.parametrize("kwargs", [
    {"max_size": 8}, {"max_size": 0}, {"max_size": 100.0}, {"max_size": "100"},
    {"max_size": True}, {"min_freq": 0}, {"min_freq": -1}, {"min_freq": 2.5},
    {"min_freq": None},
])
def test_invalid_parameters(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Vocab.from_counts({"a": 5}, **kwargs)
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Vocab.build([["a"]], **kwargs)


def test_numpy_integers_are_valid_parameters():
    assert len(Vocab.from_counts({"a": 5}, max_size=np.int64(10), min_freq=np.int32(1))) == 16


@pytest.mark.parametrize("itos, error, message", [
    (["a", "b"], ValueError, "must start with the special tokens"),
    (list(reversed(SPECIAL_TOKENS)), ValueError, "must start with the special tokens"),
    ([*SPECIAL_TOKENS, "a", "b", "a"], ValueError, r"duplicate tokens: \['a'\]"),
    ([*SPECIAL_TOKENS, "a", 7], TypeError, r"itos\[10\] is int"),
    ("xxunk", TypeError, "not a str"),
])
def test_invalid_itos(itos, error, message):
    with pytest.raises(error, match=message):
        Vocab(itos)


def test_extend_keeps_the_ids_and_appends_frequent_new_tokens():
    base = Vocab.from_counts({"the": 9, "a": 8})          # 11 tokens + 5 fillers
    extended = base.extend({"the": 50, "zoo": 4, "cat": 7, "bat": 7, "rare": 1},
                           max_new=2, min_freq=2)
    assert extended.itos[:16] == base.itos
    assert extended.itos[16:18] == ["bat", "cat"]
    assert len(extended) == 24
    assert extended.itos[18:] == ["xxfake5", "xxfake6", "xxfake7", "xxfake8",
                                  "xxfake9", "xxfake10"]
    assert base.extend({"new": 5}, max_new=0) == base


@pytest.mark.parametrize("kwargs", [{"max_new": -1}, {"max_new": 1.0}, {"min_freq": 0}])
def test_extend_invalid_parameters(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Vocab.from_counts({}).extend({"a": 5}, **{"max_new": 5, **kwargs})
