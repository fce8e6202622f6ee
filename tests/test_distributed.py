"""skulmfit on a real local Dask cluster (two worker processes on the loopback interface)."""
import joblib
import numpy as np
import pytest
import torch

distributed = pytest.importorskip("distributed", reason="the Dask tests need dask[distributed]")
dd = pytest.importorskip("dask.dataframe", reason="the Dask tests need dask[dataframe]")

from sklearn.model_selection import GridSearchCV  # noqa: E402

from skulmfit import ULMFiTClassifier, ULMFiTRegressor  # noqa: E402
from skulmfit.distributed import predict_partitions  # noqa: E402

TINY = dict(lm_epochs=1, epochs=1, batch_size=8, bptt=10, max_len=50, random_state=0)


@pytest.fixture(scope="module")
def client():
    import dask
    # The active memory manager trims replicas a few seconds after their tasks ran: on a busy
    # machine it removed the broadcast model from one worker before the test could see it there.
    with dask.config.set({"distributed.scheduler.active-memory-manager.start": False}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                           dashboard_address=None, silence_logs=50)
    with cluster, distributed.Client(cluster) as client:
        client.wait_for_workers(2, timeout=120)  # scatter(broadcast=True) reaches the workers known then
        yield client


@pytest.fixture(scope="module")
def fitted(tiny_weights, three_class_task):
    return ULMFiTClassifier(pretrained=str(tiny_weights), **TINY).fit(*three_class_task)


@pytest.fixture(scope="module")
def label_sets(three_class_task):
    """The three-class texts with two labels: sentiment (0 pos, 1 neg) and 2 for a "film" text."""
    texts, labels = three_class_task
    Y = np.array([[label == "pos", label == "neg", "film" in text] for text, label in zip(texts, labels)])
    return texts, Y.astype(int)


@pytest.fixture(scope="module", params=["dense", "sparse"])
def multilabel(request, tiny_weights, label_sets):
    from scipy import sparse
    texts, Y = label_sets
    return ULMFiTClassifier(pretrained=str(tiny_weights), **TINY).fit(
        texts, sparse.csr_matrix(Y) if request.param == "sparse" else Y)


@pytest.fixture(scope="module", params=[1, 2])
def regressor(request, tiny_weights, three_class_task):
    texts, labels = three_class_task
    score = np.array([{"pos": 9.0, "neg": 1.0, "neu": 5.0}[label] for label in labels])
    y = score if request.param == 1 else np.column_stack([score, -score])
    return ULMFiTRegressor(pretrained=str(tiny_weights), **TINY).fit(texts, y)


def test_workers_compute_with_one_torch_thread(client):
    threads = client.run(lambda: __import__("torch").get_num_threads())
    assert set(threads.values()) == {1}


