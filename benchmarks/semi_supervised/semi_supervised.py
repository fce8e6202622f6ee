"""Semi-supervised ULMFiT at IMDb scale: a language model fine-tuned once on ~75,000 reviews.

The ULMFiT paper (section 5, Figure 3) fine-tunes the language model on all of IMDb's training
and unlabelled reviews, then trains classifiers on 100 to 25,000 labels. Inside ``fit`` that
stage would run again for every budget and seed; here it runs once, resumable, as
``python -m skulmfit.pretrain --init MODEL --fine-tune``, and every classifier starts from its
weights with ``lm_epochs=0``. Three steps:

    # 1. The corpus: the 50,000 unlabelled reviews and the training reviews (labels unused; never
    #    the test split), shuffled, one per line; 2,000 training reviews held out as validation.
    python -m benchmarks.semi_supervised.semi_supervised corpus --data ../shared/data --out cache/imdb-corpus
    # 2. Fine-tune the Wikipedia-only bundled model on it (40 min on one EPYC core; rerun to resume).
    python -m skulmfit.pretrain cache/imdb-corpus cache/imdb-lm --name imdb-lm --cache cache/imdb-cache \\
        --init wiki-en-sub --fine-tune --epochs 1 --lr 2e-3 --lr-factor 2.6 --drop-mult 0.3 \\
        --sampled-softmax 1024 --bf16 --threads 1 --checkpoint-minutes 8
    #    (the other arms: imdb-lm-2ep, --epochs 2, 74 min; imdb-lm-bs32, --lr 5e-3 --batch-size 32, 32 min,
    #    and its backward model; imdb-lm-bs32-2ep, the same over 2 epochs, 67 min, the best on
    #    validation; benchmarks/semi_supervised/models/README.md has their commands)
    # 3. Validation (held-out training reviews, never the test split): bits per character of each
    #    model on them, and classifiers trained on labelled budgets drawn outside them.
    python -m benchmarks.semi_supervised.semi_supervised validate --data ../shared/data \\
        --corpus cache/imdb-corpus --models wiki-en-sub cache/imdb-lm/imdb-lm.fwd.pt --budget 100 --seeds 0 1 2

Test-set numbers come from ``benchmarks/accuracy/accuracy.py`` on a stratified sample of 5,000 test
reviews, all into ``benchmarks/semi_supervised/results/semi_supervised_imdb.jsonl`` (``O``), with the
fine-tuned models of ``benchmarks/semi_supervised/models/`` (``M``):

    A="python -m benchmarks.accuracy.accuracy --data ../shared/data --datasets imdb --max-test 5000 --out $O"
    $A --methods skulmfit --tag imdb-lm --set pretrained=$M/imdb-lm.fwd.pt lm_epochs=0 \
        --budgets 100 500 1000                                      # semi-supervised
    $A --methods skulmfit --tag imdb-lm-2ep --set pretrained=$M/imdb-lm-2ep.fwd.pt lm_epochs=0 \
        --budgets 100 500 1000 --max-test 2000 5000                 # semi-supervised, two epochs
    $A --methods skulmfit --tag imdb-lm-bs32 --set pretrained=$M/imdb-lm-bs32/imdb-lm-bs32.fwd.pt lm_epochs=0 \
        --budgets 100 500 1000 --max-test 2000 5000                 # semi-supervised, lr 5e-3, batch 32
    $A --methods skulmfit --tag imdb-lm-bs32-2ep --set pretrained=$M/imdb-lm-bs32-2ep/imdb-lm-bs32-2ep.fwd.pt \
        lm_epochs=0 --budgets 100 500 1000 --max-test 2000 5000      # the same, two epochs (the best)
    $A --methods bidirectional --tag imdb-lm-bs32 --set pretrained=$M/imdb-lm-bs32 lm_epochs=0 \
        --budgets 100 500 1000 --max-test 2000 5000                 # both directions of imdb-lm-bs32
    $A --methods skulmfit --budgets 100 500 1000                    # supervised, forward
    $A --methods bidirectional --budgets 100 --max-test 2000 5000   # supervised, both directions (the default)
    $A --methods no-pretraining --budgets 10000 --seeds 0           # from scratch, 100x the labels
    $A --methods no-pretraining --budgets all --max-test 2000 5000  # and all 25,000 (also the 2,000 sample)
    $A --methods tfidf-lr nbsvm --budgets 100 1000 && $A --methods tfidf-lr nbsvm --budgets 10000 --seeds 0

``figure`` draws them as the paper's Figure 3 (test error against labels) and says at which
multiple of the labels the other lines reach the semi-supervised 100-label error:

    python -m benchmarks.semi_supervised.semi_supervised figure \\
        --records benchmarks/semi_supervised/results/semi_supervised_imdb.jsonl --test-size 5000 \\
        --line "semi-supervised, 2 epochs, forward=skulmfit[imdb-lm-bs32-2ep]" \\
        "semi-supervised, 1 epoch, both directions=bidirectional[imdb-lm-bs32]" \\
        "semi-supervised, 1 epoch, forward=skulmfit[imdb-lm-bs32]" "supervised, forward=skulmfit" \\
        "from scratch=no-pretraining" "TF-IDF + LR=tfidf-lr" "NB-SVM=nbsvm" \\
        --reference "semi-supervised, 2 epochs, forward" \\
        --out benchmarks/semi_supervised/results/figure3_imdb.png
"""
from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.common import (evaluate_model, label_subset, latest_runs, parse_overrides, read_csv, read_records,
                               read_rows)
