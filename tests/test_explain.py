"""Explanations: integrated gradients find the deciding word and add up to the output's change."""
import re

import numpy as np
import pytest
import torch

from skulmfit import ULMFiTClassifier, ULMFiTRegressor
from skulmfit.explain import Explanation, integrated_gradients

TINY = dict(lm_epochs=1, bptt=10, max_len=50, random_state=0, epochs=10, batch_size=16, lr=5e-2, drop_mult=0.1)


@pytest.fixture(scope="module")
def keyword_model(tiny_weights, keyword_task):
    X, y = keyword_task(200, seed=0)
    return ULMFiTClassifier(pretrained=str(tiny_weights), precision="fp32", **TINY).fit(X, y)


def test_the_deciding_word_gets_the_largest_attribution(keyword_model, keyword_task):
    X_test, y_test = keyword_task(20, seed=1)
    explanations = keyword_model.explain(X_test)
    keywords = {"excellent", "superb", "brilliant", "delightful", "dreadful", "tedious", "awful", "clumsy"}
    found = [e.top(1)[0][0] in keywords for e in explanations]
    assert np.mean(found) >= 0.9
    first = explanations[0]
    assert first.tokens[0] == "xxbos" and len(first.scores) == len(first.tokens)
    assert first.target == keyword_model.predict(X_test[:1])[0]
    assert first.value == pytest.approx(keyword_model.predict_proba(X_test[:1]).max(), rel=1e-5)


def test_attributions_add_up_to_the_change_from_the_zero_embedding(keyword_model, keyword_task):
    X, _ = keyword_task(3, seed=2)
    model, vocab = keyword_model.models_[0], keyword_model.vocab_[0]
    docs = vocab.numericalize_many(keyword_model.tokenizer_.tokenize_many(X))
    units = np.array([0, 1, 0])
    attributions = integrated_gradients(model, docs, units, output="log_softmax", steps=64)
    for doc, unit, attribution in zip(docs, units, attributions):
        ids, lengths = torch.from_numpy(doc).view(1, -1).long(), torch.tensor([len(doc)])
        with torch.no_grad():
            full = torch.log_softmax(model(ids, lengths), 1)[0, unit]
            zero = torch.log_softmax(model(ids, lengths, torch.zeros(1, len(doc), 1)), 1)[0, unit]
        assert attribution.sum() == pytest.approx(float(full - zero), abs=0.05 + 0.05 * abs(float(full - zero)))


def test_texts_are_tokenized_once(keyword_model, monkeypatch):
    calls = []
    tokenize_many = keyword_model.tokenizer_.tokenize_many
    monkeypatch.setattr(keyword_model.tokenizer_, "tokenize_many", lambda texts: calls.append(1) or tokenize_many(texts))
    keyword_model.explain(["The plot was superb.", "A dreadful film."])
    assert len(calls) == 1


def test_explaining_a_given_class_and_rendering(keyword_model):
    [explanation] = keyword_model.explain(["The plot was superb."], target="bad")
    assert explanation.target == "bad" and explanation.value < 0.5
    assert "superb" in str(explanation) and "<span" in explanation._repr_html_()
    with pytest.raises(ValueError, match="not one of classes_"):
        keyword_model.explain(["x"], target="neutral")


def test_long_documents_stay_bounded_and_bidirectional_models_average(tiny_weights, keyword_task):
    X, y = keyword_task(40, seed=0)
    clf = ULMFiTClassifier(pretrained=None, bidirectional=True, **{**TINY, "epochs": 1, "lm_epochs": 0}).fit(X, y)
    long_text = " ".join(["the film was long"] * 300)
    [explanation] = clf.explain([long_text], steps=4)
    assert len(explanation.scores) == len(explanation.tokens) > 1000
    assert np.isfinite(explanation.scores).all()
    assert np.count_nonzero(explanation.scores) > 0


def test_regressor_explanations_are_in_target_units(tiny_weights, keyword_task):
    X, labels = keyword_task(60, seed=0)
    y = np.where(np.array(labels) == "good", 8.0, 2.0)
    reg = ULMFiTRegressor(pretrained=str(tiny_weights), **{**TINY, "epochs": 3}).fit(X, y)
    [explanation] = reg.explain(X[:1])
    assert explanation.target == 0 and explanation.value == pytest.approx(reg.predict(X[:1])[0])
    with pytest.raises(ValueError, match="output index"):
        reg.explain(X[:1], target=3)
    assert isinstance(explanation, Explanation)


@pytest.mark.parametrize("steps", [2.5, 0, -1, True, "4", None])
def test_bad_steps_are_refused_by_name_before_any_work(keyword_model, monkeypatch, steps):
    monkeypatch.setattr(type(keyword_model), "_outputs", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(ValueError, match=f"steps must be an integer >= 1, got {re.escape(repr(steps))}"):
        keyword_model.explain(["a good film"], steps=steps)
