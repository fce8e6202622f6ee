"""Fast, dependency-free tokenization with fastai's rules and special tokens.

ULMFiT language models are trained on text tokenized by fastai: spaCy's English word
splitting followed by a handful of rules that add special ``xx...`` tokens for
capitalisation and repetition.  This module reproduces that output closely enough for
a pretrained fastai vocabulary to apply, without spaCy, and fast enough to tokenize a
corpus on one core.

A document goes through these steps, in order:

1. **Clean-up** of the raw string: HTML entities are unescaped, ``<br />`` becomes a
   newline, ``<unk>`` becomes ``xxunk``, WikiText's ``@-@``-style markers are undone,
   control characters become spaces (C1 controls such as ``\\x96`` are read as the
   Windows-1252 punctuation they almost always are) and ``…`` becomes ``...``.
2. The text is cut at whitespace into *chunks*, and each chunk is split into tokens:

   * a URL or e-mail address is one token;
   * a character other than a digit repeated three or more times becomes
     ``xxrep N c`` (``sooo`` -> ``s xxrep 3 o``, ``...`` -> ``xxrep 3 .``);
   * punctuation is split off words, but kept inside numbers (``3.14``, ``1,000``,
     ``10:30``), domain-like words (``imdb.com``), a few other words (``pg-13``,
     ``at&t``), initials (``J.``), a few abbreviations (``e.g.``) and emoticons;
   * English contractions are split as spaCy does: ``don't`` -> ``do n't``,
     ``it's`` -> ``it 's``, ``dont`` -> ``do nt``, ``cannot`` -> ``can not``;
   * hyphens and slashes are otherwise tokens of their own
     (``state - of - the - art``, ``7 / 10``).

3. A word token repeated three or more times in a row becomes ``xxwrep N word``.
4. Case: a token of two or more characters that is all upper case becomes ``xxup`` and
   the lower-cased token, a capitalised one (``Hello``) becomes ``xxmaj hello``, and
   every token is lower-cased.
5. ``xxbos`` is put in front.

Differences from fastai v2 are deliberate and listed in :func:`tokenize`.

Speed comes from caching: most whitespace-separated chunks and tokens of a corpus
repeat, so each distinct chunk is split by the regular expressions only once per process.
"""

from __future__ import annotations

import html
import re
import reprlib
import unicodedata
from collections.abc import Iterable
from itertools import chain, groupby, islice
from operator import eq

from joblib import Parallel, delayed, effective_n_jobs

UNK, PAD, BOS, EOS, FLD, REP, WREP, UP, MAJ = (
    "xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep", "xxup", "xxmaj",
)
#: The special tokens in the order of fastai's vocabulary ids 0..8.
SPECIAL_TOKENS: tuple[str, ...] = (UNK, PAD, BOS, EOS, FLD, REP, WREP, UP, MAJ)

#: ``tokenize_many`` uses worker processes only for inputs with at least this many texts
#: or characters: below that, starting the workers costs more than it saves.
PARALLEL_MIN_TEXTS = 20_000
PARALLEL_MIN_CHARS = 5_000_000

# ---------------------------------------------------------------------------------------
# 1. Clean-up of the raw string
# ---------------------------------------------------------------------------------------

_BR = re.compile(r"<br\s*/?\s*>", re.IGNORECASE)
_WIKITEXT_MARKERS = {" @-@ ": "-", " @.@ ": ".", " @,@ ": ","}


def _control_char_table() -> dict[int, str]:
    """Map each control or invisible character that must not end up inside a token."""
    # Whitespace controls (\t, \n, \r, \x0b, \x0c, \x1c-\x1f) are left alone: str.split
    # already treats them as separators.
    table = {c: " " for c in [*range(0x00, 0x09), *range(0x0E, 0x1C), 0x7F]}
    # Text from the web is full of C1 controls that were Windows-1252 punctuation
    # mis-decoded as Latin-1 (IMDb has \x96 for an en dash, \x85 for an ellipsis);
    # restoring the punctuation keeps them from becoming separators or junk tokens.
    for c in range(0x80, 0xA0):
        try:
            table[c] = bytes([c]).decode("cp1252")
        except UnicodeDecodeError:
            table[c] = " "
    # Zero-width space, word joiner and byte-order mark: invisible, so they would
    # silently glue words together.
    table.update({0x200B: " ", 0x2060: " ", 0xFEFF: " "})
    return table


_CONTROL_TABLE = _control_char_table()
_CONTROL = re.compile("[" + re.escape("".join(map(chr, _CONTROL_TABLE))) + "]")


