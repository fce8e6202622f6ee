"""Import of fastai's pretrained AWD-LSTM language models (v2, v1 and v0.7 checkpoints).

fastai ships a language model as a torch weights file (``*.pth``, ``*.pt`` or, for v0.7,
``*.h5``) next to a pickled ``itos`` list. The three fastai generations name a few parameters
differently; :func:`load_fastai` recognises the layout from the key names, maps every tensor by
name onto skulmfit's keys (which are fastai v2's), infers the model sizes from the tensor shapes
and rearranges the vocabulary so that skulmfit's special tokens sit at ids 0..8.

Key layouts (``i`` runs over the LSTM layers)::

    fastai v2   0.encoder.weight  0.encoder_dp.emb.weight  0.rnns.i.weight_hh_l0_raw
                0.rnns.i.module.{weight_ih_l0, bias_ih_l0, bias_hh_l0}  1.decoder.{weight, bias}
    fastai v1   v2 plus 0.rnns.i.module.weight_hh_l0 (a stale copy of the raw matrix; dropped)
    fastai v0.7 0.encoder.weight  0.encoder_with_dropout.embed.weight
                0.rnns.i.module.{weight_ih_l0, weight_hh_l0_raw, bias_ih_l0, bias_hh_l0}
                1.decoder.weight  (no decoder bias: zeros are used)
"""
from __future__ import annotations

import pickle
import re
import shutil
import tarfile
import tempfile
import types
import urllib.request
from pathlib import Path

import torch

from .lm_weights import PretrainedLM, move_embedding_rows
from .model import AWDLSTMConfig
from .tokenizer import SPECIAL_TOKENS

WEIGHT_SUFFIXES = (".pth", ".pt", ".h5")
WT103_URL = "https://s3.amazonaws.com/fast-ai-modelzoo/wt103-{direction}.tgz"

#: Special-token names of older fastai vocabularies and the skulmfit token of the same meaning.
LEGACY_TOKENS = {
    "_unk_": "xxunk",
    "_pad_": "xxpad",
    "xbos": "xxbos",
    "xfld": "xxfld",
    "t_up": "xxup",
    "tk_rep": "xxrep",
    "tk_wrep": "xxwrep",
}

_LAYOUT_V2, _LAYOUT_V1, _LAYOUT_V07 = "fastai-v2", "fastai-v1", "fastai-v0.7"
_RNN_KEY = re.compile(r"^0\.rnns\.(\d+)\.(.+)$")
_DIRECTION = re.compile(r"(?:^|[^a-z])(fwd|forward|bwd|backward)(?:[^a-z]|$)")


# ----------------------------------------------------------------------------- public API

