"""Measure the tokenizer's single-process speed on a CSV of documents.

Usage, from the repository root::

    python -m benchmarks.speed.tokenizer_speed --data PATH/train.csv.gz --n-docs 5000

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
import json
import os
import statistics
import sys
from pathlib import Path

from benchmarks.common import read_texts, time_tokenizer
from skulmfit.environment import machine_description


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
    seconds, n_tokens = time_tokenizer(texts, args.repeats)
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
