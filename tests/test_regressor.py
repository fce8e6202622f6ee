"""ULMFiTRegressor: the shared engine with a regression head, in scikit-learn's tools."""
import joblib
import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import (check_estimator_repr, check_get_params_invariance,
                                            check_no_attributes_set_in_init, check_parameters_default_constructible,
                                            check_set_params)

import skulmfit
from skulmfit import ULMFiTClassifier, ULMFiTRegressor

TINY = dict(lm_epochs=1, epochs=2, batch_size=8, bptt=10, max_len=50, random_state=0)
TEXTS = ["a great film", "an awful film", "great acting", "awful acting", "so great", "so awful",
         "truly great story", "truly awful story"] * 3
SCORES = np.array([9.0, 2.0, 8.0, 1.0, 9.0, 2.0, 10.0, 1.0] * 3)


def make(weights, **params):
    return ULMFiTRegressor(pretrained=str(weights), **{**TINY, **params})


@pytest.fixture(scope="module")
def fitted(tiny_weights):
    return make(tiny_weights).fit(TEXTS, SCORES)


def ratings(keyword_task, n, seed):
    """The keyword task with a rating: about 8 for a "good" keyword, about 2 for a "bad" one."""
    texts, labels = keyword_task(n, seed)
    noise = np.random.default_rng(seed).normal(0, 0.5, n)
    return texts, np.where(np.array(labels) == "good", 8.0, 2.0) + noise


def test_a_random_tiny_model_learns_a_rating_and_restores_its_scale(tiny_weights, keyword_task):
    X_train, y_train = ratings(keyword_task, 200, seed=0)
    X_test, y_test = ratings(keyword_task, 100, seed=1)
    reg = make(tiny_weights, epochs=10, batch_size=16, lr=5e-2, drop_mult=0.1).fit(X_train, y_train)
    predictions = reg.predict(X_test)
    assert predictions.shape == (100,) and predictions.dtype == np.float64
    assert reg.score(X_test, y_test) > 0.8  # R^2 on held-out texts
    assert reg.n_outputs_ == 1 and reg.y_mean_ == pytest.approx([y_train.mean()])


def test_several_targets_bidirectional_with_validation(tiny_weights, tiny_weights_bwd, tmp_path):
    folder = tmp_path / "both"
    folder.mkdir()
    import json
    from skulmfit.pretrained import load_weights, save_weights
    for direction, short, path in (("forward", "fwd", tiny_weights), ("backward", "bwd", tiny_weights_bwd)):
        lm = load_weights(path)
        checksum = save_weights(folder / f"t.{short}.pt", lm.build(), lm.itos, backwards=lm.backwards)
        (folder / f"t.{short}.json").write_text(json.dumps({"name": "t", "direction": direction,
                                                            "file": f"t.{short}.pt", "sha256": checksum}))
    Y = np.c_[SCORES, -SCORES, np.ones_like(SCORES)]  # a constant column is allowed (its scale is 1)
    reg = ULMFiTRegressor(pretrained=folder, bidirectional=True, validation_fraction=0.25, **TINY).fit(TEXTS, Y)
    assert reg.predict(TEXTS[:5]).shape == (5, 3) and len(reg.models_) == 2
    np.testing.assert_allclose(reg.predict(TEXTS)[:, 2], 1.0, atol=1e-5)
    assert "valid_r2" in reg.history_[0][-1]


@pytest.mark.parametrize("y, error, match", [
    (None, ValueError, "y is required"), (SCORES[:5], ValueError, "24 texts but y has 5"),
    (np.r_[SCORES[:-1], np.nan], ValueError, "NaN"), (np.r_[SCORES[:-1], np.inf], ValueError, "infinity"),
    (np.zeros((24, 2, 2)), ValueError, "3"), (["high", "low"] * 12, ValueError, "could not convert")])
def test_bad_targets_are_refused(tiny_weights, y, error, match):
    with pytest.raises(error, match=match):
        make(tiny_weights).fit(TEXTS, y)


def test_class_weight_and_threshold_are_classifier_parameters_only():
    assert set(ULMFiTRegressor().get_params()) == set(ULMFiTClassifier().get_params()) - {"class_weight", "threshold"}


def test_pipeline_cross_val_score_grid_search_and_sample_weight(tiny_weights):
    pipe = make_pipeline(FunctionTransformer(lambda texts: [t.lower() for t in texts]), make(tiny_weights))
    pipe.fit(TEXTS, SCORES, ulmfitregressor__sample_weight=np.linspace(0.5, 2, 24))
    scores = cross_val_score(make(tiny_weights), TEXTS, SCORES, cv=2)
    assert scores.shape == (2,) and np.isfinite(scores).all()
    search = GridSearchCV(make(tiny_weights), {"lr": [0.01, 0.05]}, cv=2).fit(TEXTS, SCORES)
    assert search.best_params_["lr"] in (0.01, 0.05)


def test_joblib_and_safe_format_round_trips(fitted, tmp_path):
    joblib.dump(fitted, tmp_path / "r.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "r.joblib").predict(TEXTS), fitted.predict(TEXTS))
    fitted.save(tmp_path / "r.skulmfit")
    loaded = skulmfit.load(tmp_path / "r.skulmfit")
    assert type(loaded) is ULMFiTRegressor
    np.testing.assert_array_equal(loaded.predict(TEXTS), fitted.predict(TEXTS))


def test_zero_weights_ignore_a_target(tiny_weights):
    weights = np.ones(24)
    weights[:3] = 0
    changed = SCORES.copy()
    changed[:3] = [100.0, -50.0, 7.0]
    # the targets' standardisation uses every row, so compare fits whose unweighted rows agree and
    # whose mean and variance agree too: swap the values among the zero-weight rows
    swapped = SCORES.copy()
    swapped[:3] = SCORES[[2, 0, 1]]
    a = make(tiny_weights).fit(TEXTS, SCORES, sample_weight=weights)
    b = make(tiny_weights).fit(TEXTS, swapped, sample_weight=weights)
    np.testing.assert_array_equal(a.predict(TEXTS), b.predict(TEXTS))


@pytest.mark.parametrize("check", [check_no_attributes_set_in_init, check_get_params_invariance, check_set_params,
                                   check_parameters_default_constructible, check_estimator_repr])
def test_sklearn_estimator_checks(check):
    check("ULMFiTRegressor", ULMFiTRegressor())


def test_tags_declare_a_text_regressor():
    tags = ULMFiTRegressor().__sklearn_tags__()
    assert tags.input_tags.string is True and tags.estimator_type == "regressor"
