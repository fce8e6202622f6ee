"""Subword pieces on top of fastai's word tokens: a unigram vocabulary applied by Viterbi.

A word-level vocabulary of a few thousand entries leaves 10-20% of real-world words unknown
(``xxunk``), and a few hundred labels cannot teach the model what they mean. A subword model
cuts every word that is not a piece of its own into known pieces instead (``unwatchable`` ->
``▁un watch able``), as fastai and MultiFiT do with SentencePiece:

1. :func:`skulmfit.tokenizer.tokenize` splits the text into words and adds fastai's special tokens
   (``xxbos``, ``xxmaj``, ``xxup``, ``xxrep``, ``xxwrep``), which stay whole.
2. :class:`UnigramSegmenter` cuts each other token into the pieces of highest total log-probability
   (the unigram model of Kudo 2018, decoded by Viterbi). The first piece of a word starts with
   ``▁`` (U+2581), as in SentencePiece, so that word boundaries stay visible to the model.
3. A character that no piece covers (a rare script, an emoji) becomes the pieces of its UTF-8
   bytes (``<0xF0>`` ...), so no text ever maps to an unknown token.

Applying a fixed vocabulary needs nothing but this module. *Learning* one
(:func:`learn_unigram`) uses the ``sentencepiece`` library, at pretraining time only
(``pip install skulmfit[pretrain]``).
"""
from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from pathlib import Path

from .tokenizer import SPECIAL_TOKENS

WORD_START = "\u2581"
#: A character with no piece of its own costs this much below the least likely piece (as in
#: SentencePiece), so it is used only when no segmentation into pieces exists.
UNKNOWN_PENALTY = 10.0
# Segmentations are cached per distinct word; the cache is emptied when it reaches this size.
_CACHE_SIZE = 1_000_000
_MAX_CACHED_LEN = 64


def byte_piece(byte: int) -> str:
    """The piece that stands for one UTF-8 byte, spelt as in SentencePiece (``<0xE2>``)."""
    return f"<0x{byte:02X}>"


BYTE_PIECES: tuple[str, ...] = tuple(byte_piece(b) for b in range(256))


