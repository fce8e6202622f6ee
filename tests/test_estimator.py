"""Tests of the scikit-learn estimators (skulmfit/estimator.py) and the engine that fits them
(skulmfit/engine.py).

Every fit uses the tiny weight files of ``conftest.py`` (an 8-dimensional AWD-LSTM) and one
epoch of each stage, so a fit takes a fraction of a second; the bundled model is never used.
"""
import copy
import io
import json
import os
import pickle
import subprocess
import sys
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import accuracy_score
from sklearn.model_selection import GridSearchCV, cross_val_score, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import (
    check_estimator_repr,
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)
from sklearn.utils.validation import check_is_fitted

import skulmfit
import skulmfit.engine as engine_module
import skulmfit.estimator as estimator_module
import skulmfit.persistence as persistence_module
from skulmfit import ULMFiTClassifier
from skulmfit.environment import resolve_precision, torch_threads
from skulmfit.estimator import _check_texts
from skulmfit.training import NonFiniteLossError, cpu_computes_bf16

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(lm_epochs=1, epochs=1, batch_size=8, bptt=10, max_len=50, random_state=0)


def make(weights, **params):
    """A ULMFiTClassifier on the tiny weights with tiny settings; ``params`` override them."""
    return ULMFiTClassifier(pretrained=str(weights), **{**TINY, **params})


def lowercase(texts):
    """Module-level (picklable) cleaning step for the Pipeline test."""
    return [text.lower() for text in texts]


@pytest.fixture(scope="session")
def fitted(tiny_weights, three_class_task):
    """One fitted three-class model shared by read-only tests (copy it before changing it)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return make(tiny_weights).fit(*three_class_task)
    finally:
        torch.set_num_threads(previous)


@pytest.fixture
def no_training(monkeypatch):
    """Fails the test if fit gets as far as fine-tuning or classifier training."""
    def forbidden(*args, **kwargs):
        raise AssertionError("training started although the input is invalid")
    monkeypatch.setattr(engine_module, "fine_tune_encoder", forbidden)
    monkeypatch.setattr(engine_module, "train_classifier", forbidden)


def spy(monkeypatch, name):
    """Replaces ``skulmfit.engine.<name>`` (what fit calls) by a wrapper recording each call's arguments."""
    original = getattr(engine_module, name)
    calls = []

    def wrapper(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)
    monkeypatch.setattr(engine_module, name, wrapper)
    return calls


# ----------------------------------------------------------------------------- 1. input validation

@pytest.mark.parametrize("X, error, match", [
    (["good", "bad", None, "ok"], TypeError, r"X\[2\] is missing \(None\)"),
    (["good", float("nan"), "bad", "ok"], TypeError, r"X\[1\] is missing \(NaN\)"),
    (np.array(["good", "bad", "ok", np.nan], dtype=object), TypeError, r"X\[3\] is missing \(NaN\)"),
    (["good", "bad", 3, "ok"], TypeError, r"X\[2\] is int"),
    ([b"good", "bad", "so", "ok"], TypeError, r"X\[0\] is bytes"),
    ("good bad so ok", TypeError, r"single str"),
    (np.array([["good", "bad"], ["so", "ok"]], dtype=object), ValueError, r"1-D.*shape \(2, 2\)"),
    (42, TypeError, r"iterable of str"),
])
def test_invalid_texts_are_rejected_before_training(no_training, tiny_weights, X, error, match):
    clf = make(tiny_weights)
    with pytest.raises(error, match=match):
        clf.fit(X, ["a", "b", "a", "b"])
    assert not hasattr(clf, "classes_")  # a failed fit leaves no fitted attribute behind


@pytest.mark.parametrize("y, error, match", [
    (["a", "b", "a"], ValueError, r"X has 4 texts but y has 3 labels"),
    (["a", "a", "a", "a"], ValueError, r"single class \('a'\)"),
    (["a", "b", None, "a"], ValueError, r"y\[2\] is missing"),
    (["a", "b", "a", float("nan")], ValueError, r"y\[3\] is missing"),  # NaN among str labels
    ([0.0, 1.0, np.nan, 1.0], ValueError, r"y\[2\] is missing"),
    (pd.Series(["a", None, "b", "a"]), ValueError, r"y\[1\] is missing"),
    ([0.1, 0.7, 0.35, 0.9], ValueError, r"Unknown label type: continuous"),
    ([["a"], ["b"], ["a"], ["b"]], ValueError, r"y must be 1-D"),
    (None, ValueError, r"y is required"),
])
def test_invalid_labels_are_rejected_before_training(no_training, tiny_weights, y, error, match):
    clf = make(tiny_weights)
    with pytest.raises(error, match=match):
        clf.fit(["good", "bad", "so so", "okay"], y)
    assert not hasattr(clf, "classes_")


def test_empty_X_is_rejected(no_training, tiny_weights):
    with pytest.raises(ValueError, match="X is empty"):
        make(tiny_weights).fit([], [])


def test_unlabeled_with_a_missing_text_is_rejected(no_training, tiny_weights):
    with pytest.raises(TypeError, match=r"unlabeled\[1\] is missing \(None\)"):
        make(tiny_weights).fit(["good", "bad"], ["a", "b"], unlabeled=["fine", None])
    with pytest.raises(TypeError, match="unlabeled must be a sequence of texts"):
        make(tiny_weights).fit(["good", "bad"], ["a", "b"], unlabeled="fine")


@pytest.mark.parametrize("params", [
    dict(lm_epochs=-1), dict(lr=0), dict(lm_lr=-1e-3), dict(device="tpu"), dict(device="cuda:x"),
    dict(precision="fp16"), dict(class_weight="foo"), dict(batch_size=1), dict(bptt=2), dict(max_vocab=8),
    dict(validation_fraction=1.0), dict(n_iter_no_change=0), dict(bidirectional="yes"), dict(pretrained=3),
    dict(n_jobs=0), dict(n_jobs=-2), dict(n_jobs=1.5), dict(max_tokens=1), dict(max_tokens=2.5),
])
def test_invalid_parameters_raise_invalid_parameter_error(no_training, tiny_weights, params):
    clf = ULMFiTClassifier(**{"pretrained": str(tiny_weights), **TINY, **params})
    with pytest.raises(InvalidParameterError):
        clf.fit(["good", "bad"], ["a", "b"])


