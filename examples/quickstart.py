"""Fit ULMFiT on a text classification task and compare it with TF-IDF + logistic regression.

    python examples/quickstart.py                                   # TREC-6, bundled: works offline
    python examples/quickstart.py --dataset 20newsgroups            # 4 topics, downloaded once
    python examples/quickstart.py --csv my.csv                      # any text,label CSV
    python examples/quickstart.py --param lr=0.02 --param bidirectional=true

Takes about 3 minutes on a 2-core CPU without bf16: one fit on all 5,452 TREC-6 training
questions, both directions (an estimate from measured fit times, on an otherwise idle machine;
there is no larger run). A fit's time grows with the number of words: 20 Newsgroups' posts have
a few hundred words where TREC-6's questions have about ten, so expect many times longer there
(--max-train bounds it).
"""
import argparse
import time

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from data import add_data_arguments, load
from skulmfit import ULMFiTClassifier
from skulmfit.cli import parse_params


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="a ULMFiTClassifier parameter (repeatable)")
    args = parser.parse_args(argv)
    X_train, y_train, X_test, y_test = load(args)
    print(f"{len(X_train)} training texts, {len(X_test)} test texts, classes: {sorted(set(y_train))}")

    start = time.perf_counter()
    params = {"random_state": 0, "verbose": 1, **parse_params(args.param)}
    clf = ULMFiTClassifier(**params).fit(X_train, y_train)
    scores = {"skulmfit": clf.score(X_test, y_test)}
    print(f"skulmfit (ULMFiT): accuracy {scores['skulmfit']:.3f} (fit {time.perf_counter() - start:.0f} s)")

    baseline = make_pipeline(TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2),
                             LogisticRegression(C=10, max_iter=2000)).fit(X_train, y_train)
    scores["tfidf-lr"] = baseline.score(X_test, y_test)
    print(f"TF-IDF + logistic regression: accuracy {scores['tfidf-lr']:.3f}")
    probabilities = clf.predict_proba(X_test[:1])[0]
    print(f"{X_test[0][:60]!r} -> {clf.predict(X_test[:1])[0]}",
          {str(c): round(float(p), 3) for c, p in zip(clf.classes_, probabilities)})
    return scores


if __name__ == "__main__":
    main()
