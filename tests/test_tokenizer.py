import random
import time

import joblib
import pytest

from skulmfit import tokenizer
from skulmfit.tokenizer import SPECIAL_TOKENS, tokenize, tokenize_many


def toks(text):
    """Tokens of ``text`` without the leading xxbos, which every test would repeat."""
    tokens = tokenize(text)
    assert tokens[0] == "xxbos"
    return tokens[1:]


def test_special_tokens_are_fastais_in_order():
    assert SPECIAL_TOKENS == ("xxunk", "xxpad", "xxbos", "xxeos", "xxfld",
                              "xxrep", "xxwrep", "xxup", "xxmaj")


@pytest.mark.parametrize("text, expected", [
    ("Hello World", ["xxmaj", "hello", "xxmaj", "world"]),
    ("the WHOLE time", ["the", "xxup", "whole", "time"]),
    ("I saw A film", ["i", "saw", "a", "film"]),            # one capital letter: no marker
    ("DeNiro and McDonald", ["deniro", "and", "mcdonald"]),  # mixed case: lower-cased only
    ("the U.S. army", ["the", "xxup", "u.s", ".", "army"]),
    ("J. R. R. Tolkien", ["xxup", "j.", "xxup", "r.", "xxup", "r.", "xxmaj", "tolkien"]),
    ("(Hello)", ["(", "xxmaj", "hello", ")"]),
    ("Москва", ["xxmaj", "москва"]),
])
def test_case_markers(text, expected):
    assert toks(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("don't", ["do", "n't"]),
    ("can't", ["ca", "n't"]),
    ("won't", ["wo", "n't"]),
    ("Don't", ["xxmaj", "do", "n't"]),
    ("it's", ["it", "'s"]),
    ("I'm", ["i", "'m"]),
    ("you're", ["you", "'re"]),
    ("we've", ["we", "'ve"]),
    ("they'll", ["they", "'ll"]),
    ("he'd", ["he", "'d"]),
    ("it’s", ["it", "’s"]),
    ("Jane's", ["xxmaj", "jane", "'s"]),
    ("James'", ["xxmaj", "james", "'"]),
    ("o'clock rock'n'roll it`s", ["o'clock", "rock'n'roll", "it`s"]),
    ("cannot gonna", ["can", "not", "gon", "na"]),
    ("dont Thats IM", ["do", "nt", "xxmaj", "that", "s", "i", "m"]),
])
def test_contractions(text, expected):
    assert toks(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("Hello, world!", ["xxmaj", "hello", ",", "world", "!"]),
    ('He said "no" (twice).', ["xxmaj", "he", "said", '"', "no", '"', "(", "twice", ")", "."]),
    ("what?! [sic] {x}", ["what", "?", "!", "[", "sic", "]", "{", "x", "}"]),
    ("state-of-the-art", ["state", "-", "of", "-", "the", "-", "art"]),
    ("7/10", ["7", "/", "10"]),
    ("the end.The start", ["the", "end", ".", "xxmaj", "the", "start"]),
    ("Mr. Smith, e.g. here", ["xxmaj", "mr", ".", "xxmaj", "smith", ",", "e.g.", "here"]),
    ("PG-13, sh*t at&t", ["xxup", "pg-13", ",", "sh*t", "at&t"]),
    ("fun :) sad :-( :P", ["fun", ":)", "sad", ":-(", "xxup", ":p"]),
    ("wait..what -- no", ["wait", "..", "what", "--", "no"]),
])
def test_punctuation(text, expected):
    assert toks(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("3.14 and 1,000 or 1,000,000.50", ["3.14", "and", "1,000", "or", "1,000,000.50"]),
    ("$5 for 50%", ["$", "5", "for", "50", "%"]),
    ("£9.99, 10:30, the 1990s, 2000.", ["£", "9.99", ",", "10:30", ",", "the", "1990s",
                                        ",", "2000", "."]),
    ("-5", ["-", "5"]),
])
def test_numbers_currency_percent(text, expected):
    assert toks(text) == expected