def test_n_iter_no_change_needs_validation_fraction(no_training, tiny_weights):
    with pytest.raises(ValueError, match="n_iter_no_change needs validation_fraction"):
        make(tiny_weights, n_iter_no_change=2).fit(["good", "bad"], ["a", "b"])


def test_unavailable_cuda_is_an_error_at_fit(no_training, tiny_weights, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device='cuda' is not available on this machine"):
        make(tiny_weights, device="cuda").fit(["good", "bad"], ["a", "b"])


def test_failed_refit_keeps_the_previous_fit(fitted, three_class_task):
    clf = copy.deepcopy(fitted)
    before = clf.predict_proba(three_class_task[0])
    with pytest.raises(ValueError, match="single class"):
        clf.fit(["good", "bad"], ["a", "a"])
    np.testing.assert_array_equal(clf.classes_, ["neg", "neu", "pos"])
    np.testing.assert_array_equal(clf.predict_proba(three_class_task[0]), before)


def test_empty_strings_are_valid_texts(tiny_weights, binary_task):
    texts, y = binary_task
    clf = make(tiny_weights).fit(["", *texts, ""], ["pos", *y, "neg"])
    proba = clf.predict_proba(["", "great", ""])
    assert proba.shape == (3, 2)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-6)
    np.testing.assert_allclose(proba[0], proba[2], atol=1e-6)  # same text, rows of one batch: float rounding only
    assert set(clf.predict([""])) <= {"pos", "neg"}


def test_check_texts_accepts_numpy_str_arrays_and_generators():
    assert _check_texts(np.array(["a", "bb"])) == ["a", "bb"]
    assert _check_texts(t for t in ("a", "bb")) == ["a", "bb"]
    assert _check_texts(pd.Series(["a", "bb"], index=[7, 3])) == ["a", "bb"]


# ----------------------------------------------------------------------------- 2. labels and inputs

@pytest.mark.parametrize("kind", ["str", "int", "bool"])
def test_label_types_round_trip(tiny_weights, three_class_task, kind):
    texts, labels = three_class_task
    mapping = {"str": {"neg": "neg", "neu": "neu", "pos": "pos"},
               "int": {"neg": -1, "neu": 0, "pos": 7},
               "bool": {"neg": False, "neu": False, "pos": True}}[kind]
    y = np.array([mapping[label] for label in labels])
    clf = make(tiny_weights).fit(texts, list(y))
    np.testing.assert_array_equal(clf.classes_, np.unique(y))
    prediction = clf.predict(texts)
    assert prediction.shape == (len(texts),)
    assert prediction.dtype == y.dtype
    assert set(prediction.tolist()) <= set(y.tolist())
    proba = clf.predict_proba(texts)
    assert proba.shape == (len(texts), len(np.unique(y)))
    assert proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(prediction, clf.classes_[proba.argmax(axis=1)])
    assert clf.score(texts, list(y)) == pytest.approx(accuracy_score(y, prediction))


def test_probability_columns_follow_classes(tiny_weights, three_class_task):
    """A model that learned the separable task puts the most mass on each text's own class,
    so column ``k`` of predict_proba is ``classes_[k]`` (labels are given in an unsorted order)."""
    texts, labels = three_class_task
    order = np.random.default_rng(0).permutation(len(texts))
    texts, labels = [texts[i] for i in order], [labels[i] for i in order]
    clf = make(tiny_weights, epochs=20, lr=0.03, discriminative_lr=False).fit(texts, labels)
    proba = clf.predict_proba(texts)
    own_column = np.searchsorted(clf.classes_, labels)
    accuracy = np.mean(proba.argmax(1) == own_column)
    assert accuracy >= 0.8, accuracy
    assert clf.score(texts, labels) == pytest.approx(accuracy)


@pytest.mark.parametrize("convert", [list, tuple, lambda t: np.array(t, dtype=object), pd.Series,
                                     lambda t: np.array(t)], ids=["list", "tuple", "object-array", "series",
                                                                  "str-array"])
def test_X_containers_give_the_same_predictions(fitted, three_class_task, convert):
    texts, labels = three_class_task
    expected = fitted.predict_proba(texts)
    np.testing.assert_array_equal(fitted.predict_proba(convert(texts)), expected)
    assert fitted.score(convert(texts), pd.Series(labels)) == fitted.score(texts, labels)


def test_fit_accepts_pandas_series(tiny_weights, three_class_task):
    texts, labels = three_class_task
    clf = make(tiny_weights).fit(pd.Series(texts, index=range(100, 124)), pd.Series(labels))
    np.testing.assert_array_equal(clf.classes_, ["neg", "neu", "pos"])


def test_predicting_nothing(fitted):
    assert fitted.predict_proba([]).shape == (0, 3)
    assert fitted.predict([]).shape == (0,)
    assert fitted.transform([]).shape == (0, 24)


# ----------------------------------------------------------------------------- 3. transform

def test_transform_gives_concat_pooled_features(fitted, three_class_task):
    features = fitted.transform(three_class_task[0])
    assert features.shape == (24, 3 * 8)
    assert features.dtype == np.float32
    assert np.isfinite(features).all()
    # [last, max, mean]: the max pool is never below the mean pool
    assert (features[:, 8:16] >= features[:, 16:24] - 1e-6).all()


