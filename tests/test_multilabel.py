"""Multi-label classification: a 2-D indicator y, one sigmoid per label, scikit-learn's metrics agree."""
import numpy as np
import pytest
from scipy import sparse
from sklearn.metrics import f1_score
from sklearn.preprocessing import MultiLabelBinarizer
from sklearn.utils.multiclass import type_of_target

import skulmfit
from skulmfit import ULMFiTClassifier

TINY = dict(lm_epochs=1, epochs=2, batch_size=8, bptt=10, max_len=50, random_state=0)


def topics(keyword_task, n, seed):
    """Keyword texts with two label sets: sentiment ("good"/"bad") and, for a "music" word, "music"."""
    texts, labels = keyword_task(n, seed)
    rng = np.random.default_rng(seed)
    music = rng.random(n) < 0.5
    texts = [t[:-1] + (" with music." if m else ".") for t, m in zip(texts, music)]
    return texts, [{label} | ({"music"} if m else set()) for label, m in zip(labels, music)]


def test_learns_labels_independently_and_sklearn_metrics_agree(tiny_weights, keyword_task):
    X_train, sets_train = topics(keyword_task, 200, seed=0)
    X_test, sets_test = topics(keyword_task, 100, seed=1)
    binarizer = MultiLabelBinarizer().fit(sets_train)
    Y_train, Y_test = binarizer.transform(sets_train), binarizer.transform(sets_test)
    clf = ULMFiTClassifier(pretrained=str(tiny_weights), **{**TINY, "epochs": 10, "batch_size": 16, "lr": 5e-2,
                                                            "drop_mult": 0.1}).fit(X_train, Y_train)
    assert clf.multilabel_ and clf.classes_.tolist() == [0, 1, 2]
    Y_pred = clf.predict(X_test)
    assert type_of_target(Y_pred) == "multilabel-indicator" and Y_pred.shape == (100, 3)
    proba = clf.predict_proba(X_test)
    assert proba.shape == (100, 3) and not np.allclose(proba.sum(1), 1)  # labels are independent
    assert f1_score(Y_test, Y_pred, average="micro") > 0.9
    assert clf.score(X_test, Y_test) == pytest.approx(np.mean((Y_pred == Y_test).all(1)))  # subset accuracy
    strict = clf.set_params(threshold=0.99).predict(X_test)
    assert strict.sum() <= Y_pred.sum()


def test_sparse_targets_give_sparse_predictions_and_unseen_labels_are_kept(tiny_weights):
    texts = ["a great film", "an awful film", "great music", "awful music"] * 4
    Y = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 1, 0]] * 4)  # label 3: no text has it
    clf = ULMFiTClassifier(pretrained=str(tiny_weights), **TINY).fit(texts, sparse.csr_matrix(Y))
    predicted = clf.predict(texts)
    assert sparse.issparse(predicted) and predicted.shape == (16, 4)
    assert clf.predict_proba(texts)[:, 3].max() < 0.5 and predicted[:, 3].sum() == 0


def test_validation_early_stopping_uses_micro_f1(tiny_weights):
    texts = ["a great film", "an awful film", "great music", "awful music"] * 4
    Y = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 1, 1]] * 4)
    clf = ULMFiTClassifier(pretrained=str(tiny_weights), validation_fraction=0.25, **TINY).fit(texts, Y)
    assert all("valid_micro_f1" in record for record in clf.history_[0])


@pytest.mark.parametrize("Y, match", [
    (np.array([[0.5, 1.0]] * 16), r"only 0 and 1; it holds \[0.5, 1.0\]"),
    (np.array([["a", "b"]] * 16), "indicator matrix of labels"), (np.array([[1, 0]] * 15), "16 texts but y has 15 rows")])
def test_bad_label_matrices_are_refused(tiny_weights, Y, match):
    with pytest.raises(ValueError, match=match):
        ULMFiTClassifier(pretrained=str(tiny_weights), **TINY).fit(["a great film"] * 16, Y)


@pytest.mark.parametrize("values", [(0, 2), (-1, 1), (1, 2)])
@pytest.mark.parametrize("as_sparse", [False, True])
def test_two_valued_matrices_other_than_0_1_are_refused_naming_their_values(tiny_weights, values, as_sparse):
    """scikit-learn calls any two-integer matrix an indicator matrix; binary cross-entropy on such
    values would train into nonsense, so they are refused before any work."""
    Y = np.array([[values[1], values[0]], [values[0], values[1]]] * 8)
    if as_sparse:
        Y = sparse.csr_matrix(Y)
    with pytest.raises(ValueError, match=r"must hold only 0 and 1; it holds \[.*{}\]".format(values[1])):
        ULMFiTClassifier(pretrained=str(tiny_weights), **TINY).fit(["a great film", "an awful film"] * 8, Y)


def test_boolean_indicator_matrices_are_accepted(tiny_weights):
    Y = np.array([[True, False], [False, True]] * 8)
    clf = ULMFiTClassifier(pretrained=str(tiny_weights), **TINY).fit(["a great film", "an awful film"] * 8, Y)
    assert clf.multilabel_ and clf.predict(["a great film"]).shape == (1, 2)


@pytest.mark.parametrize("threshold", [1.5, -0.1, "high"])
def test_a_threshold_set_after_fit_is_checked_where_it_is_used(tiny_weights, threshold):
    texts = ["a great film", "an awful film"] * 8
    clf = ULMFiTClassifier(pretrained=str(tiny_weights), **TINY).fit(texts, np.array([[1, 0], [0, 1]] * 8))
    clf.threshold = threshold
    with pytest.raises(ValueError, match="'threshold' parameter"):
        clf.predict(texts)


def test_class_weight_is_refused_with_a_pointer_to_sample_weight(tiny_weights):
    with pytest.raises(ValueError, match="sample_weight"):
        ULMFiTClassifier(pretrained=str(tiny_weights), class_weight="balanced", **TINY).fit(
            ["a great film", "an awful film"] * 4, np.array([[1, 0], [0, 1]] * 4))


def test_safe_format_round_trip(tiny_weights, tmp_path):
    texts = ["a great film", "an awful film", "great music", "awful music"] * 4
    Y = sparse.csr_matrix(np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 1, 1]] * 4))
    clf = ULMFiTClassifier(pretrained=str(tiny_weights), **TINY).fit(texts, Y)
    clf.save(tmp_path / "m")
    loaded = skulmfit.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict_proba(texts), clf.predict_proba(texts))
    assert sparse.issparse(loaded.predict(texts)) and loaded.multilabel_


def test_bidirectional_multi_label_and_its_explanations():
    texts = ["a great film", "an awful film", "great music", "awful music"] * 4
    Y = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 1, 1]] * 4)
    clf = ULMFiTClassifier(pretrained=None, bidirectional=True, **{**TINY, "lm_epochs": 0}).fit(texts, Y)
    assert len(clf.models_) == 2 and clf.predict(texts).shape == (16, 3)
    [explanation] = clf.explain(["great music"], target=2)
    assert explanation.target == 2 and explanation.value == pytest.approx(clf.predict_proba(["great music"])[0, 2])