def test_html():
    assert toks("Great.<br /><br />Fun &amp; games") == [
        "xxmaj", "great", ".", "xxmaj", "fun", "&", "games"]
    assert toks("a<br>b<BR/>c") == ["a", "b", "c"]
    assert toks("&quot;ok&quot; &#39;fine&#39; a&nbsp;b") == [
        '"', "ok", '"', "'", "fine", "'", "a", "b"]


def test_unk_and_wikitext_markers():
    assert toks("an <unk> word") == ["an", "xxunk", "word"]
    assert toks("well @-@ known , 3 @.@ 5 , 1 @,@ 000") == [
        "well", "-", "known", ",", "3.5", ",", "1,000"]


@pytest.mark.parametrize("text, expected", [
    ("sooooo", ["s", "xxrep", "5", "o"]),
    ("!!!!", ["xxrep", "4", "!"]),
    ("Nooooo!!!", ["n", "xxrep", "5", "o", "xxrep", "3", "!"]),
    ("so...", ["so", "xxrep", "3", "."]),
    ("so…", ["so", "xxrep", "3", "."]),            # the ellipsis character too
    ("!!", ["!", "!"]),                             # two are not a repeat
    ("2000 100000", ["2000", "100000"]),            # digits are never replaced
])
def test_character_repeats(text, expected):
    assert toks(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("very very very good", ["xxwrep", "3", "very", "good"]),
    ("no no no no!", ["xxwrep", "4", "no", "!"]),
    ("VERY VERY VERY", ["xxwrep", "3", "xxup", "very"]),
    ("Very very very", ["xxmaj", "very", "very", "very"]),  # compared case-sensitively
    ("had had", ["had", "had"]),
    (". . . .", [".", ".", ".", "."]),                       # punctuation is not a word
])
def test_word_repeats(text, expected):
    assert toks(text) == expected


def test_urls_and_emails_are_single_tokens():
    assert toks("see http://www.imdb.com/title/tt0111161/?ref=a_b. Or www.example.org!") == [
        "see", "http://www.imdb.com/title/tt0111161/?ref=a_b", ".",
        "xxmaj", "or", "www.example.org", "!"]
    assert toks("mail (john.doe+imdb@yahoo.co.uk), thanks") == [
        "mail", "(", "john.doe+imdb@yahoo.co.uk", ")", ",", "thanks"]


def test_emoji_are_tokens_of_their_own():
    assert toks("great😀😀 👍🏽 ❤️ 🇫🇷") == ["great", "😀", "😀", "👍🏽", "❤️", "🇫🇷"]
    assert toks("😀😀😀") == ["xxrep", "3", "😀"]


def test_non_latin_scripts():
    assert toks("Привет, мир!") == ["xxmaj", "привет", ",", "мир", "!"]
    assert toks("我喜欢这部电影。") == ["我喜欢这部电影", "。"]
    assert toks("مرحبا بالعالم") == ["مرحبا", "بالعالم"]
    assert toks("हिन्दी फ़िल्म") == ["हिन्दी", "फ़िल्म"]  # vowel signs stay in the word


@pytest.mark.parametrize("text", ["", " ", "\n\t\r ", "\xa0\u2003", "<br /><br />"])
def test_empty_and_whitespace_only(text):
    assert tokenize(text) == ["xxbos"]


def test_control_characters():
    assert toks("a\x00b\x07c\x7fd") == ["a", "b", "c", "d"]
    assert toks("zero\u200bwidth\ufeff") == ["zero", "width"]
    # C1 controls are Windows-1252 punctuation decoded as Latin-1
    assert toks("1990\x962000\x85 \x93ok\x94") == ["1990", "–", "2000", "xxrep", "3", ".",
                                                   "“", "ok", "”"]


