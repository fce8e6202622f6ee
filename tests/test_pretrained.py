"""Tests of the pretrained weight files, the bundled-model registry, what ``pretrained=`` resolves to
and vocabulary transfer (skulmfit/pretrained.py, skulmfit/lm_weights.py, and target_vocab in
skulmfit/engine.py)."""
import json
import os
import time

import numpy as np
import pytest
import torch

import skulmfit.pretrained as pretrained_module
from skulmfit import ULMFiTClassifier, available_models
from skulmfit.engine import target_vocab
from skulmfit.lm_weights import TIED_KEYS, PretrainedLM, match_embeddings
from skulmfit.model import AWDLSTMConfig, LanguageModel
from skulmfit.pretrained import (
    DEFAULT_MODEL,
    FORMAT,
    has_backward,
    load_bundled,
    load_weights,
    resolve,
    resolve_pretrained,
    save_weights,
    sha256,
)
from skulmfit.text import Tokenizer
from skulmfit.tokenizer import SPECIAL_TOKENS

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(itos, seed=0):
    torch.manual_seed(seed)
    model = LanguageModel(AWDLSTMConfig(vocab_size=len(itos), emb_size=8, hidden_size=16, n_layers=2))
    with torch.no_grad():
        model[1].decoder.bias.normal_()  # non-zero, so that the bias transfer is visible
    return model


# ----------------------------------------------------------------------------- weight files

def test_save_and_load_round_trip(tmp_path, tiny_itos):
    model = tiny_model(tiny_itos)
    path = tmp_path / "sub" / "lm.pt"
    checksum = save_weights(path, model, tiny_itos, card={"corpus": "toy"})
    assert checksum == sha256(path) and len(checksum) == 64
    assert not list(path.parent.glob("*.tmp"))

    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == FORMAT and raw["backwards"] is False
    assert not set(TIED_KEYS) & set(raw["state_dict"])  # the tied copies are not stored
    assert all(t.dtype == torch.float16 for t in raw["state_dict"].values())

    lm = load_weights(path, expected_sha256=checksum)
    assert lm.config == AWDLSTMConfig(vocab_size=len(tiny_itos), emb_size=8, hidden_size=16, n_layers=2)
    assert lm.itos == list(tiny_itos) and lm.backwards is False and lm.card == {"corpus": "toy"}
    original = model.state_dict()
    assert set(lm.state_dict) == set(original)
    for key, value in original.items():
        assert lm.state_dict[key].dtype == torch.float32
        torch.testing.assert_close(lm.state_dict[key], value.float(), rtol=1e-3, atol=1e-3)  # fp16 precision
        torch.testing.assert_close(lm.state_dict[key], value.half().float(), rtol=0, atol=0)
    for key in TIED_KEYS:
        assert lm.state_dict[key] is lm.state_dict["0.encoder.weight"]
    rebuilt = lm.build()
    assert rebuilt[1].decoder.weight is rebuilt[0].encoder.weight  # still tied as a module


def test_card_with_a_torch_version_loads_with_weights_only(tmp_path, tiny_itos):
    """Regression: pretrain's card holds torch.__version__, a TorchVersion (a str subclass), which
    torch.load(weights_only=True) refuses; save_weights now stores the card as plain JSON types."""
    path = tmp_path / "lm.pt"
    save_weights(path, tiny_model(tiny_itos), tiny_itos, card={"machine": {"torch": torch.__version__}})
    raw = torch.load(path, map_location="cpu", weights_only=True)  # no allowlist needed
    assert type(raw["card"]["machine"]["torch"]) is str
    assert load_weights(path).card == {"machine": {"torch": str(torch.__version__)}}