def _clean(text: str) -> str:
    """Undo HTML and WikiText markup and remove control characters."""
    # Each step is guarded by a cheap substring test: most documents need none of them.
    if "&" in text:
        text = html.unescape(text)
    if "<" in text:
        text = _BR.sub("\n", text).replace("<unk>", f" {UNK} ")
    if " @" in text:
        for marker, replacement in _WIKITEXT_MARKERS.items():
            text = text.replace(marker, replacement)
    if _CONTROL.search(text):
        text = text.translate(_CONTROL_TABLE)
    # One spelling for the ellipsis, so that both become "xxrep 3 ." like fastai's "...".
    return text.replace("…", "...")


# ---------------------------------------------------------------------------------------
# 2. Splitting a whitespace-free chunk into tokens
# ---------------------------------------------------------------------------------------


def _char_class_ranges(codepoints: Iterable[int]) -> str:
    """Body of a regex character class matching exactly ``codepoints`` (sorted)."""
    ranges: list[list[int]] = []
    for c in codepoints:
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in ranges)


# Python's \w does not include combining marks (Devanagari vowel signs, Arabic
# diacritics, ...), so words in those scripts would be cut after every letter without
# them.  Only the marks of the Basic Multilingual Plane are listed (plus the variation
# selectors of plane 14): re tests the other planes' ranges one by one, which made
# tokenizing punctuation and emoji several times slower, for scripts hardly ever seen.
_MARKS = _char_class_ranges(
    [c for c in range(0x10000) if unicodedata.category(chr(c)).startswith("M")]
    + list(range(0xE0100, 0xE01F0))
)
# Zero-width (non-)joiners are part of words in Persian and Indic scripts.
_WORD_CHAR = rf"[\w{_MARKS}\u200c\u200d]"
# What may follow an emoji inside one emoji: marks (incl. the emoji variation
# selector), skin tones and tag characters.
_EMOJI_MODIFIER = rf"[{_MARKS}\U0001F3FB-\U0001F3FF\U000E0020-\U000E007F]"

_URL_OR_EMAIL = re.compile(
    r"("
    # URL: a scheme or "www.", then anything up to whitespace, not ending in punctuation
    r"(?<!\w)(?:https?://|ftp://|www\.)[^\s<>\"]*[^\s<>\"'.,;:!?()\[\]{}]"
    # e-mail; the look-behind makes the scan linear on long runs of word characters
    r"|(?<![\w.+-])[\w.+-]+@\w[\w-]*(?:\.[\w-]+)+"
    r")"
)

# Digits are exempt so that numbers stay whole ("2000", "1,000"); fastai would give
# "2 xxrep 3 0".
_CHAR_REPEAT = re.compile(r"([^\s\d])\1{2,}")

_LETTER = r"[^\W\d_]"
_CLITIC = r"(?:[sSmMdD]|ll|LL|re|RE|ve|VE)"
_TOKEN = re.compile(
    rf"""
    # Abbreviations that keep their period (spaCy's exceptions for lower-cased text).
      (?i: e\.g | i\.e | a\.m | p\.m | vs )\.
    # An initial: "J." (but "U.S." gives "U.S" "." as spaCy does on lower-cased text).
    | {_LETTER}\.(?!{_WORD_CHAR})
    # "don't" -> "do" "n't", "can't" -> "ca" "n't"
    | {_WORD_CHAR}+?(?=[nN]['’][tT](?!{_WORD_CHAR}))
    | [nN]['’][tT](?!{_WORD_CHAR})
    # "it's" -> "it" "'s", also 'm 'd 'll 're 've
    | ['’]{_CLITIC}(?!{_WORD_CHAR})
    # A word, possibly with inner punctuation that does not split it:
    | {_WORD_CHAR}+
      (?:
        (?: ['’](?!{_CLITIC}(?!{_WORD_CHAR})) | `              # o'clock it`s
          | (?<![a-z])\. | \.(?![A-Z])                         # imdb.com 3.14, not end.The
          | (?<=\d)[,:](?=\d)                                  # 1,000 10:30
          | (?<={_LETTER})(?: -(?=\d) | [*&]+(?={_LETTER}) )    # pg-13 sh*t at&t
        ){_WORD_CHAR}+
      )*
    # Emoticons
    | [:;=]-?(?: [()\[\]/|] | [pP](?!{_WORD_CHAR}) ) | <3(?!\d)
    # Two-character punctuation that spaCy keeps whole; three or more are xxrep already.
    | \.\. | --
    # A flag is a pair of regional indicator letters.
    | [\U0001F1E6-\U0001F1FF]{{2}}
    # Any other character is a token of its own (with what joins it into one emoji).
    | \S(?:{_EMOJI_MODIFIER}|\u200d\S)*
    """,
    re.VERBOSE,
)

