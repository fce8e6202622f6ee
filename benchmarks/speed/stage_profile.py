"""Where a default ``fit`` spends its time, stage by stage, on labelled texts of one dataset.

Each run is a fresh process that fits ``ULMFiTClassifier`` on ``--labels`` training texts and
predicts ``--predict`` held-out ones (training texts outside every sample, or SST-2's dev split:
validation data, never a test set), and reports:

- tokenizing the labelled texts (timed apart, with a fresh tokenizer, as ``fit`` does first);
- language-model fine-tuning of each direction (``lm_history_``);
- each gradual-unfreezing stage of the classifier of each direction (``history_``'s seconds);
- the rest of ``fit``: its own tokenizing, loading the weights, vocabularies, the second process's start;
- ``predict`` on the held-out texts, and its accuracy.

Configurations ``DIRECTIONS:THREADS``: ``forward:1`` (the forward model on one thread), ``forward:2``,
``both:1`` (the two directions one after the other on one thread) and ``both:2`` (two processes,
one thread each: the default on two cores). ``--precision`` ``fp32`` and ``bf16`` where the CPU
computes it. ``--settings`` adds parameter settings (JSON) to compare side by side, ``--minilm`` the
baseline all-MiniLM-L6-v2 embeddings + logistic regression (C tuned by 5-fold CV) on the same texts:
encode, tune, predict; ``--tfidf`` TF-IDF + logistic regression the same way. Runs alternate
between settings, repeat ``--repeats`` times; the JSON keeps every run and the markdown table the
medians.

    python -m benchmarks.speed.stage_profile --data ../shared/data --dataset imdb --labels 500 \\
        --configs forward:1 both:2 --settings '{}' '{"epochs": 19, "lm_epochs": 2}' --minilm --repeats 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import label_subset, tuning_split

RESULTS = Path(__file__).parent / "results"


def profile_fit(data: Path, dataset: str, labels: int, n_predict: int, config: str, precision: str,
                setting: dict, seed: int, pretrained: str | None = None) -> dict:
    """One fit and predict in this process; the record of where their time went."""
    import torch

    from skulmfit import ULMFiTClassifier
    from skulmfit.environment import machine_description
    from skulmfit.pretrained import DEFAULT_MODEL, resolve_pretrained
    pretrained = pretrained or DEFAULT_MODEL
    from skulmfit.text import Tokenizer

    directions, threads = config.split(":")
    torch.set_num_threads(int(threads))
    X, y, X_valid, y_valid = tuning_split(data, dataset)
    sample = label_subset(y, labels, seed)
    texts, targets = [X[i] for i in sample], y[sample]
    held_out, held_out_y = X_valid[:n_predict], y_valid[:n_predict]

    tokenizer = Tokenizer.from_dict(resolve_pretrained(pretrained, False).tokenizer.to_dict())  # cold cache
    started = time.perf_counter()
    tokens = tokenizer.tokenize_many(texts)
    tokenize_seconds = time.perf_counter() - started

    # both:2 is the default on two cores: fit gives each direction's process one of the two threads
    params = {"pretrained": pretrained, "random_state": seed, "precision": precision,
              "bidirectional": directions == "both", "n_jobs": 2 if directions == "both" and threads == "2" else 1,
              **setting}
    model = ULMFiTClassifier(**params)
    started = time.perf_counter()
    model.fit(texts, targets)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    predicted = model.predict(held_out)
    predict_seconds = time.perf_counter() - started

    per_direction = []
    for name, history, lm_record in zip(("forward", "backward"), model.history_, model.lm_history_):
        stages: dict[int, float] = {}
        for record in history:
            stages[record["trainable_groups"]] = stages.get(record["trainable_groups"], 0.0) + record["seconds"]
        per_direction.append({"direction": name, "lm_fine_tuning": lm_record["seconds"],
                              "classifier_stages": {f"{groups} groups": round(s, 2) for groups, s in stages.items()},
                              "classifier": round(sum(stages.values()), 2),
                              "classifier_epochs": len(history)})
    busy = [d["lm_fine_tuning"] + d["classifier"] for d in per_direction]
    in_stages = max(busy) if params["n_jobs"] == 2 else sum(busy)  # wall time inside the timed stages
    return {"dataset": dataset, "labels": labels, "seed": seed, "config": config, "pretrained": str(pretrained),
            "precision": model.precision_,
            "setting": setting, "epochs": model.epochs_,
            "tokens": {"total": int(sum(len(t) for t in tokens)), "mean": float(np.mean([len(t) for t in tokens]))},
            "seconds": {"tokenize": round(tokenize_seconds, 2), "fit": round(fit_seconds, 2),
                        "rest_of_fit": round(fit_seconds - in_stages, 2),
                        "predict": round(predict_seconds, 2)},
            "directions": per_direction, "predicted": len(held_out),
            "accuracy": float(np.mean(predicted == held_out_y)), "machine": machine_description()}


BASELINES = ("minilm-lr", "tfidf-lr")


def profile_baseline(data: Path, dataset: str, labels: int, n_predict: int, seed: int, config: str) -> dict:
    """A baseline on the same texts, fit (C tuned by cross-validation) and predict: ``minilm-lr``,
    all-MiniLM-L6-v2 embeddings + logistic regression (encoding included), or ``tfidf-lr``, word and
    character n-gram TF-IDF + logistic regression."""
    from benchmarks.common import MiniLMLogisticRegression, tfidf_lr
    from skulmfit.environment import machine_description
    X, y, X_valid, y_valid = tuning_split(data, dataset)
    sample = label_subset(y, labels, seed)
    model = MiniLMLogisticRegression(cv=5) if config == "minilm-lr" else tfidf_lr(seed, labels)
    started = time.perf_counter()
    model.fit([X[i] for i in sample], y[sample])
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    predicted = model.predict(X_valid[:n_predict])
    predict_seconds = time.perf_counter() - started
    return {"dataset": dataset, "labels": labels, "seed": seed, "config": config, "setting": {},
            "seconds": {"fit": round(fit_seconds, 2), "predict": round(predict_seconds, 2)},
            "predicted": n_predict, "accuracy": float(np.mean(predicted == y_valid[:n_predict])),
            "machine": machine_description()}


def in_fresh_process(data: Path, run: dict) -> dict:
    """``run`` in a new Python process (nothing warmed by an earlier run); its record."""
    command = [sys.executable, "-m", "benchmarks.speed.stage_profile", "--data", str(data), "--one", json.dumps(run)]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True, env=env).stdout  # errors show
    return json.loads(output.strip().splitlines()[-1])


def table(records: list[dict]) -> str:
    """Markdown: median seconds of each stage per (config, precision, setting)."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        key = (r["dataset"], r["labels"], r["config"], r.get("precision", "-"), json.dumps(r["setting"], sort_keys=True))
        groups.setdefault(key, []).append(r)
    lines = ["| data | labels | config | precision | setting | runs | tokenize | LM (fwd / bwd) | classifier (fwd / bwd) "
             "| fit | predict | accuracy |", "|" + "---|" * 12]
    for (dataset, labels, config, precision, setting), runs in groups.items():
        def median(get):
            return statistics.median(get(r) for r in runs)
        fit, predict = median(lambda r: r["seconds"]["fit"]), median(lambda r: r["seconds"]["predict"])
        accuracy = statistics.mean(r["accuracy"] for r in runs)
        if config in BASELINES:
            lines.append(f"| {dataset} | {labels} | {config} | - | - | {len(runs)} | - | - | - | {fit:.1f} | "
                         f"{predict:.1f} | {accuracy:.3f} |")
            continue
        n = len(runs[0]["directions"])
        lm = " / ".join(f"{median(lambda r: r['directions'][i]['lm_fine_tuning']):.1f}" for i in range(n))
        clf = " / ".join(f"{median(lambda r: r['directions'][i]['classifier']):.1f}" for i in range(n))
        tokenize = median(lambda r: r["seconds"]["tokenize"])
        lines.append(f"| {dataset} | {labels} | {config} | {precision} | `{setting}` | {len(runs)} | {tokenize:.1f} | "
                     f"{lm} | {clf} | {fit:.1f} | {predict:.1f} | {accuracy:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with trec/, sst2/, imdb/ (and reuters/ for news)")
    parser.add_argument("--dataset", default="imdb", choices=["imdb", "sst2", "trec", "news"],
                        help="news: Reuters-21578 training articles of 300 words or more, labelled with their first topic")
    parser.add_argument("--labels", type=int, default=500)
    parser.add_argument("--predict", type=int, default=500, help="held-out texts to predict")
    parser.add_argument("--configs", nargs="*", default=["forward:1", "forward:2", "both:1", "both:2"],
                        choices=["forward:1", "forward:2", "both:1", "both:2"],
                        help="none (--configs alone) runs only the baselines asked for")
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    parser.add_argument("--settings", nargs="+", default=["{}"], help="JSON objects of ULMFiTClassifier parameters")
    parser.add_argument("--minilm", action="store_true", help="also time all-MiniLM-L6-v2 + LR (the distill extra)")
    parser.add_argument("--tfidf", action="store_true", help="also time TF-IDF + LR")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrained", help="another language model than the default (a name or weight file)")
    parser.add_argument("--out", type=Path, default=RESULTS / "stage_profile.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a single run, in this process (used by the runner)
    args = parser.parse_args(argv)
    if args.one:
        run = json.loads(args.one)
        if run["config"] in BASELINES:
            print(json.dumps(profile_baseline(args.data, run["dataset"], run["labels"], run["predict"], run["seed"],
                                              run["config"])))
        else:
            print(json.dumps(profile_fit(args.data, run["dataset"], run["labels"], run["predict"], run["config"],
                                         run["precision"], run["setting"], run["seed"], run.get("pretrained"))))
        return
    from skulmfit.training import cpu_computes_bf16
    if "bf16" in args.precision and not cpu_computes_bf16():
        raise SystemExit("--precision bf16: this CPU has neither AVX512-BF16 nor AMX; profile fp32 only")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    base = {"dataset": args.dataset, "labels": args.labels, "predict": args.predict, "seed": args.seed,
            "pretrained": args.pretrained}
    runs = [{**base, "config": c, "precision": p, "setting": json.loads(s)}
            for c in args.configs for p in args.precision for s in args.settings]
    runs.extend({**base, "config": config, "setting": {}}
                for config, wanted in zip(BASELINES, (args.minilm, args.tfidf)) if wanted)
    records = []
    for repeat in range(args.repeats):
        for run in runs:  # alternating, so that a slow spell of the machine does not favour one run
            record = {**in_fresh_process(args.data, run), "repeat": repeat}
            records.append(record)
            print(json.dumps({k: record[k] for k in ("config", "setting", "seconds", "accuracy")}), flush=True)
            args.out.write_text(json.dumps(records, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(table(records))
    print(table(records))


if __name__ == "__main__":
    main()
