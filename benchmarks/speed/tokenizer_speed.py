"""Measure the tokenizer's single-process speed on a CSV of documents.

Usage, from the repository root with skulmfit installed (or ``PYTHONPATH=.``)::

    python benchmarks/tokenizer_speed.py --data PATH/train.csv.gz --n-docs 5000

``--data`` is a CSV (optionally gzipped) with a ``text`` column, such as the IMDb
reviews.  The tokenizer's caches are emptied before each of the repeats, so the number
reported is the speed of a fresh process (the first pass over a corpus), not of a
re-run over text it has already seen.  Tokens/s is the median over the repeats; the
result is printed and written as JSON together with a description of the machine.

Run it on an otherwise idle machine: the load average at the start is recorded, and a
number measured under load is not comparable.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import statistics
import sys
import time
from pathlib import Path


from skulmfit import tokenizer
from skulmfit.environment import machine_description


def read_texts(path: Path, n_docs: int) -> list[str]:
    """The first ``n_docs`` values of the ``text`` column of a CSV or CSV.GZ file."""
    opener = gzip.open if path.suffix == ".gz" else open
    # Reviews can be longer than the csv module's default field limit.
    csv.field_size_limit(2**31 - 1)
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if "text" not in (reader.fieldnames or []):
            raise SystemExit(f"{path} has no 'text' column (columns: {reader.fieldnames})")
        texts = []
        for row in reader:
            if len(texts) == n_docs:
                break
            texts.append(row["text"])
    return texts


def measure(texts: list[str], repeats: int, model_tokenizer=None) -> tuple[list[float], int]:
    """Seconds taken by each repeat, and the number of tokens produced, by fastai's rules alone or by
    a model's :class:`skulmfit.text.Tokenizer` (the rules, then subword pieces)."""
    tokenize_many = tokenizer.tokenize_many if model_tokenizer is None else model_tokenizer.tokenize_many
    seconds = []
    for _ in range(repeats):
        # Caches left by the previous repeat would make every later one a re-run.
        tokenizer.clear_caches()
        if model_tokenizer is not None and model_tokenizer.segmenter is not None:
            model_tokenizer.segmenter.clear_cache()
        start = time.perf_counter()
        docs = tokenize_many(texts, n_jobs=1)
        seconds.append(time.perf_counter() - start)
    return seconds, sum(map(len, docs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True,
                        help="CSV or CSV.GZ file with a 'text' column")
    parser.add_argument("--n-docs", type=int, default=5000,
                        help="number of documents from the start of the file (default 5000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (default 5)")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "tokenizer_speed.json",
                        help="where to write the JSON result")
    args = parser.parse_args()

    texts = read_texts(args.data, args.n_docs)
    load_before = os.getloadavg()[0]
    seconds, n_tokens = measure(texts, args.repeats)
    median = statistics.median(seconds)
    result = {
        "tokens_per_s": round(n_tokens / median),
        "docs_per_s": round(len(texts) / median, 1),
        "docs": len(texts),
        "tokens": n_tokens,
        "chars": sum(map(len, texts)),
        "repeats_s": [round(s, 4) for s in seconds],
        "median_s": round(median, 4),
        "data": args.data.name,
        "load_average_1min_at_start": load_before,
        "machine": machine_description(),
    }
    if load_before > 0.5:
        print(f"warning: load average {load_before:.2f} at start; the timing is not reliable",
              file=sys.stderr)
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