# Contractions written without an apostrophe, split the way spaCy splits them:
# lower-cased word -> length of its first part.
_SPLIT_WORDS = {
    split.replace(" ", ""): split.index(" ")
    for split in (
        "can not", "gon na", "got ta",
        "ai nt", "are nt", "ca nt", "could nt", "did nt", "does nt", "do nt", "had nt",
        "has nt", "have nt", "is nt", "should nt", "was nt", "were nt", "wo nt", "would nt",
        "i m", "i ve", "i d", "you re", "you ve", "you ll", "he s", "she s", "we ve", "we d",
        "they re", "they ve", "they ll", "it ll", "that s", "what s", "who s", "how s",
        "there s",
    )
}


def _split_word(token: str) -> tuple[str, ...]:
    cut = _SPLIT_WORDS.get(token.lower())
    return (token,) if cut is None else (token[:cut], token[cut:])


def _replace_char_repeat(match: re.Match) -> str:
    return f" {REP} {len(match.group())} {match.group(1)} "


# Results for each distinct chunk and token, computed once per process.
_chunk_cache: dict[str, tuple[str, ...]] = {}
_case_cache: dict[str, tuple[str, ...]] = {}
# A cache is emptied when it reaches this size, to bound memory on unusual input.
_CACHE_SIZE = 500_000
# Longer keys are rare and unlikely to repeat: not worth keeping.
_MAX_CACHED_LEN = 64


def clear_caches() -> None:
    """Forgets the chunks and tokens already split, as in a fresh process (for timings)."""
    _chunk_cache.clear()
    _case_cache.clear()


def _remember(cache: dict[str, tuple[str, ...]], key: str,
              value: tuple[str, ...]) -> tuple[str, ...]:
    if len(key) <= _MAX_CACHED_LEN:
        if len(cache) >= _CACHE_SIZE:
            cache.clear()
        cache[key] = value
    return value


def _split_chunk(chunk: str) -> tuple[str, ...]:
    """Tokens of a whitespace-free chunk, before case handling (and cache them)."""
    tokens: list[str] = []
    # With a capturing group, re.split alternates text / URL / text / ...
    for i, piece in enumerate(_URL_OR_EMAIL.split(chunk)):
        if i % 2:
            tokens.append(piece)
        elif piece:
            piece = _CHAR_REPEAT.sub(_replace_char_repeat, piece)
            tokens += [part for token in _TOKEN.findall(piece) for part in _split_word(token)]
    return _remember(_chunk_cache, chunk, tuple(tokens))


# ---------------------------------------------------------------------------------------
# 3.-5. Word repeats, case, start of document
# ---------------------------------------------------------------------------------------


def _replace_word_repeats(tokens: list[str]) -> list[str]:
    """Replace 3+ identical word tokens in a row by ``xxwrep N word``."""
    out: list[str] = []
    for token, run in groupby(tokens):
        n = len(list(run))
        # Only words: a run of punctuation tokens (". . . .") is left as it is, like
        # fastai's \w+ pattern does.
        if n >= 3 and any(map(str.isalnum, token)):
            out += [WREP, str(n), token]
        else:
            out += [token] * n
    return out


def _mark_case(token: str) -> tuple[str, ...]:
    """``xxup``/``xxmaj`` (if any) and the lower-cased token (and cache them)."""
    if len(token) > 1 and token.isupper():
        result: tuple[str, ...] = (UP, token.lower())
    elif len(token) > 1 and token[0].isupper() and token[1:].islower():
        result = (MAJ, token.lower())
    else:
        result = (token.lower(),)
    return _remember(_case_cache, token, result)


