"""What skulmfit guarantees under stress: no loader runs code from a file, prediction is
thread-safe, bad values are refused by name."""
import io
import json
import os
import pickle
import random
import string
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from skulmfit import ULMFiTClassifier
from skulmfit.fastai_import import load_fastai
from skulmfit.pretrain import Checkpointer
from skulmfit.pretrained import load_weights, resolve, save_weights
from skulmfit.training import NonFiniteLossError

TINY = dict(lm_epochs=1, epochs=1, batch_size=8, bptt=10, max_len=50, random_state=0)


# ----------------------------------------------------------------------------- files never run code

class WritesMarker:
    """Unpickling this object runs ``open(path, 'w')``: the proof that a loader executed file code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('ran')",))


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "MARKER"
    yield path
    assert not path.exists(), "a loader ran code stored in a file"


def malicious_state(marker):
    return {"0.encoder.weight": torch.zeros(3, 2), "payload": WritesMarker(marker)}


def test_fastai_loader_never_runs_code_folder_or_file(tmp_path, marker):
    folder = tmp_path / "fastai"
    folder.mkdir()
    torch.save({"model": {"0.encoder.weight": torch.zeros(3, 2)}, "opt": WritesMarker(marker)},
               folder / "lstm_fwd.pth")
    (folder / "itos.pkl").write_bytes(pickle.dumps(["a", "b", "c"]))
    for path in (folder, folder / "lstm_fwd.pth"):
        with pytest.raises(ValueError):  # the inert optimizer is skipped; the toy state dict is incomplete
            load_fastai(path)
    # A lone model.pkl, which used to be read with plain pickle:
    lone = tmp_path / "lone"
    lone.mkdir()
    torch.save(WritesMarker(marker), lone / "model.pkl")
    with pytest.raises(ValueError):
        ULMFiTClassifier(pretrained=lone / "model.pkl", **TINY).fit(["a b", "c d"], [0, 1])


def test_itos_pickle_never_runs_code(tmp_path, marker):
    folder = tmp_path / "fastai"
    folder.mkdir()
    torch.save({"0.encoder.weight": torch.zeros(3, 2)}, folder / "lstm_fwd.pth")
    (folder / "itos.pkl").write_bytes(pickle.dumps(WritesMarker(marker)))
    with pytest.raises(ValueError):
        load_fastai(folder)


def test_skulmfit_weight_file_loader_never_runs_code(tmp_path, marker):
    path = tmp_path / "evil.pt"
    torch.save({"format": "skulmfit-awdlstm-1", "card": WritesMarker(marker)}, path)
    with pytest.raises(ValueError, match="not a skulmfit weight file"):
        load_weights(path)
    with pytest.raises(ValueError):
        resolve(path)


def test_pretraining_checkpoint_loader_never_runs_code(tmp_path, marker):
    (tmp_path / "cache").mkdir()
    checkpointer = Checkpointer(tmp_path / "cache", tmp_path / "out", "x", backwards=False)
    torch.save({"model": {}, "optimizer": {}, "progress": WritesMarker(marker)}, checkpointer.state_path)
    with pytest.raises(pickle.UnpicklingError):
        checkpointer.load()


def test_unpickling_a_fitted_model_never_unpickles_code_in_its_weights_blob(tiny_weights, binary_task, marker):
    clf = ULMFiTClassifier(pretrained=tiny_weights, **TINY).fit(*binary_task)
    state = clf.__getstate__()
    buffer = io.BytesIO()
    torch.save([WritesMarker(marker)], buffer)
    state["_models_blob"] = buffer.getvalue()
    with pytest.raises(pickle.UnpicklingError):
        ULMFiTClassifier().__setstate__(state)


# ----------------------------------------------------------------------------- threads

THREADS_SCRIPT = textwrap.dedent("""
    import sys, threading
    import numpy as np, torch
    from skulmfit import ULMFiTClassifier
    texts = ["a great film", "an awful film", "great acting", "awful acting"] * 6
    y = [1, 0, 1, 0] * 6
    clf = ULMFiTClassifier(pretrained=sys.argv[1], lm_epochs=1, epochs=1, batch_size=8, random_state=0,
                           bidirectional=True).fit(texts, y)
    queries = texts + [" ".join(["great film awful story"] * 300)]
    expected = clf.predict_proba(queries)
    results, errors = [], []
    def work():
        try:
            for _ in range(5):
                results.append(clf.predict_proba(queries))
        except BaseException as error:
            errors.append(repr(error))
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert not errors, errors
    assert len(results) == 20 and all(np.array_equal(r, expected) for r in results)
    print("ok")