def test_files_written_with_a_torch_version_in_the_card_still_load(tmp_path, tiny_itos):
    """Files the running pretraining wrote before the fix (card holding a TorchVersion) load too."""
    path = tmp_path / "old.pt"
    save_weights(path, tiny_model(tiny_itos), tiny_itos)
    payload = torch.load(path, weights_only=True)
    payload["card"] = {"machine": {"torch": torch.__version__}}
    torch.save(payload, path)
    assert load_weights(path).card["machine"]["torch"] == torch.__version__
    assert resolve(path).itos == list(tiny_itos)  # recognised as a skulmfit file, not sent to fastai import


def test_backwards_flag_is_saved(tmp_path, tiny_itos):
    save_weights(tmp_path / "b.pt", tiny_model(tiny_itos), tiny_itos, backwards=True)
    assert load_weights(tmp_path / "b.pt").backwards is True


def test_checksum_mismatch(tmp_path, tiny_itos):
    path = tmp_path / "lm.pt"
    save_weights(path, tiny_model(tiny_itos), tiny_itos)
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_weights(path, expected_sha256="0" * 64)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("content", ["torch-dict", "torch-list", "garbage", "pickle"])
def test_a_file_that_is_not_a_skulmfit_file(tmp_path, content):
    path = tmp_path / "other.pt"
    if content == "torch-dict":
        torch.save({"model": {"w": torch.zeros(2)}}, path)
    elif content == "torch-list":
        torch.save([torch.zeros(2)], path)
    elif content == "garbage":
        path.write_bytes(b"this is not a weight file at all")
    else:
        import pickle
        path.write_bytes(pickle.dumps({"format": FORMAT, "x": object}))
    with pytest.raises(ValueError, match="is not a skulmfit weight file"):
        load_weights(path)


def test_a_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_weights(tmp_path / "missing.pt")


def test_vocabulary_size_must_match_the_model(tmp_path, tiny_itos):
    path = tmp_path / "lm.pt"
    save_weights(path, tiny_model(tiny_itos), tiny_itos)
    payload = torch.load(path, weights_only=True)
    payload["itos"] = payload["itos"][:-1]
    torch.save(payload, path)
    with pytest.raises(ValueError, match="vocabulary has"):
        load_weights(path)


# ----------------------------------------------------------------------------- vocabulary transfer

def test_match_embeddings(tiny_itos):
    state = tiny_model(tiny_itos).state_dict()
    old_emb, old_bias = state["0.encoder.weight"].clone(), state["1.decoder.bias"].clone()
    new_itos = list(SPECIAL_TOKENS) + ["great", "zebra", "awful", "quokka"]
    result = match_embeddings(state, tiny_itos, new_itos)
    emb = result["0.encoder.weight"]
    assert emb.shape == (len(new_itos), 8)
    for i, token in enumerate(new_itos):
        if token in tiny_itos:  # known tokens keep their rows and biases
            j = tiny_itos.index(token)
            torch.testing.assert_close(emb[i], old_emb[j], rtol=0, atol=0)
            assert result["1.decoder.bias"][i] == old_bias[j]
        else:  # new tokens start from the means
            torch.testing.assert_close(emb[i], old_emb.mean(0))
            torch.testing.assert_close(result["1.decoder.bias"][i], old_bias.mean())
    for key in TIED_KEYS:
        assert result[key] is emb
    # the input is left alone, and the result loads into a model of the new size
    torch.testing.assert_close(state["0.encoder.weight"], old_emb, rtol=0, atol=0)
    model = LanguageModel(AWDLSTMConfig(vocab_size=len(new_itos), emb_size=8, hidden_size=16, n_layers=2))
    model.load_state_dict(result)
    torch.testing.assert_close(model[1].decoder.weight, emb)


def test_match_embeddings_without_decoder_keys(tiny_itos):
    encoder_state = {k: v for k, v in tiny_model(tiny_itos).state_dict().items() if k.startswith("0.")}
    result = match_embeddings(encoder_state, tiny_itos, list(SPECIAL_TOKENS) + ["zebra"])
    assert "1.decoder.bias" not in result and result["0.encoder.weight"].shape == (10, 8)


