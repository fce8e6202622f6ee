"""Turning numericalised documents into tensors: the language model's contiguous stream and the
classifier's length-bucketed, padded batches."""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from .vocab import PAD_ID

MIN_BPTT = 5


def lm_stream(docs: Sequence[np.ndarray], backwards: bool = False,
              rng: np.random.Generator | None = None) -> np.ndarray:
    """All documents concatenated into one token stream (shuffled when ``rng`` is given).

    A backward language model reads each document from its end: ``backwards=True`` flips the
    whole stream, which reverses every document and their order at once.
    """
    order = rng.permutation(len(docs)) if rng is not None else range(len(docs))
    stream = np.concatenate([docs[i] for i in order]) if len(docs) else np.zeros(0, np.int32)
    return stream[::-1].copy() if backwards else stream


def bptt_lengths(n_positions: int, bptt: int, rng: np.random.Generator | None) -> list[int]:
    """Sequence lengths covering ``n_positions`` tokens.

    With an ``rng`` the lengths vary as in AWD-LSTM (Merity et al. 2017, §4.1): ``bptt`` with
    probability 0.95, otherwise ``bptt / 2``, then jittered with a normal of std 5, at least
    :data:`MIN_BPTT`. Drawing the lengths up front makes the number of steps known for STLR.
    """
    lengths, covered = [], 0
    while covered < n_positions:
        if rng is None:
            length = bptt
        else:
            base = bptt if rng.random() < 0.95 else bptt / 2
            length = max(MIN_BPTT, int(round(rng.normal(base, 5))))
        length = min(length, n_positions - covered)
        lengths.append(length)
        covered += length
    return lengths


def lm_rows(stream: np.ndarray, batch_size: int) -> np.ndarray:
    """The stream cut into ``batch_size`` contiguous rows (the tail that does not fill a row is dropped)."""
    row_len = len(stream) // batch_size
    if row_len < 2:
        raise ValueError(f"{len(stream)} tokens are too few for language-model batches of {batch_size} rows")
    return stream[: row_len * batch_size].reshape(batch_size, row_len)


def lm_batches(rows: np.ndarray, seq_lengths: Sequence[int], start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Inputs and next-token targets, ``(batch_size, seq_len)`` each, walking the rows left to right.

    ``seq_lengths`` must cover ``rows.shape[1] - 1`` positions (targets are shifted by one);
    ``start`` skips that many batches (for resuming).
    """
    pos = sum(seq_lengths[:start])
    for length in seq_lengths[start:]:
        # Copy one window at a time: ``rows`` may be a read-only memory map of a huge corpus.
        window = torch.from_numpy(rows[:, pos:pos + length + 1].astype(np.int64))
        yield window[:, :-1], window[:, 1:]
        pos += length


def classifier_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None = None,
                       bucket_batches: int = 50) -> list[np.ndarray]:
    """Indices of each batch, every batch ordered longest first.

    Without ``rng`` (prediction) all documents are sorted by length, so padding is minimal.
    With ``rng`` (training) documents are shuffled, sorted within buckets of ``bucket_batches``
    batches, and the batches shuffled: padding stays small while the order stays random. A
    final batch of one document is merged into the previous one, because BatchNorm cannot
    train on a single example.
    """
    lengths = np.asarray(lengths)
    n = len(lengths)
    if rng is None:
        order = np.argsort(-lengths, kind="stable")
        batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    else:
        shuffled = rng.permutation(n)
        bucket = batch_size * bucket_batches
        batches = []
        for start in range(0, n, bucket):
            chunk = shuffled[start:start + bucket]
            chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
            batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
        if len(batches) > 1 and len(batches[-1]) == 1:
            leftover = batches.pop()
            batches[-1] = np.concatenate([batches[-1], leftover])
        batches = [batches[i] for i in rng.permutation(len(batches))]
        batches = [b[np.argsort(-lengths[b], kind="stable")] for b in batches]
    return batches


def pad_batch(docs: Sequence[np.ndarray], indices: np.ndarray,
              backwards: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids ``(len(indices), longest)`` and the lengths, for the documents at ``indices``,
    each read from its end with ``backwards``."""
    lengths = np.fromiter((len(docs[i]) for i in indices), dtype=np.int64, count=len(indices))
    ids = np.full((len(indices), int(lengths.max())), PAD_ID, dtype=np.int64)
    for row, i in enumerate(indices):
        doc = docs[i]
        ids[row, : len(doc)] = doc[::-1] if backwards else doc
    return torch.from_numpy(ids), torch.from_numpy(lengths)
