"""Choose ULMFiTClassifier's defaults on validation data, never on the test sets.

Each run fits one parameter setting on a stratified sample of ``--labels`` training texts and
scores it on validation texts: SST-2's official dev split, and for TREC-6 and IMDb (no dev
split) 1,000 and 2,000 training texts outside every sample. With ``--unlabeled N`` each fit also gets N
other training texts of the pool (outside its sample, never a validation text) as ``unlabeled``, to
tune the semi-supervised path. One JSON record per run goes to ``--out``; the summary prints the mean
validation accuracy per setting and dataset.

    python benchmarks/tune_defaults.py --data ../shared/data --datasets sst2 trec --seeds 0 1 \\
        --settings '{}' '{"lr": 0.02}' '{"drop_mult": 0.2}'
    python benchmarks/tune_defaults.py --data ../shared/data --datasets sst2 --labels 500 --unlabeled 5000 \\
        --settings '{"lm_epochs": 2}' '{"lm_epochs": 6}'

``--engine NAME=VALUE`` fits with another value of one of ``skulmfit.engine``'s constants that are no
parameters (``LM_SAMPLED_SOFTMAX=0``, ``LM_DROP_SCALE=0.6``), to compare such a choice; records keep it.
The classifier is then a subclass whose ``lm_engine_choices`` name the value (the field of
``skulmfit.engine.LMFineTuning`` the constant is the default of); the constant itself is never changed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

import skulmfit.engine
from accuracy import read_csv  # same folder
from skulmfit import ULMFiTClassifier
from skulmfit.environment import machine_description
from skulmfit.pretrained import resolve

HELD_OUT = {"trec": ("trec/train.csv", 1000), "imdb": ("imdb/train.csv.gz", 2000)}  # training texts kept for validation


def tuning_split(data: Path, dataset: str) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """(training pool, labels, validation texts, labels); the test sets stay untouched."""
    if dataset == "sst2":
        X, y = read_csv(data / "sst2" / "train.csv")
        X_valid, y_valid = read_csv(data / "sst2" / "dev.csv")
        return X, y, X_valid, y_valid
    path, n_valid = HELD_OUT[dataset]
    X, y = read_csv(data / path)
    pool, valid = train_test_split(np.arange(len(y)), test_size=n_valid, stratify=y, random_state=12345)
    return [X[i] for i in pool], y[pool], [X[i] for i in valid], y[valid]


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
                lm = resolve(model.pretrained).card
                record = {"dataset": dataset, "labels": args.labels, "unlabeled": len(extra) if args.unlabeled else 0,
                          "seed": seed, "setting": {**setting, **engine}, "tag": args.tag,
                          "pretrained": {"source": str(model.pretrained), "tokens_seen": lm.get("tokens_seen")},
                          "valid_accuracy": float(np.mean(model.predict(X_valid) == y_valid)),
                          "seconds": round(time.perf_counter() - start, 1), "machine": machine}
                with open(args.out, "a") as f:
                    f.write(json.dumps(record) + "\n")
                print(json.dumps({k: record[k] for k in ("dataset", "seed", "setting", "valid_accuracy", "seconds")}),
                      flush=True)
    summarize(args.out)


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
    """``ULMFiTClassifier``, or a subclass that fine-tunes language models with the constants' values in
    ``engine`` (from :func:`engine_settings`) in place of their defaults."""
    if not engine:
        return ULMFiTClassifier
    fields = _engine_constants()
    choices = {fields[name]: value for name, value in engine.items()}
    return type("EngineArm", (ULMFiTClassifier,), {"lm_engine_choices": choices, "__module__": __name__})


def _engine_constants() -> dict[str, str]:
    """``{constant of skulmfit.engine: the field of LMFineTuning it is the default of}``."""
    defaults = {f.name: f.default for f in dataclasses.fields(skulmfit.engine.LMFineTuning)
                if f.default is not dataclasses.MISSING}
    return {f"LM_{name.upper()}": name for name, default in defaults.items()
            if getattr(skulmfit.engine, f"LM_{name.upper()}", None) == default}


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