class UnigramSegmenter:
    """Cuts word tokens into the most probable sequence of known pieces.

    Parameters
    ----------
    pieces : sequence of str
        The vocabulary's pieces, without the special tokens. Pieces that start a word begin
        with ``▁``; the 256 byte pieces (``<0x00>`` ... ``<0xFF>``) must all be present.
    scores : sequence of float
        Log-probability of each piece under the unigram model (byte pieces' scores are unused).

    Raises
    ------
    ValueError
        If the lengths differ, a piece is repeated, empty or a special token, a score is not
        finite, or a byte piece is missing.

    Examples
    --------
    >>> seg = UnigramSegmenter(["▁un", "▁the", "watch", "able", "▁", *BYTE_PIECES],
    ...                        [-3.0, -1.0, -5.0, -4.0, -6.0, *[0.0] * 256])
    >>> seg.segment("unwatchable")
    ('▁un', 'watch', 'able')
    >>> seg.segment_tokens(["xxbos", "xxmaj", "the", "é"])
    ['xxbos', 'xxmaj', '▁the', '▁', '<0xC3>', '<0xA9>']
    """

    def __init__(self, pieces: Sequence[str], scores: Sequence[float]):
        pieces, scores = list(pieces), [float(s) for s in scores]
        if len(pieces) != len(scores):
            raise ValueError(f"{len(pieces)} pieces but {len(scores)} scores")
        if len(set(pieces)) != len(pieces):
            raise ValueError("pieces must be unique")
        bad = [p for p in pieces if not isinstance(p, str) or not p or p in SPECIAL_TOKENS]
        if bad:
            raise ValueError(f"pieces must be non-empty strings other than the special tokens; got {bad[:5]}")
        if not all(map(math.isfinite, scores)):
            raise ValueError("piece scores must be finite")
        missing = set(BYTE_PIECES) - set(pieces)
        if missing:
            raise ValueError(f"the vocabulary lacks {len(missing)} byte pieces (e.g. {min(missing)}): "
                             "without them some characters could not be encoded")
        self.pieces, self.scores = pieces, scores
        # Byte pieces are reached through the fallback only: the text "<0x41>" is not the byte 0x41.
        self._score = {p: s for p, s in zip(pieces, scores) if p not in _BYTE_SET}
        self._unknown_score = min(self._score.values(), default=0.0) - UNKNOWN_PENALTY
        self._cache: dict[str, tuple[str, ...]] = {}

    @cached_property
    def _trie(self) -> dict[str, list]:
        """The pieces as a trie (see :func:`_build_trie`), built when the first word is segmented, so
        that loading a model stays quick."""
        return _build_trie(self._score)

    def clear_cache(self) -> None:
        """Forgets the words already segmented, as a new segmenter would (for timings)."""
        self._cache.clear()

    def segment(self, word: str) -> tuple[str, ...]:
        """The pieces of one word token (its first piece starts with ``▁``).

        Parameters
        ----------
        word : str
            A token from :func:`skulmfit.tokenizer.tokenize`, not a special token.

        Returns
        -------
        tuple of str
        """
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        text = WORD_START + word
        n, trie, unknown = len(text), self._trie, self._unknown_score
        best = [0.0] + [-math.inf] * n  # best[i]: score of the best segmentation of text[:i]
        start = [0] * (n + 1)  # where the last piece of that segmentation starts
        # Each position extends the best segmentation ending there by every piece starting there,
        # found by walking the trie along the text. The walk stops at the first character no piece
        # continues with, so a position costs as many steps as its longest matching prefix: on text
        # unlike the vocabulary (a base64 blob, a log line) one to three, and at most the longest
        # piece. A position is final when the walk reaches it, and the pieces ending at a position
        # are compared in the order of their starts, so a tie goes to the longest last piece.
        for begin in range(n + 1):
            here = best[begin]
            if here == -math.inf:  # no piece ends here: the character before stands alone
                here = best[begin] = best[begin - 1] + unknown
                start[begin] = begin - 1
            node, end = trie, begin
            while end < n and (entry := node.get(text[end])) is not None:
                end += 1
                piece_score, node = entry
                if here + piece_score > best[end]:
                    best[end], start[end] = here + piece_score, begin
        result: list[str] = []
        end = n
        while end > 0:
            piece = text[start[end]:end]
            if piece in self._score:
                result.append(piece)
            else:  # one uncovered character: its bytes, last byte first as we walk backwards
                # (a lone surrogate, which strict UTF-8 refuses, is spelt as Python stores it)
                result += reversed([BYTE_PIECES[b] for b in piece.encode("utf-8", "surrogatepass")])
            end = start[end]
        segmentation = tuple(reversed(result))
        if len(word) <= _MAX_CACHED_LEN:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[word] = segmentation
        return segmentation

    def segment_tokens(self, tokens: Iterable[str]) -> list[str]:
        """Pieces of a tokenized document; special tokens pass through whole."""
        get, segment = self._cache.get, self.segment
        return [piece for token in tokens
                for piece in ((token,) if token in _SPECIAL_SET else (get(token) or segment(token)))]

    def to_dict(self) -> dict:
        """JSON-able description: ``UnigramSegmenter.from_dict`` of it is an equal segmenter."""
        return {"pieces": list(self.pieces), "scores": list(self.scores)}

    @classmethod
    def from_dict(cls, data: Mapping) -> UnigramSegmenter:
        return cls(data["pieces"], data["scores"])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UnigramSegmenter):
            return NotImplemented
        return self.pieces == other.pieces and self.scores == other.scores

    def __getstate__(self) -> dict:
        return self.to_dict()  # the cache is rebuilt on demand, not pickled

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["pieces"], state["scores"])

    def __repr__(self) -> str:
        return f"UnigramSegmenter({len(self.pieces)} pieces)"


_BYTE_SET = frozenset(BYTE_PIECES)
_SPECIAL_SET = frozenset(SPECIAL_TOKENS)