""")


def test_threads_predicting_with_one_model_agree_with_a_sequential_call(tiny_weights, tiny_weights_bwd, tmp_path):
    folder = tmp_path / "both"
    folder.mkdir()
    for direction, short, path in (("forward", "fwd", tiny_weights), ("backward", "bwd", tiny_weights_bwd)):
        lm = load_weights(path)  # the two tiny files, as one model folder with its cards
        checksum = save_weights(folder / f"tiny.{short}.pt", lm.build(), lm.itos, backwards=lm.backwards)
        card = {"name": "tiny", "direction": direction, "file": f"tiny.{short}.pt", "sha256": checksum}
        (folder / f"tiny.{short}.json").write_text(json.dumps(card))
    # Fresh processes: a crash (the segmentation faults this test guards against) must fail the
    # test, not end the test run, and each round starts with torch's threads unused.
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    for _ in range(3):
        result = subprocess.run([sys.executable, "-c", THREADS_SCRIPT, str(folder)], capture_output=True,
                                text=True, timeout=120, env=env)
        assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


# ----------------------------------------------------------------------------- no silent NaN models

TEXTS, LABELS = ["a good film", "a bad film", "good acting", "bad acting"] * 4, ["pos", "neg"] * 8


@pytest.mark.parametrize("class_weight, message", [
    ({"pos": float("nan")}, "finite"), ({"pos": -1.0}, ">= 0"), ({"pos": float("inf")}, "finite"),
    ({"pos": "heavy"}, "finite"), ({"pos": 0, "neg": 0}, "at least one must be positive")])
def test_bad_class_weights_are_refused_by_name(tiny_weights, class_weight, message):
    with pytest.raises(ValueError, match=f"class_weight.*{message}|{message}"):
        ULMFiTClassifier(pretrained=tiny_weights, class_weight=class_weight, **TINY).fit(TEXTS, LABELS)


def test_zero_weight_for_one_class_is_allowed(tiny_weights):
    clf = ULMFiTClassifier(pretrained=tiny_weights, class_weight={"pos": 0.0}, **TINY).fit(TEXTS, LABELS)
    assert np.isfinite(clf.predict_proba(TEXTS)).all()


@pytest.mark.parametrize("drop_mult", [2, 2.5, 3, -0.1])
def test_drop_mult_that_drops_every_weight_is_refused_by_name(tiny_weights, drop_mult):
    with pytest.raises(ValueError, match="drop_mult"):
        ULMFiTClassifier(pretrained=tiny_weights, drop_mult=drop_mult, **TINY).fit(TEXTS, LABELS)


def test_largest_drop_mult_trains_a_finite_model(tiny_weights):
    clf = ULMFiTClassifier(pretrained=tiny_weights, drop_mult=1.99, **TINY).fit(TEXTS, LABELS)
    assert np.isfinite(clf.predict_proba(TEXTS)).all()


def test_a_diverging_fit_stops_with_a_clear_error_and_keeps_the_fitted_model(tiny_weights):
    clf = ULMFiTClassifier(pretrained=tiny_weights, **TINY).fit(TEXTS, LABELS)
    before = clf.predict_proba(TEXTS)
    clf.set_params(lr=1e9, lm_lr=1e9)
    with pytest.raises(NonFiniteLossError, match="became nan; the fit stopped.*Likely causes: a learning rate too high"):
        clf.fit(TEXTS, LABELS)
    np.testing.assert_array_equal(clf.predict_proba(TEXTS), before)


def test_non_finite_pretrained_weights_stop_language_model_fine_tuning(tiny_weights, tmp_path):
    lm = load_weights(tiny_weights)
    lm.state_dict["0.encoder.weight"][5] = float("nan")
    broken = tmp_path / "broken.pt"
    save_weights(broken, lm.build(), lm.itos)
    with pytest.raises(NonFiniteLossError, match="language-model loss became nan in fine-tuning, at step 1"):
        ULMFiTClassifier(pretrained=broken, **TINY).fit(TEXTS, LABELS)


# ----------------------------------------------------------------------------- inputs refused by name

@pytest.mark.parametrize("X, message", [
    (b"a good film", "X is bytes; it must be a sequence of str"),
    (bytearray(b"a good film"), "X is bytearray"),
    ({"text": TEXTS}, "X is a dict; pass its texts"),
    (set(TEXTS), "unordered set"),
    (frozenset(TEXTS), "unordered frozenset"),
    ({t: 1 for t in TEXTS}.keys(), "unordered dict_keys"),
])
def test_ambiguous_containers_are_refused_by_name(tiny_weights, X, message):
    clf = ULMFiTClassifier(pretrained=tiny_weights, **TINY)
    with pytest.raises(TypeError, match=message):
        clf.fit(X, LABELS)
    fitted = ULMFiTClassifier(pretrained=tiny_weights, **TINY).fit(TEXTS, LABELS)
    with pytest.raises(TypeError, match=message):
        fitted.predict_proba(X)


@pytest.mark.parametrize("content", [b"", os.urandom(64)])
def test_a_file_that_is_no_weight_file_says_so(tmp_path, content):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="is not a readable weight file.*Readable are skulmfit weight files"):
        ULMFiTClassifier(pretrained=path, **TINY).fit(TEXTS, LABELS)


# ----------------------------------------------------------------------------- odd texts, interrupts

ODD_TEXTS = ["", "   \n\t ", "lone \ud800 surrogate", "nul\x00byte", "emoji 😀👍🏽 and flags 🇫🇷", "good film"]
HUGE_TEXT = "a good film " * 450_000  # 5.4 MB, 1.35 million words: predicted, not trained on (CI time)


@pytest.fixture(scope="module")
def tiny_subword_weights(tiny_weights, tmp_path_factory):
    """The tiny model's vocabulary as pieces (byte pieces added), so that every text is pieces."""
    from skulmfit.model import AWDLSTMConfig, LanguageModel
    from skulmfit.subword import BYTE_PIECES, UnigramSegmenter
    from skulmfit.text import Tokenizer
    from skulmfit.vocab import Vocab
    lm = load_weights(tiny_weights)
    pieces = ["▁" + t for t in lm.itos[9:] if not t.startswith("xxfake")] + ["▁", *BYTE_PIECES]
    tokenizer = Tokenizer(UnigramSegmenter(pieces, [-1.0] * len(pieces)))
    itos = Vocab.from_pieces(pieces).itos
    model = LanguageModel(AWDLSTMConfig(len(itos), **{k: v for k, v in lm.config.sizes().items()
                                                    if k != "vocab_size"}))
    weights = tmp_path_factory.mktemp("subword") / "subword.pt"
    save_weights(weights, model, itos, tokenizer=tokenizer)
    return weights


