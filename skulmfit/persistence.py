"""A file format for fitted estimators that cannot run code when loaded: ``clf.save`` / ``skulmfit.load``.

``pickle`` and ``joblib`` work too (the scikit-learn convention), but unpickling a file runs whatever
code it names, so a model from someone else is only as safe as its sender. This format stores
tensors plus plain values (strings, numbers, lists, dicts) in one ``torch.save`` file, and
:func:`load_estimator` (behind :func:`skulmfit.load`) reads it with ``torch.load(weights_only=True)``,
which refuses anything else::

    {"format": "skulmfit-classifier-1", "estimator": "ULMFiTClassifier" or "ULMFiTRegressor",
     "versions": {...}, "params": "<JSON>", "classes": {"dtype": ..., "values": [...]} (a classifier's)
     or "targets": {"y_mean_": [...], "y_scale_": [...], ...} (a regressor's),
     "tokenizer": {...}, "vocabs": [[token, ...], ...],
     "models": [{"config": ..., "n_classes": ..., "bptt": ..., "max_len": ..., "state_dict": {...}}, ...],
     "fitted": {"history_": ..., "lm_history_": ..., "n_threads_": ..., "epochs_": ..., "precision_": ..., "bidirectional_": ...}}

Weights are stored as CPU tensors in their own precision, so predictions after loading equal those
before bit for bit, and a model fitted on a GPU loads on a machine without one.

:func:`load_estimator` trusts nothing in a file: before it builds a model it checks every key and
value type, and that the stated sizes agree with the tensors, the vocabularies and the classes (the
expected tensor shapes come from a model on the ``meta`` device, which allocates nothing). A damaged
or forged file is refused with a one-line ``ValueError`` naming the file and what disagrees; what
it allocates is sized by the tensors a file really holds, never by a size it states.
:func:`save` writes a temporary file and renames it over ``path``, so a failed save leaves nothing
behind and an earlier file at ``path`` whole.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import pickletools
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from . import __version__
from .model import DROPOUT_FIELDS, SIZE_FIELDS, AWDLSTMConfig, TextClassifier
from .text import Tokenizer
from .vocab import Vocab

FORMAT = "skulmfit-classifier-1"
_FITTED = ("history_", "lm_history_", "n_threads_", "epochs_", "precision_", "bidirectional_")
_SNIFFED_BYTES = 1 << 24  # how much of an unreadable file is searched for the classes it names


# ----------------------------------------------------------------------------- save

def save(estimator: BaseEstimator, path: str | Path) -> None:
    """Writes a fitted ``ULMFiTClassifier`` or ``ULMFiTRegressor`` to ``path`` (see the module docstring).

    Raises
    ------
    NotFittedError
        If the estimator is not fitted.
    OSError
        ``IsADirectoryError``, ``FileNotFoundError``, ``NotADirectoryError``, ``PermissionError``...
        naming ``path``, if it cannot be written; nothing is left behind and a file already at
        ``path`` is kept whole.
    """
    check_is_fitted(estimator)
    payload = {
        "format": FORMAT,
        "estimator": type(estimator).__name__,
        "versions": current_versions(),
        "params": json.dumps(_plain_params(estimator.get_params(deep=False))),
        **_target_state(estimator),
        "tokenizer": estimator.tokenizer_.to_dict(),
        "vocabs": [vocab.to_list() for vocab in estimator.vocab_],
        "models": [model.spec() for model in estimator.models_],
        "fitted": json.loads(json.dumps({name: getattr(estimator, name) for name in _FITTED})),
    }
    _write_atomically(payload, Path(path))


def _write_atomically(payload: dict, path: Path) -> None:
    """``torch.save`` to ``<path>.tmp``, then a rename over ``path``: a crash while writing never leaves
    a half-written model under the name, and an error (or an interrupt) removes the temporary file."""
    check_destination(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())  # the data is on disk before the rename makes it the model
        tmp.replace(path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError):  # its own text names the temporary file, not the model
            raise type(error)(f"cannot save the model to {path}: {error.strerror or error}") from None
        raise


def check_destination(path: Path, action: str = "save the model to") -> None:
    """Refuses, naming ``path``, a destination that ``open`` would refuse with a less clear error:
    a folder, a file name under a file, a file name in a folder that does not exist.

    Raises ``IsADirectoryError``, ``NotADirectoryError`` or ``FileNotFoundError``, whose message
    starts ``cannot <action> <path>:``. The command line checks its outputs with it before any work.
    """
    if path.is_dir():
        raise IsADirectoryError(f"cannot {action} {path}: it is a folder; name a file inside it")
    if path.parent.is_file():
        raise NotADirectoryError(f"cannot {action} {path}: {path.parent} is a file, not a folder")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot {action} {path}: the folder {path.parent} does not exist")


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


# ----------------------------------------------------------------------------- load

def load_estimator(path: str | Path, kinds: Sequence[type[BaseEstimator]]) -> BaseEstimator:
    """Reads a model written by :func:`save`; never runs code from the file (:func:`skulmfit.load`).

    Parameters
    ----------
    path : str or Path
    kinds : sequence of estimator classes
        The classes a file may name (by their ``__name__``).

    Returns
    -------
    estimator
        An instance of one of ``kinds``, fitted, predicting exactly as the saved estimator did.

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`skulmfit.load` describes: a ``ValueError`` is one line naming ``path``.
    """
    path = Path(path)
    payload = _read_payload(path)
    if not (isinstance(payload, dict) and payload.get("format") == FORMAT):
        raise ValueError(f"{path} is not a skulmfit model file (format {FORMAT!r}); found {_format_of(payload)}")
    try:
        differences = _version_differences(payload)
        estimator = _restore(payload, {kind.__name__: kind for kind in kinds})
    except _Invalid as problem:
        raise ValueError(f"{path} is not a valid skulmfit model file: {problem}") from None
    for difference in differences:
        warnings.warn(difference, UserWarning, stacklevel=3)
    return estimator


def current_versions() -> dict[str, str]:
    """The versions a saved model records: skulmfit's and torch's.

    Returns
    -------
    dict of str to str
    """
    return {"skulmfit": __version__, "torch": str(torch.__version__)}


def version_differences(saved: Mapping[str, str]) -> list[str]:
    """A warning for each package whose version differs from the one a model was saved with.

    Parameters
    ----------
    saved : mapping of str to str
        The :func:`current_versions` of the process that saved the model (pickled or in a file).

    Returns
    -------
    list of str
        One message per package, for ``warnings.warn``.
    """
    return [f"this model was saved with {name} {saved[name]} and is loaded with {name} {version}; "
            "predictions may differ"
            for name, version in current_versions().items() if name in saved and saved[name] != version]


def _read_payload(path: Path):
    """What ``torch.load(weights_only=True)`` reads from ``path``, or a one-line error naming it."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: there is no skulmfit model file there")
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a skulmfit model file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is not a skulmfit model file: it is empty")
    with open(path, "rb") as file:  # an unreadable file gets the system's error, which names it
        try:
            with warnings.catch_warnings():  # torch's note on a foreign pickle: the error below says more
                warnings.filterwarnings("ignore", message="Detected pickle protocol")
                return torch.load(file, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises UnpicklingError, RuntimeError, OSError, ... for a bad file
            if isinstance(error, pickle.UnpicklingError) and _names_classes_or_functions(path):
                reason = "it holds objects other than tensors and plain values, which skulmfit never unpickles"
            else:
                reason = "it is truncated or not a torch file"
            raise ValueError(f"{path} is not a skulmfit model file: {reason}") from None


def _names_classes_or_functions(path: Path) -> bool:
    """Whether the pickle in ``path`` (a torch zip archive's ``data.pkl``, or else the whole file)
    names a class or function where it is well-formed: what ``weights_only`` refuses, as opposed
    to bytes that are no pickle at all. Reads the opcodes only; nothing is unpickled."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [name for name in archive.namelist() if name.endswith("/data.pkl")]
                with archive.open(names[0]) as member:
                    data = member.read(_SNIFFED_BYTES)
        else:
            with open(path, "rb") as file:
                data = file.read(_SNIFFED_BYTES)
        return any(opcode.name in ("GLOBAL", "STACK_GLOBAL", "INST")
                   for opcode, _, _ in pickletools.genops(io.BytesIO(data)))
    except Exception:  # no data.pkl, a damaged archive, opcodes that stop being well-formed, ...
        return False


def _format_of(payload) -> str:
    """The format tag of what a file holds, as it is shown in an error."""
    if not isinstance(payload, dict):
        return f"a {type(payload).__name__}"
    tag = payload.get("format")
    return repr(tag) if isinstance(tag, str) else "no format tag"


class _Invalid(Exception):
    """What is wrong with a file that has the right format tag; :func:`load_estimator` adds the file's name."""


def _version_differences(payload: dict) -> list[str]:
    """:func:`version_differences` of the versions the file states, which must be strings."""
    versions = _field(payload, "versions", dict)
    for name in current_versions():
        if name in versions:
            _field(versions, name, str, "versions")
    return version_differences(versions)


def _restore(payload: dict, kinds: dict[str, type]):
    """The fitted estimator the payload describes, checked whole before any model is built."""
    name = _field(payload, "estimator", str)
    if name not in kinds:
        raise _Invalid(f"estimator {name!r} is none this skulmfit knows ({', '.join(kinds)})")
    records = _field(payload, "models", list)
    if len(records) not in (1, 2):
        raise _Invalid(f"len(models) is {len(records)}; a fitted estimator has 1 or 2 (one per direction)")
    models = [_CheckedModel.from_record(record, f"models[{i}]") for i, record in enumerate(records)]
    n_outputs = models[0].n_classes
    if any(model.n_classes != n_outputs for model in models):
        raise _Invalid(f"its models have {[model.n_classes for model in models]} outputs; "
                       "both directions need the same")
    vocabs = _vocabularies(payload, models)
    if name == "ULMFiTClassifier":  # a regressor has targets where a classifier has classes
        weight_bytes = sum(model.n_bytes for model in models)
        targets = _class_attributes(_field(payload, "classes", dict), n_outputs, weight_bytes)
    else:
        targets = _regression_attributes(_field(payload, "targets", dict), n_outputs)
    attributes = {**targets, "tokenizer_": _tokenizer(payload, vocabs), "vocab_": vocabs,
                  **_fitted_attributes(payload, len(models))}
    estimator = kinds[name](**_constructor_params(payload, kinds[name]))
    for attribute, value in attributes.items():
        setattr(estimator, attribute, value)
    estimator.models_ = [model.build() for model in models]  # allocates what the file holds, once it all agrees
    return estimator


def _field(record: dict, key: str, kind: type, where: str = ""):
    """``record[key]``, which must be there and be a ``kind`` (where an int is asked for, a bool is not one)."""
    name = f"{where}.{key}" if where else key
    if key not in record:
        raise _Invalid(f"{name} is missing")
    value = record[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise _Invalid(f"{name} is {type(value).__name__}, not {kind.__name__}")
    return value


def _positive_int(record: dict, key: str, where: str) -> int:
    value = _field(record, key, int, where)
    if value < 1:
        raise _Invalid(f"{where}.{key} is {value}; it must be at least 1")
    return value


@dataclasses.dataclass
class _CheckedModel:
    """One entry of the file's ``models``, checked: its sizes agree with its tensors."""

    config: AWDLSTMConfig
    n_classes: int
    bptt: int
    max_len: int
    state_dict: dict[str, torch.Tensor]

    @classmethod
    def from_record(cls, record, where: str) -> _CheckedModel:
        """The ``models`` entry ``record``, refused unless each of its sizes agrees with its tensors."""
        if not isinstance(record, dict):
            raise _Invalid(f"{where} is {type(record).__name__}, not dict")
        state = _tensors(record, where)
        config = _config(_field(record, "config", dict, where), f"{where}.config")
        n_classes = _positive_int(record, "n_classes", where)
        _check_sizes_fit(state, {**config.sizes(), "n_classes": n_classes}, where)
        model = cls(config, n_classes, _positive_int(record, "bptt", where), _positive_int(record, "max_len", where),
                    state)
        model._check_tensors(where)
        return model

    @property
    def n_bytes(self) -> int:
        return sum(tensor.numel() * tensor.element_size() for tensor in self.state_dict.values())

    def _check_tensors(self, where: str) -> None:
        """Each tensor must have the name, shape and dtype that a model of the stated sizes has."""
        with torch.device("meta"):  # shapes and dtypes only: nothing is allocated
            expected = TextClassifier(self.config, self.n_classes).state_dict()
        missing = sorted(set(expected) - set(self.state_dict))
        extra = sorted(set(self.state_dict) - set(expected))
        if missing or extra:
            raise _Invalid(f"{where}.state_dict does not fit its config: missing {missing[:3]}, unexpected {extra[:3]}")
        stated = f"config {self.config.sizes()} and n_classes={self.n_classes}"
        for name, want in expected.items():
            got = self.state_dict[name]
            if got.layout != torch.strided or got.device.type != "cpu":
                raise _Invalid(f"{where}.state_dict[{name!r}] is not a dense CPU tensor")
            if got.shape != want.shape or got.dtype != want.dtype:
                raise _Invalid(f"{where}.state_dict[{name!r}] is {_describe(got)}, but its {stated} "
                               f"need {_describe(want)}")

    def build(self) -> TextClassifier:
        return TextClassifier.from_spec({"config": dataclasses.asdict(self.config), "n_classes": self.n_classes,
                                         "bptt": self.bptt, "max_len": self.max_len, "state_dict": self.state_dict})


def _config(fields: dict, where: str) -> AWDLSTMConfig:
    """The AWD-LSTM's sizes (positive ints) and dropout probabilities; no other field."""
    unknown = sorted(set(fields) - set(SIZE_FIELDS + DROPOUT_FIELDS), key=str)
    if unknown:
        raise _Invalid(f"{where} has fields AWDLSTMConfig does not: {unknown}")
    return AWDLSTMConfig(**{name: _positive_int(fields, name, where) for name in SIZE_FIELDS},
                         **{name: _dropout(fields, name, where) for name in DROPOUT_FIELDS})


def _tensors(record: dict, where: str) -> dict[str, torch.Tensor]:
    state = _field(record, "state_dict", dict, where)
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise _Invalid(f"{where}.state_dict holds {type(value).__name__} {name!r}; it must map names to tensors")
    return state


def _check_sizes_fit(state: dict[str, torch.Tensor], sizes: dict[str, int], where: str) -> None:
    """A size larger than the weights stored cannot be right: refused before any model is described,
    so that a forged size allocates nothing and overflows nothing."""
    n_weights = sum(tensor.numel() for tensor in state.values())
    for name, size in sizes.items():
        limit, unit = (len(state), "tensors") if name == "n_layers" else (n_weights, "weights")
        if size > limit:
            raise _Invalid(f"{where} states {name}={size}, more than the {limit} {unit} it holds")


def _dropout(config: dict, name: str, where: str) -> float:
    value = _field(config, name, float, where)
    if not 0.0 <= value < 1.0:
        raise _Invalid(f"{where}.{name} is {value}; a dropout probability is in [0, 1)")
    return value


def _describe(tensor: torch.Tensor) -> str:
    return f"{tuple(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"


def _vocabularies(payload: dict, models: list[_CheckedModel]) -> list[Vocab]:
    """One vocabulary per model, as long as its embedding."""
    itos_lists = _field(payload, "vocabs", list)
    if len(itos_lists) != len(models):
        raise _Invalid(f"len(vocabs) is {len(itos_lists)}, but len(models) is {len(models)}")
    vocabs = []
    for i, (itos, model) in enumerate(zip(itos_lists, models)):
        if not isinstance(itos, list) or len(itos) != model.config.vocab_size:
            size = len(itos) if isinstance(itos, list) else type(itos).__name__
            raise _Invalid(f"vocabs[{i}] has {size} tokens, but the embedding of models[{i}] "
                           f"has {model.config.vocab_size} rows")
        try:
            vocabs.append(Vocab(itos))
        except (TypeError, ValueError) as error:
            raise _Invalid(f"vocabs[{i}]: {error}") from None
    return vocabs


def _tokenizer(payload: dict, vocabs: list[Vocab]) -> Tokenizer:
    """The tokenizer, which must produce only tokens each vocabulary has."""
    data = _field(payload, "tokenizer", dict)
    try:
        tokenizer = Tokenizer.from_dict(data)
        for vocab in vocabs:
            tokenizer.check_vocabulary(vocab.itos)
    except (KeyError, TypeError, ValueError) as error:
        raise _Invalid(f"tokenizer: {error}") from None
    return tokenizer


def _class_attributes(classes: dict, n_outputs: int, weight_bytes: int) -> dict:
    """``classes_`` (in its saved dtype) and ``multilabel_``, one class per output of the models."""
    values = _field(classes, "values", list, "classes")
    if len(values) != n_outputs:
        raise _Invalid(f"classes has {len(values)} labels, but the models have {n_outputs} outputs")
    dtype = _label_dtype(_field(classes, "dtype", str, "classes"))
    if len(values) * dtype.itemsize > weight_bytes:
        raise _Invalid(f"classes.dtype {dtype.str!r} makes the labels larger than the model's weights")
    if not all(isinstance(value, (str, int, float)) for value in values):
        raise _Invalid("classes.values holds a value that is not a str, int, float or bool")
    try:
        labels = np.array(values, dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        labels = None
    if labels is None or labels.tolist() != values:
        raise _Invalid(f"classes.values do not fit classes.dtype {dtype.str!r}")
    attributes = {"classes_": labels, "multilabel_": _field(classes, "multilabel_", bool, "classes")}
    if attributes["multilabel_"]:
        attributes["_sparse_target"] = _field(classes, "_sparse_target", bool, "classes")
    return attributes


def _label_dtype(name: str) -> np.dtype:
    """The dtype of ``classes_``: Python objects, or numpy bools, numbers or strings."""
    try:
        dtype = np.dtype(object if name == "object" else name)
    except (TypeError, ValueError):
        dtype = None
    if dtype is None or dtype.kind not in "OUbiuf":
        raise _Invalid(f"classes.dtype {name!r} is not a dtype of labels")
    return dtype


def _regression_attributes(targets: dict, n_outputs: int) -> dict:
    """The targets' means and scales, one per output of the models."""
    n_targets = _field(targets, "n_outputs_", int, "targets")
    y_ndim = _field(targets, "_y_ndim", int, "targets")
    if n_targets != n_outputs or y_ndim not in (1, 2) or (y_ndim == 1 and n_targets != 1):
        raise _Invalid(f"targets states {n_targets} outputs of a {y_ndim}-D y, but the models have {n_outputs} outputs")
    attributes = {"n_outputs_": n_targets, "_y_ndim": y_ndim}
    for name in ("y_mean_", "y_scale_"):
        numbers = _field(targets, name, list, "targets")
        if len(numbers) != n_targets or not all(isinstance(number, float) for number in numbers):
            raise _Invalid(f"targets.{name} must be {n_targets} floats")
        attributes[name] = np.array(numbers)
    return attributes


def _fitted_attributes(payload: dict, n_models: int) -> dict:
    """``history_``, ``lm_history_``, ``n_threads_``, ``epochs_``, ``precision_`` and ``bidirectional_``."""
    fitted = _field(payload, "fitted", dict)
    attributes = {"history_": _field(fitted, "history_", list, "fitted"),
                  # files saved before the language-model stage was recorded lack it: nothing is known
                  "lm_history_": _field(fitted, "lm_history_", list, "fitted")
                  if "lm_history_" in fitted else [{} for _ in range(n_models)],
                  "n_threads_": _positive_int(fitted, "n_threads_", "fitted"),
                  "epochs_": _field(fitted, "epochs_", int, "fitted"),
                  "precision_": _field(fitted, "precision_", str, "fitted"),
                  # files saved before bidirectional="auto" existed lack it: the number of models says
                  "bidirectional_": _field(fitted, "bidirectional_", bool, "fitted")
                  if "bidirectional_" in fitted else n_models == 2}
    if attributes["precision_"] not in ("fp32", "bf16"):
        raise _Invalid(f"fitted.precision_ is {attributes['precision_']!r}, not 'fp32' or 'bf16'")
    if len(attributes["lm_history_"]) != n_models or not all(isinstance(r, dict) for r in attributes["lm_history_"]):
        raise _Invalid(f"fitted.lm_history_ must be a dict per model ({n_models})")
    if attributes["bidirectional_"] != (n_models == 2):
        raise _Invalid(f"fitted.bidirectional_ is {attributes['bidirectional_']}, but len(models) is {n_models}")
    return attributes


def _constructor_params(payload: dict, kind: type) -> dict:
    """The estimator's parameters, from their JSON; each must be one that ``kind`` takes."""
    try:
        params = json.loads(_field(payload, "params", str))
    except (ValueError, RecursionError):
        raise _Invalid("params is not JSON") from None
    if not isinstance(params, dict):
        raise _Invalid(f"params is a JSON {type(params).__name__}, not an object")
    unknown = sorted(set(params) - set(kind().get_params(deep=False)))
    if unknown:
        raise _Invalid(f"params names parameters {kind.__name__} does not take: {unknown}")
    if isinstance(params.get("class_weight"), dict):
        try:
            params["class_weight"] = {key: value for key, value in params["class_weight"]["pairs"]}
        except (KeyError, TypeError, ValueError):
            raise _Invalid("params.class_weight is not a list of [class, weight] pairs") from None
    return params
