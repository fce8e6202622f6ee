"""Fit ULMFiT on a text classification task and compare it with TF-IDF + logistic regression.

    python examples/quickstart.py                                   # 20 Newsgroups, 4 topics
    python examples/quickstart.py --csv my.csv                      # any text,label CSV
"""
import argparse
import time

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from data import add_data_arguments, load
from skulmfit import ULMFiTClassifier

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
add_data_arguments(parser)
args = parser.parse_args()
X_train, y_train, X_test, y_test = load(args)
print(f"{len(X_train)} training texts, {len(X_test)} test texts, classes: {sorted(set(y_train))}")

start = time.perf_counter()
clf = ULMFiTClassifier(random_state=0, verbose=1).fit(X_train, y_train)
print(f"ULMFiT: accuracy {clf.score(X_test, y_test):.3f} (fit {time.perf_counter() - start:.0f} s)")

baseline = make_pipeline(TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2),
                         LogisticRegression(C=10, max_iter=2000)).fit(X_train, y_train)
print(f"TF-IDF + logistic regression: accuracy {baseline.score(X_test, y_test):.3f}")
probabilities = clf.predict_proba(X_test[:1])[0]
print(f"{X_test[0][:60]!r} -> {clf.predict(X_test[:1])[0]}",
      {str(c): round(float(p), 3) for c, p in zip(clf.classes_, probabilities)})
