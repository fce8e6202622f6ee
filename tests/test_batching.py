"""Tests of the language-model stream and the classifier's batches (skulmfit/batching.py)."""
import numpy as np
import pytest
import torch

from skulmfit.batching import (
    MIN_BPTT,
    bptt_lengths,
    classifier_batches,
    lm_batches,
    lm_rows,
    lm_stream,
    pad_batch,
)
from skulmfit.model import PAD_ID


def toy_docs():
    return [np.array([2, 3, 4]), np.array([5, 6]), np.array([7, 8, 9, 10])]


# ----------------------------------------------------------------------------- language model

def test_lm_stream_concatenates_in_order():
    stream = lm_stream(toy_docs())
    assert stream.tolist() == [2, 3, 4, 5, 6, 7, 8, 9, 10]


def test_lm_stream_backwards_flips_documents_and_order():
    stream = lm_stream(toy_docs(), backwards=True)
    assert stream.tolist() == [10, 9, 8, 7, 6, 5, 4, 3, 2]
    # Writable, independent copy.
    stream[0] = 99
    assert toy_docs()[2][-1] == 10


def test_lm_stream_shuffled_is_a_permutation_of_whole_documents():
    docs = [np.arange(10 * i, 10 * i + 3 + i) for i in range(8)]
    rng = np.random.default_rng(0)
    stream = lm_stream(docs, rng=rng)
    assert sorted(stream.tolist()) == sorted(np.concatenate(docs).tolist())
    # Documents stay contiguous: split back by the first token of each.
    pieces, pos = [], 0
    while pos < len(stream):
        doc = docs[stream[pos] // 10]
        assert stream[pos:pos + len(doc)].tolist() == doc.tolist()
        pieces.append(stream[pos] // 10)
        pos += len(doc)
    assert sorted(pieces) == list(range(8))
    assert pieces != list(range(8))  # actually shuffled for this seed
    same = lm_stream(docs, rng=np.random.default_rng(0))
    assert np.array_equal(stream, same)
    rev = lm_stream(docs, backwards=True, rng=np.random.default_rng(0))
    assert np.array_equal(rev, stream[::-1])


def test_lm_stream_empty():
    assert len(lm_stream([])) == 0


def test_bptt_lengths_deterministic_without_rng():
    assert bptt_lengths(250, 70, None) == [70, 70, 70, 40]
    assert bptt_lengths(140, 70, None) == [70, 70]
    assert bptt_lengths(3, 70, None) == [3]
    assert bptt_lengths(0, 70, None) == []


@pytest.mark.parametrize("n", [1, 7, 999, 20_000])
def test_bptt_lengths_with_rng_cover_exactly(n):
    lengths = bptt_lengths(n, 70, np.random.default_rng(0))
    assert sum(lengths) == n
    assert all(length >= 1 for length in lengths)


def test_bptt_lengths_with_rng_distribution():
    n = 200_000
    lengths = np.array(bptt_lengths(n, 70, np.random.default_rng(1)))
    assert lengths.sum() == n
    body = lengths[:-1]
    assert body.min() >= MIN_BPTT
    near = np.mean(np.abs(body - 70) <= 15)
    assert 0.85 < near < 0.99  # about 95% around bptt, the rest around bptt/2
    half = np.mean(np.abs(body - 35) <= 15)
    assert 0.02 < half < 0.09
    assert len(set(body.tolist())) > 10  # jittered
    assert np.mean(body) == pytest.approx(0.95 * 70 + 0.05 * 35, abs=1.0)


def test_bptt_lengths_rng_small_bptt_respects_minimum():
    lengths = bptt_lengths(5_000, 4, np.random.default_rng(2))
    assert sum(lengths) == 5_000
    assert min(lengths[:-1]) >= MIN_BPTT


def test_bptt_lengths_same_seed_same_lengths():
    a = bptt_lengths(5_000, 70, np.random.default_rng(3))
    b = bptt_lengths(5_000, 70, np.random.default_rng(3))
    assert a == b


def test_lm_rows_shape_and_contiguity():
    stream = np.arange(103)
    rows = lm_rows(stream, 4)
    assert rows.shape == (4, 25)
    for i in range(4):
        assert rows[i].tolist() == list(range(25 * i, 25 * (i + 1)))


def test_lm_rows_too_few_tokens():
    with pytest.raises(ValueError):
        lm_rows(np.arange(7), 4)
    with pytest.raises(ValueError):
        lm_rows(np.arange(0), 1)
    assert lm_rows(np.arange(8), 4).shape == (4, 2)


def test_lm_batches_targets_are_inputs_shifted_by_one():
    rows = lm_rows(np.arange(2, 2 + 4 * 31), 4)  # (4, 31)
    lengths = bptt_lengths(rows.shape[1] - 1, 7, None)  # 7, 7, 7, 7, 2
    batches = list(lm_batches(rows, lengths))
    assert [x.shape for x, _ in batches] == [(4, n) for n in lengths]
    for x, y in batches:
        assert x.dtype == y.dtype == torch.long
        assert x.shape == y.shape
        assert torch.equal(y, x + 1)  # consecutive tokens in this stream
    xs = torch.cat([x for x, _ in batches], 1)
    ys = torch.cat([y for _, y in batches], 1)
    assert torch.equal(xs, torch.from_numpy(rows[:, :-1]))
    assert torch.equal(ys, torch.from_numpy(rows[:, 1:]))


def test_lm_batches_start_skips_batches():
    rows = lm_rows(np.random.default_rng(0).integers(2, 50, 4 * 40), 4)
    lengths = [5, 9, 6, 11, 8]
    full = list(lm_batches(rows, lengths))
    resumed = list(lm_batches(rows, lengths, start=2))
    assert len(resumed) == 3
    for (x, y), (rx, ry) in zip(full[2:], resumed):
        assert torch.equal(x, rx) and torch.equal(y, ry)
    assert torch.equal(resumed[0][0], torch.from_numpy(rows[:, 14:20]))
    assert list(lm_batches(rows, lengths, start=5)) == []


# ----------------------------------------------------------------------------- classifier batches

def _check_cover(batches, n):
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(n))


def _waste(batches, lengths):
    return sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batches)