def _build_trie(score: Mapping[str, float]) -> dict[str, list]:
    """The pieces as a trie: ``trie[c]`` is ``[score, subtrie]`` for the one-character string ``c``,
    with the piece's score (``-inf``, which never wins a comparison, if ``c`` only begins longer
    pieces) and the trie of what follows ``c`` in them."""
    root: dict[str, list] = {}
    for piece, piece_score in score.items():
        node = root
        for char in piece[:-1]:
            entry = node.get(char)
            if entry is None:
                entry = node[char] = [-math.inf, {}]
            node = entry[1]
        entry = node.get(piece[-1])
        if entry is None:
            node[piece[-1]] = [piece_score, {}]
        else:
            entry[0] = piece_score
    return root


def learn_unigram(word_counts: Mapping[str, int], n_pieces: int, *, character_coverage: float = 0.9999,
                  max_piece_length: int = 16, threads: int = 1, seed: int = 0) -> UnigramSegmenter:
    """Learns a unigram piece vocabulary from word counts with SentencePiece (pretraining only).

    Parameters
    ----------
    word_counts : mapping of str to int
        Word tokens (as :func:`skulmfit.tokenizer.tokenize` gives them) and how often each occurs.
        Special tokens are ignored: they stay whole and are not cut into pieces.
    n_pieces : int
        Number of pieces, the 256 byte pieces included.
    character_coverage : float, default=0.9999
        Share of the characters that get a piece of their own; the rarest rest are spelt in bytes.
    max_piece_length : int, default=16
        Longest piece, in characters.
    threads : int, default=1
        SentencePiece's training threads.
    seed : int, default=0
        SentencePiece's random seed: the same counts and settings give the same vocabulary.

    Returns
    -------
    UnigramSegmenter

    Raises
    ------
    ImportError
        If ``sentencepiece`` is not installed.
    ValueError
        If ``n_pieces`` leaves no room beside the 256 byte pieces.

    Notes
    -----
    A small corpus may yield fewer than ``n_pieces`` pieces: SentencePiece stops when every piece
    worth having is in.
    """
    model = _train_sentencepiece(word_counts, n_pieces, character_coverage=character_coverage,
                                 max_piece_length=max_piece_length, threads=threads, seed=seed)
    import sentencepiece as spm
    processor = spm.SentencePieceProcessor(model_proto=model)
    ids = range(1, processor.get_piece_size())  # id 0 is SentencePiece's <unk>, which never occurs here
    return UnigramSegmenter([processor.id_to_piece(i) for i in ids], [processor.get_score(i) for i in ids])


def _train_sentencepiece(word_counts: Mapping[str, int], n_pieces: int, *, character_coverage: float,
                         max_piece_length: int, threads: int, seed: int) -> bytes:
    """The serialised SentencePiece unigram model learnt from ``word_counts`` (see :func:`learn_unigram`)."""
    if n_pieces < 320:
        raise ValueError(f"n_pieces={n_pieces}: a subword vocabulary needs at least 320 pieces "
                         "(256 of them stand for single bytes)")
    try:
        import sentencepiece as spm
    except ImportError:
        raise ImportError("learning a subword vocabulary needs sentencepiece: "
                          "pip install 'skulmfit[pretrain]'") from None
    with tempfile.TemporaryDirectory() as folder:
        counts_path = Path(folder) / "words.tsv"
        with open(counts_path, "w", encoding="utf-8") as f:
            for word, count in word_counts.items():
                if word not in _SPECIAL_SET and count > 0 and "\t" not in word and not word.isspace():
                    f.write(f"{word}\t{count}\n")
        spm.set_random_generator_seed(seed)
        spm.SentencePieceTrainer.train(
            input=str(counts_path), input_format="tsv", model_prefix=str(Path(folder) / "unigram"),
            model_type="unigram", vocab_size=n_pieces + 1,  # + SentencePiece's own <unk>, dropped by the caller
            byte_fallback=True, character_coverage=character_coverage, max_sentencepiece_length=max_piece_length,
            # The text is already normalised and split into words by skulmfit's tokenizer.
            normalization_rule_name="identity", split_digits=False, num_threads=threads, hard_vocab_limit=False,
            unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, minloglevel=2)
        return (Path(folder) / "unigram.model").read_bytes()
