"""A pretraining corpus folder of Wikipedia plus review texts (the language-model issue's arm d).

The Wikipedia shards and validation file are linked, not copied; the reviews (a CSV with a ``text``
column, such as IMDb's 50,000 unlabelled ``unsup.csv.gz``, never a test split) become one more
training shard, one review per line. Validation stays Wikipedia only, so that bits per character
compare with the Wikipedia-only arms.

    python -m benchmarks.pretraining.mixed_corpus \\
        ../shared/data/lm-corpus/wikipedia-en ../shared/data/imdb/unsup.csv.gz cache/corpus-src/wiki-imdb
"""
from __future__ import annotations

import argparse
import gzip
from pathlib import Path

from benchmarks.common import read_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("wikipedia", type=Path, help="folder of train*.txt.gz shards and valid.txt.gz")
    parser.add_argument("reviews", type=Path, help="CSV file with a text column")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for shard in sorted(args.wikipedia.glob("*.txt*")):
        link = args.out / shard.name
        if not link.exists():
            link.symlink_to(shard.resolve())
    texts = [" ".join(row["text"].split()) for row in read_rows(args.reviews)]
    with gzip.open(args.out / f"train.{args.reviews.name.split('.')[0]}-reviews.txt.gz", "wt", encoding="utf-8") as f:
        f.writelines(text + "\n" for text in texts if text)
    print(f"{len(texts):,} reviews, {sum(len(t.split()) for t in texts):,} words")


if __name__ == "__main__":
    main()
