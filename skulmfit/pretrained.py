"""Pretrained language-model weights: the bundled models, skulmfit's weight files, and what an
estimator's ``pretrained`` parameter names (:func:`resolve_pretrained`).

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
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from .fastai_import import load_fastai, names_a_backward_file
from .lm_weights import TIED_KEYS, PretrainedLM
from .model import AWDLSTMConfig, LanguageModel
from .text import Tokenizer

FORMAT = "skulmfit-awdlstm-1"
DEFAULT_MODEL = "en-distilled"


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


def model_cards(folder=None) -> dict:
    """The models whose cards are in ``folder``: ``{name: {"forward": card, "backward": card}}``.

    Each card (``<name>.fwd.json`` / ``<name>.bwd.json``, written by ``skulmfit.pretrain``) names
    its weight file and that file's SHA-256, so the cards are the only registry.

    Parameters
    ----------
    folder : Path or importlib Traversable, optional
        Default: the models bundled with the package. A folder that does not exist holds none.

    Returns
    -------
    dict
        The cards of each model by direction (a direction without a card is absent).
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
    return sorted(model_cards())


def model_card(name: str, backwards: bool = False) -> dict:
    """The model card of a bundled model: corpus, sizes, tokens seen, perplexities, checksum."""
    direction = "backward" if backwards else "forward"
    card = model_cards().get(name, {}).get(direction)
    if card is None:
        raise ValueError(f"no bundled {direction} model {name!r}; available: {available_models()}")
    return dict(card)


def load_bundled(name: str, backwards: bool = False, folder=None) -> PretrainedLM:
    """Loads a model by name from ``folder`` (default: the bundled models), verifying its checksum."""
    folder = _weights_dir() if folder is None else folder
    registry = model_cards(folder)
    if name not in registry:
        raise ValueError(f"unknown pretrained model {name!r}; available: {sorted(registry)}")
    return _load_carded(folder, name, registry[name], backwards)


def _load_carded(folder, name: str, cards: dict, backwards: bool) -> PretrainedLM:
    """One direction of the model whose ``cards`` are in ``folder``, its checksum verified."""
    direction = "backward" if backwards else "forward"
    entry = cards.get(direction)
    if entry is None:
        raise ValueError(f"pretrained model {name!r} has no {direction} weights")
    with resources.as_file(folder / entry["file"]) as path:
        return load_weights(path, entry["sha256"])


# ----------------------------------------------------------------------------- the pretrained parameter

@dataclass(frozen=True)
class ResolvedPretrained:
    """An estimator's ``pretrained`` resolved for one fit (:func:`resolve_pretrained`).

    Attributes
    ----------
    models : tuple of PretrainedLM or None
        The language model of each direction to fit, forward first (two for a bidirectional fit);
        ``None`` is a randomly initialised one.
    tokenizer : Tokenizer
        The text pipeline the models share (fastai's word rules without a pretrained model).
    fingerprint : str or None
        Identifies the weights for ``memory``'s cache: a changed file gives another.
    """

    models: tuple[PretrainedLM | None, ...]
    tokenizer: Tokenizer
    fingerprint: str | None

    @property
    def bidirectional(self) -> bool:
        """Whether a backward model is fitted beside the forward one."""
        return len(self.models) == 2


def resolve_pretrained(pretrained: str | Path | None, bidirectional: bool | str = "auto") -> ResolvedPretrained:
    """Everything a fit needs of ``pretrained``, with the bundled registry read once.

    Parameters
    ----------
    pretrained : str, path or None
        As the estimators take it: see :func:`resolve`.
    bidirectional : bool or "auto", default="auto"
        Whether to load a backward model too; ``"auto"`` does so where ``pretrained`` offers one
        (:func:`has_backward`).

    Returns
    -------
    ResolvedPretrained

    Raises
    ------
    ValueError
        If :func:`resolve` refuses ``pretrained`` or a direction asked for, or if the two directions
        use different tokenizers.
    """
    source = _Source.of(pretrained)
    both = source.offers_backward() if bidirectional == "auto" else bidirectional
    models = tuple(source.load(backwards) for backwards in ((False, True) if both else (False,)))
    tokenizer = Tokenizer() if models[0] is None else models[0].tokenizer  # fastai's word rules without a model
    if any(lm is not None and lm.tokenizer != tokenizer for lm in models[1:]):
        raise ValueError(f"the forward and backward models of pretrained={pretrained!r} use different "
                         "tokenizers; a bidirectional classifier needs one text pipeline")
    return ResolvedPretrained(models, tokenizer, source.fingerprint())


