"""Choose ULMFiTClassifier's defaults on validation data, never on the test sets.

Each run fits one parameter setting on a stratified sample of ``--labels`` training texts and
scores it on validation texts: SST-2's official dev split, and for TREC-6 and IMDb (no dev
split) 1,000 and 2,000 training texts outside every sample. With ``--unlabeled N`` each fit also gets N
other training texts of the pool (outside its sample, never a validation text) as ``unlabeled``, to
tune the semi-supervised path. One JSON record per run goes to ``--out``; the summary prints the mean
validation accuracy per setting and dataset.

    python -m benchmarks.accuracy.tune_defaults --data ../shared/data --datasets sst2 trec --seeds 0 1 \\
        --settings '{}' '{"lr": 0.02}' '{"drop_mult": 0.2}'
    python -m benchmarks.accuracy.tune_defaults --data ../shared/data --datasets sst2 --labels 500 --unlabeled 5000 \\
        --settings '{"lm_epochs": 2}' '{"lm_epochs": 6}'

``--engine NAME=VALUE`` fits with another value of one of ``skulmfit.engine``'s constants that are no
parameters (``LM_SAMPLED_SOFTMAX=0``, ``LM_DROP_SCALE=0.6``, ``HEAD_WARMUP_EPOCHS=20``), to compare such a
choice; records keep it. The classifier is then a subclass (``benchmarks.common.engine_classifier``)
whose ``lm_engine_choices`` / ``head_engine_choices`` name the value (the field of
``skulmfit.engine.LMFineTuning`` / ``HeadTraining`` the constant is the default of); the constant
itself is never changed.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from benchmarks.common import engine_classifier, engine_settings, tuning_split
from skulmfit.environment import machine_description
from skulmfit.pretrained import resolve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--datasets", nargs="+", default=["sst2", "trec"], choices=["sst2", "trec", "imdb"])
    parser.add_argument("--labels", type=int, default=500)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--unlabeled", type=int, default=0,
                        help="other training texts of the pool given to fit as unlabeled (a seeded sample)")
    parser.add_argument("--settings", nargs="+", default=["{}"], help="JSON objects of ULMFiTClassifier parameters")
    parser.add_argument("--pretrained", help="a fixed copy of the weights (pretraining may be rewriting the bundled ones)")
    parser.add_argument("--tag", help="a name for the runs' pretrained model or variant, shown in the summary")
    parser.add_argument("--engine", nargs="+", default=[], metavar="NAME=VALUE",
                        help="values of skulmfit.engine's constants for these runs (JSON values)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "tune_defaults.jsonl")
    args = parser.parse_args()
    engine = engine_settings(args.engine)
    classifier = engine_classifier(engine)
    machine = machine_description()
    for dataset in args.datasets:
        X, y, X_valid, y_valid = tuning_split(args.data, dataset)
        for seed in args.seeds:
            sample, rest = train_test_split(np.arange(len(y)), train_size=args.labels, stratify=y, random_state=seed)
            extra = np.random.default_rng(seed).permutation(rest)[:args.unlabeled]
            unlabeled = [X[i] for i in extra] if args.unlabeled else None
            for setting in map(json.loads, args.settings):
                start = time.perf_counter()
                fixed = {"pretrained": args.pretrained} if args.pretrained else {}
                model = classifier(random_state=seed, **fixed, **setting)
                model.fit([X[i] for i in sample], y[sample], unlabeled=unlabeled)
                fit_seconds = time.perf_counter() - start
                lm = resolve(model.pretrained).card
                record = {"dataset": dataset, "labels": args.labels, "unlabeled": len(extra) if args.unlabeled else 0,
                          "seed": seed, "setting": {**setting, **engine}, "tag": args.tag,
                          "pretrained": {"source": str(model.pretrained), "tokens_seen": lm.get("tokens_seen")},
                          "valid_accuracy": float(np.mean(model.predict(X_valid) == y_valid)),
                          "fit_seconds": round(fit_seconds, 1), "seconds": round(time.perf_counter() - start, 1),
                          "machine": machine}
                with open(args.out, "a") as f:
                    f.write(json.dumps(record) + "\n")
                print(json.dumps({k: record[k] for k in ("dataset", "seed", "setting", "valid_accuracy", "fit_seconds",
                                                      "seconds")}),
                      flush=True)
    summarize(args.out)


def summarize(path: Path) -> None:
    scores = defaultdict(list)
    for line in path.read_text().splitlines():
        r = json.loads(line)
        key = (r["dataset"], r["labels"], r.get("unlabeled", 0), r.get("tag") or "", json.dumps(r["setting"], sort_keys=True))
        scores[key].append(r["valid_accuracy"])
    for (dataset, labels, unlabeled, tag, setting), accs in sorted(scores.items()):
        extra = f" +{unlabeled} unlabeled" if unlabeled else ""
        print(f"{dataset} {labels}{extra} {tag} {setting}: {statistics.mean(accs):.4f} over {len(accs)} seeds")


if __name__ == "__main__":
    main()
