"""Pretrained language-model weights: the bundled models, skulmfit's weight files, and the
transfer of a pretrained embedding onto a target vocabulary.

A weight file is ``torch.save`` of a plain dict (loadable with ``weights_only=True``)::

    {"format": "skulmfit-awdlstm-1", "config": {vocab_size, emb_size, hidden_size, n_layers},
     "itos": [...], "tokenizer": {"kind": ..., ...}, "backwards": bool,
     "state_dict": {fastai v2 key: fp16 tensor}, "card": {...}}

The model owns its text pipeline: ``tokenizer`` describes the :class:`skulmfit.text.Tokenizer` that
turns raw text into tokens of ``itos`` (files without it are word-level).

The two tied copies of the embedding (``0.encoder_dp.emb.weight`` and ``1.decoder.weight``) are
not stored: :func:`load_weights` restores them, which halves the file.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from .model import AWDLSTMConfig, LanguageModel
from .text import Tokenizer

FORMAT = "skulmfit-awdlstm-1"
TIED_KEYS = ("0.encoder_dp.emb.weight", "1.decoder.weight")
DEFAULT_MODEL = "wiki-en-sub"


@dataclass
class PretrainedLM:
    """A language model's sizes, tokenizer, vocabulary and fp32 state dict (all 16 fastai v2 keys)."""

    config: AWDLSTMConfig
    itos: list[str]
    state_dict: dict[str, torch.Tensor]
    backwards: bool = False
    card: dict = field(default_factory=dict)
    tokenizer: Tokenizer = field(default_factory=Tokenizer)

    def build(self) -> LanguageModel:
        model = LanguageModel(self.config)
        model.load_state_dict(self.state_dict)
        return model


# ----------------------------------------------------------------------------- files

def save_weights(path: str | Path, model: LanguageModel, itos: list[str], *, tokenizer: Tokenizer | None = None,
                 backwards: bool = False, card: dict | None = None) -> str:
    """Writes ``model`` with its tokenizer (default: word-level) as an fp16 weight file; returns its SHA-256."""
    tokenizer = Tokenizer() if tokenizer is None else tokenizer
    tokenizer.check_vocabulary(list(itos))
    state = {k: v.detach().to("cpu", torch.float16).clone() for k, v in model.state_dict().items()
             if k not in TIED_KEYS}
    # The card goes through JSON so that it holds plain types only: a str subclass such as
    # torch.__version__ (TorchVersion) would make the file unloadable with weights_only=True.
    payload = {"format": FORMAT, "config": model.config.sizes(), "itos": list(itos),
               "tokenizer": tokenizer.to_dict(), "backwards": backwards,
               "state_dict": state, "card": json.loads(json.dumps(card or {}))}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return sha256(path)


def load_weights(path: str | Path, expected_sha256: str | None = None) -> PretrainedLM:
    """Reads a weight file written by :func:`save_weights`, checking its checksum when given."""
    path = Path(path)
    if expected_sha256 is not None and sha256(path) != expected_sha256:
        raise ValueError(f"checksum mismatch for {path}: the file is corrupt or was replaced")
    try:
        payload = _torch_load(path)
    except OSError:
        raise
    except Exception as error:  # not a torch file at all: torch raises KeyError, UnpicklingError, ...
        raise ValueError(f"{path} is not a skulmfit weight file (format {FORMAT!r}): {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a skulmfit weight file (format {FORMAT!r})")
    config = AWDLSTMConfig(**payload["config"])
    state = {k: v.float() for k, v in payload["state_dict"].items()}
    for key in TIED_KEYS:
        state[key] = state["0.encoder.weight"]
    if len(payload["itos"]) != config.vocab_size:
        raise ValueError(f"{path}: vocabulary has {len(payload['itos'])} tokens, model {config.vocab_size}")
    tokenizer = Tokenizer.from_dict(payload.get("tokenizer"))
    try:
        tokenizer.check_vocabulary(payload["itos"])
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return PretrainedLM(config, payload["itos"], state, payload["backwards"], payload["card"], tokenizer)


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- bundled models

def _weights_dir():
    return resources.files("skulmfit") / "weights"


def _registry(folder=None) -> dict:
    """``{name: {"forward": card, "backward": card}}`` from the model cards in ``folder``.

    Each card (``<name>.fwd.json`` / ``<name>.bwd.json``, written by ``skulmfit.pretrain``) names
    its weight file and that file's SHA-256, so the cards are the only registry. The default
    folder holds the models bundled with the package.
    """
    registry: dict[str, dict] = {}
    folder = _weights_dir() if folder is None else folder
    if not folder.is_dir():
        return registry
    for entry in folder.iterdir():
        if entry.name.endswith((".fwd.json", ".bwd.json")):
            try:
                card = json.loads(entry.read_text())
                registry.setdefault(card["name"], {})[card["direction"]] = card
            except (ValueError, KeyError) as error:  # one bad card must not break every fit
                warnings.warn(f"ignoring unreadable model card {entry.name}: {error!r}", UserWarning, stacklevel=2)
    return registry


def available_models() -> list[str]:
    """Names of the language models bundled with skulmfit (usable as ``pretrained=``)."""
    return sorted(_registry())


