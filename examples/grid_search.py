"""Pipeline + GridSearchCV where the fine-tuned language model is computed once, not once per grid point.

``memory`` caches the language-model fine-tuning: the grid below only varies classifier-stage
parameters, so every candidate after the first of each fold reuses the cached model.

    python examples/grid_search.py [--csv my.csv]
"""
import argparse
import re
import tempfile

from joblib import Memory
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from data import add_data_arguments, load
from skulmfit import ULMFiTClassifier


def strip_urls(texts):
    return [re.sub(r"https?://\S+", " ", t) for t in texts]


parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
add_data_arguments(parser)
parser.set_defaults(max_train=600)
args = parser.parse_args()
X_train, y_train, X_test, y_test = load(args)

with tempfile.TemporaryDirectory() as cache:
    pipeline = Pipeline([
        ("clean", FunctionTransformer(strip_urls)),
        ("ulmfit", ULMFiTClassifier(random_state=0, memory=Memory(cache, verbose=0))),
    ])
    search = GridSearchCV(pipeline, {"ulmfit__lr": [3e-3, 1e-2], "ulmfit__epochs": [2, 4]}, cv=3, n_jobs=1)
    search.fit(X_train, y_train)
print("best parameters:", search.best_params_, f"cross-validated accuracy {search.best_score_:.3f}")
print(f"test accuracy {search.score(X_test, y_test):.3f}")
