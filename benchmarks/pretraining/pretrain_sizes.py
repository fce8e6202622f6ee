"""Which AWD-LSTM size learns most in a fixed CPU time? Pretrain several sizes for the same minutes.

Every size runs ``python -m skulmfit.pretrain`` from scratch on the same cached corpus tokens
(one thread each, ``--parallel`` runs side by side, so every run gets one core) for the same wall
time, with the same learning-rate schedule (short warm-up, then constant: a decay tuned to one
size's speed would favour it). The validation perplexity on the held-out Wikipedia shard reached
at the end, tokens/s and parameter counts go to ``results/pretrain_sizes.json`` and a markdown
table ``results/pretrain_sizes.md``. All sizes share the cached vocabulary, so their perplexities
are comparable. Run it on an otherwise idle machine.

    python -m benchmarks.pretraining.pretrain_sizes ../shared/data/lm-corpus/wikipedia-en --cache cache/pretrain \\
        --work cache/sizes --minutes 12
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from skulmfit.environment import machine_description
from skulmfit.model import AWDLSTMConfig, LanguageModel

SIZES = {  # name: (emb, hidden, layers)
    "96-256-2": (96, 256, 2),
    "128-384-2": (128, 384, 2),
    "200-512-3": (200, 512, 3),
    "400-1152-3": (400, 1152, 3),
}
CORPUS_CACHE_FILES = ("train.ids.npy", "valid.ids.npy", "vocab.json", "vocab_settings.json")


def share_corpus_cache(source: Path, target: Path) -> None:
    """Give a run its own checkpoint folder that links to the already tokenized corpus."""
    target.mkdir(parents=True, exist_ok=True)
    for name in CORPUS_CACHE_FILES:
        link = target / name
        if (source / name).exists() and not link.exists():
            link.symlink_to((source / name).resolve())


def start_run(size: str, args: argparse.Namespace) -> subprocess.Popen:
    emb, hidden, layers = SIZES[size]
    cache, out = args.work / f"cache-{size}", args.work / f"out-{size}"
    share_corpus_cache(args.cache, cache)
    command = [sys.executable, "-m", "skulmfit.pretrain", str(args.corpus), str(out), "--cache", str(cache),
               "--name", size, "--emb-size", str(emb), "--hidden-size", str(hidden), "--layers", str(layers),
               "--vocab-size", str(args.vocab_size), "--threads", "1", "--hours", str(args.minutes / 60),
               "--checkpoint-minutes", str(args.minutes + 1), "--warmup-tokens", str(args.warmup_tokens),
               "--planned-tokens", "1e15"]  # no decay within the budget
    if args.bf16:
        command.append("--bf16")
    log = open(args.work / f"{size}.log", "w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def result(size: str, args: argparse.Namespace) -> dict:
    card = json.loads((args.work / f"out-{size}" / f"{size}.fwd.json").read_text())
    emb, hidden, layers = SIZES[size]
    model = LanguageModel(AWDLSTMConfig(card["vocab_size"], emb, hidden, layers))
    return {"size": size, "vocab_size": card["vocab_size"], "emb_size": emb, "hidden_size": hidden, "layers": layers,
            "parameters": sum(p.numel() for p in model.parameters()), "tokens_seen": card["tokens_seen"],
            "train_seconds": round(card["seconds"]), "tokens_per_s": round(card["tokens_seen"] / card["seconds"]),
            "valid_perplexity": card["valid_perplexity"], "log": card["log"]}


def table(results: list[dict], minutes: float) -> str:
    lines = [f"| size (emb / hidden / layers) | parameters | tokens/s (one core) | tokens in {minutes:g} min "
             "| validation perplexity |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['emb_size']} / {r['hidden_size']} / {r['layers']} | {r['parameters'] / 1e6:.1f}M "
                     f"| {r['tokens_per_s']:,} | {r['tokens_seen'] / 1e6:.2f}M | {r['valid_perplexity']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--cache", type=Path, required=True, help="pretraining cache holding the tokenized corpus")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder for the runs' checkpoints and logs")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--minutes", type=float, default=12.0)
    parser.add_argument("--parallel", type=int, default=2, help="runs side by side, one thread each")
    parser.add_argument("--vocab-size", type=int, default=8000, help="must match the cached corpus")
    parser.add_argument("--warmup-tokens", type=float, default=5e4, help="short: the largest size sees few tokens")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "pretrain_sizes.json")
    parser.add_argument("--update-cards", nargs="*", type=Path, default=[],
                        help="model cards (*.json) to record the comparison in, as 'size_comparison'")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    start = time.time()
    for i in range(0, len(args.sizes), args.parallel):
        runs = [start_run(size, args) for size in args.sizes[i:i + args.parallel]]
        for run in runs:
            if run.wait() != 0:
                raise SystemExit(f"a pretraining run failed; see the logs in {args.work}")
    results = [result(size, args) for size in args.sizes]
    report = {"machine": machine_description(), "minutes": args.minutes, "parallel": args.parallel,
              "bf16": args.bf16, "warmup_tokens": args.warmup_tokens, "wall_seconds": round(time.time() - start),
              "results": results}
    args.out.write_text(json.dumps(report, indent=2))
    args.out.with_suffix(".md").write_text(table(results, args.minutes))
    print(table(results, args.minutes))
    for card_path in args.update_cards:
        card = json.loads(card_path.read_text())
        card["size_comparison"] = {"minutes_each": args.minutes, "machine": report["machine"],
                                   "results": [{k: v for k, v in r.items() if k != "log"} for r in results],
                                   "command": "python -m benchmarks.pretraining.pretrain_sizes",
                                   "table": table(results, args.minutes)}
        card_path.write_text(json.dumps(card, indent=2))


if __name__ == "__main__":
    main()