@pytest.mark.parametrize("subword", [False, True])
def test_odd_texts_fit_and_predict(tiny_weights, tiny_subword_weights, subword):
    weights = tiny_subword_weights if subword else tiny_weights
    clf = ULMFiTClassifier(pretrained=weights, **TINY).fit(ODD_TEXTS, ["a", "b"] * 3)
    if subword:
        proba, queries = clf.predict_proba(ODD_TEXTS), ODD_TEXTS
    else:  # the huge text once (CI time): read as its first and last max_tokens / 2 tokens, with a warning
        queries = ODD_TEXTS + [HUGE_TEXT]
        with pytest.warns(UserWarning, match="longer than max_tokens"):
            proba = clf.predict_proba(queries)
    assert proba.shape == (len(queries), 2) and np.isfinite(proba).all()


def test_a_text_of_a_million_characters_without_spaces_costs_seconds(tiny_subword_weights):
    """A pasted blob is one word of a million pieces: it is segmented in about a second and read as
    its first and last max_tokens / 2 pieces. Before, segmenting it and reading every piece in
    language-model fine-tuning, four classifier epochs and prediction took minutes."""
    blob = "".join(random.Random(0).choices(string.ascii_letters + string.digits, k=1_000_000))
    start = time.perf_counter()
    with pytest.warns(UserWarning, match="longer than max_tokens=20000 tokens"):
        clf = ULMFiTClassifier(pretrained=tiny_subword_weights, **TINY).fit([blob, *ODD_TEXTS], ["a", "b"] * 3 + ["a"])
        proba = clf.predict_proba([blob])
    elapsed = time.perf_counter() - start
    assert np.isfinite(proba).all()
    assert elapsed < 30, f"{elapsed:.0f} s"


