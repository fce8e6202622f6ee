"""A model's tokenizer: the one place where raw text becomes the tokens its vocabulary knows.

Every language model carries its :class:`Tokenizer` (in its weight file), and everything that
feeds text to the model asks the model's tokenizer for tokens, then its vocabulary for ids::

    text --Tokenizer.tokenize_many--> tokens --Vocab.numericalize_many--> ids --> batches --> model

Two kinds exist:

* **word** (fastai's own ULMFiT models, skulmfit's first bundled model, ``pretrained=None``):
  fastai's rules (:mod:`skulmfit.tokenizer`); words outside the vocabulary become ``xxunk``,
  which is why a classifier adds the target texts' frequent words to the vocabulary.
* **subword**: the same rules, then each word cut into unigram pieces
  (:mod:`skulmfit.subword`). The vocabulary is closed: every text maps to known pieces.

The estimators read at most ``max_tokens`` tokens of a document (:func:`read_part`): the work a
huge text costs is bounded, whatever its length.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from .subword import UnigramSegmenter
from .tokenizer import tokenize_many


class Tokenizer:
    """fastai's tokenization rules, optionally followed by subword pieces.

    Parameters
    ----------
    segmenter : UnigramSegmenter or None, default=None
        Cuts words into pieces; ``None`` keeps whole words.

    Examples
    --------
    >>> Tokenizer().tokenize_many(["Hello world!"])
    [['xxbos', 'xxmaj', 'hello', 'world', '!']]
    """

    def __init__(self, segmenter: UnigramSegmenter | None = None):
        self.segmenter = segmenter

    @property
    def subword(self) -> bool:
        """Whether words are cut into pieces (then no text has an unknown token)."""
        return self.segmenter is not None

    def tokenize_many(self, texts: Iterable[str], n_jobs: int | None = None) -> list[list[str]]:
        """Tokens of each text, in input order (see :func:`skulmfit.tokenizer.tokenize_many`)."""
        docs = tokenize_many(texts, n_jobs=n_jobs)
        if self.segmenter is None:
            return docs
        return [self.segmenter.segment_tokens(doc) for doc in docs]

    def to_dict(self) -> dict:
        """JSON-able description, stored in weight files: ``Tokenizer.from_dict`` restores it."""
        if self.segmenter is None:
            return {"kind": "word"}
        return {"kind": "subword-unigram", **self.segmenter.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping | None) -> Tokenizer:
        """The tokenizer described by ``data``; ``None`` (files written before tokenizers were
        stored) means the word tokenizer."""
        kind = "word" if data is None else data.get("kind")
        if kind == "word":
            return cls()
        if kind == "subword-unigram":
            return cls(UnigramSegmenter.from_dict(data))
        raise ValueError(f"unknown tokenizer kind {kind!r}: this file needs a newer skulmfit")

    def check_vocabulary(self, itos: list[str]) -> None:
        """Raises ``ValueError`` unless every piece the tokenizer can produce has an id in ``itos``."""
        if self.segmenter is not None:
            missing = set(self.segmenter.pieces) - set(itos)
            if missing:
                raise ValueError(f"the vocabulary lacks {len(missing)} of the tokenizer's pieces, "
                                 f"e.g. {sorted(missing)[:5]}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tokenizer):
            return NotImplemented
        return self.segmenter == other.segmenter

    def __repr__(self) -> str:
        return "Tokenizer(word)" if self.segmenter is None else f"Tokenizer({self.segmenter!r})"


def read_part(tokens: list[str], max_tokens: int | None) -> list[str]:
    """The tokens of a document that the models read: all of them, or, beyond ``max_tokens``, the
    first ``max_tokens // 2`` followed by the last ``max_tokens - max_tokens // 2``.

    Both ends are kept because the two directions pool different ends: the forward model reads the
    document from its start and pools its last tokens; the backward model reads it from its end and
    pools its first tokens. So each direction reads what it pools with the context that leads to it.

    Parameters
    ----------
    tokens : list of str
        A tokenized document.
    max_tokens : int or None
        Most tokens read; ``None`` reads every token.

    Returns
    -------
    list of str
        ``tokens`` itself when nothing is cut.

    Examples
    --------
    >>> read_part(["xxbos", "a", "b", "c", "d", "e"], 4)
    ['xxbos', 'a', 'd', 'e']
    """
    if max_tokens is None or len(tokens) <= max_tokens:
        return tokens
    head = max_tokens // 2
    return tokens[:head] + tokens[len(tokens) - (max_tokens - head):]
