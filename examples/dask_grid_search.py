"""Grid search and batch prediction on a Dask cluster.

By default a local cluster of two worker processes (one thread each) on this machine; pass a
scheduler's address to use a real cluster started with, for example::

    dask scheduler                                             # on one machine
    CUDA_VISIBLE_DEVICES=0 dask worker tcp://HOST:8786 --nthreads 1 --nworkers 1   # one per GPU
    python examples/dask_grid_search.py --scheduler tcp://HOST:8786

Each worker task fits on its worker's GPU if it has one (device="auto"), else on one CPU thread.
Workers that use CUDA must not be forked from a process that already initialised it: dask's
worker processes are spawned (the default, ``distributed.worker.multiprocessing-method: spawn``).

    python examples/dask_grid_search.py           # 300 texts, 2 candidates x 2 folds: about 3 minutes
    python examples/dask_grid_search.py --full    # 500 texts, 4 candidates x 3 folds: about 9 minutes

Times are for TREC-6 on the local cluster of a 2-core CPU without bf16, estimated from measured
fit times (on an otherwise idle machine: other work on the cores stretches them). A worker fits
both directions one after the other on one thread; GridSearchCV then refits the best candidate
on all the texts in this process.
"""
import argparse
import time

import joblib
import pandas as pd
from sklearn.model_selection import GridSearchCV

from data import add_data_arguments, load, parse_args_with_full
from skulmfit import ULMFiTClassifier
from skulmfit.distributed import predict_partitions

# The default run and the full run (--full) differ only in their sizes.
DEFAULT_RUN = {"max_train": 300, "cv": 2, "grid": {"lr": [0.02, 0.05]}, "time": "about 3 minutes"}
FULL_RUN = {"max_train": 500, "cv": 3, "grid": {"lr": [0.02, 0.05], "drop_mult": [0.3, 0.5]}, "time": "about 9 minutes"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument("--scheduler", help="address of a running Dask scheduler (default: a local cluster)")
    return parse_args_with_full(parser, argv, DEFAULT_RUN, FULL_RUN)


def main(argv=None) -> GridSearchCV:
    args = parse_args(argv)
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    X_train, y_train, X_test, y_test = load(args)
    start = time.perf_counter()
    cluster = None if args.scheduler else LocalCluster(n_workers=2, threads_per_worker=1, processes=True)
    with Client(args.scheduler or cluster) as client:
        print(client)
        search = GridSearchCV(ULMFiTClassifier(random_state=0, memory="cache-lm"), args.grid, cv=args.cv,
                              n_jobs=-1, verbose=1)
        with joblib.parallel_backend("dask", scatter=[X_train, y_train]):
            search.fit(X_train, y_train)  # memory= (a folder all workers see) reuses fine-tuned LMs
        print("best", search.best_params_, f"cross-validated accuracy {search.best_score_:.3f}")
        texts = dd.from_pandas(pd.Series(X_test, name="text"), npartitions=8)
        predictions = predict_partitions(search.best_estimator_, texts, proba=True)
        predictions.to_csv("predictions-*.csv")  # written partition by partition, in input order
        print(f"test accuracy {search.best_estimator_.score(X_test, y_test):.3f}; probabilities in predictions-*.csv "
              f"({len(X_train)} training texts, {time.perf_counter() - start:.0f} s)")
    if cluster is not None:
        cluster.close()
    return search


if __name__ == "__main__":
    main()
