"""Data for the examples: the bundled TREC-6 (offline), any CSV with ``text,label`` columns, or
scikit-learn's 20 Newsgroups (downloaded once into ``~/scikit_learn_data``); and the ``--full``
flag of the grid searches, whose full run differs from the default one only in its sizes.
"""
from __future__ import annotations

import argparse
import csv
import gzip

from sklearn.model_selection import ParameterGrid, train_test_split

NEWSGROUPS = ["comp.graphics", "rec.autos", "sci.med", "talk.politics.guns"]


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=["trec6", "20newsgroups"], default="trec6",
                        help="trec6: bundled with skulmfit, offline (default); 20newsgroups: 4 topics, "
                             "downloaded by scikit-learn on first use; its posts are much longer than "
                             "TREC-6's questions, so fits take many times longer (see --max-train)")
    parser.add_argument("--csv", help="CSV (or .csv.gz) with text,label columns, instead of --dataset")
    parser.add_argument("--test-csv", help="separate test CSV; default: a stratified 25%% split of --csv")
    parser.add_argument("--max-train", type=int, default=None,
                        help="use at most this many training texts (default: all, or the example's own size)")
    parser.add_argument("--max-test", type=int, default=None, help="score on at most this many test texts")


def parse_args_with_full(parser: argparse.ArgumentParser, argv, default_run: dict, full_run: dict):
    """``parser.parse_args(argv)`` with a ``--full`` flag that picks ``full_run`` over ``default_run``.

    A run is a dict of ``max_train`` (the number of training texts, unless --max-train is given),
    ``cv`` (folds), ``grid`` (of GridSearchCV) and ``time`` (how long it takes); all but ``time``
    become attributes of the parsed arguments.
    """
    def describe(run):
        n_candidates = len(ParameterGrid(run["grid"]))
        return f"{run['max_train']} texts, {n_candidates} candidates x {run['cv']} folds, {run['time']}"

    parser.add_argument("--full", action="store_true",
                        help=f"the full run: {describe(full_run)} (default: {describe(default_run)})")
    args = parser.parse_args(argv)
    run = full_run if args.full else default_run
    if args.max_train is None:
        args.max_train = run["max_train"]
    args.cv, args.grid = run["cv"], run["grid"]
    return args


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
    elif args.dataset == "20newsgroups":
        from sklearn.datasets import fetch_20newsgroups
        parts = {subset: fetch_20newsgroups(subset=subset, categories=NEWSGROUPS,
                                            remove=("headers", "footers", "quotes"))
                 for subset in ("train", "test")}
        names = parts["train"].target_names
        texts, labels = parts["train"].data, [names[i] for i in parts["train"].target]
        test_texts, test_labels = parts["test"].data, [names[i] for i in parts["test"].target]
    else:
        from skulmfit.datasets import load_trec6
        texts, labels = load_trec6(subset="train", return_X_y=True)
        test_texts, test_labels = load_trec6(subset="test", return_X_y=True)
    if args.max_train and len(texts) > args.max_train:
        texts, _, labels, _ = train_test_split(texts, labels, train_size=args.max_train, stratify=labels,
                                               random_state=0)
    if args.max_test and len(test_texts) > args.max_test:
        test_texts, test_labels = test_texts[:args.max_test], test_labels[:args.max_test]
    return list(texts), [str(y) for y in labels], list(test_texts), [str(y) for y in test_labels]
