"""Are the encoder's features or the way the head is trained the limit? A diagnostic on validation data.

For one label sample it fits ULMFiTClassifier three ways: the pretrained encoder untouched
(``lm_epochs=0, epochs=0``), the language model fine-tuned but no classifier training
(``epochs=0``) and the default. Each time a standardized logistic regression (C by cross-validation
on the sample) is trained on the concat-pooled features of ``transform``; the default fit's own head
is scored too. If the linear probe on untouched features scores as the fine-tuned head does, the
features are what limits accuracy, not the fine-tuning recipe. Validation splits as
``tune_defaults``' (``benchmarks.common.tuning_split``); one JSON record per fit appended to ``--out``.

    python -m benchmarks.accuracy.linear_probe --data ../shared/data --dataset imdb --labels 100 --seeds 0 1 2
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

from benchmarks.common import tuning_split
from skulmfit import ULMFiTClassifier
from skulmfit.environment import machine_description

VARIANTS = {"pretrained-features": {"lm_epochs": 0, "epochs": 0}, "lm-fine-tuned-features": {"epochs": 0},
            "default": {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--dataset", default="imdb", choices=["sst2", "trec", "imdb"])
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--pretrained", default="wiki-en-sub")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "linear_probe.jsonl")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # LogisticRegressionCV's transition notices
    X, y, X_valid, y_valid = tuning_split(args.data, args.dataset)
    for seed in args.seeds:
        sample, _ = train_test_split(np.arange(len(y)), train_size=args.labels, stratify=y, random_state=seed)
        X_sample, y_sample = [X[i] for i in sample], y[sample]
        for variant, params in VARIANTS.items():
            start = time.perf_counter()
            model = ULMFiTClassifier(args.pretrained, random_state=seed, **params).fit(X_sample, y_sample)
            probe = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=10, max_iter=5000))
            probe.fit(model.transform(X_sample), y_sample)
            record = {"dataset": args.dataset, "labels": args.labels, "seed": seed, "variant": variant,
                      "pretrained": args.pretrained,
                      "probe_accuracy": float(np.mean(probe.predict(model.transform(X_valid)) == y_valid)),
                      "head_accuracy": (float(np.mean(model.predict(X_valid) == y_valid))
                                        if params.get("epochs") != 0 else None),
                      "seconds": round(time.perf_counter() - start, 1), "machine": machine_description()}
            with open(args.out, "a") as f:
                f.write(json.dumps(record) + "\n")
            print(json.dumps({k: record[k] for k in ("seed", "variant", "probe_accuracy", "head_accuracy")}),
                  flush=True)


if __name__ == "__main__":
    main()