def test_grid_search_on_the_cluster_equals_a_local_run_with_one_thread(client, tiny_weights, binary_task):
    texts, y = binary_task
    grid = {"lr": [0.01, 0.05], "drop_mult": [0.3, 0.6]}
    assert torch.get_num_threads() == 1  # the tests' own setting (conftest): the same as the workers'
    local = GridSearchCV(ULMFiTClassifier(pretrained=str(tiny_weights), **TINY), grid, cv=2).fit(texts, y)
    with joblib.parallel_backend("dask", scatter=[texts, y]):
        remote = GridSearchCV(ULMFiTClassifier(pretrained=str(tiny_weights), **TINY), grid, cv=2, n_jobs=-1)
        remote.fit(texts, y)
    np.testing.assert_array_equal(remote.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"])
    np.testing.assert_array_equal(remote.predict_proba(texts), local.predict_proba(texts))


def test_batch_prediction_keeps_order_and_sends_the_model_once(client, fitted, three_class_task, tmp_path):
    import pandas as pd
    texts = three_class_task[0] * 5
    series = dd.from_pandas(pd.Series(texts, name="text"), npartitions=6)
    labels = predict_partitions(fitted, series, client=client).compute()
    assert labels.tolist() == fitted.predict(texts).tolist() and labels.index.tolist() == list(range(len(texts)))
    proba = predict_partitions(fitted, series, proba=True, client=client)
    proba.to_csv(str(tmp_path / "part-*.csv"))
    written = pd.concat(pd.read_csv(p, index_col=0) for p in sorted(tmp_path.glob("part-*.csv")))
    np.testing.assert_allclose(written.to_numpy(), fitted.predict_proba(texts), atol=1e-6)
    import dask.bag
    bag = dask.bag.from_sequence(texts, npartitions=4)
    assert predict_partitions(fitted, bag, client=client).compute() == fitted.predict(texts).tolist()
    # The model travelled as one scattered object per worker, not inside every task.
    held = client.has_what()
    assert len(held) == 2 and all(any(k.startswith("ULMFiTClassifier") for k in map(str, keys))
                                  for keys in held.values())


def test_a_shared_memory_folder_is_reused_across_workers(client, tiny_weights, binary_task, tmp_path):
    """A second search on the cluster finds every fine-tuned language model the first one wrote."""
    texts, y = binary_task
    memory = str(tmp_path / "lm-cache")

    def search(learning_rates):
        with joblib.parallel_backend("dask", scatter=[texts, y]):
            return GridSearchCV(ULMFiTClassifier(pretrained=str(tiny_weights), memory=memory, **TINY),
                                {"lr": learning_rates}, cv=2, n_jobs=-1).fit(texts, y)

    search([0.01, 0.05])
    outputs = sorted((tmp_path / "lm-cache").rglob("output.pkl"))
    assert len(outputs) == 3  # one language model per fold and one for the refit: lr is a head parameter
    written = {path: path.stat().st_mtime_ns for path in outputs}
    again = search([0.02, 0.1])
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "lm-cache").rglob("output.pkl")} == written
    uncached = GridSearchCV(ULMFiTClassifier(pretrained=str(tiny_weights), **TINY), {"lr": [0.02, 0.1]}, cv=2)
    np.testing.assert_array_equal(again.cv_results_["mean_test_score"],
                                  uncached.fit(texts, y).cv_results_["mean_test_score"])


def partitioned(texts):
    import dask.bag
    import pandas as pd
    return dd.from_pandas(pd.Series(texts, name="text"), npartitions=3), dask.bag.from_sequence(texts, npartitions=3)


def test_batch_prediction_of_a_multilabel_model_has_a_column_per_label(client, multilabel, label_sets):
    texts = label_sets[0]
    series, bag = partitioned(texts)
    expected = multilabel.predict(texts)
    expected = expected.toarray() if hasattr(expected, "toarray") else expected
    labels = predict_partitions(multilabel, series, client=client).compute()
    assert labels.columns.tolist() == ["label_0", "label_1", "label_2"]
    np.testing.assert_array_equal(labels.to_numpy(), expected)
    assert labels.index.tolist() == list(range(len(texts)))
    proba = predict_partitions(multilabel, series, proba=True, client=client).compute()
    assert proba.columns.tolist() == ["proba_0", "proba_1", "proba_2"]
    np.testing.assert_allclose(proba.to_numpy(), multilabel.predict_proba(texts), atol=1e-6)
    rows = predict_partitions(multilabel, bag, client=client).compute()
    assert rows == [{f"label_{i}": v for i, v in enumerate(row)} for row in expected.tolist()]


def test_batch_prediction_of_a_regressor_has_a_column_per_output(client, regressor, three_class_task):
    texts = three_class_task[0]
    series, bag = partitioned(texts)
    expected = regressor.predict(texts)
    values = predict_partitions(regressor, series, client=client).compute()
    if regressor.n_outputs_ == 1:
        assert values.name == "prediction" and values.dtype == float
        assert predict_partitions(regressor, bag, client=client).compute() == pytest.approx(expected.tolist())
    else:
        assert values.columns.tolist() == ["prediction_0", "prediction_1"]
        rows = predict_partitions(regressor, bag, client=client).compute()
        np.testing.assert_allclose([[r["prediction_0"], r["prediction_1"]] for r in rows], expected, rtol=1e-6)
    np.testing.assert_allclose(values.to_numpy(), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="proba=True: ULMFiTRegressor is a regressor"):
        predict_partitions(regressor, series, proba=True, client=client)