def load_fastai(path: str | Path, backwards: bool = False, itos_path: str | Path | None = None, *,
                allow_code_execution: bool = False) -> PretrainedLM:
    """Loads a fastai AWD-LSTM language model (v2, v1 or v0.7 layout) as a :class:`PretrainedLM`.

    Parameters
    ----------
    path : str or Path
        A folder holding one weights file (``*.pth``, ``*.pt`` or ``*.h5``) and one ``*.pkl``
        vocabulary, or the weights file itself. A folder may hold a forward and a backward model
        (``lstm_fwd.pth`` / ``lstm_bwd.pth``, ``fwd_wt103.h5`` / ``bwd_wt103.h5``): the one whose
        name matches ``backwards`` is used. v0.7's encoder-only ``*_enc.h5`` files are ignored.
    backwards : bool
        Whether the model reads text backwards; selects the file in a folder and is recorded on
        the result. A file whose name says the other direction is refused.
    itos_path : str or Path, optional
        The pickled ``itos`` list; by default the single ``*.pkl`` in the folder (or next to the
        weights file).
    allow_code_execution : bool, default=False
        Read the weights file with plain ``pickle``, which runs whatever code the file contains.
        Never needed for fastai's own checkpoints; only for a file whose tensors sit inside
        custom objects, and only if you trust its origin.

    Returns
    -------
    PretrainedLM
        fp32 state dict under skulmfit's 16 keys, sizes inferred from the shapes, and an ``itos``
        whose first nine tokens are :data:`skulmfit.tokenizer.SPECIAL_TOKENS`. Embedding and
        decoder-bias rows move with their tokens; special tokens the checkpoint lacks get the mean
        embedding row and the mean bias; repeated tokens keep their first row only. ``card``
        records the source files, the layout and every vocabulary change.

    Notes
    -----
    No file is ever read in a way that can run code (unless ``allow_code_execution=True``). The
    weights file is read with ``torch.load(weights_only=True)``; fastai checkpoints that also pickle
    other objects (optimizer settings, fastcore classes) are read again with an unpickler that
    rebuilds tensors the same way and replaces every other class or function by an inert stand-in.
    The ``itos`` pickle is read with an unpickler that admits only plain built-in values.

    Raises
    ------
    ValueError
        Unknown or missing keys, shapes that do not fit the inferred sizes, a vocabulary that is
        not a list of str or whose length differs from the embedding's rows, ambiguous or missing
        files.
    """
    path = Path(path)
    if path.is_dir():
        weights_file, folder = _pick_weights_file(path, backwards), path
    elif path.is_file():
        weights_file, folder = path, path.parent
        _check_direction(weights_file, backwards)
    else:
        raise ValueError(f"{path} is neither a folder nor a file")
    # The weights first: a file that is no weight file at all must say so, not ask for a vocabulary.
    raw_state = _load_checkpoint(weights_file, allow_code_execution)
    itos_file = Path(itos_path) if itos_path is not None else _pick_itos_file(folder)
    layout, state, config = _convert(raw_state, weights_file)
    itos = _load_itos(itos_file)
    if len(itos) != config.vocab_size:
        raise ValueError(f"{itos_file.name} has {len(itos)} tokens but the embedding in "
                         f"{weights_file.name} has {config.vocab_size} rows: they do not belong together")
    itos, state, vocab_changes = _canonical_vocab(itos, state)
    config = AWDLSTMConfig(vocab_size=len(itos), emb_size=config.emb_size,
                           hidden_size=config.hidden_size, n_layers=config.n_layers)
    card = {
        "source": "fastai",
        "layout": layout,
        "weights_file": weights_file.name,
        "itos_file": itos_file.name,
        "backwards": backwards,
        **vocab_changes,
    }
    return PretrainedLM(config, itos, state, backwards, card)


def download_wt103(cache_dir: str | Path, backwards: bool = False) -> Path:
    """Downloads and unpacks fastai's WikiText-103 AWD-LSTM (forward or backward) into ``cache_dir``.

    Returns the folder holding the weights and ``itos`` (pass it to :func:`load_fastai`). An
    already unpacked model is reused. Archive members that would land outside the folder, links
    and device files are refused.
    """
    direction = "bwd" if backwards else "fwd"
    cache_dir = Path(cache_dir)
    target = cache_dir / f"wt103-{direction}"
    found = _model_folder(target)
    if found is not None:
        return found
    cache_dir.mkdir(parents=True, exist_ok=True)
    archive = cache_dir / f"wt103-{direction}.tgz"
    if not archive.is_file():
        partial = archive.with_suffix(".tgz.part")
        with urllib.request.urlopen(WT103_URL.format(direction=direction)) as response, open(partial, "wb") as f:
            shutil.copyfileobj(response, f)
        partial.replace(archive)
    partial_dir = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".wt103-{direction}-"))
    try:
        _safe_extract(archive, partial_dir)
        if target.exists():
            shutil.rmtree(target)
        partial_dir.replace(target)
    finally:
        shutil.rmtree(partial_dir, ignore_errors=True)
    found = _model_folder(target)
    if found is None:
        raise ValueError(f"{archive} holds no weights file and itos pickle")
    return found


# ----------------------------------------------------------------------------- files