def test_target_vocab_extends_the_pretrained_vocabulary(tiny_itos):
    lm = PretrainedLM(AWDLSTMConfig(len(tiny_itos)), list(tiny_itos), {})
    tokens = [["xxbos", "great", "zebra", "quokka", "zebra", "quokka", "zebra", "once"]] * 2
    vocab = target_vocab(lm, tokens, max_vocab=30000, min_freq=3)
    assert vocab.itos[:len(tiny_itos)] == list(tiny_itos)  # pretrained ids unchanged
    new = [t for t in vocab.itos[len(tiny_itos):] if not t.startswith("xxfake")]
    assert new == ["zebra", "quokka"]  # frequent new words, most frequent first; "once" is too rare
    assert len(vocab) % 8 == 0
    # max_vocab bounds pretrained plus new tokens (before the padding to a multiple of 8)
    limited = target_vocab(lm, tokens, max_vocab=len(tiny_itos) + 1, min_freq=3)
    assert [t for t in limited.itos[len(tiny_itos):] if not t.startswith("xxfake")] == ["zebra"]
    assert target_vocab(lm, tokens, max_vocab=16, min_freq=1).itos[:len(tiny_itos)] == list(tiny_itos)


def test_target_vocab_without_pretrained_model():
    tokens = [["xxbos", "b", "a", "b", "c"], ["xxbos", "b", "a"]]
    vocab = target_vocab(None, tokens, max_vocab=30000, min_freq=2)
    assert vocab.itos[:len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    assert vocab.itos[len(SPECIAL_TOKENS):len(SPECIAL_TOKENS) + 2] == ["b", "a"]
    assert "c" not in vocab.itos


# ----------------------------------------------------------------------------- resolve

def test_resolve_none_is_random_initialisation():
    assert resolve(None) is None


def test_resolve_an_unknown_name():
    with pytest.raises(ValueError, match=r"'no-such-model' is neither a bundled model \[.*\]") as info:
        resolve("no-such-model")
    assert str(available_models()) in str(info.value)


def test_resolve_checks_the_direction(tiny_weights, tiny_weights_bwd):
    assert resolve(tiny_weights).backwards is False
    assert resolve(str(tiny_weights_bwd), backwards=True).backwards is True
    with pytest.raises(ValueError, match="holds a forward model"):
        resolve(tiny_weights, backwards=True)
    with pytest.raises(ValueError, match="holds a backward model"):
        resolve(tiny_weights_bwd)


def test_resolve_a_file_that_is_no_weights(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(ValueError):
        resolve(path)


# ----------------------------------------------------------------------------- the registry

@pytest.fixture
def registry_dir(tmp_path, monkeypatch, tiny_weights, tiny_weights_bwd):
    """A weights folder with a tiny fwd+bwd pair named "tiny", in place of skulmfit/weights."""
    import shutil
    folder = tmp_path / "weights"
    folder.mkdir()
    for source, direction in ((tiny_weights, "forward"), (tiny_weights_bwd, "backward")):
        target = folder / source.name
        shutil.copy(source, target)
        card = {"name": "tiny", "direction": direction, "file": target.name, "sha256": sha256(target)}
        (folder / f"tiny.{source.name.split('.')[1]}.json").write_text(json.dumps(card))
    monkeypatch.setattr(pretrained_module, "_weights_dir", lambda: folder)
    return folder


def test_registry_from_model_cards(registry_dir):
    assert available_models() == ["tiny"]
    forward, backward = load_bundled("tiny"), load_bundled("tiny", backwards=True)
    assert forward.backwards is False and backward.backwards is True
    assert resolve("tiny", backwards=True).backwards is True
    with pytest.raises(ValueError, match=r"unknown pretrained model 'other'; available: \['tiny'\]"):
        load_bundled("other")


def test_model_card_of_a_bundled_model(registry_dir):
    assert pretrained_module.model_card("tiny")["direction"] == "forward"
    assert pretrained_module.model_card("tiny", backwards=True)["direction"] == "backward"
    with pytest.raises(ValueError, match=r"no bundled forward model 'other'; available: \['tiny'\]"):
        pretrained_module.model_card("other")


def test_registry_verifies_checksums(registry_dir):
    card_path = registry_dir / "tiny.fwd.json"
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**card, "sha256": "f" * 64}))
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_bundled("tiny")