def resolve(pretrained: str | Path | None, backwards: bool = False) -> PretrainedLM | None:
    """The language model meant by an estimator's ``pretrained`` parameter.

    ``None`` means random initialisation; a bundled model's name loads that model; a path to a
    skulmfit weight file loads it; a folder written by ``skulmfit.pretrain`` (one model, forward
    and/or backward) loads the direction asked for; any other folder or file goes through
    :func:`skulmfit.fastai_import.load_fastai`.
    """
    return _Source.of(pretrained).load(backwards)


def has_backward(pretrained: str | Path | None) -> bool:
    """Whether ``pretrained`` offers a backward model beside its forward one (``bidirectional="auto"``).

    True for a bundled model or a ``skulmfit.pretrain`` folder that holds both directions, and for
    a fastai folder with a weights file named as backward (``bwd``/``backward``); False for
    ``None``, for a single weight file (one direction) and for anything :func:`resolve` would
    reject, so that ``resolve`` gives the error.
    """
    return _Source.of(pretrained).offers_backward()


@dataclass(frozen=True)
class _Source:
    """What ``pretrained`` names, decoded once: nothing (random initialisation), a bundled model, a
    path that does not exist, a file, a folder of skulmfit model cards (``cards``: one model's;
    ``ambiguous``: several models), or a folder without cards (fastai weights)."""

    pretrained: str | Path | None
    kind: str  # "none", "bundled", "missing", "file", "carded", "ambiguous" or "fastai"
    folder: object = None  # where a bundled or carded model's files are
    name: str | None = None  # the bundled or carded model's name
    cards: dict | None = None  # its cards by direction
    names: tuple[str, ...] = ()  # the bundled models (kind "missing"), or the folder's (kind "ambiguous")

    @classmethod
    def of(cls, pretrained: str | Path | None) -> _Source:
        if pretrained is None:
            return cls(pretrained, "none")
        bundled = model_cards()
        if isinstance(pretrained, str) and pretrained in bundled:
            return cls(pretrained, "bundled", _weights_dir(), pretrained, bundled[pretrained])
        path = Path(pretrained)
        if not path.exists():
            return cls(pretrained, "missing", names=tuple(sorted(bundled)))
        if not path.is_dir():
            return cls(pretrained, "file")
        models = model_cards(path)
        if len(models) > 1:
            return cls(pretrained, "ambiguous", names=tuple(sorted(models)))
        if models:
            [(name, cards)] = models.items()
            return cls(pretrained, "carded", path, name, cards)
        return cls(pretrained, "fastai")

    def offers_backward(self) -> bool:
        if self.kind in ("bundled", "carded"):
            return "backward" in self.cards
        return self.kind == "fastai" and names_a_backward_file(Path(self.pretrained))

    def load(self, backwards: bool) -> PretrainedLM | None:
        if self.kind == "none":
            return None
        if self.kind in ("bundled", "carded"):
            return _load_carded(self.folder, self.name, self.cards, backwards)
        path = Path(self.pretrained)
        if self.kind == "missing":
            raise ValueError(f"pretrained={self.pretrained!r} is neither a bundled model {list(self.names)} "
                             "nor an existing file or folder")
        if self.kind == "ambiguous":
            raise ValueError(f"{path} holds several skulmfit models {list(self.names)}; pass one weight file")
        if self.kind == "file" and _is_skulmfit_file(path):
            lm = load_weights(path)
            if lm.backwards != backwards:
                raise ValueError(f"{path} holds a {'backward' if lm.backwards else 'forward'} model")
            return lm
        return load_fastai(path, backwards=backwards)

    def fingerprint(self) -> str | None:
        """A bundled model's cards (their checksums), or the paths, sizes and times of the files."""
        if self.kind == "none":
            return None
        if self.kind == "bundled":
            return str(self.cards)
        path = Path(self.pretrained)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.exists() else []
        return str([(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files])


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
