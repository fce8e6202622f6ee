"""The safe model format: clf.save / skulmfit.load round-trip bit for bit and never run file code."""
import pickle

import joblib
import numpy as np
import pytest
import torch

import skulmfit
from skulmfit import ULMFiTClassifier

TINY = dict(lm_epochs=1, epochs=1, batch_size=8, bptt=10, max_len=50, random_state=0)
TEXTS = ["a great film", "an awful film", "great acting", "awful acting", "so great", "so awful"] * 3


@pytest.mark.parametrize("labels", [
    ["pos", "neg"] * 9, [3, -1] * 9, [True, False] * 9, [1.0, 2.0] * 9,
    np.array(["pos", "neg"] * 9, dtype=object)])
def test_round_trip_is_bit_for_bit_for_every_label_type(tiny_weights, tmp_path, labels):
    clf = ULMFiTClassifier(pretrained=tiny_weights, **TINY).fit(TEXTS, labels)
    clf.save(tmp_path / "model.skulmfit")
    loaded = skulmfit.load(tmp_path / "model.skulmfit")
    np.testing.assert_array_equal(loaded.predict_proba(TEXTS), clf.predict_proba(TEXTS))
    np.testing.assert_array_equal(loaded.predict(TEXTS), clf.predict(TEXTS))
    assert loaded.classes_.dtype == clf.classes_.dtype and loaded.classes_.tolist() == clf.classes_.tolist()
    assert loaded.get_params() == {**clf.get_params(), "pretrained": str(tiny_weights)}  # paths come back as str
    assert loaded.history_ == clf.history_ and loaded.precision_ == clf.precision_
    assert loaded.bidirectional_ is clf.bidirectional_ is False


def test_bidirectional_with_class_weights_and_a_memory_folder(tiny_weights, tiny_weights_bwd, tmp_path):
    folder = tmp_path / "both"
    folder.mkdir()
    (folder / "w.fwd.pt").write_bytes(tiny_weights.read_bytes())
    (folder / "w.bwd.pt").write_bytes(tiny_weights_bwd.read_bytes())
    clf = ULMFiTClassifier(pretrained=None, bidirectional=True, class_weight={1: 2.0, 0: 1.0},
                           memory=joblib.Memory(tmp_path / "cache", verbose=0), **{**TINY, "random_state": 3})
    clf.fit(TEXTS, [1, 0] * 9)
    clf.save(tmp_path / "model")
    loaded = skulmfit.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict_proba(TEXTS), clf.predict_proba(TEXTS))
    assert loaded.class_weight == {1: 2.0, 0: 1.0} and loaded.memory == str(tmp_path / "cache")
    assert loaded.bidirectional_ is True


def test_a_file_saved_before_auto_directions_existed_loads(tiny_weights, tmp_path):
    clf = ULMFiTClassifier(pretrained=tiny_weights, **TINY).fit(TEXTS, ["pos", "neg"] * 9)
    clf.save(tmp_path / "model")
    payload = torch.load(tmp_path / "model", weights_only=True)
    del payload["fitted"]["bidirectional_"]
    payload["params"] = payload["params"].replace('"bidirectional": "auto"', '"bidirectional": false')
    torch.save(payload, tmp_path / "old")
    loaded = skulmfit.load(tmp_path / "old")
    assert loaded.bidirectional_ is False and loaded.get_params()["bidirectional"] is False
    np.testing.assert_array_equal(loaded.predict_proba(TEXTS), clf.predict_proba(TEXTS))


def test_a_fitted_model_is_required(tmp_path):
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        ULMFiTClassifier().save(tmp_path / "model")


def test_truncated_foreign_and_malicious_files_are_refused_clearly(tiny_weights, tmp_path):
    clf = ULMFiTClassifier(pretrained=tiny_weights, **TINY).fit(TEXTS, ["pos", "neg"] * 9)
    clf.save(tmp_path / "model")
    data = (tmp_path / "model").read_bytes()
    (tmp_path / "truncated").write_bytes(data[: len(data) // 2])
    (tmp_path / "one-byte").write_bytes(data[:1])
    joblib.dump(clf, tmp_path / "pickled.joblib")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    marker = tmp_path / "MARKER"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))
    torch.save({"format": "skulmfit-classifier-1", "params": Evil()}, tmp_path / "evil.pt")
    for name in ("truncated", "one-byte", "pickled.joblib", "evil.pt"):
        with pytest.raises(ValueError, match="is not a skulmfit model file"):
            skulmfit.load(tmp_path / name)
    with pytest.raises(ValueError, match="found 'other'"):
        skulmfit.load(tmp_path / "other.pt")
    assert not marker.exists()
    with pytest.raises(FileNotFoundError):
        skulmfit.load(tmp_path / "missing")


def test_a_file_from_another_version_warns(tiny_weights, tmp_path, monkeypatch):
    clf = ULMFiTClassifier(pretrained=tiny_weights, **TINY).fit(TEXTS, ["pos", "neg"] * 9)
    import skulmfit.persistence as persistence
    monkeypatch.setattr(persistence, "__version__", "0.0.1")
    clf.save(tmp_path / "model")
    monkeypatch.undo()
    with pytest.warns(UserWarning, match="saved with skulmfit 0.0.1"):
        skulmfit.load(tmp_path / "model")


def test_the_file_is_tensors_and_plain_values(tiny_weights, tmp_path):
    clf = ULMFiTClassifier(pretrained=tiny_weights, **TINY).fit(TEXTS, ["pos", "neg"] * 9)
    clf.save(tmp_path / "model")
    # weights_only=True refuses any class or function beyond tensors and plain containers
    payload = torch.load(tmp_path / "model", weights_only=True)
    assert payload["format"] == "skulmfit-classifier-1" and not list(tmp_path.glob("*.tmp"))