def test_registry_with_one_direction_only(registry_dir):
    (registry_dir / "tiny.bwd.json").unlink()
    assert load_bundled("tiny").backwards is False
    with pytest.raises(ValueError, match="has no backward weights"):
        load_bundled("tiny", backwards=True)


def test_a_pretrain_output_folder_is_a_pretrained_model(registry_dir, binary_task):
    """``pretrained=<folder written by skulmfit.pretrain>`` gives each direction its own file."""
    assert resolve(str(registry_dir)).backwards is False
    assert resolve(registry_dir, backwards=True).backwards is True
    texts, y = binary_task
    clf = ULMFiTClassifier(str(registry_dir), bidirectional=True, lm_epochs=1, epochs=1, batch_size=8, bptt=10,
                           random_state=0).fit(texts, y)
    assert clf.predict_proba(texts).shape == (len(texts), 2)


def test_a_folder_with_two_models_is_ambiguous(registry_dir):
    card = json.loads((registry_dir / "tiny.fwd.json").read_text())
    (registry_dir / "other.fwd.json").write_text(json.dumps({**card, "name": "other"}))
    with pytest.raises(ValueError, match="several skulmfit models"):
        resolve(registry_dir)


def test_bidirectional_estimator_on_a_registered_pair(registry_dir, binary_task):
    texts, y = binary_task
    clf = ULMFiTClassifier("tiny", bidirectional=True, lm_epochs=1, epochs=1, batch_size=8, bptt=10,
                           random_state=0).fit(texts, y)
    assert clf.transform(texts[:4]).shape == (4, 6 * 8)
    assert clf.predict_proba(texts).shape == (len(texts), 2)


def test_which_sources_offer_a_backward_model(registry_dir, tiny_weights, tiny_weights_bwd, tmp_path):
    """``bidirectional="auto"`` asks has_backward: both directions only where a backward model exists."""
    assert has_backward("tiny") and has_backward(registry_dir) and has_backward(str(registry_dir))
    assert not has_backward(None) and not has_backward(tiny_weights) and not has_backward(tmp_path / "absent")
    forward_only = tmp_path / "forward-only"
    forward_only.mkdir()
    (forward_only / "tiny.fwd.pt").write_bytes(tiny_weights.read_bytes())
    card = json.loads((registry_dir / "tiny.fwd.json").read_text())
    (forward_only / "tiny.fwd.json").write_text(json.dumps(card))
    assert not has_backward(forward_only)
    fastai_style = tmp_path / "fastai"  # no cards: the file names say the direction
    fastai_style.mkdir()
    (fastai_style / "fwd_wt103.pth").write_bytes(b"")
    (fastai_style / "itos_wt103.pkl").write_bytes(b"")
    assert not has_backward(fastai_style)
    (fastai_style / "bwd_wt103_enc.pth").write_bytes(b"")  # an encoder-only file cannot serve
    assert not has_backward(fastai_style)
    (fastai_style / "bwd_wt103.pth").write_bytes(b"")
    assert has_backward(fastai_style)


def test_auto_fits_both_directions_where_the_model_has_them(registry_dir, tiny_weights, binary_task):
    texts, y = binary_task
    tiny = dict(lm_epochs=0, epochs=1, batch_size=8, bptt=10, random_state=0)
    both = ULMFiTClassifier("tiny", **tiny).fit(texts, y)
    assert both.bidirectional_ and len(both.models_) == 2 and both.transform(texts[:2]).shape == (2, 6 * 8)
    forward = ULMFiTClassifier(str(tiny_weights), **tiny).fit(texts, y)
    assert not forward.bidirectional_ and len(forward.models_) == 1
    assert not ULMFiTClassifier(None, **tiny).fit(texts, y).bidirectional_
    assert not ULMFiTClassifier("tiny", **tiny, bidirectional=False).fit(texts, y).bidirectional_