def test_classifier_batches_without_rng_sorted_and_complete():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 100, 103)
    batches = classifier_batches(lengths, 10)
    assert [len(b) for b in batches] == [10] * 10 + [3]
    _check_cover(batches, 103)
    flat = np.concatenate(batches)
    assert np.all(np.diff(lengths[flat]) <= 0)  # globally longest first
    # Deterministic.
    again = classifier_batches(lengths, 10)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))


@pytest.mark.parametrize("n,batch_size", [(1000, 32), (161, 16), (33, 32), (97, 8)])
def test_classifier_batches_with_rng_sorted_complete(n, batch_size):
    lengths = np.random.default_rng(1).integers(1, 300, n)
    batches = classifier_batches(lengths, batch_size, np.random.default_rng(2))
    _check_cover(batches, n)
    for b in batches:
        assert np.all(np.diff(lengths[b]) <= 0)
        assert 2 <= len(b) <= batch_size + 1
    if n % batch_size == 1:
        assert min(len(b) for b in batches) > 1


def test_classifier_batches_merges_single_leftover_with_small_buckets():
    lengths = np.random.default_rng(1).integers(1, 300, 9)
    batches = classifier_batches(lengths, 4, np.random.default_rng(0), bucket_batches=2)
    _check_cover(batches, 9)
    assert sorted(len(b) for b in batches) == [4, 5]


def test_classifier_batches_with_rng_little_padding():
    n, bs = 3000, 32
    lengths = np.random.default_rng(0).integers(5, 500, n)
    batches = classifier_batches(lengths, bs, np.random.default_rng(1))
    perm = np.random.default_rng(1).permutation(n)
    random_batches = [perm[i:i + bs] for i in range(0, n, bs)]
    assert _waste(batches, lengths) < 0.1 * _waste(random_batches, lengths)


def test_classifier_batches_random_order_and_reproducible():
    lengths = np.random.default_rng(0).integers(5, 500, 2000)
    a = classifier_batches(lengths, 32, np.random.default_rng(7))
    b = classifier_batches(lengths, 32, np.random.default_rng(7))
    c = classifier_batches(lengths, 32, np.random.default_rng(8))
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(len(x) == len(y) and np.array_equal(x, y) for x, y in zip(a, c))
    # The batch order is shuffled, not longest first.
    firsts = [lengths[x[0]] for x in a]
    assert not all(p >= q for p, q in zip(firsts, firsts[1:]))


# ----------------------------------------------------------------------------- padding

def test_pad_batch_right_pads_with_pad_id():
    docs = toy_docs()
    ids, lengths = pad_batch(docs, np.array([2, 0, 1]))
    assert ids.dtype == torch.long and lengths.dtype == torch.long
    assert lengths.tolist() == [4, 3, 2]
    assert ids.tolist() == [[7, 8, 9, 10], [2, 3, 4, PAD_ID], [5, 6, PAD_ID, PAD_ID]]


def test_pad_batch_backwards_flips_each_document():
    docs = toy_docs()
    ids, lengths = pad_batch(docs, np.array([2, 0, 1]), backwards=True)
    assert lengths.tolist() == [4, 3, 2]
    assert ids.tolist() == [[10, 9, 8, 7], [4, 3, 2, PAD_ID], [6, 5, PAD_ID, PAD_ID]]
    assert docs[0].tolist() == [2, 3, 4]  # inputs untouched


def test_pad_batch_accepts_lists_and_single_document():
    ids, lengths = pad_batch([[5, 6, 7]], np.array([0]))
    assert ids.tolist() == [[5, 6, 7]] and lengths.tolist() == [3]