def test_bidirectional_without_pretrained_weights(binary_task):
    from skulmfit.tokenizer import tokenize_many
    from skulmfit.training import pooled_features, predict_logits
    texts, y = binary_task
    # fp32: the references below are computed in fp32, and bf16 rounding would blur the comparison
    clf = ULMFiTClassifier(pretrained=None, **{**TINY, "bidirectional": True, "precision": "fp32"}).fit(texts, y)
    assert len(clf.models_) == len(clf.vocab_) == len(clf.history_) == 2
    emb = engine_module.RANDOM_INIT_SIZES["emb_size"]
    features = clf.transform(texts[:5])
    assert features.shape == (5, 6 * emb) and features.dtype == np.float32
    # forward features first, then the backward model's, which reads the documents reversed
    tokens = tokenize_many(texts)
    directions = list(zip(clf.models_, clf.vocab_, (False, True)))
    per_direction = [pooled_features(m, v.numericalize_many(tokens[:5]), backwards=b) for m, v, b in directions]
    np.testing.assert_allclose(features, np.concatenate(per_direction, axis=1), rtol=1e-5, atol=1e-6)
    # probabilities are the mean of the two directions'
    proba = [torch.softmax(torch.from_numpy(predict_logits(m, v.numericalize_many(tokens), backwards=b)), 1).numpy()
             for m, v, b in directions]
    assert not np.allclose(proba[0], proba[1])
    np.testing.assert_allclose(clf.predict_proba(texts), (proba[0] + proba[1]) / 2, rtol=1e-5, atol=1e-6)


def test_bidirectional_with_two_processes_equals_one_after_the_other(binary_task):
    """n_jobs=2 fits the backward direction in a worker process; with one torch thread per direction
    either way, the fitted models are the same bit for bit."""
    texts, y = binary_task
    params = dict(pretrained=None, **TINY, bidirectional=True, precision="fp32")
    sequential = ULMFiTClassifier(**params).fit(texts, y)
    parallel = ULMFiTClassifier(**params, n_jobs=2).fit(texts, y)
    assert torch.get_num_threads() == 1  # restored after the forward direction's half
    assert untimed(parallel.history_) == untimed(sequential.history_)
    assert [r["losses"] for r in parallel.lm_history_] == [r["losses"] for r in sequential.lm_history_]
    np.testing.assert_array_equal(parallel.predict_proba(texts), sequential.predict_proba(texts))
    for ours, theirs in zip(parallel.models_, sequential.models_):
        for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
            assert torch.equal(a, b), name


def test_a_failure_in_either_process_leaves_the_fitted_model_as_it_was(binary_task):
    texts, y = binary_task
    clf = ULMFiTClassifier(pretrained=None, **TINY, bidirectional=True, n_jobs=2).fit(texts, y)
    before = clf.predict_proba(texts)
    with pytest.raises(NonFiniteLossError, match="left the estimator as it was"):
        clf.set_params(lr=1e38, lm_lr=1e38).fit(texts, y)
    np.testing.assert_array_equal(clf.predict_proba(texts), before)
    # the worker was stopped with the failed fit; the next fit starts a new one
    clf.set_params(lr=5e-2, lm_lr=4e-3).fit(texts, y)
    assert len(clf.models_) == 2


def test_a_failure_in_the_backward_process_reaches_the_caller(tiny_weights, tiny_itos, binary_task, tmp_path,
                                                             monkeypatch):
    """Only the backward model (fitted in the worker) has non-finite weights: its error is raised by
    fit as if it had been fitted here, and the forward model's success does not leave a half fit."""
    from dataclasses import replace

    from skulmfit.model import AWDLSTMConfig, LanguageModel
    from skulmfit.pretrained import resolve, resolve_pretrained, save_weights
    model = LanguageModel(AWDLSTMConfig(vocab_size=len(tiny_itos), emb_size=8, hidden_size=16, n_layers=2))
    with torch.no_grad():
        for weight in model.parameters():
            weight.fill_(float("nan"))
    broken = tmp_path / "broken.bwd.pt"
    save_weights(broken, model, tiny_itos, backwards=True, card={"name": "broken"})
    forward = resolve_pretrained(tiny_weights, bidirectional=False)
    monkeypatch.setattr(estimator_module, "resolve_pretrained", lambda pretrained, bidirectional: replace(
        forward, models=(*forward.models, resolve(broken, backwards=True))))
    clf = make(tiny_weights, bidirectional=True, n_jobs=2)
    with pytest.raises(NonFiniteLossError, match="non-finite pretrained weights"):
        clf.fit(*binary_task)
    assert not hasattr(clf, "models_")


@pytest.mark.parametrize("n_jobs, threads, device, parallel", [
    (None, 2, "cpu", True),    # the default: two processes where torch has two threads or more
    (None, 1, "cpu", False),   # a joblib or Dask worker (one thread): one after the other
    (None, 4, "cuda", False),  # a GPU fits the directions one after the other
    (1, 4, "cpu", False),
    (2, 1, "cpu", True),
    (-1, 1, "cpu", True),
])
def test_when_the_two_directions_run_in_two_processes(n_jobs, threads, device, parallel):
    clf = ULMFiTClassifier(n_jobs=n_jobs)
    with torch_threads(threads):
        assert clf._parallel_directions(torch.device(device), n_directions=2) is parallel
        assert clf._parallel_directions(torch.device(device), n_directions=1) is False


def test_a_single_weight_file_cannot_serve_both_directions(no_training, tiny_weights, tiny_weights_bwd):
    """Known gap: ``pretrained`` takes one path, and a skulmfit file holds one direction, so a
    fwd+bwd pair of files can only be used through the bundled-model registry (see
    tests/test_pretrained.py::test_bidirectional_estimator_on_a_registered_pair)."""
    # fine_tune_encoder is stubbed out by no_training: check resolve's errors directly
    from skulmfit.pretrained import resolve
    with pytest.raises(ValueError, match="holds a forward model"):
        resolve(str(tiny_weights), backwards=True)
    with pytest.raises(ValueError, match="holds a backward model"):
        resolve(str(tiny_weights_bwd), backwards=False)