def test_resolve_pretrained_reads_the_registry_once_and_agrees_with_resolve(registry_dir, tiny_weights, monkeypatch):
    scans = []
    model_cards = pretrained_module.model_cards
    monkeypatch.setattr(pretrained_module, "model_cards", lambda *folder: scans.append(folder) or model_cards(*folder))
    both = resolve_pretrained("tiny")
    assert len(scans) == 1 and both.bidirectional
    assert [lm.backwards for lm in both.models] == [False, True]
    assert both.tokenizer == resolve("tiny").tokenizer
    assert both.fingerprint == resolve_pretrained("tiny", bidirectional=True).fingerprint  # the cards
    assert resolve_pretrained("tiny", bidirectional=False).models[0].backwards is False
    scans.clear()
    folder = resolve_pretrained(registry_dir)  # a skulmfit.pretrain folder: the bundled cards, then its own
    assert len(scans) == 2 and folder.bidirectional
    single = resolve_pretrained(tiny_weights)
    assert not single.bidirectional and single.models[0].itos == resolve(tiny_weights).itos
    assert single.fingerprint != folder.fingerprint
    random = resolve_pretrained(None, bidirectional=True)
    assert random.models == (None, None) and random.tokenizer == Tokenizer() and random.fingerprint is None
    assert resolve_pretrained(None).models == (None,)
    with pytest.raises(ValueError, match="holds a forward model"):
        resolve_pretrained(tiny_weights, bidirectional=True)


def test_a_changed_weight_file_changes_the_fingerprint(tmp_path, tiny_weights):
    copy = tmp_path / "copy.fwd.pt"
    copy.write_bytes(tiny_weights.read_bytes())
    before = resolve_pretrained(copy).fingerprint
    modified = copy.stat().st_mtime_ns + 10**9
    os.utime(copy, ns=(modified, modified))  # rewritten, as a new pretraining checkpoint would be
    assert resolve_pretrained(copy).fingerprint != before


def test_no_weights_folder_means_no_models(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained_module, "_weights_dir", lambda: tmp_path / "absent")
    assert available_models() == []


def test_bundled_model_loads_quickly():
    """The real bundled model, when the pretraining run has produced one."""
    names = available_models()
    if not names:
        pytest.skip("no bundled model yet: skulmfit/weights has no model cards (pretraining not finished)")
    assert names == sorted(names) and all(isinstance(n, str) for n in names)
    name = DEFAULT_MODEL if DEFAULT_MODEL in names else names[0]
    start = time.perf_counter()
    lm = load_bundled(name)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"loading {name} took {elapsed:.2f} s"
    assert lm.backwards is False and len(lm.itos) == lm.config.vocab_size
    assert tuple(lm.itos[:len(SPECIAL_TOKENS)]) == SPECIAL_TOKENS
    assert lm.state_dict["1.decoder.weight"] is lm.state_dict["0.encoder.weight"]
    assert np.isfinite(lm.state_dict["0.encoder.weight"].numpy()).all()
    assert resolve(name).itos == lm.itos


def test_every_bundled_model_loads_quickly_and_all_fit_in_60_mb():
    """The language-model issue's limits on what ships: at most 60 MB together, each file loads in under 2 s."""
    folder = pretrained_module._weights_dir()
    if not folder.is_dir():
        pytest.skip("no bundled weights folder in this checkout")
    assert sum(f.stat().st_size for f in folder.iterdir()) <= 60_000_000
    for name in available_models():
        for backwards in (False, True):
            start = time.perf_counter()
            try:
                lm = load_bundled(name, backwards)
            except ValueError:  # this model has one direction only
                continue
            assert time.perf_counter() - start < 2.0, f"loading {name} ({'backward' if backwards else 'forward'})"
            assert lm.backwards is backwards
