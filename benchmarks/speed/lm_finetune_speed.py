"""Speed of ``fit``'s language-model fine-tuning stage: full softmax against sampled softmax.

Times :func:`skulmfit.training.fine_tune_language_model` as ``fit`` calls it (the bundled model,
its tokenizer, the estimator's batch size, BPTT and dropouts, bf16 where the CPU computes it) on
one epoch over real reviews, for each ``--sampled`` size (0 = full softmax) in turn, ``--repeats``
times alternating; reports the median tokens per second of each. Run it on a quiet machine.

    python -m benchmarks.speed.lm_finetune_speed --data ../shared/data/imdb/train.csv.gz --threads 1 2
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import read_csv
from skulmfit.engine import LM_DROP_SCALE, target_vocab
from skulmfit.environment import machine_description
from skulmfit.lm_weights import match_embeddings
from skulmfit.model import AWDLSTMConfig, LanguageModel
from skulmfit.pretrained import DEFAULT_MODEL, resolve
from skulmfit.training import cpu_computes_bf16, fine_tune_language_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="CSV(.gz) with a text column")
    parser.add_argument("--pretrained", default=DEFAULT_MODEL)
    parser.add_argument("--docs", type=int, default=200, help="texts in the timed epoch")
    parser.add_argument("--sampled", type=int, nargs="+", default=[0, 1024])
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "lm_finetune_speed.json")
    args = parser.parse_args()

    lm = resolve(args.pretrained)
    texts = read_csv(args.data)[0][: args.docs]
    tokens = lm.tokenizer.tokenize_many(texts)
    vocab = target_vocab(lm, tokens, 30000, 2)  # the estimator's max_vocab and min_freq defaults
    docs = vocab.numericalize_many(tokens)
    n_tokens = int(sum(len(d) for d in docs))
    sizes = {k: v for k, v in lm.config.sizes().items() if k != "vocab_size"}
    config = AWDLSTMConfig(len(vocab), **sizes).scaled(0.5 * LM_DROP_SCALE)  # drop_mult's default 0.5
    state = match_embeddings(lm.state_dict, lm.itos, vocab.itos)
    bf16 = cpu_computes_bf16()

    def epoch_seconds(sampled: int) -> float:
        model = LanguageModel(config)
        model.load_state_dict(state)
        start = time.perf_counter()
        fine_tune_language_model(model, docs, epochs=1, lr=4e-3, batch_size=32, bptt=70,
                                 rng=np.random.default_rng(0), bf16=bf16, sampled_softmax=sampled)
        return time.perf_counter() - start

    results = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        epoch_seconds(args.sampled[-1])  # warm-up
        times = {sampled: [] for sampled in args.sampled}
        for _ in range(args.repeats):
            for sampled in args.sampled:
                times[sampled].append(epoch_seconds(sampled))
        for sampled, seconds in times.items():
            results.append({"threads": threads, "sampled_softmax": sampled,
                            "tokens_per_s": round(n_tokens / statistics.median(seconds)),
                            "seconds": [round(s, 2) for s in seconds]})
            print(json.dumps(results[-1]), flush=True)
        full = next((r for r in results if r["threads"] == threads and r["sampled_softmax"] == 0), None)
        for r in results:
            if full and r["threads"] == threads:
                r["speedup_vs_full"] = round(r["tokens_per_s"] / full["tokens_per_s"], 2)
    report = {"pretrained": str(args.pretrained), "vocab_size": len(vocab), "tokens": n_tokens, "bf16": bf16,
              "repeats": args.repeats, "machine": machine_description(), "results": results}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
