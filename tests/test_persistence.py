"""The safe model format: clf.save / skulmfit.load round-trip bit for bit and never run file code.

A probe of what ``load`` is given: truncated and foreign files, files whose contents disagree with
each other (checked before any model is allocated), malicious files; and of where ``save`` writes:
each failure is one line naming the path, and leaves no file behind.
"""
import errno
import io
import json
import pickle
import re
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch

import skulmfit
from skulmfit import ULMFiTClassifier, ULMFiTRegressor
from skulmfit.model import AWDLSTM

TINY = dict(lm_epochs=1, epochs=1, batch_size=8, bptt=10, max_len=50, random_state=0)
TEXTS = ["a great film", "an awful film", "great acting", "awful acting", "so great", "so awful"] * 3


@pytest.fixture(scope="module")
def saved(tiny_weights, binary_task, tmp_path_factory):
    """A fitted classifier and the file it saved, which tests read but never change."""
    clf = ULMFiTClassifier(pretrained=tiny_weights, **TINY).fit(*binary_task)
    path = tmp_path_factory.mktemp("saved") / "model.skulmfit"
    clf.save(path)
    return clf, path


def refusal(path, error=ValueError) -> str:
    """The message of ``load``'s error for ``path``: one line, naming the file, with no advice to
    load it some unsafe way."""
    with pytest.raises(error) as caught:
        skulmfit.load(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message, message
    assert not re.search(r"weights_only|safe_globals|joblib\.load|pickle\.load", message), message
    return message


def files_under(folder: Path) -> dict:
    """Every file and folder under ``folder``, with each file's bytes: to show a failure left nothing."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else "folder" for p in folder.rglob("*")}


# ----------------------------------------------------------------------------- round trips

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
    assert loaded.lm_history_ == clf.lm_history_ and "seconds" in loaded.lm_history_[0]
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


def test_a_regressor_and_a_multi_label_classifier_round_trip(tiny_weights, tmp_path):
    from scipy import sparse
    scores = np.column_stack([np.arange(18.0), np.arange(18.0) % 3])
    regressor = ULMFiTRegressor(pretrained=tiny_weights, **TINY).fit(TEXTS, scores)
    Y = sparse.csr_matrix(np.array([[1, 0, 0], [0, 1, 1]] * 9))
    multilabel = ULMFiTClassifier(pretrained=tiny_weights, **TINY).fit(TEXTS, Y)
    for name, fitted in (("regressor", regressor), ("multilabel", multilabel)):
        fitted.save(tmp_path / name)
        loaded = skulmfit.load(tmp_path / name)
        assert type(loaded) is type(fitted)
        np.testing.assert_array_equal(loaded.transform(TEXTS), fitted.transform(TEXTS))
    assert skulmfit.load(tmp_path / "regressor").predict(TEXTS).shape == (18, 2)
    assert sparse.issparse(skulmfit.load(tmp_path / "multilabel").predict(TEXTS))


def test_a_file_saved_before_the_language_model_stage_was_recorded_loads(saved, binary_task, tmp_path):
    clf, path = saved
    payload = torch.load(path, weights_only=True)
    del payload["fitted"]["lm_history_"]
    torch.save(payload, tmp_path / "old")
    loaded = skulmfit.load(tmp_path / "old")
    assert loaded.lm_history_ == [{}]
    np.testing.assert_array_equal(loaded.predict_proba(binary_task[0]), clf.predict_proba(binary_task[0]))


def test_a_file_saved_before_auto_directions_existed_loads(saved, binary_task, tmp_path):
    clf, path = saved
    payload = torch.load(path, weights_only=True)
    del payload["fitted"]["bidirectional_"]
    payload["params"] = payload["params"].replace('"bidirectional": "auto"', '"bidirectional": false')
    torch.save(payload, tmp_path / "old")
    loaded = skulmfit.load(tmp_path / "old")
    assert loaded.bidirectional_ is False and loaded.get_params()["bidirectional"] is False
    np.testing.assert_array_equal(loaded.predict_proba(binary_task[0]), clf.predict_proba(binary_task[0]))


def test_a_file_saved_before_max_tokens_existed_loads_with_its_default(saved, binary_task, tmp_path):
    clf, path = saved
    payload = torch.load(path, weights_only=True)
    payload["params"] = json.dumps({k: v for k, v in json.loads(payload["params"]).items() if k != "max_tokens"})
    torch.save(payload, tmp_path / "old")
    loaded = skulmfit.load(tmp_path / "old")
    assert loaded.get_params()["max_tokens"] == ULMFiTClassifier().max_tokens
    np.testing.assert_array_equal(loaded.predict_proba(binary_task[0]), clf.predict_proba(binary_task[0]))


def test_a_fitted_model_is_required(tmp_path):
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        ULMFiTClassifier().save(tmp_path / "model")


def test_a_file_from_another_version_warns(saved, tmp_path):
    payload = torch.load(saved[1], weights_only=True)
    payload["versions"]["skulmfit"] = "0.0.1"
    payload["versions"]["numpy"] = "1.0"  # a package this skulmfit does not compare is ignored
    torch.save(payload, tmp_path / "model")
    with pytest.warns(UserWarning, match="saved with skulmfit 0.0.1"):
        skulmfit.load(tmp_path / "model")


def test_the_file_is_tensors_and_plain_values(saved):
    # weights_only=True refuses any class or function beyond tensors and plain containers
    payload = torch.load(saved[1], weights_only=True)
    assert payload["format"] == "skulmfit-classifier-1" and not list(saved[1].parent.glob("*.tmp"))


# ----------------------------------------------------------------------------- foreign and damaged files

def a_zip_that_is_not_torch(model: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "not a model")
    return buffer.getvalue()


UNREADABLE = {
    "random bytes": (lambda model: np.random.default_rng(0).bytes(4096), "it is truncated or not a torch file"),
    "an empty file": (lambda model: b"", "it is empty"),
    "half a model": (lambda model: model[: len(model) // 2], "it is truncated or not a torch file"),
    "one byte of a model": (lambda model: model[:1], "it is truncated or not a torch file"),
    "a zip that is not torch's": (a_zip_that_is_not_torch, "it is truncated or not a torch file"),
    "a pickle of plain values": (lambda model: pickle.dumps(["a", 1]), "it is truncated or not a torch file"),
}


@pytest.mark.parametrize("name", UNREADABLE)
def test_a_damaged_or_foreign_file_is_refused_in_one_line(saved, tmp_path, name):
    make, reason = UNREADABLE[name]
    path = tmp_path / "file"
    path.write_bytes(make(saved[1].read_bytes()))
    assert refusal(path) == f"{path} is not a skulmfit model file: {reason}"


@pytest.mark.parametrize("content, found", [
    (torch.zeros(3), "a Tensor"), ({"format": "other"}, "'other'"), ({"weights": torch.zeros(3)}, "no format tag")])
def test_a_torch_file_of_another_kind_is_refused_by_its_format(tmp_path, content, found):
    torch.save(content, tmp_path / "other.pt")
    message = refusal(tmp_path / "other.pt")
    assert message.endswith(f"not a skulmfit model file (format 'skulmfit-classifier-1'); found {found}")


def test_a_pretrained_weight_file_is_refused_by_its_format(tiny_weights):
    assert refusal(tiny_weights).endswith("found 'skulmfit-awdlstm-1'")


def test_a_folder_or_a_missing_path_is_refused_in_one_line(tmp_path):
    assert refusal(tmp_path) == f"{tmp_path} is a folder, not a skulmfit model file"
    assert "does not exist" in refusal(tmp_path / "missing", FileNotFoundError)


# ----------------------------------------------------------------------------- malicious files

class WritesMarker:
    """Unpickling this object runs ``open(path, 'w')``: the proof that a loader executed file code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('ran')",))


WRITERS = {"torch.save": torch.save, "joblib.dump": joblib.dump,
           "pickle.dumps": lambda content, path: Path(path).write_bytes(pickle.dumps(content))}


@pytest.mark.parametrize("writer", WRITERS)
def test_a_file_that_would_run_code_is_refused_without_running_it(tmp_path, writer):
    marker = tmp_path / "MARKER"
    WRITERS[writer]({"format": "skulmfit-classifier-1", "params": WritesMarker(marker)}, tmp_path / "evil")
    message = refusal(tmp_path / "evil")
    assert message.endswith("it holds objects other than tensors and plain values, which skulmfit never unpickles")
    assert not marker.exists()


def test_a_pickled_estimator_is_refused_as_objects_not_as_damage(saved, tmp_path):
    joblib.dump(saved[0], tmp_path / "model.joblib")
    assert "holds objects other than tensors and plain values" in refusal(tmp_path / "model.joblib")


# ----------------------------------------------------------------------------- files that disagree with themselves

@pytest.fixture
def no_model_is_allocated(monkeypatch):
    """Fails the test if anything builds an AWD-LSTM off the ``meta`` device (which allocates nothing)."""
    build = AWDLSTM.__init__

    def build_on_meta_only(self, config):
        assert torch.empty(()).device.type == "meta", f"a model of {config.sizes()} was allocated"
        build(self, config)
    monkeypatch.setattr(AWDLSTM, "__init__", build_on_meta_only)


def forge(saved_path: Path, folder: Path, change) -> Path:
    """A copy of the saved model with ``change(payload)`` applied: right format tag, wrong contents."""
    payload = torch.load(saved_path, weights_only=True)
    change(payload)
    torch.save(payload, folder / "forged")
    return folder / "forged"


def state(payload: dict) -> dict:
    return payload["models"][0]["state_dict"]


def config(payload: dict) -> dict:
    return payload["models"][0]["config"]


def add_a_direction_with_three_outputs(payload: dict) -> None:
    """A second direction, consistent in itself, whose head has one output more than the first's."""
    backward = {**payload["models"][0], "n_classes": 3}
    backward["state_dict"] = {**backward["state_dict"], "1.layers.6.weight": torch.zeros(3, 50)}
    payload["models"].append(backward)
    payload["vocabs"].append(payload["vocabs"][0])
    payload["fitted"]["bidirectional_"] = True


def add_param(payload: dict) -> None:
    payload["params"] = json.dumps({**json.loads(payload["params"]), "colour": "red"})


INCONSISTENT = {
    # keys and types
    "no models": (lambda p: p.pop("models"), "models is missing"),
    "no vocabularies": (lambda p: p.pop("vocabs"), "vocabs is missing"),
    "no tokenizer": (lambda p: p.pop("tokenizer"), "tokenizer is missing"),
    "no classes": (lambda p: p.pop("classes"), "classes is missing"),
    "no fitted attributes": (lambda p: p.pop("fitted"), "fitted is missing"),
    "no state dict": (lambda p: p["models"][0].pop("state_dict"), "models[0].state_dict is missing"),
    "no hidden size": (lambda p: config(p).pop("hidden_size"), "models[0].config.hidden_size is missing"),
    "params as a number": (lambda p: p.update(params=3), "params is int, not str"),
    "params that are not JSON": (lambda p: p.update(params="{"), "params is not JSON"),
    "an unknown parameter": (add_param, "params names parameters ULMFiTClassifier does not take: ['colour']"),
    "versions as a str": (lambda p: p.update(versions="0.1"), "versions is str, not dict"),
    "a bool as n_layers": (lambda p: config(p).update(n_layers=True), "models[0].config.n_layers is bool, not int"),
    "a dropout of 1": (lambda p: config(p).update(weight_p=1.0), "models[0].config.weight_p is 1.0"),
    "a non-tensor weight": (lambda p: state(p).update({"0.encoder.weight": [0.0]}), "it must map names to tensors"),
    "an unknown estimator": (lambda p: p.update(estimator="Pipeline"), "estimator 'Pipeline' is none"),
    "three models": (lambda p: p.update(models=p["models"] * 3), "len(models) is 3"),
    "an unknown tokenizer": (lambda p: p.update(tokenizer={"kind": "bpe"}), "unknown tokenizer kind 'bpe'"),
    "an unknown precision": (lambda p: p["fitted"].update(precision_="fp64"), "fitted.precision_ is 'fp64'"),
    "a language-model record per model missing": (lambda p: p["fitted"].update(lm_history_=[]),
                                                   "fitted.lm_history_ must be a dict per model (1)"),
    "two directions stated, one stored": (lambda p: p["fitted"].update(bidirectional_=True),
                                          "fitted.bidirectional_ is True, but len(models) is 1"),
    # tensors against the stated sizes
    "a missing tensor": (lambda p: state(p).pop("1.layers.6.weight"), "missing ['1.layers.6.weight']"),
    "an extra tensor": (lambda p: state(p).update(extra=torch.zeros(1)), "unexpected ['extra']"),
    "a wider hidden size": (lambda p: config(p).update(hidden_size=17),
                            "state_dict['0.rnns.0.weight_hh_l0_raw'] is (64, 16) float32, but its config"),
    "one class more stated": (lambda p: p["models"][0].update(n_classes=3),
                              "state_dict['1.layers.6.weight'] is (2, 50) float32"),
    "an embedding one row short": (lambda p: state(p).update({"0.encoder.weight": state(p)["0.encoder.weight"][1:]}),
                                   "state_dict['0.encoder.weight'] is"),
    "a tensor in float64": (lambda p: state(p).update({"1.layers.6.weight": state(p)["1.layers.6.weight"].double()}),
                            "is (2, 50) float64, but its config"),
    # vocabularies and classes against the tensors
    "a vocabulary one token longer": (lambda p: p["vocabs"][0].append("extra"),
                                      "tokens, but the embedding of models[0] has"),
    "a vocabulary of ints": (lambda p: p["vocabs"][0].__setitem__(7, 7), "vocabs[0]: itos[7] is int"),
    "one vocabulary for no model": (lambda p: p["vocabs"].append(p["vocabs"][0]),
                                    "len(vocabs) is 2, but len(models) is 1"),
    "directions with different heads": (add_a_direction_with_three_outputs, "its models have [2, 3] outputs"),
    "one class more": (lambda p: p["classes"]["values"].append("neu"), "classes has 3 labels, but the models have 2"),
    "labels that do not fit their dtype": (lambda p: p["classes"].update(dtype="<i8"), "do not fit classes.dtype"),
    "a dtype that is no label's": (lambda p: p["classes"].update(dtype="M8[s]"), "is not a dtype of labels"),
    "labels a gigabyte wide": (lambda p: p["classes"].update(dtype="<U100000000"), "larger than the model's weights"),
}


@pytest.mark.parametrize("name", INCONSISTENT)
def test_a_file_that_disagrees_with_itself_is_refused_before_any_model_is_built(saved, tmp_path, no_model_is_allocated,
                                                                                name):
    change, problem = INCONSISTENT[name]
    path = forge(saved[1], tmp_path, change)
    message = refusal(path)
    assert message.startswith(f"{path} is not a valid skulmfit model file: ") and problem in message, message


@pytest.mark.parametrize("where, size, problem", [
    ("config", {"vocab_size": 10**12}, "models[0] states vocab_size=1000000000000, more than the"),
    ("config", {"emb_size": 10**12}, "models[0] states emb_size=1000000000000, more than the"),
    ("config", {"hidden_size": 2**70}, f"models[0] states hidden_size={2**70}, more than the"),
    ("config", {"n_layers": 10**9}, "models[0] states n_layers=1000000000, more than the 22 tensors it holds"),
    ("model", {"n_classes": 10**12}, "models[0] states n_classes=1000000000000, more than the"),
    ("config", {"vocab_size": 0}, "models[0].config.vocab_size is 0; it must be at least 1")])
def test_an_absurd_size_is_refused_without_allocating_it(saved, tmp_path, no_model_is_allocated, where, size, problem):
    path = forge(saved[1], tmp_path, lambda p: (config(p) if where == "config" else p["models"][0]).update(size))
    assert problem in refusal(path)


def test_a_regressor_whose_targets_disagree_with_its_model_is_refused(tiny_weights, tmp_path, request):
    ULMFiTRegressor(pretrained=tiny_weights, **TINY).fit(TEXTS, np.arange(18.0)).save(tmp_path / "model")
    request.getfixturevalue("no_model_is_allocated")  # from here on: the fit above built models
    path = forge(tmp_path / "model", tmp_path, lambda p: p["targets"]["y_mean_"].append(0.0))
    assert "targets.y_mean_ must be 1 floats" in refusal(path)
    path = forge(tmp_path / "model", tmp_path, lambda p: p["targets"].update(n_outputs_=2))
    assert "targets states 2 outputs of a 1-D y, but the models have 1 outputs" in refusal(path)


# ----------------------------------------------------------------------------- destinations

@pytest.mark.parametrize("destination, error, reason", [
    ("folder", IsADirectoryError, "it is a folder; name a file inside it"),
    ("file/model", NotADirectoryError, "is a file, not a folder"),
    ("missing/model", FileNotFoundError, "does not exist"),
    ("file/below/model", FileNotFoundError, "does not exist"),
])
def test_a_destination_that_cannot_be_written_is_refused_clearly_and_leaves_nothing(saved, tmp_path, destination,
                                                                                    error, reason):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("a file, not a folder")
    before = files_under(tmp_path)
    with pytest.raises(error) as caught:
        saved[0].save(tmp_path / destination)
    message = str(caught.value)
    assert message.startswith(f"cannot save the model to {tmp_path / destination}: ") and reason in message
    assert "\n" not in message and files_under(tmp_path) == before


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk full", "interrupted"])
def test_a_failed_save_keeps_the_earlier_model_whole_and_leaves_nothing(saved, binary_task, tmp_path, monkeypatch,
                                                                        failure):
    clf, _ = saved
    path = tmp_path / "model"
    clf.save(path)
    before = files_under(tmp_path)
    real_save = torch.save

    def save_then_fail(content, destination):
        real_save(content, destination)  # the new model is written, then the disk fills or the user interrupts
        raise failure
    monkeypatch.setattr(torch, "save", save_then_fail)
    with pytest.raises(type(failure)) as caught:
        clf.save(path)
    monkeypatch.undo()
    if isinstance(failure, OSError):
        assert str(caught.value) == f"cannot save the model to {path}: No space left on device"
    assert files_under(tmp_path) == before
    np.testing.assert_array_equal(skulmfit.load(path).predict_proba(binary_task[0]), clf.predict_proba(binary_task[0]))
