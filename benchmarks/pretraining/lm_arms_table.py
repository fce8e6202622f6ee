"""The language-model arms table: intrinsic figures (lm_eval.py) beside downstream validation accuracy
(tune_defaults.py), one row per arm, written as markdown.

    R=benchmarks/pretraining/results
    python -m benchmarks.pretraining.lm_arms_table --eval $R/lm_arms_eval_*.json --runs $R/lm_arms.jsonl \\
        --arms a-word8k=arm-a-word8k.fwd.pt b-sub8k=arm-b-sub8k.fwd.pt --out $R/lm_arms.md
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

DATASETS = ("sst2", "trec", "imdb")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--eval", type=Path, nargs="+", required=True, help="lm_eval.py --out files")
    parser.add_argument("--runs", type=Path, required=True, help="tune_defaults.py --out file (runs tagged by arm)")
    parser.add_argument("--arms", nargs="+", required=True, metavar="TAG=WEIGHTS_FILE_NAME")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    evaluation = {name: entry for path in args.eval for name, entry in json.loads(path.read_text())["models"].items()}
    accuracy = defaultdict(list)
    for line in args.runs.read_text().splitlines():
        run = json.loads(line)
        accuracy[(run["tag"], run["dataset"])].append(run["valid_accuracy"])
    lines = ["| arm | tokens seen | Wikipedia bits/char (open vocabulary) | word ppl (Wiki / WT-2) | unknown rate TREC / SST-2 / IMDb | "
             + " | ".join(f"{d} valid acc (500 labels)" for d in DATASETS) + " |",
             "|---" * (5 + len(DATASETS)) + "|"]
    for arm in args.arms:
        tag, _, file = arm.partition("=")
        e = evaluation[file]
        unknown = e.get("unknown_rate_train_texts", {})
        cells = [tag, f"{e.get('tokens_seen', 0) / 1e6:.1f}M",
                 f"{e['wikipedia_valid']['bits_per_char']:.3f} ({e['wikipedia_valid']['open_bits_per_char']:.3f})",
                 f"{e['wikipedia_valid']['word_perplexity']:.1f} / {e['wikitext2_test']['word_perplexity']:.1f}",
                 " / ".join(f"{100 * unknown.get(d, float('nan')):.1f}%" for d in ("trec", "sst2", "imdb"))]
        for dataset in DATASETS:
            scores = accuracy.get((tag, dataset), [])
            cells.append(f"{100 * statistics.mean(scores):.1f} ± {100 * statistics.stdev(scores):.1f} ({len(scores)})"
                         if len(scores) > 1 else (f"{100 * scores[0]:.1f} (1)" if scores else ""))
        lines.append("| " + " | ".join(cells) + " |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