def test_bidirectional_with_a_forward_file_fails_clearly(tiny_weights, binary_task):
    with pytest.raises(ValueError, match="holds a forward model"):
        make(tiny_weights, bidirectional=True, lm_epochs=0).fit(*binary_task)


# ----------------------------------------------------------------------------- 4. scikit-learn API

def test_clone_gives_an_unfitted_copy_with_equal_params(fitted):
    copied = clone(fitted)
    assert copied.get_params() == fitted.get_params()
    assert not hasattr(copied, "models_") and not hasattr(copied, "classes_")
    with pytest.raises(NotFittedError):
        check_is_fitted(copied)


def test_get_params_set_params_round_trip():
    clf = ULMFiTClassifier()
    params = clf.get_params()
    assert params["pretrained"] == skulmfit.pretrained.DEFAULT_MODEL
    changed = dict(epochs=7, lr=0.5, class_weight={"a": 2.0}, device="cpu", verbose=1)
    assert clf.set_params(**changed) is clf
    assert clf.get_params() == {**params, **changed}
    clf.set_params(**params)
    assert clf.get_params() == params
    with pytest.raises(ValueError, match="Invalid parameter"):
        clf.set_params(epoch=3)


@pytest.mark.parametrize("check", [check_no_attributes_set_in_init, check_get_params_invariance, check_set_params,
                                   check_parameters_default_constructible, check_estimator_repr])
def test_sklearn_estimator_checks(check):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checks report some problems as warnings
        check("ULMFiTClassifier", ULMFiTClassifier())


def test_tags_declare_text_input():
    tags = ULMFiTClassifier().__sklearn_tags__()
    assert tags.input_tags.string is True
    assert tags.input_tags.two_d_array is False
    assert tags.estimator_type == "classifier"


@pytest.mark.parametrize("method", ["predict", "predict_proba", "transform", "score"])
def test_not_fitted_error(method):
    clf = ULMFiTClassifier()
    args = (["text"], ["a"]) if method == "score" else (["text"],)
    with pytest.raises(NotFittedError):
        getattr(clf, method)(*args)
    with pytest.raises(NotFittedError):
        check_is_fitted(clf)


# ----------------------------------------------------------------------------- 5. model selection

def test_pipeline_with_a_cleaning_step(tiny_weights, binary_task):
    texts, y = binary_task
    shouting = [t.upper() for t in texts]
    pipe = Pipeline([("clean", FunctionTransformer(lowercase)), ("clf", make(tiny_weights))]).fit(shouting, y)
    direct = make(tiny_weights).fit(texts, y)
    # the cleaning step ran: the pipeline equals a model fitted on the lowercased texts
    np.testing.assert_array_equal(pipe.predict_proba(shouting), direct.predict_proba(texts))
    assert set(pipe.predict(["GREAT FILM"])) <= {"pos", "neg"}


def test_cross_val_score(tiny_weights, binary_task):
    scores = cross_val_score(make(tiny_weights, gradual_unfreezing=False), *binary_task, cv=2)
    assert scores.shape == (2,)
    assert ((scores >= 0) & (scores <= 1)).all()


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_grid_search(tiny_weights, binary_task, n_jobs):
    clf = make(tiny_weights, lm_epochs=0, gradual_unfreezing=False)
    search = GridSearchCV(clf, {"epochs": [1, 2]}, cv=2, n_jobs=n_jobs).fit(*binary_task)
    assert search.best_params_["epochs"] in (1, 2)
    assert len(search.cv_results_["mean_test_score"]) == 2
    assert search.best_estimator_.get_params()["epochs"] == search.best_params_["epochs"]
    assert search.predict(binary_task[0][:3]).shape == (3,)


def test_parallel_workers_limit_torch_threads(tiny_weights, binary_task):
    """joblib's loky workers get OMP_NUM_THREADS = cpu_count // n_jobs, which torch obeys, so
    the estimator needs no thread limiting of its own; n_threads_ records what fit used."""
    result = cross_validate(make(tiny_weights, lm_epochs=0, gradual_unfreezing=False), *binary_task, cv=2,
                            n_jobs=2, return_estimator=True)
    limit = max(1, (os.cpu_count() or 1) // 2)
    for fitted_estimator in result["estimator"]:
        assert 1 <= fitted_estimator.n_threads_ <= limit


def test_n_threads_records_the_torch_threads(tiny_weights, binary_task):
    assert make(tiny_weights, lm_epochs=0).fit(*binary_task).n_threads_ == 1  # one_thread fixture


# ----------------------------------------------------------------------------- 6. persistence

def test_pickle_and_joblib_round_trips(fitted, three_class_task, tmp_path):
    texts = three_class_task[0]
    expected = fitted.predict_proba(texts)
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.predict_proba(texts), expected)
    joblib.dump(fitted, tmp_path / "model.joblib")
    loaded = joblib.load(tmp_path / "model.joblib")
    np.testing.assert_array_equal(loaded.predict_proba(texts), expected)
    np.testing.assert_array_equal(loaded.transform(texts), fitted.transform(texts))
    assert loaded.get_params() == fitted.get_params()
    np.testing.assert_array_equal(loaded.classes_, fitted.classes_)
    assert [v.itos for v in loaded.vocab_] == [v.itos for v in fitted.vocab_]
    assert loaded.history_ == fitted.history_
    assert not any(m.training for m in loaded.models_)


def test_deepcopy_is_independent(fitted, three_class_task):
    texts = three_class_task[0]
    expected = fitted.predict_proba(texts)
    duplicate = copy.deepcopy(fitted)
    np.testing.assert_array_equal(duplicate.predict_proba(texts), expected)
    assert duplicate.models_[0] is not fitted.models_[0]
    with torch.no_grad():
        for parameter in duplicate.models_[0].parameters():
            parameter.zero_()
    assert not np.array_equal(duplicate.predict_proba(texts), expected)
    np.testing.assert_array_equal(fitted.predict_proba(texts), expected)