def model_card(name: str, backwards: bool = False) -> dict:
    """The model card of a bundled model: corpus, sizes, tokens seen, perplexities, checksum."""
    direction = "backward" if backwards else "forward"
    card = _registry().get(name, {}).get(direction)
    if card is None:
        raise ValueError(f"no bundled {direction} model {name!r}; available: {available_models()}")
    return dict(card)


def load_bundled(name: str, backwards: bool = False, folder=None) -> PretrainedLM:
    """Loads a model by name from ``folder`` (default: the bundled models), verifying its checksum."""
    folder = _weights_dir() if folder is None else folder
    registry = _registry(folder)
    if name not in registry:
        raise ValueError(f"unknown pretrained model {name!r}; available: {sorted(registry)}")
    direction = "backward" if backwards else "forward"
    entry = registry[name].get(direction)
    if entry is None:
        raise ValueError(f"pretrained model {name!r} has no {direction} weights")
    with resources.as_file(folder / entry["file"]) as path:
        return load_weights(path, entry["sha256"])


def resolve(pretrained: str | Path | None, backwards: bool = False) -> PretrainedLM | None:
    """The language model meant by an estimator's ``pretrained`` parameter.

    ``None`` means random initialisation; a bundled model's name loads that model; a path to a
    skulmfit weight file loads it; a folder written by ``skulmfit.pretrain`` (one model, forward
    and/or backward) loads the direction asked for; any other folder or file goes through
    :func:`skulmfit.fastai_import.load_fastai`.
    """
    if pretrained is None:
        return None
    if isinstance(pretrained, str) and pretrained in _registry():
        return load_bundled(pretrained, backwards)
    path = Path(pretrained)
    if not path.exists():
        raise ValueError(f"pretrained={pretrained!r} is neither a bundled model {available_models()} "
                         "nor an existing file or folder")
    if path.is_file() and _is_skulmfit_file(path):
        lm = load_weights(path)
        if lm.backwards != backwards:
            raise ValueError(f"{path} holds a {'backward' if lm.backwards else 'forward'} model")
        return lm
    if path.is_dir():
        models = _registry(path)
        if len(models) > 1:
            raise ValueError(f"{path} holds several skulmfit models {sorted(models)}; pass one weight file")
        if models:
            return load_bundled(next(iter(models)), backwards, folder=path)
    from .fastai_import import load_fastai
    return load_fastai(path, backwards=backwards)


def has_backward(pretrained: str | Path | None) -> bool:
    """Whether ``pretrained`` offers a backward model beside its forward one (``bidirectional="auto"``).

    True for a bundled model or a ``skulmfit.pretrain`` folder that holds both directions, and for
    a fastai folder with a weights file named as backward (``bwd``/``backward``); False for
    ``None``, for a single weight file (one direction) and for anything :func:`resolve` would
    reject, so that ``resolve`` gives the error.
    """
    if pretrained is None:
        return False
    bundled = _registry()
    if isinstance(pretrained, str) and pretrained in bundled:
        return "backward" in bundled[pretrained]
    path = Path(pretrained)
    if not path.is_dir():
        return False
    models = _registry(path)
    if models:
        return len(models) == 1 and "backward" in next(iter(models.values()))
    from .fastai_import import names_a_backward_file
    return names_a_backward_file(path)


def _is_skulmfit_file(path: Path) -> bool:
    try:
        payload = _torch_load(path, mmap=True)
    except Exception:
        return False
    return isinstance(payload, dict) and payload.get("format") == FORMAT


def _torch_load(path: Path, **kwargs):
    """``torch.load`` with ``weights_only=True``, also accepting files whose card holds a
    ``torch.__version__`` (written before :func:`save_weights` made cards plain JSON)."""
    from torch.torch_version import TorchVersion
    with torch.serialization.safe_globals([TorchVersion]):
        return torch.load(path, map_location="cpu", weights_only=True, **kwargs)


# ----------------------------------------------------------------------------- vocabulary transfer

def match_embeddings(state_dict: dict[str, torch.Tensor], old_itos: list[str],
                     new_itos: list[str]) -> dict[str, torch.Tensor]:
    """Re-indexes the embedding and decoder bias from ``old_itos`` to ``new_itos``.

    Tokens the pretrained vocabulary lacks start from the mean embedding row and the mean
    decoder bias (ULMFiT / fastai ``match_embeds``). Returns a new state dict with the tied
    copies pointing at the same new matrix.
    """
    old_index = {token: i for i, token in enumerate(old_itos)}
    rows = torch.tensor([old_index.get(t, -1) for t in new_itos])
    known = rows >= 0
    old_emb = state_dict["0.encoder.weight"]
    new_emb = old_emb.mean(0, keepdim=True).repeat(len(new_itos), 1)
    new_emb[known] = old_emb[rows[known]]
    result = dict(state_dict)
    for key in ("0.encoder.weight",) + TIED_KEYS:
        if key in result:
            result[key] = new_emb
    if "1.decoder.bias" in result:
        old_bias = state_dict["1.decoder.bias"]
        new_bias = old_bias.mean().repeat(len(new_itos))
        new_bias[known] = old_bias[rows[known]]
        result["1.decoder.bias"] = new_bias
    return result
