"""Are the encoder's features or the way the head is trained the limit? A diagnostic on validation data.

For one label sample it fits ULMFiTClassifier three ways: the pretrained encoder untouched
(``lm_epochs=0, epochs=0``), the language model fine-tuned but no classifier training
(``epochs=0``) and the default. Each time a standardized logistic regression (C by cross-validation
on the sample) is trained on the concat-pooled features of ``transform``; the default fit's own head
is scored too. If the linear probe on untouched features scores as the fine-tuned head does, the
features are what limits accuracy, not the fine-tuning recipe. Each record also scores the probe
on each third of the concat pooling alone (``pooling_accuracy``: the last hidden state, the max,
the mean, over both directions where there are two): on long documents, does one of them keep the
few sentences that carry the label? Once per sample, TF-IDF + logistic regression (the accuracy
benchmark's baseline) is scored on the same texts (``tfidf_accuracy``). Validation splits as
``tune_defaults``' (``benchmarks.common.tuning_split``); one JSON record per fit appended to ``--out``.

    python -m benchmarks.accuracy.linear_probe --data ../shared/data --dataset imdb --labels 100 --seeds 0 1 2
    python -m benchmarks.accuracy.linear_probe --data ../shared/data --dataset imdb --labels 100 500 \
        --variants pretrained-features --pretrained wiki-en-sub
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks.common import tfidf_lr, tuning_split
from skulmfit import ULMFiTClassifier
from skulmfit.environment import machine_description

VARIANTS = {"pretrained-features": {"lm_epochs": 0, "epochs": 0}, "lm-fine-tuned-features": {"epochs": 0},
            "default": {}}
POOLINGS = ("last", "max", "mean")  # the order of the thirds of each direction's concat pooling


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--dataset", default="imdb", choices=["sst2", "trec", "imdb"])
    parser.add_argument("--labels", nargs="+", type=int, default=[100])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--pretrained", default="wiki-en-sub")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "linear_probe.jsonl")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # LogisticRegressionCV's transition notices
    X, y, X_valid, y_valid = tuning_split(args.data, args.dataset)
    for n_labels in args.labels:
        for seed in args.seeds:
            sample, _ = train_test_split(np.arange(len(y)), train_size=n_labels, stratify=y, random_state=seed)
            X_sample, y_sample = [X[i] for i in sample], y[sample]
            tfidf = float(np.mean(tfidf_lr(seed, n_labels).fit(X_sample, y_sample).predict(X_valid) == y_valid))
            for variant in args.variants:
                params = VARIANTS[variant]
                start = time.perf_counter()
                model = ULMFiTClassifier(args.pretrained, random_state=seed, **params).fit(X_sample, y_sample)
                train_features, valid_features = model.transform(X_sample), model.transform(X_valid)
                record = {"dataset": args.dataset, "labels": n_labels, "seed": seed, "variant": variant,
                          "pretrained": args.pretrained,
                          "probe_accuracy": probe_accuracy(train_features, y_sample, valid_features, y_valid),
                          "pooling_accuracy": {
                              pooling: probe_accuracy(train_features[:, columns], y_sample, valid_features[:, columns],
                                                      y_valid)
                              for pooling, columns in pooling_columns(train_features.shape[1], model).items()},
                          "head_accuracy": (float(np.mean(model.predict(X_valid) == y_valid))
                                            if params.get("epochs") != 0 else None),
                          "tfidf_accuracy": tfidf,
                          "seconds": round(time.perf_counter() - start, 1), "machine": machine_description()}
                with open(args.out, "a") as f:
                    f.write(json.dumps(record) + "\n")
                print(json.dumps({k: record[k] for k in ("labels", "seed", "variant", "probe_accuracy", "pooling_accuracy",
                                                          "head_accuracy", "tfidf_accuracy")}), flush=True)


def probe_accuracy(train_features: np.ndarray, y_train: np.ndarray, valid_features: np.ndarray,
                   y_valid: np.ndarray) -> float:
    """Validation accuracy of a standardized logistic regression, C by cross-validation on the sample."""
    probe = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=10, max_iter=5000))
    return float(np.mean(probe.fit(train_features, y_train).predict(valid_features) == y_valid))


def pooling_columns(width: int, model: ULMFiTClassifier) -> dict[str, np.ndarray]:
    """The columns of ``transform``'s output that each pooling fills, across the model's directions."""
    per_direction = width // len(model.models_)
    third = per_direction // len(POOLINGS)
    return {pooling: np.concatenate([np.arange(d * per_direction + k * third, d * per_direction + (k + 1) * third)
                                     for d in range(len(model.models_))])
            for k, pooling in enumerate(POOLINGS)}


if __name__ == "__main__":
    main()
