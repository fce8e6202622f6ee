"""Accuracy of skulmfit and baselines on real data, at several label budgets and seeds.

Every method sees identical splits and identical sampled label subsets (a stratified sample
of ``budget`` training texts drawn with the seed). One JSON record per run is appended to
``--out`` (dataset, method, budget, seed, accuracy, seconds, machine, versions, parameters)
and a markdown table of means over seeds (of every record in that file) is written next to it.

    python benchmarks/accuracy.py --data ../shared/data --datasets trec sst2 \\
        --methods skulmfit no-pretraining tfidf-lr --budgets 100 500 --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import FeatureUnion, make_pipeline

import skulmfit
from skulmfit import ULMFiTClassifier
from skulmfit.pretrain import machine_description

DATASETS = {  # name: (train file, test file) inside --data
    "trec": ("trec/train.csv", "trec/test.csv"),
    "sst2": ("sst2/train.csv", "sst2/test.csv"),
    "imdb": ("imdb/train.csv.gz", "imdb/test.csv.gz"),
}


def tfidf_lr(seed: int, n_labels: int):
    """Word 1-2-gram + character 2-5-gram TF-IDF and logistic regression, C tuned by 3-fold CV."""
    features = FeatureUnion([
        ("words", TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1)),
        ("chars", TfidfVectorizer(sublinear_tf=True, analyzer="char_wb", ngram_range=(2, 5), min_df=2)),
    ])
    model = make_pipeline(features, LogisticRegression(max_iter=3000))
    return GridSearchCV(model, {"logisticregression__C": [1, 10, 100]}, cv=3 if n_labels >= 30 else 2)


METHODS = {
    "skulmfit": lambda seed, n: ULMFiTClassifier(random_state=seed),
    "no-pretraining": lambda seed, n: ULMFiTClassifier(pretrained=None, random_state=seed),
    "no-lm-finetuning": lambda seed, n: ULMFiTClassifier(lm_epochs=0, random_state=seed),
    "bidirectional": lambda seed, n: ULMFiTClassifier(bidirectional=True, random_state=seed),
    "tfidf-lr": tfidf_lr,
}


def read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    opener = gzip.open if path.suffix == ".gz" else open
    csv.field_size_limit(2**31 - 1)
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], np.array([r["label"] for r in rows])


def label_subset(y: np.ndarray, budget: int | None, seed: int) -> np.ndarray:
    indices = np.arange(len(y))
    if budget is None or budget >= len(y):
        return indices
    return train_test_split(indices, train_size=budget, stratify=y, random_state=seed)[0]


def run(args) -> list[dict]:
    records = []
    machine = machine_description()
    for dataset in args.datasets:
        train_file, test_file = DATASETS[dataset]
        X_train, y_train = read_csv(args.data / train_file)
        X_test, y_test = read_csv(args.data / test_file)
        if args.max_test and len(X_test) > args.max_test:
            keep = label_subset(y_test, args.max_test, 0)
            X_test, y_test = [X_test[i] for i in keep], y_test[keep]
        for budget in args.budgets:
            n_labels = None if budget == "all" else int(budget)
            seeds = [0] if n_labels is None else args.seeds
            for seed in seeds:
                subset = label_subset(y_train, n_labels, seed)
                X_sub, y_sub = [X_train[i] for i in subset], y_train[subset]
                for method in args.methods:
                    model = METHODS[method](seed, len(subset))
                    start = time.perf_counter()
                    model.fit(X_sub, y_sub)
                    fit_seconds = time.perf_counter() - start
                    accuracy = float(np.mean(model.predict(X_test) == y_test))
                    record = {"dataset": dataset, "method": method, "budget": budget, "labels": len(subset),
                              "seed": seed, "accuracy": accuracy, "fit_seconds": round(fit_seconds, 1),
                              "seconds": round(time.perf_counter() - start, 1), "test_size": len(y_test),
                              "params": {k: str(v) for k, v in model.get_params(deep=False).items()},
                              "machine": machine, "skulmfit": skulmfit.__version__}
                    records.append(record)
                    with open(args.out, "a") as f:
                        f.write(json.dumps(record) + "\n")
                    print(f"{dataset} {method} budget={budget} seed={seed}: accuracy {accuracy:.4f} "
                          f"({fit_seconds:.0f} s)", flush=True)
    return records


def write_table(records: list[dict], path: Path) -> None:
    groups = defaultdict(list)
    for r in records:
        groups[(r["dataset"], r["budget"], r["method"])].append(r["accuracy"])
    lines = ["| dataset | labels | method | accuracy (mean over seeds) | std | seeds |", "|---|---|---|---|---|---|"]
    for (dataset, budget, method), accs in sorted(groups.items(), key=lambda kv: (kv[0][0], str(kv[0][1]), kv[0][2])):
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        lines.append(f"| {dataset} | {budget} | {method} | {statistics.mean(accs):.4f} | {std:.4f} | {len(accs)} |")
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with trec/, sst2/, imdb/")
    parser.add_argument("--datasets", nargs="+", default=["trec", "sst2"], choices=list(DATASETS))
    parser.add_argument("--methods", nargs="+", default=["skulmfit", "no-pretraining", "tfidf-lr"],
                        choices=list(METHODS))
    parser.add_argument("--budgets", nargs="+", default=["100", "500"], help="label budgets, or 'all'")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--max-test", type=int, default=0, help="stratified test sample size (0 = whole test set)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "accuracy.jsonl")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    run(args)
    # The table covers every record in --out, so runs made in several sittings add up.
    records = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    write_table(records, args.out.with_suffix(".md"))


if __name__ == "__main__":
    main()