def _direction_of(file: Path) -> bool | None:
    """True for a backward model's name, False for a forward one's, None when it does not say."""
    found = {m in ("bwd", "backward") for m in _DIRECTION.findall(file.stem.lower())}
    return found.pop() if len(found) == 1 else None


def _check_direction(file: Path, backwards: bool) -> None:
    direction = _direction_of(file)
    if direction is not None and direction != backwards:
        raise ValueError(f"{file.name} is named as a {'backward' if direction else 'forward'} model but "
                         f"backwards={backwards}; pass backwards={direction} or the other file")


def names_a_backward_file(folder: Path) -> bool:
    """Whether ``folder`` holds a full weights file whose name says it reads backward."""
    return any(_direction_of(f) is True for f in _full_weight_files(_weight_files(folder)))


def _weight_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in WEIGHT_SUFFIXES)


def _full_weight_files(files: list[Path]) -> list[Path]:
    """The whole language models among weight files (v0.7's encoder-only ``*_enc`` files left out)."""
    return [f for f in files if not f.stem.lower().endswith("_enc")]


def _pick_weights_file(folder: Path, backwards: bool) -> Path:
    files = _weight_files(folder)
    full = _full_weight_files(files)
    if not full:
        if files:
            raise ValueError(f"{folder} holds only encoder-only files ({', '.join(f.name for f in files)}); "
                             "the full language-model file (e.g. fwd_wt103.h5) is needed")
        raise ValueError(f"{folder} holds no weights file ({', '.join('*' + s for s in WEIGHT_SUFFIXES)})")
    if len(full) == 1:
        _check_direction(full[0], backwards)
        return full[0]
    wanted = [f for f in full if _direction_of(f) == backwards]
    if len(wanted) != 1:
        raise ValueError(f"{folder} holds several weights files ({', '.join(f.name for f in full)}) and "
                         f"{'none' if not wanted else 'more than one'} is named as the "
                         f"{'backward' if backwards else 'forward'} model; pass the file itself")
    return wanted[0]


def _pick_itos_file(folder: Path) -> Path:
    files = sorted(f for f in folder.glob("*.pkl") if f.is_file())
    if len(files) > 1:
        named = [f for f in files if f.stem.lower().startswith("itos")]
        files = named if len(named) == 1 else files
    if len(files) != 1:
        listing = ", ".join(f.name for f in files) or "none"
        raise ValueError(f"expected exactly one itos pickle (*.pkl) in {folder}, found {listing}; "
                         "pass itos_path")
    return files[0]