def test_saved_state_records_versions(fitted):
    state = fitted.__getstate__()
    assert state["_versions"] == {"skulmfit": skulmfit.__version__, "torch": torch.__version__}
    assert "models_" not in state and isinstance(state["_models_blob"], bytes)
    assert "models_" in fitted.__dict__  # getstate works on a copy


def test_a_model_pickled_before_n_jobs_max_tokens_and_auto_directions_loads_with_their_defaults(
        fitted, three_class_task):
    state = fitted.__getstate__()
    del state["n_jobs"], state["max_tokens"]
    restored = ULMFiTClassifier.__new__(ULMFiTClassifier)
    del state["bidirectional_"], state["lm_history_"]
    restored.__setstate__(state)
    assert restored.lm_history_ == [{}]  # not recorded then
    assert restored.get_params()["n_jobs"] is None
    assert restored.get_params()["max_tokens"] == estimator_module.MAX_TOKENS
    assert restored.bidirectional_ is False  # from the number of fitted models
    np.testing.assert_array_equal(restored.predict_proba(three_class_task[0][:4]),
                                  fitted.predict_proba(three_class_task[0][:4]))


@pytest.mark.parametrize("package", ["skulmfit", "torch"])
def test_loading_with_another_version_warns(fitted, three_class_task, monkeypatch, package):
    blob = pickle.dumps(fitted)
    if package == "skulmfit":
        monkeypatch.setattr(persistence_module, "__version__", "0.0.1")
    else:
        monkeypatch.setattr(torch, "__version__", "1.0.0")
    with pytest.warns(UserWarning, match=rf"saved with {package} .* loaded with {package} "):
        restored = pickle.loads(blob)
    np.testing.assert_array_equal(restored.predict_proba(three_class_task[0][:4]),
                                  fitted.predict_proba(three_class_task[0][:4]))


def test_same_version_loads_without_warning(fitted):
    blob = pickle.dumps(fitted)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pickle.loads(blob)


def test_model_fitted_on_cuda_predicts_on_cpu(fitted, three_class_task, monkeypatch):
    texts = three_class_task[0]
    expected = fitted.predict_proba(texts)
    gpu_model = copy.deepcopy(fitted)
    with monkeypatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: True)
        gpu_model.device = "cuda"
        blob = pickle.dumps(gpu_model)
    state = pickle.loads(blob).__getstate__()
    # the torch part is a plain torch.save blob of CPU tensors, loadable with weights_only=True
    specs = torch.load(io.BytesIO(state["_models_blob"]), map_location="cpu", weights_only=True)
    assert all(t.device.type == "cpu" for spec in specs for t in spec["state_dict"].values())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    restored = pickle.loads(blob)
    with pytest.warns(UserWarning, match="not available on this machine; predicting on the CPU"):
        np.testing.assert_array_equal(restored.predict_proba(texts), expected)


# ----------------------------------------------------------------------------- 7. reproducibility

def test_same_random_state_gives_identical_results(fitted, tiny_weights, three_class_task):
    texts, y = three_class_task
    again = make(tiny_weights).fit(texts, y)
    np.testing.assert_array_equal(again.predict_proba(texts), fitted.predict_proba(texts))
    assert untimed(again.history_) == untimed(fitted.history_)
    assert [r["losses"] for r in again.lm_history_] == [r["losses"] for r in fitted.lm_history_]
    other = make(tiny_weights, random_state=1).fit(texts, y)
    assert not np.array_equal(other.predict_proba(texts), fitted.predict_proba(texts))


def test_fit_leaves_the_global_torch_rng_alone(tiny_weights, binary_task):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make(tiny_weights).fit(*binary_task)
    np.testing.assert_array_equal(torch.rand(3), expected)


# ----------------------------------------------------------------------------- 8. memory

def test_memory_skips_language_model_fine_tuning(fitted, tiny_weights, three_class_task, tmp_path, monkeypatch):
    texts, y = three_class_task
    calls = spy(monkeypatch, "fine_tune_language_model")
    clf = make(tiny_weights, memory=joblib.Memory(tmp_path, verbose=0))
    clf.fit(texts, y)
    assert len(calls) == 1
    # with memory, the result is the same as without
    np.testing.assert_array_equal(clf.predict_proba(texts), fitted.predict_proba(texts))
    clf.set_params(epochs=2).fit(texts, y)  # a classifier-only parameter: cache hit
    assert len(calls) == 1
    clf.set_params(lm_epochs=2).fit(texts, y)  # a language-model parameter: fine-tuned again
    assert len(calls) == 2
    clone(clf).set_params(lm_epochs=1, epochs=3).fit(texts, y)  # as a grid search would
    assert len(calls) == 2


def test_memory_as_a_path_and_without_random_state(tiny_weights, binary_task, tmp_path, monkeypatch):
    """With random_state=None the cache still serves refits (as a Pipeline's memory does)."""
    calls = spy(monkeypatch, "fine_tune_language_model")
    clf = make(tiny_weights, memory=str(tmp_path), random_state=None).fit(*binary_task)
    clf.set_params(epochs=2).fit(*binary_task)
    assert len(calls) == 1
    make(tiny_weights, memory=str(tmp_path), random_state=0).fit(*binary_task)  # seeded: its own entry
    assert len(calls) == 2



def test_memory_shares_one_language_model_across_label_budgets_drawn_from_the_unlabelled_corpus(
        tiny_weights, three_class_task, tmp_path, monkeypatch):
    """Label budgets drawn from one corpus given as ``unlabeled``: the language model is
    fine-tuned once for all of them (same random_state), as the semi-supervised benchmarks need."""
    texts, y = three_class_task
    calls = spy(monkeypatch, "fine_tune_language_model")
    clf = make(tiny_weights, memory=str(tmp_path))
    for step in (3, 2, 1):  # three budgets: a third, half, all of the texts
        clf.fit(texts[::step], y[::step], unlabeled=texts)
    assert len(calls) == 1
    clf.fit(texts[::2], y[::2], unlabeled=texts[1::2])  # the labelled texts are not in it: another corpus
    assert len(calls) == 2

