"""The vocabulary: a mapping between tokens and integer ids, laid out like fastai's.

Ids 0..8 are the special tokens of :mod:`skulmfit.tokenizer` in fastai's order, so
``xxunk`` is 0 and ``xxpad`` is 1, then come the corpus tokens from the most frequent
down.  The size is padded to a multiple of 8 (with filler tokens that never occur) so
that the embedding and softmax matrices have GPU-friendly shapes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Container, Iterable, Mapping, Sequence
from itertools import count, islice, repeat
from numbers import Integral

import numpy as np

from .tokenizer import BOS, PAD, SPECIAL_TOKENS, UNK

_FILLER = "xxfake"
_PAD_TO = 8
_UNK_ID, _BOS_ID = (SPECIAL_TOKENS.index(t) for t in (UNK, BOS))
PAD_ID = SPECIAL_TOKENS.index(PAD)  #: the id of ``xxpad`` in every vocabulary (1, as in fastai)


def _check_int(name: str, value: object, minimum: int) -> None:
    # bool is an Integral but a max_size=True is surely a mistake.
    if not isinstance(value, Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _most_frequent(counts: Mapping[str, int], min_freq: int, exclude: Container[str],
                   limit: int) -> list[str]:
    """Up to ``limit`` tokens counted at least ``min_freq`` times and not in ``exclude``,
    the most frequent first and equal counts in string order."""
    frequent = [(token, n) for token, n in counts.items()
                if n >= min_freq and token not in exclude]
    # Sorting on the token too makes the result independent of the order of counts.
    frequent.sort(key=lambda item: (-item[1], item[0]))
    return [token for token, _ in frequent[:limit]]


def _padded(itos: list[str]) -> list[str]:
    """``itos`` followed by "xxfake", "xxfake1", ... up to a multiple of 8 entries."""
    # Filler names that are corpus tokens are skipped: ids must stay unique.
    taken = set(itos)
    names = (f"{_FILLER}{i or ''}" for i in count())
    fillers = islice((name for name in names if name not in taken), -len(itos) % _PAD_TO)
    return [*itos, *fillers]


class Vocab:
    """Index <-> token mapping with fastai's special tokens first.

    Parameters
    ----------
    itos : sequence of str
        The token of each id.  Must be unique strings starting with
        :data:`skulmfit.tokenizer.SPECIAL_TOKENS`, in that order.

    Attributes
    ----------
    itos : list of str
        Token of each id.
    stoi : dict of str to int
        Id of each token.  Tokens not in it map to ``unk_id`` (0) in
        :meth:`numericalize`.

    Raises
    ------
    TypeError
        If ``itos`` is a string or contains something other than strings.
    ValueError
        If a token appears twice or ``itos`` does not start with the special tokens.

    Examples
    --------
    >>> vocab = Vocab.build([["xxbos", "a", "b", "a"], ["xxbos", "a"]], min_freq=2)
    >>> vocab.itos[9], len(vocab)
    ('a', 16)
    >>> vocab.numericalize(["xxbos", "a", "zebra"])
    array([2, 9, 0], dtype=int32)
    """

    def __init__(self, itos: Sequence[str]):
        if isinstance(itos, str):
            raise TypeError("itos must be a sequence of tokens, not a str")
        itos = list(itos)
        for i, token in enumerate(itos):
            if not isinstance(token, str):
                raise TypeError(f"itos[{i}] is {type(token).__name__}, expected str")
        if tuple(itos[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"itos must start with the special tokens {list(SPECIAL_TOKENS)}, "
                             f"got {itos[: len(SPECIAL_TOKENS)]}")
        stoi = {token: i for i, token in enumerate(itos)}
        if len(stoi) != len(itos):
            duplicates = sorted(token for token, n in Counter(itos).items() if n > 1)
            raise ValueError(f"itos has duplicate tokens: {duplicates[:10]}")
        self.itos: list[str] = itos
        self.stoi: dict[str, int] = stoi

    @classmethod
    def from_counts(cls, counts: Mapping[str, int], max_size: int = 60000,
                    min_freq: int = 3) -> Vocab:
        """Build a vocabulary from token counts.

        Parameters
        ----------
        counts : mapping of str to int
            Number of occurrences of each token.  Special tokens in it are ignored:
            they always come first.
        max_size : int, default=60000
            Most entries, special tokens included, before padding to a multiple of 8.
        min_freq : int, default=3
            Tokens counted fewer times are left out.

        Returns
        -------
        Vocab
            The special tokens, then the tokens counted at least ``min_freq`` times from
            the most to the least frequent (equal counts in string order, so the result
            does not depend on the order of ``counts``), then ``"xxfake"``,
            ``"xxfake1"``, ... up to the next multiple of 8.

        Raises
        ------
        ValueError
            If ``max_size`` is not an integer >= 9 (the number of special tokens) or
            ``min_freq`` not an integer >= 1.
        """
        _check_int("max_size", max_size, len(SPECIAL_TOKENS))
        _check_int("min_freq", min_freq, 1)
        tokens = _most_frequent(counts, min_freq, exclude=SPECIAL_TOKENS,
                                limit=max_size - len(SPECIAL_TOKENS))
        return cls(_padded([*SPECIAL_TOKENS, *tokens]))

    @classmethod
    def build(cls, docs: Iterable[Sequence[str]], max_size: int = 60000,
              min_freq: int = 3) -> Vocab:
        """Build a vocabulary from tokenized documents.

        Parameters
        ----------
        docs : iterable of sequence of str
            Tokenized documents, such as the output of
            :func:`skulmfit.tokenizer.tokenize_many`.
        max_size, min_freq : int
            As in :meth:`from_counts`.

        Returns
        -------
        Vocab

        Raises
        ------
        TypeError
            If a document is a ``str`` (an untokenized text) rather than its tokens.
        ValueError
            As in :meth:`from_counts`.
        """
        counts: Counter[str] = Counter()
        for i, doc in enumerate(docs):
            if isinstance(doc, str):
                raise TypeError(f"docs[{i}] is a str; expected a sequence of tokens")
            counts.update(doc)
        return cls.from_counts(counts, max_size=max_size, min_freq=min_freq)

    @classmethod
    def from_pieces(cls, pieces: Iterable[str]) -> Vocab:
        """The vocabulary of a subword tokenizer: the special tokens, then ``pieces`` in their order,
        then filler tokens up to the next multiple of 8.

        Parameters
        ----------
        pieces : iterable of str
            The pieces of a :class:`skulmfit.subword.UnigramSegmenter`.

        Returns
        -------
        Vocab
        """
        return cls(_padded([*SPECIAL_TOKENS, *pieces]))

    def extend(self, counts: Mapping[str, int], max_new: int, min_freq: int = 3) -> Vocab:
        """A new vocabulary with this one's ids unchanged, followed by frequent new tokens.

        Used to add the words of a target corpus to a pretrained model's vocabulary.

        Parameters
        ----------
        counts : mapping of str to int
            Number of occurrences of each token; tokens already in the vocabulary are
            ignored.
        max_new : int
            Most tokens added, before padding to a multiple of 8.
        min_freq : int, default=3
            Tokens counted fewer times are not added.

        Returns
        -------
        Vocab
            ``itos`` is this vocabulary's, then the new tokens ordered as in
            :meth:`from_counts`, then filler tokens up to the next multiple of 8.

        Raises
        ------
        ValueError
            If ``max_new`` is not an integer >= 0 or ``min_freq`` not an integer >= 1.
        """
        _check_int("max_new", max_new, 0)
        _check_int("min_freq", min_freq, 1)
        new = _most_frequent(counts, min_freq, exclude=self.stoi, limit=max_new)
        return Vocab(_padded([*self.itos, *new]))

    def numericalize(self, tokens: Sequence[str]) -> np.ndarray:
        """Ids of ``tokens`` as an int32 array; unknown tokens get ``unk_id`` (0).

        Parameters
        ----------
        tokens : sequence of str

        Returns
        -------
        numpy.ndarray of int32, shape (len(tokens),)

        Raises
        ------
        TypeError
            If ``tokens`` is a ``str`` rather than a sequence of tokens.
        """
        if isinstance(tokens, str):
            raise TypeError("tokens must be a sequence of tokens, not a str")
        # map() with dict.get keeps the per-token loop in C.
        ids = map(self.stoi.get, tokens, repeat(self.unk_id))
        return np.fromiter(ids, dtype=np.int32, count=len(tokens))

    def numericalize_many(self, docs: Iterable[Sequence[str]]) -> list[np.ndarray]:
        """:meth:`numericalize` for each document.

        Parameters
        ----------
        docs : iterable of sequence of str

        Returns
        -------
        list of numpy.ndarray of int32
        """
        return [self.numericalize(doc) for doc in docs]

    def to_list(self) -> list[str]:
        """The tokens in id order, as a new list: JSON-able, and ``Vocab(...)`` of it is
        an equal vocabulary.

        Returns
        -------
        list of str
        """
        return list(self.itos)

    @property
    def unk_id(self) -> int:
        """Id of ``xxunk`` (0), given to unknown tokens."""
        return _UNK_ID

    @property
    def pad_id(self) -> int:
        """Id of ``xxpad`` (1)."""
        return PAD_ID

    @property
    def bos_id(self) -> int:
        """Id of ``xxbos`` (2)."""
        return _BOS_ID

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return token in self.stoi

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocab):
            return NotImplemented
        return self.itos == other.itos

    def __repr__(self) -> str:
        corpus_tokens = self.itos[len(SPECIAL_TOKENS):]
        preview = ", ".join(repr(t) for t in corpus_tokens[:5])
        more = ", ..." if len(corpus_tokens) > 5 else ""
        return f"Vocab(size={len(self)}, tokens=[{preview}{more}])"