def _load_checkpoint(file: Path, allow_code_execution: bool = False) -> dict:
    """The state dict in a torch checkpoint, read without running any code the file may hold.

    ``torch.load(weights_only=True)`` reads plain checkpoints. fastai checkpoints that also pickle
    other objects (optimizer settings, fastcore classes) are read by :class:`_RestrictedUnpickler`,
    which rebuilds tensors exactly as ``weights_only`` does and turns every other class or
    function the file names into an inert stand-in: nothing in the file is ever called.
    """
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:
            payload = torch.load(file, map_location="cpu", weights_only=False,
                                 pickle_module=None if allow_code_execution else _RESTRICTED_PICKLE)
        except Exception as error:
            raise ValueError(_unreadable(file, error)) from error
    except Exception as error:
        raise ValueError(_unreadable(file, error)) from error
    if isinstance(payload, dict) and "model" in payload and isinstance(payload["model"], dict):
        payload = payload["model"]
    if not isinstance(payload, dict) or not payload:
        raise ValueError(f"{file} holds neither a state dict nor a dict with a 'model' state dict")
    bad = [k for k, v in payload.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{file}: entries that are not named tensors: {bad[:10]}")
    return payload


def _unreadable(file: Path, error: Exception) -> str:
    return (f"{file} is not a readable weight file ({type(error).__name__}: {error}). Readable are skulmfit "
            "weight files (.pt, from skulmfit.pretrain) and fastai language models (a .pth or .h5 file "
            "written by torch.save, with its itos .pkl beside it)")


class _InertObject:
    """Stands in for a class or function that a checkpoint names and skulmfit does not need: it
    records what the file gives it and runs nothing."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):  # pickled dict subclasses
        self.__dict__.setdefault("items", {})[key] = value

    def append(self, value):  # pickled list subclasses
        self.__dict__.setdefault("values", []).append(value)

    def extend(self, values):
        self.__dict__.setdefault("values", []).extend(values)


class _RestrictedUnpickler(pickle.Unpickler):
    """Admits the globals that ``torch.load(weights_only=True)`` admits (tensor rebuilding, dtypes,
    ordered dicts); any other class or function becomes a fresh subclass of :class:`_InertObject`
    named after it, so a checkpoint's ``__reduce__`` can never call real code."""

    def find_class(self, module, name):
        allowed = _weights_only_globals().get(f"{module}.{name}")
        if allowed is not None:
            return allowed
        return type(f"{module}.{name}", (_InertObject,), {})


def _weights_only_globals() -> dict:
    from torch import _weights_only_unpickler
    return _weights_only_unpickler._get_allowed_globals()


def _restricted_load(file, **kwargs):
    return _RestrictedUnpickler(file, **kwargs).load()


# What torch.load needs of a pickle module: its Unpickler and load (the legacy format's header).
_RESTRICTED_PICKLE = types.ModuleType("skulmfit_restricted_pickle")
_RESTRICTED_PICKLE.Unpickler = _RestrictedUnpickler
_RESTRICTED_PICKLE.load = _restricted_load


class _PlainUnpickler(pickle.Unpickler):
    """Admits only built-in values (lists, str, ...): no class or function is ever looked up."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load_itos(file: Path) -> list[str]:
    try:
        with open(file, "rb") as f:
            itos = _PlainUnpickler(f).load()
    except Exception as error:
        raise ValueError(f"cannot read {file} as a pickled list of tokens: {error}") from error
    if not isinstance(itos, (list, tuple)) or not all(isinstance(t, str) for t in itos):
        kind = type(itos).__name__ if not isinstance(itos, (list, tuple)) else "list with non-str items"
        raise ValueError(f"{file} must hold a list of str (fastai's itos), found a {kind}")
    return list(itos)


def _model_folder(root: Path) -> Path | None:
    if not root.is_dir():
        return None
    for folder in [root] + sorted(p for p in root.rglob("*") if p.is_dir()):
        if any(f.suffix in WEIGHT_SUFFIXES for f in folder.iterdir()) and any(folder.glob("*.pkl")):
            return folder
    return None


def _safe_extract(archive: Path, dest: Path) -> None:
    dest = dest.resolve()
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for m in members:
            if not (m.isfile() or m.isdir()):
                raise ValueError(f"{archive}: refusing archive member {m.name!r} (not a file or folder)")
            if not (dest / m.name).resolve().is_relative_to(dest):
                raise ValueError(f"{archive}: refusing archive member {m.name!r} (outside the target folder)")
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, members, filter="data")
        else:  # pragma: no cover - Python without extraction filters
            tar.extractall(dest, members)


# ----------------------------------------------------------------------------- state dict

def _expected_keys(layout: str, n_layers: int) -> set[str]:
    if layout == _LAYOUT_V07:
        keys = {"0.encoder.weight", "0.encoder_with_dropout.embed.weight", "1.decoder.weight"}
        per_layer = ("module.weight_ih_l0", "module.weight_hh_l0_raw", "module.bias_ih_l0", "module.bias_hh_l0")
    else:
        keys = {"0.encoder.weight", "0.encoder_dp.emb.weight", "1.decoder.weight", "1.decoder.bias"}
        per_layer = ("weight_hh_l0_raw", "module.weight_ih_l0", "module.bias_ih_l0", "module.bias_hh_l0")
        if layout == _LAYOUT_V1:
            per_layer += ("module.weight_hh_l0",)
    return keys | {f"0.rnns.{i}.{name}" for i in range(n_layers) for name in per_layer}


def _skulmfit_name(layout: str, key: str) -> str | None:
    """The skulmfit key a checkpoint key maps to; None for keys that are dropped."""
    if layout == _LAYOUT_V07:
        if key == "0.encoder_with_dropout.embed.weight":
            return "0.encoder_dp.emb.weight"
        match = _RNN_KEY.match(key)
        if match and match.group(2) == "module.weight_hh_l0_raw":
            return f"0.rnns.{match.group(1)}.weight_hh_l0_raw"
        return key
    if layout == _LAYOUT_V1 and key.endswith(".module.weight_hh_l0"):
        return None  # the stale LSTM copy; the trained matrix is ``weight_hh_l0_raw``
    return key


def _detect_layout(keys: set[str], file: Path) -> str:
    if "0.encoder_with_dropout.embed.weight" in keys:
        return _LAYOUT_V07
    if any(k.startswith("0.rnns.") and k.endswith(".module.weight_hh_l0") for k in keys):
        return _LAYOUT_V1
    if "0.encoder_dp.emb.weight" in keys or "0.encoder.weight" in keys:
        return _LAYOUT_V2
    hint = ""
    if any(k.startswith(("encoder.", "encoder_with_dropout.", "rnns.")) for k in keys):
        hint = (" It looks like an encoder-only file (keys without the '0.' prefix, e.g. v0.7's *_enc.h5 "
                "or a classifier's encoder); the full language model (encoder and decoder) is needed.")
    elif any(k.startswith("module.") for k in keys):
        hint = " Its keys start with 'module.' (saved from DataParallel): strip that prefix first."
    raise ValueError(f"{file.name} is not a fastai AWD-LSTM language model: no '0.encoder.weight' key "
                     f"among {sorted(keys)[:8]}{'...' if len(keys) > 8 else ''}.{hint}")


def _convert(raw: dict, file: Path) -> tuple[str, dict[str, torch.Tensor], AWDLSTMConfig]:
    """Checks a checkpoint's keys and shapes and maps it onto skulmfit's 16 keys (fp32)."""
    keys = set(raw)
    layout = _detect_layout(keys, file)
    layers = sorted({int(m.group(1)) for m in map(_RNN_KEY.match, keys) if m})
    if not layers:
        raise ValueError(f"{file.name} ({layout}) has no '0.rnns.<i>.' keys")
    if layers != list(range(len(layers))):
        raise ValueError(f"{file.name} ({layout}): LSTM layers must be numbered 0..n-1, found {layers}")
    n_layers = len(layers)

    expected = _expected_keys(layout, n_layers)
    optional = {"1.decoder.bias"} if layout == _LAYOUT_V07 else set()
    unknown, missing = sorted(keys - expected - optional), sorted(expected - keys)
    if unknown or missing:
        parts = [f"unknown keys {unknown}" if unknown else "", f"missing keys {missing}" if missing else ""]
        raise ValueError(f"{file.name} does not match the {layout} layout: " + "; ".join(p for p in parts if p))

    encoder = raw["0.encoder.weight"]
    if encoder.dim() != 2:
        raise ValueError(f"{file.name}: '0.encoder.weight' must be a matrix, found shape {tuple(encoder.shape)}")
    vocab_size, emb_size = encoder.shape
    hh_key = "0.rnns.0.module.weight_hh_l0_raw" if layout == _LAYOUT_V07 else "0.rnns.0.weight_hh_l0_raw"
    if n_layers > 1:
        hh = raw[hh_key]
        if hh.dim() != 2:
            raise ValueError(f"{file.name}: '{hh_key}' must be a matrix, found shape {tuple(hh.shape)}")
        hidden_size = hh.shape[1]
    else:
        hidden_size = emb_size
    config = AWDLSTMConfig(vocab_size=vocab_size, emb_size=emb_size, hidden_size=hidden_size, n_layers=n_layers)

    shapes = _skulmfit_shapes(config)
    state: dict[str, torch.Tensor] = {}
    for key in sorted(keys):
        target = _skulmfit_name(layout, key)
        # A dropped key must still be the shape of what it stands for.
        shape_of = target or key.replace(".module.weight_hh_l0", ".weight_hh_l0_raw")
        found = tuple(raw[key].shape)
        if found != shapes[shape_of]:
            raise ValueError(f"{file.name}: '{key}' has shape {found}, expected {shapes[shape_of]} for "
                             f"vocab_size={vocab_size}, emb_size={emb_size}, hidden_size={hidden_size}, "
                             f"n_layers={n_layers} (inferred from the embedding and '{hh_key}')")
        if not raw[key].is_floating_point():
            raise ValueError(f"{file.name}: '{key}' is not a floating-point tensor ({raw[key].dtype})")
        if target is not None:
            state[target] = raw[key].detach().to(torch.float32)

    embedding = state["0.encoder.weight"]
    for key in ("0.encoder_dp.emb.weight", "1.decoder.weight"):
        if not torch.equal(state[key], embedding):
            raise ValueError(f"{file.name}: '{key}' differs from '0.encoder.weight'; skulmfit ties the "
                             "embedding, its dropout wrapper and the decoder, so an untied model cannot be loaded")
        state[key] = embedding
    if "1.decoder.bias" not in state:
        state["1.decoder.bias"] = torch.zeros(vocab_size)
    return layout, state, config


def _skulmfit_shapes(config: AWDLSTMConfig) -> dict[str, tuple[int, ...]]:
    v, e, h, n = config.vocab_size, config.emb_size, config.hidden_size, config.n_layers
    shapes = {"0.encoder.weight": (v, e), "0.encoder_dp.emb.weight": (v, e),
              "1.decoder.weight": (v, e), "1.decoder.bias": (v,)}
    for i in range(n):
        n_in, n_out = (e if i == 0 else h), (e if i == n - 1 else h)
        shapes[f"0.rnns.{i}.weight_hh_l0_raw"] = (4 * n_out, n_out)
        shapes[f"0.rnns.{i}.module.weight_ih_l0"] = (4 * n_out, n_in)
        shapes[f"0.rnns.{i}.module.bias_ih_l0"] = (4 * n_out,)
        shapes[f"0.rnns.{i}.module.bias_hh_l0"] = (4 * n_out,)
    return shapes


# ----------------------------------------------------------------------------- vocabulary

def _canonical_vocab(itos: list[str], state: dict[str, torch.Tensor]):
    """Moves skulmfit's special tokens to ids 0..8, renaming legacy ones and dropping repeats.

    Returns the new itos, the state dict with embedding and decoder-bias rows moved alike, and a
    record of the changes for the model card.
    """
    present = set(itos)
    renamed = {old: new for old, new in LEGACY_TOKENS.items() if old in present and new not in present}
    first_row: dict[str, int] = {}
    for row, token in enumerate(itos):
        first_row.setdefault(renamed.get(token, token), row)
    added = [t for t in SPECIAL_TOKENS if t not in first_row]
    rest = [t for t in first_row if t not in SPECIAL_TOKENS]
    new_itos = list(SPECIAL_TOKENS) + rest
    rows = torch.tensor([first_row.get(t, -1) for t in new_itos])
    changes = {"original_vocab_size": len(itos), "renamed_tokens": renamed, "added_special_tokens": added,
               "dropped_duplicates": len(itos) - len(first_row)}
    if rows.tolist() == list(range(len(itos))):
        return new_itos, state, changes
    # A token's repeats are dropped, so the mean rows of added special tokens leave them out too.
    kept = torch.tensor(sorted(first_row.values()))
    return new_itos, move_embedding_rows(state, rows, mean_over=kept), changes