from skulmfit import ULMFiTClassifier
from skulmfit.environment import machine_description
from skulmfit.pretrained import available_models, has_backward, resolve

HOLDOUT_FILE = "holdout.json"  # which training reviews the corpus left out, for `validate`


# ----------------------------------------------------------------------------- corpus

def one_line(text: str) -> str:
    """A document on one line (the corpus format: one document per line)."""
    return " ".join(text.split())


def write_lines(path: Path, texts: list[str]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for text in texts:
            f.write(one_line(text) + "\n")


def build_corpus(args: argparse.Namespace) -> None:
    """IMDb's unlabelled and training reviews as a language-model corpus, a stratified sample of
    ``--holdout`` training reviews kept out as its validation file."""
    X_train, y_train = read_csv(args.data / "imdb/train.csv.gz")
    unlabeled = [r["text"] for r in read_rows(args.data / "imdb/unsup.csv.gz")]
    held_out = np.sort(label_subset(y_train, args.holdout, args.seed))
    outside = np.setdiff1d(np.arange(len(X_train)), held_out)
    documents = [X_train[i] for i in outside] + unlabeled
    order = np.random.default_rng(args.seed).permutation(len(documents))  # reviews of both kinds mixed
    args.out.mkdir(parents=True, exist_ok=True)
    write_lines(args.out / "train.txt.gz", [documents[i] for i in order])
    write_lines(args.out / "valid.txt.gz", [X_train[i] for i in held_out])
    summary = {"source": str(args.data / "imdb"), "seed": args.seed, "held_out": held_out.tolist(),
               "train_documents": len(documents), "train_reviews": len(outside), "unlabeled_reviews": len(unlabeled),
               "valid_documents": len(held_out), "test_split_used": False}
    (args.out / HOLDOUT_FILE).write_text(json.dumps(summary))
    print(f"{args.out}: {len(documents):,} training documents ({len(outside):,} training reviews, "
          f"{len(unlabeled):,} unlabelled), {len(held_out):,} held out", flush=True)


# ----------------------------------------------------------------------------- validation

def model_summary(lm) -> dict:
    """The card entries that identify a model: name, how much it saw, what it was fine-tuned from."""
    keys = ("name", "corpus", "tokens_seen", "valid_perplexity", "valid_perplexity_before", "fine_tuned_from")
    return {k: lm.card[k] for k in keys if k in lm.card}


def validate(args: argparse.Namespace) -> None:
    """Each model's bits per character on the held-out reviews, then classifiers from it at the
    budget and seeds, scored on those reviews. A bundled model fine-tunes its language model on
    the labelled texts as ``fit`` does by default; a fine-tuned file is used as it is
    (``lm_epochs=0``) unless ``--set lm_epochs=...`` says otherwise."""
    X_train, y_train = read_csv(args.data / "imdb/train.csv.gz")
    held_out = np.array(json.loads((args.corpus / HOLDOUT_FILE).read_text())["held_out"])
    pool = np.setdiff1d(np.arange(len(X_train)), held_out)
    X_valid, y_valid = [X_train[i] for i in held_out], y_train[held_out]
    for spec in args.models:
        lm = resolve(spec)
        lm_record = {"model": spec, **model_summary(lm), "held_out_lm": evaluate_model(lm, X_valid)}
        if has_backward(spec):  # the classifiers below fit both directions (bidirectional="auto")
            lm_record["held_out_lm_backward"] = evaluate_model(resolve(spec, backwards=True), X_valid)
        print(json.dumps(lm_record), flush=True)
        params = {"pretrained": spec, **({} if spec in available_models() else {"lm_epochs": 0}), **args.overrides}
        for seed in args.seeds:
            subset = pool[label_subset(y_train[pool], args.budget, seed)]
            model = ULMFiTClassifier(**{**params, "random_state": seed})
            start = time.perf_counter()
            model.fit([X_train[i] for i in subset], y_train[subset])
            fit_seconds = time.perf_counter() - start
            accuracy = float(np.mean(model.predict(X_valid) == y_valid))
            record = {**lm_record, "budget": args.budget, "seed": seed, "valid_accuracy": accuracy,
                      "valid_size": len(y_valid), "directions": len(model.models_),
                      "fit_seconds": round(fit_seconds, 1),
                      "params": {k: str(v) for k, v in params.items()},
                      "machine": machine_description()}
            with open(args.out, "a") as f:
                f.write(json.dumps(record) + "\n")
            print(f"{spec} budget={args.budget} seed={seed}: validation accuracy {accuracy:.4f} "
                  f"({fit_seconds:.0f} s)", flush=True)


# ----------------------------------------------------------------------------- figure

def error_curve(records: list[dict], dataset: str, method: str, test_size: int | None) -> dict[int, list[float]]:
    """labels -> test error (%) of each seed, for one method's records (latest run per seed) scored
    on ``test_size`` test texts; None takes any size, but only one."""
    chosen = [r for r in latest_runs(records) if r["dataset"] == dataset and r["method"] == method
              and test_size in (None, r.get("test_size"))]
    sizes = sorted({r.get("test_size") for r in chosen}, key=str)
    if len(sizes) > 1:
        raise SystemExit(f"{method} was scored on test samples of {sizes} texts: choose one with --test-size")
    curve: dict[int, list[float]] = {}
    for r in chosen:
        curve.setdefault(r["labels"], []).append(100 * (1 - r["accuracy"]))
    return dict(sorted(curve.items()))


def labels_to_reach(curve: dict[int, float], error: float) -> float | None:
    """The fewest labels at which a curve of mean errors gets down to ``error``: interpolated
    linearly in log(labels) between the two budgets around it; None when it never does."""
    points = sorted(curve.items())
    for (n0, e0), (n1, e1) in zip([(None, None)] + points[:-1], points):
        if e1 > error:
            continue
        if n0 is None or e0 <= error:
            return float(n1)
        share = (e0 - error) / (e0 - e1)
        return float(np.exp(np.log(n0) + share * (np.log(n1) - np.log(n0))))
    return None


def figure(args: argparse.Namespace) -> None:
    """Test error against labelled examples (log x), one line per method, and the claim measured:
    how many labels each other line needs to reach the reference line's error at ``--at`` labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for path in args.records for r in read_records(path)]
    lines = dict(item.split("=", 1) for item in args.line)  # legend label -> method in the records
    curves = {label: error_curve(records, args.dataset, method, args.test_size) for label, method in lines.items()}
    missing = [label for label, curve in curves.items() if not curve]
    if missing:
        raise SystemExit(f"no {args.dataset} records for {missing} in {args.records}")
    means = {label: {n: float(np.mean(e)) for n, e in curve.items()} for label, curve in curves.items()}
    reference = means[args.reference]
    if args.at not in reference:
        raise SystemExit(f"{args.reference!r} has no run at {args.at} labels")
    target = reference[args.at]
    claim = {"reference": args.reference, "labels": args.at, "error": round(target, 2), "lines": {}}
    for label, curve in means.items():
        if label == args.reference:
            continue
        reached = labels_to_reach(curve, target)
        claim["lines"][label] = {"labels_to_reach": None if reached is None else round(reached),
                                 "multiple": None if reached is None else round(reached / args.at, 1),
                                 "most_labels_run": max(curve), "error_there": round(curve[max(curve)], 2)}
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for label, curve in curves.items():
        ns = list(curve)
        ax.errorbar(ns, [np.mean(e) for e in curve.values()], yerr=[np.std(e) for e in curve.values()],
                    marker="o", capsize=3, label=label)
    ax.axhline(target, color="grey", linewidth=0.8, linestyle=":")
    ticks = sorted({n for curve in curves.values() for n in curve})
    ax.set(xscale="log", xlabel="labelled training examples", ylabel="test error (%)", title=args.title)
    ax.set_xticks(ticks, [str(n) for n in ticks])
    ax.minorticks_off()
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    plt.close(fig)
    summary = {"records": [path.name for path in args.records], "dataset": args.dataset, "lines": lines,
               "test_size": args.test_size,
               "errors": {label: {str(n): [round(x, 2) for x in e] for n, e in curve.items()}
                          for label, curve in curves.items()}, "claim": claim}
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(claim, indent=2))


# ----------------------------------------------------------------------------- command line

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    corpus = commands.add_parser("corpus", help="write the language-model corpus folder")
    corpus.add_argument("--data", type=Path, required=True, help="folder with imdb/")
    corpus.add_argument("--out", type=Path, required=True)
    corpus.add_argument("--holdout", type=int, default=2000, help="training reviews held out as validation")
    corpus.add_argument("--seed", type=int, default=0)
    valid = commands.add_parser("validate", help="bits/char and classifier accuracy on the held-out reviews")
    valid.add_argument("--data", type=Path, required=True, help="folder with imdb/")
    valid.add_argument("--corpus", type=Path, required=True, help="the folder `corpus` wrote")
    valid.add_argument("--models", nargs="+", required=True, help="bundled model names or weight files")
    valid.add_argument("--budget", type=int, default=100)
    valid.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    valid.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="ULMFiTClassifier parameters")
    valid.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "semi_supervised_valid.jsonl")
    plot = commands.add_parser("figure", help="test error against labels, as the paper's Figure 3")
    plot.add_argument("--records", type=Path, nargs="+", required=True, help="accuracy.py records (JSONL files)")
    plot.add_argument("--dataset", default="imdb")
    plot.add_argument("--line", nargs="+", required=True, metavar="LABEL=METHOD",
                      help="a legend label and the method name in the records, e.g. 'from scratch=no-pretraining'")
    plot.add_argument("--reference", required=True, help="the label of the line whose error the others must reach")
    plot.add_argument("--at", type=int, default=100, help="the reference line's number of labels")
    plot.add_argument("--test-size", type=int, help="only records scored on this many test texts (every line "
                                                    "on the same sample)")
    plot.add_argument("--title", default="IMDb")
    plot.add_argument("--out", type=Path, required=True, help=".png; the numbers go next to it as .json")
    args = parser.parse_args(argv)
    if args.command == "validate":
        args.overrides = parse_overrides(args.set)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    {"corpus": build_corpus, "validate": validate, "figure": figure}[args.command](args)


if __name__ == "__main__":
    main()
