"""Grid search and batch prediction on a Dask cluster.

By default a local cluster of two worker processes (one thread each) on this machine; pass a
scheduler's address to use a real cluster started with, for example::

    dask scheduler                                             # on one machine
    CUDA_VISIBLE_DEVICES=0 dask worker tcp://HOST:8786 --nthreads 1 --nworkers 1   # one per GPU
    python examples/dask_grid_search.py --scheduler tcp://HOST:8786

Each worker task fits on its worker's GPU if it has one (device="auto"), else on one CPU thread.
Workers that use CUDA must not be forked from a process that already initialised it: dask's
worker processes are spawned (the default, ``distributed.worker.multiprocessing-method: spawn``).
"""
import argparse

import joblib
import pandas as pd
from sklearn.model_selection import GridSearchCV

from data import add_data_arguments, load
from skulmfit import ULMFiTClassifier
from skulmfit.distributed import predict_partitions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--scheduler", help="address of a running Dask scheduler (default: a local cluster)")
    parser.set_defaults(max_train=500)
    args = parser.parse_args()
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    X_train, y_train, X_test, y_test = load(args)
    cluster = None if args.scheduler else LocalCluster(n_workers=2, threads_per_worker=1, processes=True)
    with Client(args.scheduler or cluster) as client:
        print(client)
        search = GridSearchCV(ULMFiTClassifier(random_state=0, memory="cache-lm"),
                              {"lr": [0.02, 0.05], "drop_mult": [0.3, 0.5]}, cv=3, n_jobs=-1)
        with joblib.parallel_backend("dask", scatter=[X_train, y_train]):
            search.fit(X_train, y_train)  # memory= (a folder all workers see) reuses fine-tuned LMs
        print("best", search.best_params_, f"cross-validated accuracy {search.best_score_:.3f}")
        texts = dd.from_pandas(pd.Series(X_test, name="text"), npartitions=8)
        predictions = predict_partitions(search.best_estimator_, texts, proba=True)
        predictions.to_csv("predictions-*.csv")  # written partition by partition, in input order
        print(f"test accuracy {search.best_estimator_.score(X_test, y_test):.3f}; probabilities in predictions-*.csv")
    if cluster is not None:
        cluster.close()


if __name__ == "__main__":
    main()
