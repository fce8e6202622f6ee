"""Pipeline + GridSearchCV where the fine-tuned language model is computed once, not once per grid point.

``memory`` caches the language-model fine-tuning: the grid below only varies classifier-stage
parameters, so every candidate after the first of each fold reuses the cached model.

    python examples/grid_search.py            # 400 texts, 2 candidates x 2 folds: about 1-2 minutes
    python examples/grid_search.py --full     # 600 texts, 4 candidates x 3 folds: about 4 minutes
    python examples/grid_search.py --csv my.csv

Times are for TREC-6 on a 2-core CPU without bf16, estimated from measured fit times (on an
otherwise idle machine), GridSearchCV's final refit of the best candidate on all the texts
included.
"""
import argparse
import re
import tempfile
import time

from joblib import Memory
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from data import add_data_arguments, load, parse_args_with_full
from skulmfit import ULMFiTClassifier

# The default run and the full run (--full) differ only in their sizes.
DEFAULT_RUN = {"max_train": 400, "cv": 2, "grid": {"ulmfit__lr": [3e-3, 1e-2]}, "time": "about 1-2 minutes"}
FULL_RUN = {"max_train": 600, "cv": 3, "grid": {"ulmfit__lr": [3e-3, 1e-2], "ulmfit__epochs": [2, 4]},
            "time": "about 4 minutes"}


def strip_urls(texts):
    return [re.sub(r"https?://\S+", " ", t) for t in texts]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    return parse_args_with_full(parser, argv, DEFAULT_RUN, FULL_RUN)


def main(argv=None) -> GridSearchCV:
    args = parse_args(argv)
    X_train, y_train, X_test, y_test = load(args)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        pipeline = Pipeline([
            ("clean", FunctionTransformer(strip_urls)),
            ("ulmfit", ULMFiTClassifier(epochs=4, random_state=0, memory=Memory(cache, verbose=0))),
        ])
        # epochs=4 keeps every fit short (the full grid also tries 2); verbose=1 says how many fits run
        search = GridSearchCV(pipeline, args.grid, cv=args.cv, n_jobs=1, verbose=1)
        search.fit(X_train, y_train)
    print("best parameters:", search.best_params_, f"cross-validated accuracy {search.best_score_:.3f}")
    print(f"test accuracy {search.score(X_test, y_test):.3f} "
          f"({len(X_train)} training texts, {time.perf_counter() - start:.0f} s)")
    return search


if __name__ == "__main__":
    main()
