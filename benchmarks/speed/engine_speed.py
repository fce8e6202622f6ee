"""Throughput of skulmfit's engine on this machine: tokenizer, LM training, classifier training.

Synthetic token ids (Zipf-distributed) stand in for text in the model timings, so the figures
depend only on the model sizes. Each figure is the median over ``--repeats`` timed blocks of
``--steps`` steps, after warm-up steps. fp32 and bf16 autocast are measured alternately in the
same run. Don't run it while another heavy job is running: the figures would be worthless.

    python -m benchmarks.speed.engine_speed --data ../shared/data/imdb/train.csv.gz
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import read_texts, time_blocks, time_tokenizer, zipf_ids
from skulmfit.environment import machine_description
from skulmfit.model import AWDLSTMConfig, LanguageModel, TextClassifier
from skulmfit.schedule import freeze_to
from skulmfit.training import autocast, lm_train_step, make_optimizer

CONFIGS = {  # name: (vocab, emb, hidden, layers)
    "e-8k-128-384-2": (8000, 128, 384, 2),
    "d-16k-200-512-3": (16000, 200, 512, 3),
    "c-16k-256-768-3": (16000, 256, 768, 3),
}


def bench_lm(sizes, bf16, args, rng):
    vocab, emb, hidden, layers = sizes
    model = LanguageModel(AWDLSTMConfig(vocab, emb, hidden, layers)).train()
    groups = model.layer_groups()
    optimizer = make_optimizer(groups, [1e-3] * len(groups), 0.01)
    x = zipf_ids(rng, vocab, (args.batch_size, args.bptt))
    y = zipf_ids(rng, vocab, (args.batch_size, args.bptt))
    state = [None]

    def step():
        _, state[0] = lm_train_step(model, optimizer, x, y, state[0], bf16=bf16)
    seconds, all_times = time_blocks(step, 2, args.steps, args.repeats)
    return {"tokens_per_s": x.numel() / seconds, "seconds_per_step": seconds, "block_times": all_times}


def bench_classifier(sizes, bf16, args, rng, trainable_groups=None):
    vocab, emb, hidden, layers = sizes
    model = TextClassifier(AWDLSTMConfig(vocab, emb, hidden, layers).for_classifier(), 2).train()
    groups = model.layer_groups()
    freeze_to(groups, trainable_groups or len(groups))
    optimizer = make_optimizer(groups, [1e-3] * len(groups), 0.01)
    ids = zipf_ids(rng, vocab, (args.clf_batch, args.doc_len))
    lengths = torch.full((args.clf_batch,), args.doc_len)
    targets = torch.from_numpy(rng.integers(0, 2, args.clf_batch))

    def step():
        with autocast(ids.device, bf16):
            logits = model(ids, lengths)
        loss = torch.nn.functional.cross_entropy(logits.float(), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds, all_times = time_blocks(step, 2, args.steps, args.repeats)
    return {"tokens_per_s": ids.numel() / seconds, "seconds_per_step": seconds, "block_times": all_times}


def bench_tokenizer(path, n_docs, repeats):
    texts = read_texts(Path(path), n_docs)
    seconds, n_tokens = time_tokenizer(texts, repeats)  # caches emptied before each repeat
    return {"tokens_per_s": n_tokens / statistics.median(seconds), "docs": len(texts), "tokens": n_tokens,
            "repeats_s": seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="CSV(.gz) with a text column for the tokenizer timing")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--bptt", type=int, default=70)
    parser.add_argument("--clf-batch", type=int, default=32)
    parser.add_argument("--doc-len", type=int, default=200)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "engine_speed.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    results = {"machine": machine_description(), "settings": vars(args), "models": {}}
    if args.data:
        results["tokenizer"] = bench_tokenizer(args.data, 5000, 5)
        print(f"tokenizer: {results['tokenizer']['tokens_per_s']:,.0f} tokens/s (one process)", flush=True)
    for name in args.configs:
        sizes = CONFIGS[name]
        entry = results["models"][name] = {}
        for precision in ("fp32", "bf16"):  # alternate so drift hits both alike
            bf16 = precision == "bf16"
            entry[f"lm_{precision}"] = bench_lm(sizes, bf16, args, rng)
            entry[f"classifier_{precision}"] = bench_classifier(sizes, bf16, args, rng)
            print(f"{name} {precision}: LM {entry[f'lm_{precision}']['tokens_per_s']:,.0f} tok/s, "
                  f"classifier {entry[f'classifier_{precision}']['tokens_per_s']:,.0f} tok/s", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
