"""A file format for fitted estimators that cannot run code when loaded: ``clf.save`` / ``skulmfit.load``.

``pickle`` and ``joblib`` work too (the scikit-learn convention), but unpickling a file runs whatever
code it names, so a model from someone else is only as safe as its sender. This format stores
tensors plus plain values (strings, numbers, lists, dicts) in one ``torch.save`` file, and
:func:`load` reads it with ``torch.load(weights_only=True)``, which refuses anything else::

    {"format": "skulmfit-classifier-1", "estimator": "ULMFiTClassifier" or "ULMFiTRegressor",
     "versions": {...}, "params": "<JSON>", "classes": {"dtype": ..., "values": [...]} (a classifier's)
     or "targets": {"y_mean_": [...], "y_scale_": [...], ...} (a regressor's),
     "tokenizer": {...}, "vocabs": [[token, ...], ...],
     "models": [{"config": ..., "n_classes": ..., "bptt": ..., "max_len": ..., "state_dict": {...}}, ...],
     "fitted": {"history_": ..., "n_threads_": ..., "epochs_": ..., "precision_": ..., "bidirectional_": ...}}

Weights are stored as CPU tensors in their own precision, so predictions after loading equal those
before bit for bit, and a model fitted on a GPU loads on a machine without one.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .text import Tokenizer
from .vocab import Vocab

FORMAT = "skulmfit-classifier-1"
_FITTED = ("history_", "n_threads_", "epochs_", "precision_", "bidirectional_")


def save(estimator, path: str | Path) -> None:
    """Writes a fitted ``ULMFiTClassifier`` or ``ULMFiTRegressor`` to ``path`` (see the module docstring)."""
    from sklearn.utils.validation import check_is_fitted

    from .estimator import _model_spec
    check_is_fitted(estimator)
    payload = {
        "format": FORMAT,
        "estimator": type(estimator).__name__,
        "versions": {"skulmfit": __version__, "torch": str(torch.__version__)},
        "params": json.dumps(_plain_params(estimator.get_params(deep=False))),
        **_target_state(estimator),
        "tokenizer": estimator.tokenizer_.to_dict(),
        "vocabs": [vocab.to_list() for vocab in estimator.vocab_],
        "models": [_model_spec(model) for model in estimator.models_],
        "fitted": json.loads(json.dumps({name: getattr(estimator, name) for name in _FITTED})),
    }
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # a crash while writing never leaves a half-written model under the name


def load(path: str | Path):
    """Reads a model written by ``ULMFiTClassifier.save``; never runs code from the file.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    ULMFiTClassifier
        Fitted, predicting exactly as the saved estimator did.

    Raises
    ------
    ValueError
        If the file is truncated, not a torch file, or not a skulmfit model (a pickle, a weight
        file, a file of another program); the message says which.
    """
    from .estimator import ULMFiTClassifier, ULMFiTRegressor, _model_from_spec
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:
        raise ValueError(f"{path} is not a skulmfit model file ({type(error).__name__}: {error}); "
                         "files from ULMFiTClassifier.save load here, pickles with joblib.load") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} is not a skulmfit model file (format {FORMAT!r}); found {found!r}")
    for name, version in payload["versions"].items():
        current = {"skulmfit": __version__, "torch": str(torch.__version__)}[name]
        if version != current:
            warnings.warn(f"this model was saved with {name} {version} and is loaded with {name} {current}; "
                          "predictions may differ", UserWarning, stacklevel=2)
    kind = {"ULMFiTClassifier": ULMFiTClassifier, "ULMFiTRegressor": ULMFiTRegressor}.get(payload.get("estimator"))
    if kind is None:
        raise ValueError(f"{path} holds an estimator this skulmfit does not know: {payload.get('estimator')!r}")
    estimator = kind(**_restore_params(json.loads(payload["params"])))
    if "classes" in payload:
        classes = payload["classes"]
        estimator.classes_ = np.array(classes["values"], dtype=object if classes["dtype"] == "object" else classes["dtype"])
        estimator.multilabel_ = classes["multilabel_"]
        if estimator.multilabel_:
            estimator._sparse_target = classes["_sparse_target"]
    else:
        targets = payload["targets"]
        estimator.y_mean_, estimator.y_scale_ = np.array(targets["y_mean_"]), np.array(targets["y_scale_"])
        estimator.n_outputs_, estimator._y_ndim = targets["n_outputs_"], targets["_y_ndim"]
    estimator.tokenizer_ = Tokenizer.from_dict(payload["tokenizer"])
    estimator.vocab_ = [Vocab(itos) for itos in payload["vocabs"]]
    estimator.models_ = [_model_from_spec(spec) for spec in payload["models"]]
    fitted = {"bidirectional_": len(estimator.models_) == 2, **payload["fitted"]}  # saved before "auto" existed
    for name in _FITTED:
        setattr(estimator, name, fitted[name])
    return estimator


def _target_state(estimator) -> dict:
    """What a fitted estimator knows of its targets, as plain values."""
    if hasattr(estimator, "classes_"):
        classes = estimator.classes_
        return {"classes": {"dtype": classes.dtype.str if classes.dtype != object else "object",
                            "values": [_plain(c) for c in classes.tolist()],
                            "multilabel_": estimator.multilabel_,
                            "_sparse_target": getattr(estimator, "_sparse_target", False)}}
    return {"targets": {"y_mean_": estimator.y_mean_.tolist(), "y_scale_": estimator.y_scale_.tolist(),
                        "n_outputs_": estimator.n_outputs_, "_y_ndim": estimator._y_ndim}}


def _plain(value):
    """A numpy scalar as the Python value JSON and ``weights_only`` accept."""
    return value.item() if isinstance(value, np.generic) else value


def _plain_params(params: dict) -> dict:
    """Constructor parameters as JSON: paths and devices as strings, class weights as pairs (their
    keys may be ints or bools), a joblib ``Memory`` as its folder, a ``RandomState`` as ``None``."""
    plain = dict(params)
    if plain["pretrained"] is not None:
        plain["pretrained"] = str(plain["pretrained"])
    plain["device"] = str(plain["device"])
    if isinstance(plain.get("class_weight"), dict):
        plain["class_weight"] = {"pairs": [[_plain(k), _plain(v)] for k, v in plain["class_weight"].items()]}
    memory = plain["memory"]
    if memory is not None and not isinstance(memory, str):
        plain["memory"] = str(memory.location) if getattr(memory, "location", None) else None
    if plain["random_state"] is not None and not isinstance(plain["random_state"], int):
        plain["random_state"] = None
    return plain


def _restore_params(plain: dict) -> dict:
    if isinstance(plain.get("class_weight"), dict):
        plain["class_weight"] = {key: value for key, value in plain["class_weight"]["pairs"]}
    return plain
