"""Token budgets that give pretraining arms of different vocabulary sizes equal compute.

The language-model issue compares tokenizers "at equal pretraining time". Wall time is fragile on a
two-core machine (anything else running slows an arm), so each arm instead gets the number of tokens
it processes in ``--minutes`` of one undisturbed core. This script measures the *ratio* of each
vocabulary size's training speed to the reference size's: one process, one thread, bf16 if asked,
the sizes' timed blocks alternating so that a busy neighbour slows them alike. The reference's
absolute speed (``--reference-tokens-per-s``) comes from a separate quiet run of two reference arms
side by side (``python -m skulmfit.pretrain ... --hours 0.04``, nothing else running).

An arm may also have its own model size (``@EMBxHIDDENxLAYERS``).
Batches come from each arm's real token cache (``SIZE:N=CACHE``, a folder written by
``skulmfit.pretrain --cache``) or, without one, from Zipf-distributed ids. Prefer real batches: a
sampled softmax's cost depends on how many distinct targets a batch has, and Zipf batches overstate
it (they measured a 16k:1024 arm at 1.43x the word-8k speed; real pretraining ran it at 1.24x).

    python -m benchmarks.pretraining.arm_budgets \
        --vocab-sizes 8000=cache/corpus-word8k 16000:1024=cache/corpus-sub16000 \
        --reference-tokens-per-s 18170 --minutes 60 --bf16
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from skulmfit.batching import lm_batches, lm_rows  # noqa: E402
from skulmfit.environment import machine_description  # noqa: E402
from skulmfit.loss import SampledSoftmax  # noqa: E402
from skulmfit.model import AWDLSTMConfig, LanguageModel  # noqa: E402
from skulmfit.training import lm_train_step, make_optimizer  # noqa: E402


def zipf(vocab_size: int) -> torch.Tensor:
    """Word frequencies of natural text, roughly: proportional to 1 / rank."""
    return 1.0 / torch.arange(1, vocab_size + 1, dtype=torch.float64)


def zipf_batches(vocab_size: int, batch_size: int, bptt: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The same synthetic batch, forever."""
    x, y = torch.multinomial(zipf(vocab_size), 2 * batch_size * bptt, replacement=True).view(2, batch_size, bptt)
    while True:
        yield x, y


def corpus_batches(train_ids: np.ndarray, batch_size: int, bptt: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive training batches of a token cache, as pretraining reads them, round and round."""
    rows = lm_rows(train_ids, batch_size)
    while True:
        yield from lm_batches(rows, [bptt] * ((rows.shape[1] - 1) // bptt))


def timed_block(model, optimizer, batches: Iterator, steps: int, bf16: bool, sampled: SampledSoftmax | None) -> float:
    """Tokens per second over ``steps`` training steps."""
    state, tokens = None, 0
    start = time.perf_counter()
    for _ in range(steps):
        x, y = next(batches)
        _, state = lm_train_step(model, optimizer, x, y, state, bf16=bf16, sampled=sampled)
        tokens += x.numel()
    return tokens / (time.perf_counter() - start)


def arm_setup(arm: str, args) -> tuple:
    """Model, optimizer, batches and sampled softmax for ``SIZE[:N][=CACHE][@EMBxHIDDENxLAYERS]``."""
    arm, _, shape = arm.partition("@")
    emb_size, hidden_size, layers = map(int, shape.split("x")) if shape else (args.emb_size, args.hidden_size,
                                                                             args.layers)
    spec, _, cache = arm.partition("=")
    vocab_size, _, n_sampled = spec.partition(":")
    vocab_size = int(vocab_size)
    if cache:
        train_ids = np.load(Path(cache) / "train.ids.npy", mmap_mode="r")
        counts = np.bincount(train_ids, minlength=vocab_size)
        if len(counts) != vocab_size:
            raise SystemExit(f"{cache} holds ids up to {len(counts) - 1}, not a {vocab_size}-token vocabulary")
        batches = corpus_batches(train_ids, args.batch_size, args.bptt)
    else:
        counts = zipf(vocab_size)
        batches = zipf_batches(vocab_size, args.batch_size, args.bptt)
    sampled = SampledSoftmax(counts, int(n_sampled)) if n_sampled else None
    model = LanguageModel(AWDLSTMConfig(vocab_size, emb_size, hidden_size, layers).scaled(0.2))
    optimizer = make_optimizer(model.layer_groups(), [1e-3] * len(model.layer_groups()), 0.01)
    return model, optimizer, batches, sampled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab-sizes", nargs="+", required=True,
                        help="the first is the reference; SIZE:N trains with a sampled softmax of N drawn ids; "
                             "SIZE[:N]=CACHE times batches of that pretraining token cache; a suffix "
                             "@EMBxHIDDENxLAYERS gives that arm its own model size")
    parser.add_argument("--emb-size", type=int, default=128)
    parser.add_argument("--hidden-size", type=int, default=384)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--bptt", type=int, default=70)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block")
    parser.add_argument("--blocks", type=int, default=7, help="timed blocks per size (the median counts)")
    parser.add_argument("--reference-tokens-per-s", type=float, required=True)
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "arm_budgets.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    setups = {}
    for arm in args.vocab_sizes:
        model, optimizer, batches, sampled = setups[arm] = arm_setup(arm, args)
        timed_block(model, optimizer, batches, 2, args.bf16, sampled)  # warm-up
    speeds = {arm: [] for arm in args.vocab_sizes}
    for _ in range(args.blocks):
        for arm, (model, optimizer, batches, sampled) in setups.items():
            speeds[arm].append(timed_block(model, optimizer, batches, args.steps, args.bf16, sampled))
    reference = statistics.median(speeds[args.vocab_sizes[0]])
    rows = []
    for arm, measured in speeds.items():
        ratio = statistics.median(measured) / reference
        tokens_per_s = args.reference_tokens_per_s * ratio
        rows.append({"arm": arm, "speed_ratio": round(ratio, 4),
                     "tokens_per_s": round(tokens_per_s), "budget_tokens": int(tokens_per_s * args.minutes * 60),
                     "block_tokens_per_s": [round(s) for s in measured]})
        print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": {k: v for k, v in vars(args).items() if k != "out"},
                                    "arms": rows, "machine": machine_description()}, indent=2))


if __name__ == "__main__":
    main()
