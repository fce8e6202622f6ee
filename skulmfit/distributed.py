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

import numpy as np
import pandas as pd
from scipy import sparse

PREDICTION = "prediction"  # the name of a single output column


def predict_partitions(estimator, texts, *, proba: bool = False, client=None):
    """Lazy predictions for every text of a Dask collection, in its order.

    Parameters
    ----------
    estimator : fitted ULMFiTClassifier or ULMFiTRegressor
    texts : dask.dataframe.Series or dask.bag.Bag of str
    proba : bool, default=False
        Probabilities (one ``proba_<class>`` column, or dict key, per class or label) instead of the
        predictions; a regressor has none.
    client : distributed.Client, optional
        Default: the current client (``distributed.get_client()``).

    Returns
    -------
    dask.dataframe.Series or DataFrame (with the index of ``texts``), or dask.bag.Bag
        Compute it, or write it with ``to_parquet`` / ``to_csv``, which go partition by partition.
        What ``predict`` gives, by estimator:

        * a classifier: a ``prediction`` Series of classes (a Bag of classes);
        * a multi-label classifier: a DataFrame of one 0/1 column ``label_<label>`` per label
          (a Bag of dicts with those keys);
        * a regressor: a ``prediction`` Series of floats, or with several outputs a DataFrame of
          columns ``prediction_0``, ``prediction_1``, ... (a Bag of floats, or of dicts).

    Raises
    ------
    ValueError
        If ``proba=True`` and ``estimator`` is a regressor.
    """
    from distributed import get_client
    from sklearn.utils.validation import check_is_fitted
    check_is_fitted(estimator)
    columns = _columns(estimator, proba)
    client = client or get_client()
    [model] = client.scatter([estimator], broadcast=True, hash=False)  # once per worker, not per partition
    if hasattr(texts, "dtype"):  # a dask.dataframe Series
        dtype = _dtype(estimator, proba)
        return texts.map_partitions(_predict_series, model, proba, columns, dtype,
                                    meta=_empty_output(columns, dtype))
    return texts.map_partitions(_predict_bag, model, proba, columns)


def _columns(estimator, proba: bool) -> list[str]:
    """The output's column names (a single ``prediction`` column is a Series or a Bag of values)."""
    if not hasattr(estimator, "classes_"):  # a regressor
        if proba:
            raise ValueError(f"proba=True: {type(estimator).__name__} is a regressor; it predicts values, "
                             "not probabilities")
        n_outputs = estimator.n_outputs_
        return [PREDICTION] if n_outputs == 1 else [f"{PREDICTION}_{i}" for i in range(n_outputs)]
    classes = estimator.classes_.tolist()
    if proba:
        return [f"proba_{c}" for c in classes]
    return [f"label_{c}" for c in classes] if estimator.multilabel_ else [PREDICTION]


def _dtype(estimator, proba: bool):
    """Probabilities and a regressor's values are floats, multi-label indicators ints, classes objects."""
    if proba or not hasattr(estimator, "classes_"):
        return float
    return np.int64 if estimator.multilabel_ else object


def _empty_output(columns: list[str], dtype):
    """Dask's ``meta``: an output of no rows, with the columns and dtype of every partition's."""
    if columns == [PREDICTION]:
        return pd.Series(dtype=dtype, name=PREDICTION)
    return pd.DataFrame({c: pd.Series(dtype=dtype) for c in columns})


def _outputs(estimator, texts: list[str], proba: bool, columns: list[str]) -> np.ndarray:
    """``predict`` or ``predict_proba`` as a dense array: 1-D for a single ``prediction`` column, else
    one column per name."""
    values = estimator.predict_proba(texts) if proba else estimator.predict(texts)
    values = values.toarray() if sparse.issparse(values) else np.asarray(values)
    return values.reshape(len(texts)) if columns == [PREDICTION] else values.reshape(len(texts), len(columns))


def _predict_series(part: pd.Series, estimator, proba: bool, columns: list[str], dtype):
    values = _outputs(estimator, part.tolist(), proba, columns)
    if columns == [PREDICTION]:
        return pd.Series(values, index=part.index, name=PREDICTION, dtype=dtype)
    return pd.DataFrame(values, columns=columns, index=part.index, dtype=dtype)


def _predict_bag(part, estimator, proba: bool, columns: list[str]) -> list:
    values = _outputs(estimator, list(part), proba, columns)
    if columns == [PREDICTION]:
        return values.tolist()
    return [dict(zip(columns, row)) for row in values.tolist()]
