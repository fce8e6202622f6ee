"""Prediction over a Dask cluster: a large collection of texts, the fitted model sent once per worker.

Grid search needs nothing from this module: scikit-learn's own route works as it is::

    with joblib.parallel_backend("dask", scatter=[X, y]):
        GridSearchCV(ULMFiTClassifier(), grid, n_jobs=-1).fit(X, y)

Dask's worker processes start with ``OMP_NUM_THREADS=1``, so torch computes each task on one
thread; a result equals an ``n_jobs=1`` run that also uses one torch thread
(``torch.set_num_threads(1)``): see ``random_state`` in :class:`skulmfit.ULMFiTClassifier`.

For prediction, :func:`predict_partitions` maps a fitted estimator over the partitions of a
``dask.dataframe`` Series or a ``dask.bag`` of texts. The estimator is scattered to every worker once
(``broadcast=True``); each partition's task refers to that copy instead of carrying a pickled model.
"""
from __future__ import annotations

import pandas as pd


def predict_partitions(estimator, texts, *, proba: bool = False, client=None):
    """Lazy predictions for every text of a Dask collection, in its order.

    Parameters
    ----------
    estimator : fitted ULMFiTClassifier
    texts : dask.dataframe.Series or dask.bag.Bag of str
    proba : bool, default=False
        Class probabilities (one ``proba_<class>`` column, or dict key, per class) instead of the
        predicted classes.
    client : distributed.Client, optional
        Default: the current client (``distributed.get_client()``).

    Returns
    -------
    dask.dataframe.Series or DataFrame (with the index of ``texts``), or dask.bag.Bag
        Compute it, or write it with ``to_parquet`` / ``to_csv``, which go partition by partition.
    """
    from distributed import get_client
    from sklearn.utils.validation import check_is_fitted
    check_is_fitted(estimator)
    client = client or get_client()
    [model] = client.scatter([estimator], broadcast=True, hash=False)  # once per worker, not per partition
    columns = [f"proba_{c}" for c in estimator.classes_.tolist()]
    if hasattr(texts, "dtype"):  # a dask.dataframe Series
        meta = (pd.DataFrame({c: pd.Series(dtype=float) for c in columns}) if proba
                else pd.Series(dtype=object, name="prediction"))
        return texts.map_partitions(_predict_series, model, proba, columns, meta=meta)
    return texts.map_partitions(_predict_bag, model, proba, columns)


def _predict_series(part: pd.Series, estimator, proba: bool, columns: list[str]):
    texts = part.tolist()
    if proba:
        return pd.DataFrame(estimator.predict_proba(texts), columns=columns, index=part.index)
    return pd.Series(estimator.predict(texts), index=part.index, name="prediction", dtype=object)


def _predict_bag(part, estimator, proba: bool, columns: list[str]) -> list:
    texts = list(part)
    if proba:
        return [dict(zip(columns, row)) for row in estimator.predict_proba(texts).tolist()]
    return estimator.predict(texts).tolist()
