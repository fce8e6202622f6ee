"""Bits per character, perplexity and unknown-token rate of pretrained language models on held-out text.

Evaluates each weight file on (a) a held-out shard of the pretraining corpus (``--valid``,
e.g. the Wikipedia ``valid.txt.gz``) and (b) WikiText-2 test (``--wikitext``), detokenized
first (``@-@`` markers, `` 's`` and spaces before punctuation undone) so that skulmfit's own
tokenizer sees running text. Each model reads the text through its own tokenizer (word-level or
subword), so three figures are reported (by ``benchmarks.common.evaluate_model``, which the
semi-supervised benchmark uses too):

* ``bits_per_char``: the model's total loss in bits over the number of characters of the text
  (one more per line, for its start). A word-level model's ``xxunk`` costs it nothing for
  spelling the unknown word out, so for such a model this figure is optimistic.
* ``open_bits_per_char``: the same with every ``xxunk`` of a word-level model also charged the
  bits of spelling its word out with a character-trigram model estimated on the evaluated text
  itself (fitted to the very text it spells: if anything, the charge is too small). A subword model has
  no unknown words, so for it this equals ``bits_per_char``. This is the figure that compares
  tokenizers.
* ``word_perplexity``: the total loss per word token (fastai's rules, special tokens included):
  comparable across tokenizers with the same caveat; for a word-level model it equals the
  per-token ``perplexity``.
* ``perplexity``: per token of the model's own vocabulary, read with ``unknown_rate``.

Results go to JSON and into the models' cards.

    python -m benchmarks.pretraining.lm_eval \\
        skulmfit/weights/wiki-en-small.fwd.pt skulmfit/weights/wiki-en-small.bwd.pt \\
        --valid ../shared/data/lm-corpus/wikipedia-en/valid.txt.gz \\
        --wikitext ../shared/data/lm-corpus/wikitext-2/wiki.test.tokens
"""
from __future__ import annotations

import argparse
import gzip
import json
import re
import time
from pathlib import Path

import numpy as np

from benchmarks.common import evaluate_model, read_csv
from skulmfit.environment import machine_description
from skulmfit.pretrained import load_weights
from skulmfit.vocab import Vocab


def detokenize_wikitext(line: str) -> str:
    line = line.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    line = re.sub(r" ([.,;:!?)\]'])", r"\1", line)
    line = re.sub(r"([(\[]) ", r"\1", line)
    return line.replace(" n't", "n't").replace(" 's", "'s")


def read_lines(path: Path, max_tokens_hint: int) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    lines, words = [], 0
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("= "):  # WikiText section titles
                continue
            lines.append(line)
            words += line.count(" ") + 1
            if words >= max_tokens_hint:
                break
    return lines


def evaluate(weights: Path, texts: list[str]) -> dict:
    return evaluate_model(load_weights(weights), texts)


def load_seconds(weights: Path, repeats: int = 3) -> float:
    """Median time to load the weight file with its tokenizer and build the model, as ``fit`` does."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        load_weights(weights).build()
        times.append(time.perf_counter() - start)
    return round(sorted(times)[len(times) // 2], 3)


def unknown_rates(weights: Path, text_sets: dict[str, list[str]]) -> dict[str, float]:
    """Share of each text set's tokens that the model's vocabulary does not know (``xxunk``)."""
    lm = load_weights(weights)
    vocab = Vocab(lm.itos)
    rates = {}
    for name, texts in text_sets.items():
        ids = np.concatenate(vocab.numericalize_many(lm.tokenizer.tokenize_many(texts)))
        rates[name] = round(float(np.mean(ids == vocab.unk_id)), 4)
    return rates


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("weights", nargs="+", type=Path)
    parser.add_argument("--valid", type=Path, required=True, help="held-out shard of the pretraining corpus")
    parser.add_argument("--wikitext", type=Path, required=True, help="WikiText-2 wiki.test.tokens")
    parser.add_argument("--max-words", type=int, default=500_000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "lm_eval.json")
    parser.add_argument("--classification", type=Path,
                        help="folder with trec/, sst2/, imdb/: adds the unknown-token rate of their training texts")
    parser.add_argument("--update-cards", action="store_true", help="write the figures into each model's card")
    args = parser.parse_args()
    texts = {"wikipedia_valid": read_lines(args.valid, args.max_words),
             "wikitext2_test": [detokenize_wikitext(t) for t in read_lines(args.wikitext, args.max_words)]}
    task_texts = {}
    if args.classification:
        task_texts = {name: read_csv(args.classification / path)[0] for name, path in
                      (("trec", "trec/train.csv"), ("sst2", "sst2/train.csv"), ("imdb", "imdb/train.csv.gz"))}
    results = {"machine": machine_description(), "models": {}}
    for weights in args.weights:
        entry = results["models"][weights.name] = {name: evaluate(weights, t) for name, t in texts.items()}
        if task_texts:
            entry["unknown_rate_train_texts"] = unknown_rates(weights, task_texts)
        card = load_weights(weights).card
        entry["load_seconds"] = load_seconds(weights)
        entry["tokens_seen"] = card.get("tokens_seen")
        entry["training"] = {k: card.get("training", {}).get(k) for k in ("corpus", "tokenizer", "vocab_size",
                                                                          "sampled_softmax", "planned_tokens")}
        print(weights.name, json.dumps(entry), flush=True)
        card_path = weights.with_suffix(".json")
        if args.update_cards and card_path.exists():
            card = json.loads(card_path.read_text())
            card["evaluation"] = entry
            card_path.write_text(json.dumps(card, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
