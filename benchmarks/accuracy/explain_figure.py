"""The README's picture of an explanation: a classifier fitted on IMDb reviews, one held-out review
with each token coloured by its attribution (integrated gradients, ``ULMFiTClassifier.explain``).

    python -m benchmarks.accuracy.explain_figure --data ../shared/data --labels 1000

Writes ``results/explanation.png`` and ``results/explanation.json`` (tokens, scores, the settings).
"""
from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

import numpy as np

from benchmarks.common import read_csv
from skulmfit import ULMFiTClassifier
from skulmfit.environment import machine_description

RESULTS = Path(__file__).parent / "results"


def draw(explanation, path: Path, width: int = 100) -> None:
    """Tokens laid out in lines, each on a green (up) or red (down) box as strong as its share."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tokens = [t for t in explanation.tokens if t != "xxbos"]
    scores = explanation.scores[1:] if explanation.tokens[0] == "xxbos" else explanation.scores
    extent = float(np.abs(scores).max()) or 1.0
    lines, line, length = [], [], 0
    for token, score in zip(tokens, scores):
        if length + len(token) + 1 > width and line:
            lines.append(line)
            line, length = [], 0
        line.append((token, score))
        length += len(token) + 1
    lines.append(line)
    fig = plt.figure(figsize=(12, 0.8 + 0.32 * len(lines)))
    fig.text(0.01, 1 - 0.25 / (0.8 + 0.32 * len(lines)),
             f"predicted {explanation.target!r} (probability {explanation.value:.2f}); "
             "green pushed towards it, red away", fontsize=10, weight="bold", va="top")
    renderer = fig.canvas.get_renderer()
    for row, words in enumerate(lines):
        x = 0.01
        y = 1 - (0.6 + 0.32 * (row + 0.5)) / (0.8 + 0.32 * len(lines))
        for token, score in words:
            colour = (0.0, 0.6, 0.0) if score >= 0 else (0.8, 0.0, 0.0)
            alpha = min(1.0, abs(float(score)) / extent)
            label = fig.text(x, y, token, fontsize=10, family="monospace", va="center",
                             bbox=dict(boxstyle="round,pad=0.15", facecolor=(*colour, alpha), edgecolor="none"))
            x += label.get_window_extent(renderer).width / fig.bbox.width + 0.004
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--labels", type=int, default=1000)
    parser.add_argument("--review", type=int, default=7, help="index of the test review to explain")
    parser.add_argument("--out", type=Path, default=RESULTS / "explanation.png")
    args = parser.parse_args()
    X, y = read_csv(args.data / "imdb" / "train.csv.gz")
    X_test, y_test = read_csv(args.data / "imdb" / "test.csv.gz")
    sample = np.random.default_rng(0).permutation(len(X))[:args.labels]
    clf = ULMFiTClassifier(random_state=0).fit([X[i] for i in sample], y[sample])
    short = [i for i in range(len(X_test)) if 60 <= len(X_test[i].split()) <= 110]  # fits a picture
    index = short[args.review]
    [explanation] = clf.explain([X_test[index]])
    draw(explanation, args.out)
    args.out.with_suffix(".json").write_text(json.dumps({
        "review_index_in_test": index, "true_label": str(y_test[index]), "target": str(explanation.target),
        "probability": explanation.value, "top": explanation.top(8), "labels": args.labels,
        "tokens": explanation.tokens, "scores": explanation.scores.round(4).tolist(),
        "machine": machine_description()}, indent=1))
    print(textwrap.shorten(str(explanation), 400))
    print("top:", explanation.top(8))


if __name__ == "__main__":
    main()
