"""Time of a tiny fit + predict when one text is a 5 MB blob without spaces (bounded work per document).

A 5,000,000-character random string of letters and digits (one giant "word", as a pasted base64
blob or log line is) beside 16 ordinary texts: the bundled tokenizer alone, then
``ULMFiTClassifier(lm_epochs=1, epochs=1, batch_size=8, random_state=0)`` fit on all of them and
``predict_proba`` of the blob and one ordinary text, with every default (``max_tokens`` included).
Median of ``--repeats`` runs; writes ``results/blob_time.json``. Run it on a quiet machine::

    python -m benchmarks.speed.blob_time --repeats 3
"""
from __future__ import annotations

import argparse
import json
import random
import string
import time
import warnings
from pathlib import Path

import numpy as np

from skulmfit import ULMFiTClassifier
from skulmfit.environment import machine_description
from skulmfit.pretrained import DEFAULT_MODEL, resolve_pretrained

TEXTS = ["a wonderful film, I loved it", "dull and far too long", "great acting and a fine plot",
         "the worst movie this year", "I would watch it again", "boring, poorly written", "a delight",
         "awful dialogue and weak jokes"] * 2


def blob(n_chars: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n_chars))


def one_run(text: str) -> dict:
    tokenizer = resolve_pretrained(DEFAULT_MODEL, "auto").tokenizer
    started = time.perf_counter()
    n_pieces = len(tokenizer.tokenize_many([text])[0])
    tokenize_seconds = time.perf_counter() - started
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the max_tokens warning, expected here
        clf = ULMFiTClassifier(lm_epochs=1, epochs=1, batch_size=8, random_state=0)
        clf.fit([text, *TEXTS], ["pos", *(["pos", "neg"] * 8)])
        clf.predict_proba([text, TEXTS[0]])
    return {"pieces": n_pieces, "tokenize_seconds": tokenize_seconds,
            "fit_predict_seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chars", type=int, default=5_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "blob_time.json")
    args = parser.parse_args()
    text = blob(args.chars)
    runs = [one_run(text) for _ in range(args.repeats)]
    record = {"chars": args.chars, "pieces": runs[0]["pieces"],
              "tokenize_seconds_median": round(float(np.median([r["tokenize_seconds"] for r in runs])), 1),
              "fit_predict_seconds_median": round(float(np.median([r["fit_predict_seconds"] for r in runs])), 1),
              "runs": runs, "machine": machine_description()}
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "runs"}))


if __name__ == "__main__":
    main()