def tokenize(text: str) -> list[str]:
    """Split one document into fastai-style tokens.

    Parameters
    ----------
    text : str
        The raw document.  Any string is accepted, including the empty string.

    Returns
    -------
    list of str
        The tokens, starting with ``"xxbos"``.  No token is empty or contains
        whitespace.

    Raises
    ------
    TypeError
        If ``text`` is not a ``str``.

    Notes
    -----
    The output follows fastai v2 (``fix_html``, ``replace_rep``, ``replace_wrep``,
    ``replace_all_caps``, ``replace_maj``, ``lowercase`` with spaCy's English
    tokenizer) with these deliberate differences:

    * Case markers are decided per token (as fastai v1 did) rather than per
      whitespace-separated word, and for all scripts rather than ASCII only: ``"(Hello"``
      gives ``( xxmaj hello`` and ``"Москва"`` gives ``xxmaj москва``; ``"IT'S"`` gives
      ``xxup it xxup 's``.  As in fastai, a single capital letter (``"I"``) gets no
      marker, and a mixed-case token (``"DeNiro"``) is only lower-cased.
    * Word repeats are found on the tokens after splitting, comparing them
      case-sensitively like fastai, so ``"no no no!"`` is ``xxwrep 3 no !``;
      ``"No no no"`` is not a repeat.
    * URLs and e-mail addresses are single tokens (fastai spaces out their slashes).
    * ``&quot;`` is ``"`` (fastai turns it into ``'``); fastai's replacement of the
      two characters ``\\n`` by a newline is not done.
    * C1 control characters are read as Windows-1252 (``\\x96`` -> ``–``); other
      control characters and zero-width spaces become spaces.
    * ``…`` is written ``...``, so it becomes ``xxrep 3 .`` like three periods do.
    * ``<unk>`` becomes a token ``xxunk`` even when glued to a word.
    * Digits are never replaced by ``xxrep``, so numbers stay whole: ``"2000"`` and
      ``"1,000"`` are single tokens (fastai gives ``2 xxrep 3 0``).
    * A period between a lower-case and a capital letter is split off (``"end.The"``
      is ``end . xxmaj the``): fastai lower-cases the text before spaCy sees it, so
      spaCy's rule for this never applies there.
    * Hyphens and ``_`` at the start or end of a word are not treated as in spaCy
      (``"-the"`` is ``- the``, ``"_word_"`` one token); ``'ll``, ``'re``, ``'ve``,
      ``'m`` and ``'d`` are split off any word, not only the pronouns and verbs listed
      by spaCy; spaCy's rarer special cases (``'em``, ``'cause``, units such as
      ``8mm``) are not reproduced.

    Examples
    --------
    >>> tokenize("I didn't like it... NOT AT ALL!!!")  # doctest: +NORMALIZE_WHITESPACE
    ['xxbos', 'i', 'did', "n't", 'like', 'it', 'xxrep', '3', '.',
     'xxup', 'not', 'xxup', 'at', 'xxup', 'all', 'xxrep', '3', '!']
    """
    if not isinstance(text, str):
        raise TypeError(f"text is {type(text).__name__}, expected str")
    tokens = list(chain.from_iterable(
        [_chunk_cache.get(chunk) or _split_chunk(chunk) for chunk in _clean(text).split()]
    ))
    # Consecutive equal tokens are rare, so the regrouping is usually skipped.
    if any(map(eq, tokens, islice(tokens, 1, None))):
        tokens = _replace_word_repeats(tokens)
    return [BOS, *[t for token in tokens for t in (_case_cache.get(token) or _mark_case(token))]]


def _tokenize_batch(texts: list[str]) -> list[list[str]]:
    return [tokenize(text) for text in texts]


def tokenize_many(texts: Iterable[str], n_jobs: int | None = None) -> list[list[str]]:
    """Tokenize many documents, optionally in parallel.

    Parameters
    ----------
    texts : iterable of str
        The raw documents.
    n_jobs : int or None, default=None
        Number of worker processes; ``None`` means 1 and ``-1`` all cores (joblib's
        convention).  Workers are only started when the input is large enough for them
        to pay off (at least ``PARALLEL_MIN_TEXTS`` texts or ``PARALLEL_MIN_CHARS``
        characters); the output is the same either way.

    Returns
    -------
    list of list of str
        ``tokenize(text)`` for each text, in input order.

    Raises
    ------
    TypeError
        If an item is not a ``str``; the message names its position, for example
        ``"texts[3] is float (nan), expected str"``.
    """
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(
                f"texts[{i}] is {type(text).__name__} ({reprlib.repr(text)}), expected str"
            )
    n_workers = min(effective_n_jobs(n_jobs), len(texts))
    big_enough = (len(texts) >= PARALLEL_MIN_TEXTS
                  or sum(map(len, texts)) >= PARALLEL_MIN_CHARS)
    if n_workers <= 1 or not big_enough:
        return _tokenize_batch(texts)
    # Few large contiguous batches: per-batch overhead stays small, and a few batches
    # per worker even out documents of unequal length.
    n_batches = min(len(texts), 4 * n_workers)
    bounds = [len(texts) * k // n_batches for k in range(n_batches + 1)]
    batches = Parallel(n_jobs=n_workers, backend="loky")(
        delayed(_tokenize_batch)(texts[start:stop]) for start, stop in zip(bounds, bounds[1:])
    )
    return list(chain.from_iterable(batches))