# ----------------------------------------------------------------------------- 9. verbose

def test_verbose_writes_progress_to_stderr(tiny_weights, binary_task, capsys):
    make(tiny_weights, verbose=1).fit(*binary_task)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "LM fine-tuning" in captured.err
    assert "classifier" in captured.err


def test_silent_by_default(tiny_weights, binary_task, capsys):
    clf = make(tiny_weights, verbose=0).fit(*binary_task)
    clf.predict(binary_task[0])
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


# ----------------------------------------------------------------------------- 10. class weights

def test_class_weight_balanced_and_dict(tiny_weights, monkeypatch):
    texts = ["great film"] * 6 + ["awful film"] * 2 + ["okay film"] * 4
    y = ["pos"] * 6 + ["neg"] * 2 + ["neu"] * 4
    calls = spy(monkeypatch, "train_classifier")
    make(tiny_weights, class_weight="balanced").fit(texts, y)
    # classes_ order neg, neu, pos; n / (n_classes * count)
    np.testing.assert_allclose(calls[-1][1]["class_weight"], [12 / 6, 12 / 12, 12 / 18])
    clf = make(tiny_weights, class_weight={"neg": 3.0, "pos": 0.5}).fit(texts, y)
    np.testing.assert_allclose(calls[-1][1]["class_weight"], [3.0, 1.0, 0.5])
    assert clf.predict_proba(texts).shape == (12, 3)
    make(tiny_weights).fit(texts, y)
    assert calls[-1][1]["class_weight"] is None


def test_class_weight_naming_an_unknown_class(no_training, tiny_weights):
    with pytest.raises(ValueError, match=r"class_weight names classes not in y: \['bad'\]"):
        make(tiny_weights, class_weight={"pos": 1.0, "bad": 2.0}).fit(["great", "awful"], ["pos", "neg"])


# ----------------------------------------------------------------------------- 11. validation split

def test_validation_split_and_early_stopping(tiny_weights, three_class_task, monkeypatch):
    calls = spy(monkeypatch, "train_classifier")
    clf = make(tiny_weights, validation_fraction=0.25, n_iter_no_change=1, epochs=4).fit(*three_class_task)
    history = clf.history_[0]
    assert history and all(0 <= record["valid_accuracy"] <= 1 for record in history)
    assert len(history) <= 3 + 4  # three unfreezing epochs, then at most ``epochs``
    args, kwargs = calls[0]
    valid_docs, valid_y = kwargs["validation"]
    assert len(valid_docs) == 6 and len(args[1]) == 18  # 25% held out, stratified
    assert np.bincount(valid_y).tolist() == [2, 2, 2]


def untimed(history: list[list[dict]]) -> list[list[dict]]:
    """``history_`` without the epochs' durations, which no two fits share."""
    return [[{k: v for k, v in record.items() if k != "seconds"} for record in direction] for direction in history]


def test_fit_records_how_long_each_stage_took(tiny_weights, three_class_task):
    """Where a fit's time went: each classifier epoch's seconds, and the language model's stage."""
    clf = make(tiny_weights, lm_epochs=2, epochs=2).fit(*three_class_task)
    assert len(clf.history_) == len(clf.lm_history_) == len(clf.models_)
    for history, lm_record in zip(clf.history_, clf.lm_history_):
        assert [r["trainable_groups"] for r in history] == [1, 2, 3, 4, 4]
        assert all(r["seconds"] > 0 for r in history)
        assert len(lm_record["losses"]) == 2 and all(np.isfinite(lm_record["losses"]))
        assert lm_record["seconds"] > 0
    without_lm = make(tiny_weights, lm_epochs=0, epochs=2).fit(*three_class_task)
    assert without_lm.lm_history_[0]["losses"] == [] and without_lm.lm_history_[0]["seconds"] >= 0


def test_validation_fraction_too_small_to_split(tiny_weights):
    with pytest.raises(ValueError, match="cannot split"):
        # a stratified split needs at least one held-out text per class
        make(tiny_weights, validation_fraction=0.25).fit(["good", "bad", "great", "awful"], ["a", "b", "a", "b"])


# ----------------------------------------------------------------------------- 12. long and many inputs