def test_tokens_are_never_empty_and_never_contain_whitespace():
    rng = random.Random(0)
    alphabet = ("aZ9 .,!?'’\"-/\\@#&<>()_\n\t\x00\x85\xa0\u200b\u200d\u2028\u0301"
                "éßМя中ह्ि😀🏽\ufe0f\U0001F1EB\ud800")
    for _ in range(2000):
        text = "".join(rng.choices(alphabet, k=rng.randrange(30)))
        tokens = tokenize(text)
        assert tokens[0] == "xxbos"
        assert all(t and not any(c.isspace() for c in t) for t in tokens), (text, tokens)


def test_repeated_calls_and_a_cleared_cache_give_the_same_tokens(monkeypatch):
    text = "The movie WAS great, wasn't it? Yes yes yes!!! Great movie."
    first = tokenize(text)
    assert tokenize(text) == first
    monkeypatch.setattr(tokenizer, "_CACHE_SIZE", 2)
    tokenizer._chunk_cache.clear()
    tokenizer._case_cache.clear()
    assert tokenize(text) == first
    assert len(tokenizer._chunk_cache) <= 2
    assert len(tokenizer._case_cache) <= 2


def test_ten_megabyte_string_is_fast():
    rng = random.Random(0)
    syllables = ["ka", "lo", "mi", "tor", "ve", "sun", "Dra", "PE", "qu", "x"]
    words = ["".join(rng.choices(syllables, k=rng.randrange(1, 4))) for _ in range(20000)]
    words += [",", ".", "<br /><br />", "don't", "!!!", "3.5", "(", ")"] * 500
    text = " ".join(rng.choices(words, k=2_000_000))[:10_000_000]
    start = time.perf_counter()
    tokens = tokenize(text)
    elapsed = time.perf_counter() - start
    assert elapsed < 10, f"10 MB took {elapsed:.1f} s"
    assert 1_500_000 < len(tokens) < 5_000_000


def test_tokenize_rejects_non_str():
    with pytest.raises(TypeError, match="text is bytes, expected str"):
        tokenize(b"hello")


def test_tokenize_many_matches_tokenize_in_order():
    texts = ["First one.", "", "SECOND!!!", "third third third"]
    assert tokenize_many(texts) == [tokenize(t) for t in texts]
    assert tokenize_many(iter(texts)) == [tokenize(t) for t in texts]
    assert tokenize_many([]) == []


@pytest.mark.parametrize("bad, position, message", [
    ([None], 0, "texts[0] is NoneType (None), expected str"),
    (["ok", "ok", "ok", float("nan")], 3, "texts[3] is float (nan), expected str"),
    (["ok", b"abc"], 1, "texts[1] is bytes (b'abc'), expected str"),
    (["ok", 5], 1, "texts[1] is int (5), expected str"),
])
def test_tokenize_many_names_the_position_of_a_non_str(bad, position, message):
    with pytest.raises(TypeError) as info:
        tokenize_many(bad)
    assert str(info.value) == message


class SpyParallel(joblib.Parallel):
    calls = 0

    def __call__(self, iterable):
        SpyParallel.calls += 1
        return super().__call__(iterable)


@pytest.fixture
def spy_parallel(monkeypatch):
    SpyParallel.calls = 0
    monkeypatch.setattr(tokenizer, "Parallel", SpyParallel)
    return SpyParallel


def test_parallel_output_is_identical(monkeypatch, spy_parallel):
    rng = random.Random(1)
    vocab = ["Good", "movie", "BAD", "don't", "sooo", "!!!", "<br />", "3.5%", "😀", "é", ","]
    texts = [" ".join(rng.choices(vocab, k=rng.randrange(0, 40))) for _ in range(300)]
    monkeypatch.setattr(tokenizer, "PARALLEL_MIN_TEXTS", 100)
    assert tokenize_many(texts, n_jobs=2) == tokenize_many(texts, n_jobs=1)
    assert spy_parallel.calls == 1


def test_small_input_is_not_parallelized(spy_parallel):
    assert tokenize_many(["a", "b"], n_jobs=-1) == [["xxbos", "a"], ["xxbos", "b"]]
    assert spy_parallel.calls == 0


def test_invalid_n_jobs():
    with pytest.raises(ValueError):
        tokenize_many(["a"], n_jobs=0)
