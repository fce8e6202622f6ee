"""Shared fixtures: a tiny separable text task and tiny pretrained weight files.

Everything here is small on purpose (an 8-dimensional embedding, 24 texts): the estimator tests
check behaviour, not accuracy, and must stay fast on a busy two-core machine.
"""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from skulmfit.model import AWDLSTMConfig, LanguageModel
from skulmfit.pretrained import save_weights
from skulmfit.tokenizer import tokenize_many
from skulmfit.vocab import Vocab

POS = ["a great film", "wonderful acting", "great and wonderful", "truly great story",
       "wonderful music", "a great cast", "so great", "wonderful"]
NEG = ["an awful film", "boring acting", "awful and boring", "truly awful story",
       "boring music", "an awful cast", "so boring", "awful"]
NEU = ["an okay film", "average acting", "okay and average", "truly average story",
       "okay music", "an average cast", "so okay", "average"]

TINY_SIZES = dict(emb_size=8, hidden_size=16, n_layers=2)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Torch on one thread for the whole session: tiny models run ~3x faster so, and the machine
    may be shared. Restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def binary_task():
    """32 texts, labels "pos" / "neg" (separable by their words)."""
    return POS + NEG + POS[::-1] + NEG[::-1], ["pos"] * 8 + ["neg"] * 8 + ["pos"] * 8 + ["neg"] * 8


@pytest.fixture(scope="session")
def three_class_task():
    """24 texts, labels "pos" / "neg" / "neu" in blocks of 8."""
    return POS + NEG + NEU, ["pos"] * 8 + ["neg"] * 8 + ["neu"] * 8


@pytest.fixture(scope="session")
def tiny_itos():
    return Vocab.build(tokenize_many(POS + NEG + NEU), min_freq=1).itos


def _tiny_weights(path, itos, backwards, seed):
    torch.manual_seed(seed)
    model = LanguageModel(AWDLSTMConfig(vocab_size=len(itos), **TINY_SIZES))
    save_weights(path, model, itos, backwards=backwards, card={"name": "tiny"})
    return path


def tiny_model_pair(folder: Path, name: str, itos: list[str]) -> Path:
    """A forward and a backward tiny model named ``name`` in ``folder``, with the cards that make
    ``folder`` a model registry (as ``skulmfit pretrain`` writes it)."""
    folder.mkdir(parents=True, exist_ok=True)
    for direction, backwards, seed in (("forward", False, 0), ("backward", True, 1)):
        weights = folder / f"{name}.{'bwd' if backwards else 'fwd'}.pt"
        _tiny_weights(weights, itos, backwards, seed)
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        card = {"name": name, "direction": direction, "file": weights.name, "sha256": digest}
        weights.with_suffix(".json").write_text(json.dumps(card))
    return folder


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory, tiny_itos):
    """Path of a tiny forward skulmfit weight file whose vocabulary covers the tiny tasks."""
    return _tiny_weights(tmp_path_factory.mktemp("weights") / "tiny.fwd.pt", tiny_itos, False, 0)


@pytest.fixture(scope="session")
def tiny_weights_bwd(tmp_path_factory, tiny_itos):
    """The same as :func:`tiny_weights` for a backward model."""
    return _tiny_weights(tmp_path_factory.mktemp("weights") / "tiny.bwd.pt", tiny_itos, True, 1)


@pytest.fixture(scope="session")
def keyword_task():
    """``make(n, seed) -> (texts, labels)``: sentences of neutral filler words with one class
    keyword ("good" or "bad" words) somewhere in each, the labels alternating."""
    return _keyword_task


def _keyword_task(n: int, seed: int):
    """Sentences of neutral filler words with one class keyword somewhere in each."""
    rng = np.random.default_rng(seed)
    keywords = {"good": ["excellent", "superb", "brilliant", "delightful"],
                "bad": ["dreadful", "tedious", "awful", "clumsy"]}
    filler = ("the a film plot actor scene story music camera ending script cast director movie it was "
              "and with this that of in on its very quite rather long short new old first last").split()
    texts, labels = [], []
    for i in range(n):
        label = ("good", "bad")[i % 2]
        words = list(rng.choice(filler, size=rng.integers(5, 13)))
        words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(keywords[label])))
        texts.append(" ".join(words).capitalize() + ".")
        labels.append(label)
    return texts, labels