def interrupt_on_call(monkeypatch, module, name, call):
    """Makes the ``call``-th call of ``module.name`` raise KeyboardInterrupt (as Ctrl-C would)."""
    original, calls = getattr(module, name), []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return original(*args, **kwargs)
    monkeypatch.setattr(module, name, wrapper)


@pytest.mark.parametrize("stage, name, call", [("language-model fine-tuning", "lm_train_step", 1),
                                               ("classifier training", "pad_batch", 3)])
def test_an_interrupted_refit_keeps_the_fitted_model(tiny_weights, monkeypatch, stage, name, call):
    import skulmfit.training as training_module
    clf = ULMFiTClassifier(pretrained=tiny_weights, **TINY).fit(TEXTS, LABELS)
    before = clf.predict_proba(TEXTS)
    interrupt_on_call(monkeypatch, training_module, name, call)
    with pytest.raises(KeyboardInterrupt):
        clf.fit(TEXTS[::-1], LABELS[::-1])
    monkeypatch.undo()
    np.testing.assert_array_equal(clf.predict_proba(TEXTS), before)


# ----------------------------------------------------------------------------- parallel cross-validation

PARALLEL_SEQUENCE = textwrap.dedent("""
    import numpy as np
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from skulmfit import ULMFiTClassifier

    words = {"pos": "good great fine nice", "neg": "bad awful poor dull"}
    rng = np.random.default_rng(0)
    y = ["pos", "neg"] * 12
    X = [" ".join(rng.choice(words[label].split() + ["film", "plot", "actor"], 6)) for label in y]
    params = dict(pretrained=None, bidirectional=True, lm_epochs=1, epochs=1, batch_size=8, bptt=10,
                  max_len=50, random_state=0)
    # The two directions in two processes, then joblib's process pool, then both again.
    ULMFiTClassifier(**params, n_jobs=2).fit(X, y)
    search = GridSearchCV(ULMFiTClassifier(**params), {"epochs": [1, 2]}, cv=2, n_jobs=2).fit(X, y)
    scores = cross_val_score(ULMFiTClassifier(**params), X, y, cv=2, n_jobs=2)
    clf = ULMFiTClassifier(**params, n_jobs=2).fit(X, y)
    assert clf.bidirectional_ and len(clf.models_) == 2
    assert len(scores) == 2 and search.best_params_["epochs"] in (1, 2)
    print("sequence ok")
""")


def test_parallel_cross_validation_after_a_two_process_fit_and_a_fit_after_it():
    """A bidirectional fit's second process must not take joblib's process pool: a fit, then
    GridSearchCV and cross_val_score with n_jobs=2, then a fit again, in a fresh process."""
    result = subprocess.run([sys.executable, "-c", PARALLEL_SEQUENCE], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sequence ok" in result.stdout
