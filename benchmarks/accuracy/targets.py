"""Regression and multi-label benchmarks: ULMFiTRegressor on IMDb star ratings, ULMFiTClassifier on
Reuters-21578 topics, each against a tuned TF-IDF baseline, on identical splits and label samples.

* ``ratings``: IMDb reviews with their 1-10 star score (``imdb/train_ratings.csv.gz``,
  ``test_ratings.csv.gz``). A random sample of ``budget`` training reviews per seed; test RMSE and
  Spearman correlation on a stated random sample of the test reviews (``--max-test``, fixed seed).
  Baseline: TF-IDF (word 1-2 grams) + ridge regression, alpha chosen by 3-fold CV on the sample.
* ``reuters``: Reuters-21578 ApteMod (90 topics, ``labels`` space-separated). A random sample of
  ``budget`` training articles (or all 7,769), the whole test split; micro- and macro-F1 over the
  90 labels. Baseline: TF-IDF + one-vs-rest logistic regression, C chosen by 3-fold CV (micro-F1).

One JSON record per run is appended to ``--out``; ``--table`` writes the markdown summary.

    python -m benchmarks.accuracy.targets --data ../shared/data --tasks ratings --budgets 500 2000 --seeds 0 1 2
    python -m benchmarks.accuracy.targets --data ../shared/data --tasks reuters --budgets 1000 all --seeds 0
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import f1_score, mean_squared_error
from sklearn.model_selection import GridSearchCV
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MultiLabelBinarizer

from benchmarks.common import git_commit, read_rows
from skulmfit import ULMFiTClassifier, ULMFiTRegressor
from skulmfit.environment import machine_description
from skulmfit.pretrained import DEFAULT_MODEL

RESULTS = Path(__file__).parent / "results"


def load_ratings(data: Path, max_test: int):
    train = read_rows(data / "imdb" / "train_ratings.csv.gz")
    test = read_rows(data / "imdb" / "test_ratings.csv.gz")
    keep = np.random.default_rng(12345).permutation(len(test))[:max_test] if max_test else np.arange(len(test))
    X, y = [r["text"] for r in train], np.array([float(r["rating"]) for r in train])
    return X, y, [test[i]["text"] for i in keep], np.array([float(test[i]["rating"]) for i in keep]), len(test)


def load_reuters(data: Path):
    train, test = read_rows(data / "reuters" / "train.csv.gz"), read_rows(data / "reuters" / "test.csv.gz")
    binarizer = MultiLabelBinarizer().fit([r["labels"].split() for r in train])
    Y_train = binarizer.transform([r["labels"].split() for r in train])
    Y_test = binarizer.transform([r["labels"].split() for r in test])  # (no test label is new to train)
    return [r["text"] for r in train], Y_train, [r["text"] for r in test], Y_test, len(test)


def make_model(task: str, method: str, seed: int, pretrained: str):
    if method == "skulmfit":
        return (ULMFiTRegressor if task == "ratings" else ULMFiTClassifier)(pretrained, random_state=seed)
    tfidf = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2)
    if task == "ratings":
        return GridSearchCV(make_pipeline(tfidf, Ridge()), {"ridge__alpha": [0.3, 1, 3, 10]}, cv=3,
                            scoring="neg_root_mean_squared_error")
    model = make_pipeline(tfidf, OneVsRestClassifier(LogisticRegression(max_iter=2000)))
    return GridSearchCV(model, {"onevsrestclassifier__estimator__C": [1, 10, 100]}, cv=3, scoring="f1_micro")


def scores(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    if task == "ratings":
        return {"rmse": float(np.sqrt(mean_squared_error(y_true, y_pred))),
                "spearman": float(spearmanr(y_true, y_pred).statistic)}
    return {"micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0))}


def run(args) -> None:
    machine, commit = machine_description(), git_commit()
    for task in args.tasks:
        X, y, X_test, y_test, test_total = (load_ratings(args.data, args.max_test) if task == "ratings"
                                            else load_reuters(args.data))
        for budget in args.budgets:
            for seed in args.seeds if budget != "all" else [0]:
                subset = (np.arange(len(X)) if budget == "all"
                          else np.random.default_rng(seed).permutation(len(X))[:int(budget)])
                for method in args.methods:
                    start = time.perf_counter()
                    model = make_model(task, method, seed, args.pretrained).fit([X[i] for i in subset], y[subset])
                    record = {"task": task, "method": method, "budget": budget, "seed": seed,
                              **scores(task, y_test, model.predict(X_test)),
                              "test": f"{len(X_test)}/{test_total}", "seconds": round(time.perf_counter() - start, 1),
                              "skulmfit_commit": commit, "machine": machine}
                    if method == "skulmfit":
                        record["pretrained"] = args.pretrained
                        record["directions"] = len(model.models_)  # 2: forward and backward (the default)
                    if hasattr(model, "best_params_"):
                        record["cv_choice"] = model.best_params_
                    with open(args.out, "a") as f:
                        f.write(json.dumps(record) + "\n")
                    print(json.dumps({k: record[k] for k in record if k not in ("machine",)}), flush=True)


def table(path: Path) -> str:
    runs = defaultdict(list)
    for line in path.read_text().splitlines():
        r = json.loads(line)
        both = ", both directions" if r.get("directions") == 2 else ""
        method = f"{r['method']} ({r['pretrained']}{both})" if "pretrained" in r else r["method"]
        runs[(r["task"], method, r["budget"], r["test"])].append(r)
    lines = ["| task | method | labels | test texts | metrics (mean ± std over seeds) | runs |", "|---|---|---|---|---|---|"]
    for (task, method, budget, test), group in sorted(runs.items()):
        names = ("rmse", "spearman") if task == "ratings" else ("micro_f1", "macro_f1")
        cells = []
        for name in names:
            values = [r[name] for r in group]
            spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            cells.append(f"{name} {statistics.mean(values):.3f}{spread}")
        lines.append(f"| {task} | {method} | {budget} | {test} | {', '.join(cells)} | {len(group)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--tasks", nargs="+", choices=["ratings", "reuters"], default=["ratings", "reuters"])
    parser.add_argument("--methods", nargs="+", choices=["skulmfit", "tfidf"], default=["skulmfit", "tfidf"])
    parser.add_argument("--budgets", nargs="+", default=["500", "2000"], help="training texts, or 'all'")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--pretrained", default=DEFAULT_MODEL, help="the skulmfit models' language model")
    parser.add_argument("--max-test", type=int, default=5000, help="IMDb test reviews scored (0 = all 25,000)")
    parser.add_argument("--out", type=Path, default=RESULTS / "targets.jsonl")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    if not args.table_only:
        run(args)
    args.out.with_suffix(".md").write_text(table(args.out))
    print(table(args.out))


if __name__ == "__main__":
    main()