def test_a_very_long_document(fitted, three_class_task):
    """Every one of 100,000 tokens is read (max_tokens=None) with bounded memory, and the result is sound."""
    from skulmfit.tokenizer import tokenize
    long_text = " ".join(["great", "film", "awful", "story"] * 25000)
    assert len(tokenize(long_text)) > 100_000
    model = copy.deepcopy(fitted).set_params(max_tokens=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is cut
        proba = model.predict_proba([long_text, "great film", long_text])
    assert proba.shape == (3, 3) and np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    np.testing.assert_allclose(proba[0], proba[2], rtol=1e-5)
    np.testing.assert_allclose(proba[1], model.predict_proba(["great film"])[0], rtol=1e-5, atol=1e-6)


def test_a_text_beyond_max_tokens_is_read_as_its_two_ends_in_every_stage(binary_task, monkeypatch):
    """Both directions (the backward model pools the beginning) read the first and the last 50 tokens
    of a 2,003-token text: in language-model fine-tuning, training and prediction, with a warning."""
    from skulmfit.text import read_part
    from skulmfit.tokenizer import tokenize
    texts, y = binary_task
    long_text = "great " + "film acting " * 1000 + "awful"
    read = read_part(tokenize(long_text), 100)
    assert read[:3] == ["xxbos", "great", "film"] and read[-2:] == ["acting", "awful"] and len(read) == 100
    fine_tuned = spy(monkeypatch, "fine_tune_encoder")
    clf = ULMFiTClassifier(pretrained=None, bidirectional=True, n_jobs=1, max_tokens=100, **TINY)
    with pytest.warns(UserWarning, match=r"1 text\(s\) longer than max_tokens=100 tokens \(the longest has 2,003\) "
                                         r"are read as their first 50 and last 50"):
        clf.fit([long_text, *texts], ["pos", *y])
    assert max(map(len, fine_tuned[0][0][0])) == 100
    with pytest.warns(UserWarning, match="max_tokens=100"):
        proba = clf.predict_proba([long_text])
    np.testing.assert_array_equal(proba, clf.predict_proba([" ".join(read[1:])]))  # the part read, as a text
    whole = clf.set_params(max_tokens=None).predict_proba([long_text])
    assert not np.array_equal(whole, proba)


def test_prediction_goes_through_chunks(fitted, three_class_task, monkeypatch):
    texts = three_class_task[0]
    expected_proba, expected_features = fitted.predict_proba(texts), fitted.transform(texts)
    monkeypatch.setattr(estimator_module, "PREDICT_CHUNK", 7)
    calls, tokenize = [], fitted.tokenizer_.tokenize_many
    monkeypatch.setattr(fitted.tokenizer_, "tokenize_many", lambda texts: calls.append(texts) or tokenize(texts))
    np.testing.assert_allclose(fitted.predict_proba(texts), expected_proba, rtol=1e-5, atol=1e-6)
    assert [len(texts) for texts in calls] == [7, 7, 7, 3]
    np.testing.assert_allclose(fitted.transform(texts), expected_features, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- 13. unlabeled texts

def test_unlabeled_texts_feed_language_model_fine_tuning(tiny_weights, binary_task, monkeypatch):
    texts, y = binary_task
    unlabeled = ["a zebrafish film", "zebrafish music", "so zebrafish"]
    calls = spy(monkeypatch, "fine_tune_language_model")
    clf = make(tiny_weights, min_freq=2).fit(texts, y, unlabeled=unlabeled)
    assert "zebrafish" in clf.vocab_[0].itos
    assert len(calls[0][0][1]) == len(texts) + len(unlabeled)  # documents the LM is fine-tuned on
    without = make(tiny_weights, min_freq=2).fit(texts, y)
    assert "zebrafish" not in without.vocab_[0].itos
    assert len(clf.history_[0]) == len(without.history_[0])  # the classifier saw the labelled texts only


class SampledSoftmax8(ULMFiTClassifier):
    """Another engine choice, as benchmarks/accuracy/tune_defaults.py --engine LM_SAMPLED_SOFTMAX=8 makes one."""

    lm_engine_choices = {"sampled_softmax": 8}


class HeadWarmup2(ULMFiTClassifier):
    """A head engine choice, as tune_defaults.py --engine HEAD_WARMUP_EPOCHS=2 makes one."""

    head_engine_choices = {"warmup_epochs": 2}


def test_a_head_engine_choice_reaches_the_classifier_training(tiny_weights, binary_task):
    texts, y = binary_task
    clf = HeadWarmup2(**make(tiny_weights).get_params()).fit(texts, y)
    assert [r.get("frozen_features", False) for r in clf.history_[0][:3]] == [True, True, False]
    assert not any(r.get("frozen_features") for r in make(tiny_weights).fit(texts, y).history_[0])
    assert engine_module.HEAD_WARMUP_EPOCHS == 0 and ULMFiTClassifier.head_engine_choices == {}


def test_language_model_fine_tuning_uses_the_sampled_softmax_and_its_size_keys_the_cache(
        tiny_weights, binary_task, tmp_path, monkeypatch):
    texts, y = binary_task
    calls = spy(monkeypatch, "fine_tune_language_model")
    clf = make(tiny_weights, memory=str(tmp_path))
    clf.fit(texts, y)
    assert calls[0][1]["sampled_softmax"] == engine_module.LM_SAMPLED_SOFTMAX == 1024
    clf.fit(texts, y)
    assert len(calls) == 1
    other = SampledSoftmax8(**clf.get_params()).fit(texts, y)  # a language model of another loss
    assert len(calls) == 2 and calls[1][1]["sampled_softmax"] == 8
    SampledSoftmax8(**clf.get_params()).fit(texts, y)  # the same choice again: cache hit
    assert len(calls) == 2
    assert engine_module.LM_SAMPLED_SOFTMAX == 1024 and ULMFiTClassifier.lm_engine_choices == {}
    np.testing.assert_array_equal(clone(other).fit(texts, y).predict_proba(texts), other.predict_proba(texts))


def test_labelled_texts_among_the_unlabelled_are_read_once_and_share_one_cached_lm(
        tiny_weights, three_class_task, tmp_path, monkeypatch):
    """One unlabelled corpus serving several label samples: its language model is fine-tuned once."""
    corpus, y = three_class_task
    calls = spy(monkeypatch, "fine_tune_language_model")
    clf = make(tiny_weights, memory=str(tmp_path))
    clf.fit(corpus[::2], y[::2], unlabeled=corpus)
    assert len(calls[0][0][1]) == len(corpus)  # not 1.5x: the labelled texts are in the corpus already
    clf.fit(corpus[1::2], y[1::2], unlabeled=corpus)  # another sample of the same corpus: cache hit
    assert len(calls) == 1
    clf.fit(corpus[1::2], y[1::2], unlabeled=corpus[:-1])  # another corpus: fine-tuned again
    assert len(calls) == 2
    assert len(calls[1][0][1]) == len(corpus)  # the one labelled text outside it is read as well


def test_a_million_token_document_trains_and_predicts_in_bounded_memory(tiny_weights, binary_task):
    """BPT3C: only the last max_len tokens keep activations, so a 1,000,000-token document fits
    and predicts with memory far below what full backpropagation through it would need.

    Runs in a fresh process: ru_maxrss is a high-water mark, which earlier tests would mask."""
    texts, y = binary_task
    script = f"""
import json, resource, sys
import numpy as np
from skulmfit import ULMFiTClassifier
texts, y = json.loads(sys.argv[1])
huge = "great " * 1_000_000
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
clf = ULMFiTClassifier(pretrained={str(tiny_weights)!r}, **{TINY!r}).set_params(lm_epochs=0, max_len=1000)
clf.fit([huge, *texts], [y[0], *y])
proba = clf.predict_proba([huge, texts[0]])
assert proba.shape == (2, 2) and np.isfinite(proba).all()
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""
    done = subprocess.run([sys.executable, "-c", script, json.dumps([texts, list(y)])],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    grown_mib = float(done.stdout.split()[-1])
    # Backpropagating through all 1M positions would keep about 200 floats of LSTM gates and states
    # per position even for this tiny model (~800 MB); bounded BPT3C grew by ~170 MiB when written
    # (token lists and padded id batches of 1M entries).
    assert grown_mib < 400, f"peak memory grew by {grown_mib:.0f} MiB"


def test_end_to_end_a_random_tiny_model_learns_a_separable_task(tiny_weights, keyword_task):
    """Untrained tiny weights (random initialisation), whole recipe, held-out accuracy > 95%.

    Light dropout: a model this small learning from scratch needs little regularisation (with
    the default drop_mult one seed in three stalled at chance when this test was written)."""
    X_train, y_train = keyword_task(200, seed=0)
    X_test, y_test = keyword_task(100, seed=1)
    for seed in (0, 1):
        clf = make(tiny_weights, epochs=10, batch_size=16, lr=5e-2, drop_mult=0.1, random_state=seed)
        assert clf.fit(X_train, y_train).score(X_test, y_test) > 0.95


def without_native_bf16(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(True, False, True), (False, True, True), (False, False, False)])
def test_auto_precision_uses_bf16_only_on_cpus_that_compute_it(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    cpu = torch.device("cpu")
    native = "bf16" if expected else "fp32"
    assert resolve_precision("auto", cpu) == native
    assert resolve_precision("fp32", cpu) == "fp32"
    if expected:
        assert resolve_precision("bf16", cpu) == "bf16"
    else:
        with pytest.raises(ValueError, match="neither AVX512-BF16 nor AMX.*precision='auto'.*precision='fp32'"):
            resolve_precision("bf16", cpu)


def test_auto_precision_is_fp32_when_torch_cannot_tell(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"


def test_explicit_bf16_on_a_cpu_without_it_is_refused_before_any_work(monkeypatch, binary_task):
    without_native_bf16(monkeypatch)
    monkeypatch.setattr(engine_module, "fine_tune_encoder", lambda *a, **k: pytest.fail("fit started"))
    with pytest.raises(ValueError, match="precision='bf16': this CPU has neither AVX512-BF16 nor AMX"):
        ULMFiTClassifier(pretrained=None, **{**TINY, "precision": "bf16"}).fit(*binary_task)


def test_a_bf16_model_predicts_in_fp32_with_a_warning_on_a_cpu_without_bf16(monkeypatch, binary_task):
    texts, y = binary_task
    clf = ULMFiTClassifier(pretrained=None, **{**TINY, "precision": "fp32"}).fit(texts, y)
    expected = clf.predict_proba(texts)
    without_native_bf16(monkeypatch)
    clf.set_params(precision="bf16")  # as a model fitted in bf16 on another machine
    with pytest.warns(UserWarning, match="predicting in fp32"):
        np.testing.assert_array_equal(clf.predict_proba(texts), expected)
    with pytest.warns(UserWarning, match="predicting in fp32"):
        assert clf.transform(texts).shape[0] == len(texts)


def test_fit_records_the_precision_it_used(binary_task):
    texts, y = binary_task
    clf = ULMFiTClassifier(pretrained=None, **{**TINY, "precision": "fp32"}).fit(texts, y)
    assert clf.precision_ == "fp32"
    if not cpu_computes_bf16():
        pytest.skip("this CPU has neither AVX512-BF16 nor AMX: a bf16 fit is refused here (tested above)")
    clf = ULMFiTClassifier(pretrained=None, **{**TINY, "precision": "bf16"}).fit(texts, y)
    assert clf.precision_ == "bf16"


# ----------------------------------------------------------------------------- sample weights

@pytest.mark.parametrize("sample_weight, match", [
    ([1.0] * 5, "sample_weight.shape"), ([-1.0] + [1.0] * 31, "Negative values"),
    ([float("nan")] + [1.0] * 31, "NaN"), ([0.0] * 32, "at least one non-zero")])
def test_bad_sample_weights_are_refused(no_training, tiny_weights, binary_task, sample_weight, match):
    with pytest.raises(ValueError, match=match):
        make(tiny_weights).fit(*binary_task, sample_weight=sample_weight)


def test_zero_sample_weight_ignores_a_label(tiny_weights, binary_task):
    texts, y = binary_task
    weights = np.ones(len(y))
    weights[:4] = 0.0
    flipped = ["neg" if label == "pos" else "pos" for label in y[:4]] + list(y[4:])
    a = make(tiny_weights).fit(texts, y, sample_weight=weights)
    b = make(tiny_weights).fit(texts, flipped, sample_weight=weights)
    np.testing.assert_array_equal(a.predict_proba(texts), b.predict_proba(texts))
    c = make(tiny_weights).fit(texts, flipped)
    assert not np.array_equal(a.predict_proba(texts), c.predict_proba(texts))


def test_sample_weight_passes_through_pipeline_and_grid_search(tiny_weights, binary_task):
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    texts, y = binary_task
    weights = np.linspace(0.5, 2.0, len(y))
    pipe = make_pipeline(FunctionTransformer(lowercase), make(tiny_weights))
    pipe.fit(texts, y, ulmfitclassifier__sample_weight=weights)
    search = GridSearchCV(make(tiny_weights), {"lr": [0.01, 0.05]}, cv=2).fit(texts, y, sample_weight=weights)
    assert search.best_params_["lr"] in (0.01, 0.05)
