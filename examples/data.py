"""Data for the examples: any CSV with ``text,label`` columns, or scikit-learn's 20 Newsgroups.

20 Newsgroups is downloaded by scikit-learn on first use and cached in ``~/scikit_learn_data``.
"""
from __future__ import annotations

import argparse
import csv
import gzip

from sklearn.model_selection import train_test_split

NEWSGROUPS = ["comp.graphics", "rec.autos", "sci.med", "talk.politics.guns"]


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--csv", help="CSV (or .csv.gz) with text,label columns; default: 20 Newsgroups")
    parser.add_argument("--test-csv", help="separate test CSV; default: a stratified 25%% split of --csv")
    parser.add_argument("--max-train", type=int, default=2000, help="use at most this many training texts")


def read_csv(path: str) -> tuple[list[str], list[str]]:
    opener = gzip.open if path.endswith(".gz") else open
    csv.field_size_limit(2**31 - 1)
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"text", "label"} <= set(rows[0]):
        raise SystemExit(f"{path} needs a header with 'text' and 'label' columns")
    return [r["text"] for r in rows], [r["label"] for r in rows]


def load(args: argparse.Namespace):
    """``(train_texts, train_labels, test_texts, test_labels)``."""
    if args.csv:
        texts, labels = read_csv(args.csv)
        if args.test_csv:
            test_texts, test_labels = read_csv(args.test_csv)
        else:
            texts, test_texts, labels, test_labels = train_test_split(
                texts, labels, test_size=0.25, stratify=labels, random_state=0)
    else:
        from sklearn.datasets import fetch_20newsgroups
        parts = {subset: fetch_20newsgroups(subset=subset, categories=NEWSGROUPS,
                                            remove=("headers", "footers", "quotes"))
                 for subset in ("train", "test")}
        names = parts["train"].target_names
        texts, labels = parts["train"].data, [names[i] for i in parts["train"].target]
        test_texts, test_labels = parts["test"].data, [names[i] for i in parts["test"].target]
    if len(texts) > args.max_train:
        texts, _, labels, _ = train_test_split(texts, labels, train_size=args.max_train, stratify=labels,
                                               random_state=0)
    return texts, labels, test_texts, test_labels
