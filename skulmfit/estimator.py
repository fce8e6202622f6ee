"""``ULMFiTClassifier``: the whole ULMFiT recipe behind scikit-learn's ``fit`` / ``predict``."""
from __future__ import annotations

import contextlib
import io
import math
import numbers
import threading
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import torch
from scipy import sparse
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, InvalidParameterError, Options, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import _check_sample_weight, check_array, check_is_fitted

from . import __version__
from .model import AWDLSTMConfig, LanguageModel, TextClassifier
from .pretrained import DEFAULT_MODEL, PretrainedLM, has_backward, match_embeddings, resolve
from .progress import ProgressBar, SilentProgress
from .text import Tokenizer
from .training import NonFiniteLossError, _on_device, cpu_computes_bf16, fine_tune_language_model, pooled_features, predict_logits, train_classifier
from .vocab import Vocab

# Sizes of the language model when ``pretrained=None``: the bundled model's shape.
RANDOM_INIT_SIZES = dict(emb_size=128, hidden_size=384, n_layers=2)
AUTO_EPOCHS_UPDATES = 300  # epochs="auto": about this many updates in the final stage...
AUTO_EPOCHS_RANGE = (2, 20)  # ...within these bounds (a first choice from a short trial on TREC-6 / SST-2)
# Language-model fine-tuning scores each step's own targets plus this many drawn ids, not the whole
# vocabulary (sampled softmax; 0 = full softmax): about 2.3x the tokens/s at 16,000 subword pieces.
LM_SAMPLED_SOFTMAX = 1024
# The language model is fine-tuned with its base dropouts times drop_mult times this.
LM_DROP_SCALE = 2.0
PREDICT_CHUNK = 4096  # documents tokenized at a time when predicting: bounds memory for any input size


def _check_texts(X, name: str = "X") -> list[str]:
    """A list of ``str`` from a list, tuple, array, pandas Series or other ordered 1-D iterable of texts."""
    if isinstance(X, str):
        raise TypeError(f"{name} must be a sequence of texts, not a single str; wrap it in a list")
    if isinstance(X, (bytes, bytearray)):
        raise TypeError(f"{name} is {type(X).__name__}; it must be a sequence of str (decode bytes first)")
    if isinstance(X, Mapping):
        raise TypeError(f"{name} is a {type(X).__name__}; pass its texts (e.g. X['text']), not the mapping")
    if isinstance(X, Set):
        raise TypeError(f"{name} is an unordered {type(X).__name__}: texts and labels would pair up in "
                        "arbitrary order; pass a list")
    if hasattr(X, "ndim") and X.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one text per sample); got an array of shape {X.shape}")
    if hasattr(X, "to_numpy"):  # pandas Series / Index
        X = X.to_numpy()
    if not isinstance(X, Iterable):
        raise TypeError(f"{name} must be an iterable of str, got {type(X).__name__}")
    texts = list(X)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            kind = "missing (None)" if text is None else (
                "missing (NaN)" if isinstance(text, float) and math.isnan(text) else type(text).__name__)
            raise TypeError(f"{name}[{i}] is {kind}; every sample must be a str (empty strings are fine)")
    return texts


class _ULMFiTEstimator(BaseEstimator):
    """What the ULMFiT estimators share: parameters and their validation, language-model fine-tuning,
    training a pooling head with gradual unfreezing and BPT3C, prediction in chunks, persistence.

    A subclass says what its targets are (``_check_targets``), how its head is trained
    (``_training_loss``) and what its outputs mean (``predict``).
    """

    _parameter_constraints: dict = {
        "pretrained": [str, HasMethods("__fspath__"), None],
        "lm_epochs": [Interval(numbers.Integral, 0, None, closed="left")],
        "epochs": [Interval(numbers.Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "lr": [Interval(numbers.Real, 0, None, closed="neither")],
        "lm_lr": [Interval(numbers.Real, 0, None, closed="neither")],
        "batch_size": [Interval(numbers.Integral, 2, None, closed="left")],
        "bptt": [Interval(numbers.Integral, 5, None, closed="left")],
        "max_len": [Interval(numbers.Integral, 1, None, closed="left")],
        # The classifier's DropConnect rate is 0.5 * drop_mult: at 2 it would drop every weight.
        "drop_mult": [Interval(numbers.Real, 0, 2, closed="left")],
        "bidirectional": ["boolean", StrOptions({"auto"})],
        "n_jobs": [Interval(numbers.Integral, 1, None, closed="left"), Options(numbers.Integral, {-1}), None],
        "device": [str, torch.device],
        "precision": [StrOptions({"auto", "fp32", "bf16"})],
        "max_vocab": [Interval(numbers.Integral, 16, None, closed="left")],
        "min_freq": [Interval(numbers.Integral, 1, None, closed="left")],
        "gradual_unfreezing": ["boolean"],
        "discriminative_lr": ["boolean"],
        "slanted_triangular": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither"), None],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "memory": [None, str, HasMethods("cache")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, pretrained=DEFAULT_MODEL, *, lm_epochs=2, epochs="auto", lr=5e-2, lm_lr=4e-3, batch_size=32,
                 bptt=70, max_len=1400, drop_mult=0.5, bidirectional="auto", n_jobs=None, device="auto",
                 precision="auto", max_vocab=30000, min_freq=2, gradual_unfreezing=True, discriminative_lr=True,
                 slanted_triangular=True, validation_fraction=None, n_iter_no_change=None, memory=None,
                 random_state=None, verbose=0):
        self.pretrained = pretrained
        self.lm_epochs = lm_epochs
        self.epochs = epochs
        self.lr = lr
        self.lm_lr = lm_lr
        self.batch_size = batch_size
        self.bptt = bptt
        self.max_len = max_len
        self.drop_mult = drop_mult
        self.bidirectional = bidirectional
        self.n_jobs = n_jobs
        self.device = device
        self.precision = precision
        self.max_vocab = max_vocab
        self.min_freq = min_freq
        self.gradual_unfreezing = gradual_unfreezing
        self.discriminative_lr = discriminative_lr
        self.slanted_triangular = slanted_triangular
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.memory = memory
        self.random_state = random_state
        self.verbose = verbose

    def _fit(self, X, y, unlabeled, sample_weight):
        """Validates everything, fine-tunes the language model (cached with ``memory``), trains the head
        of each direction, then sets every fitted attribute at once."""
        texts = _check_texts(X)
        extra = [] if unlabeled is None else _check_texts(unlabeled, "unlabeled")
        targets, stratify, target_attributes = self._check_targets(y, len(texts))
        n_outputs = len(target_attributes["classes_"]) if "classes_" in target_attributes else targets.shape[1]
        sample_weight = _check_weights(sample_weight, texts)
        if self.n_iter_no_change is not None and self.validation_fraction is None:
            raise ValueError("n_iter_no_change needs validation_fraction: early stopping watches a held-out split")
        device = _resolve_device(self.device)
        bf16 = _use_bf16(self.precision, device)
        class_weight = self._class_weights(target_attributes, targets)
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        progress = ProgressBar() if self.verbose else SilentProgress()
        train_idx, valid_idx = _split(len(texts), stratify, self.validation_fraction, seed)

        both = has_backward(self.pretrained) if self.bidirectional == "auto" else self.bidirectional
        directions = (False, True) if both else (False,)
        lm_sources = [resolve(self.pretrained, backwards=backwards) for backwards in directions]
        tokenizer = _shared_tokenizer(lm_sources, self.pretrained)
        tokens = tokenizer.tokenize_many(texts + extra)
        epochs = self._final_epochs(len(train_idx))
        plan = _DirectionPlan(
            lm_corpus=_language_model_corpus(texts, extra, tokens), tokens=tokens[: len(texts)], targets=targets,
            train_idx=train_idx, valid_idx=valid_idx, sample_weight=sample_weight, n_outputs=n_outputs,
            fingerprint=_fingerprint(self.pretrained), memory=self.memory,
            # With random_state=None the seed stays out of the cache key (as in a Pipeline's memory):
            # otherwise every fit would draw a new seed and never reuse a cached language model.
            ignore_seed=self.random_state is None, seed=seed, device=device, verbose=self.verbose,
            lm_settings=dict(lm_epochs=self.lm_epochs, lm_lr=self.lm_lr, batch_size=self.batch_size, bptt=self.bptt,
                             drop_mult=self.drop_mult, max_vocab=self.max_vocab, min_freq=self.min_freq,
                             discriminative_lr=self.discriminative_lr, slanted_triangular=self.slanted_triangular,
                             bf16=bf16, sampled_softmax=LM_SAMPLED_SOFTMAX, drop_scale=LM_DROP_SCALE),
            head_settings=dict(bptt=self.bptt, max_len=self.max_len, drop_mult=self.drop_mult),
            training=dict(epochs=epochs, lr=self.lr, batch_size=self.batch_size,
                          class_weight=class_weight, gradual_unfreezing=self.gradual_unfreezing,
                          discriminative=self.discriminative_lr, stlr=self.slanted_triangular, bf16=bf16,
                          n_iter_no_change=self.n_iter_no_change, loss=self._training_loss(target_attributes)))
        n_threads = torch.get_num_threads()
        with _explain_non_finite_loss(self, bf16):
            fits = _fit_directions(plan, lm_sources, progress, self._parallel_directions(device, len(directions)))
        vocabs, models, histories = (list(column) for column in zip(*fits))
        # Fitted attributes are set together at the end: a fit that fails leaves the estimator as it was.
        fitted = {**target_attributes, "tokenizer_": tokenizer, "vocab_": vocabs, "models_": models,
                  "history_": histories, "n_threads_": n_threads, "epochs_": epochs,
                  "precision_": "bf16" if bf16 else "fp32", "bidirectional_": both}
        for name, value in fitted.items():
            setattr(self, name, value)
        return self

    def _final_epochs(self, n_train: int) -> int:
        if self.epochs != "auto":
            return self.epochs
        updates_per_epoch = math.ceil(n_train / self.batch_size)
        return int(np.clip(math.ceil(AUTO_EPOCHS_UPDATES / updates_per_epoch), *AUTO_EPOCHS_RANGE))

    def _parallel_directions(self, device: torch.device, n_directions: int) -> bool:
        """Whether the two directions are fitted in two processes at once (``n_jobs``, CPU only).

        ``None`` does so when torch may use two threads or more: in a joblib or Dask worker it has
        one, and a grid search's own processes already fill the cores.
        """
        if n_directions < 2 or device.type != "cpu":
            return False
        if self.n_jobs is None:
            return torch.get_num_threads() >= 2
        return self.n_jobs == -1 or self.n_jobs >= 2

    def _class_weights(self, target_attributes: dict, targets: np.ndarray) -> np.ndarray | None:
        return None

    def _training_loss(self, target_attributes: dict) -> str:
        raise NotImplementedError

    def transform(self, X) -> np.ndarray:
        """Concat-pooled document embeddings from the fine-tuned encoder(s).

        Shape (n_samples, 3 * emb_size), or twice that for a bidirectional fit (forward
        features first), ready for any other scikit-learn model.
        """
        chunks = [np.concatenate(chunk, axis=1) for chunk in self._chunks(X, pooled=True)]
        width = sum(3 * m.config.emb_size for m in self.models_)
        return np.concatenate(chunks) if chunks else np.zeros((0, width), np.float32)

    def _chunks(self, X, pooled: bool):
        """For each block of :data:`PREDICT_CHUNK` texts, one output array per direction."""
        check_is_fitted(self)
        self._validate_params()  # set_params after fit (threshold, batch_size, device) is checked here
        texts = _check_texts(X)
        for start in range(0, len(texts), PREDICT_CHUNK):
            yield self._outputs(self.tokenizer_.tokenize_many(texts[start:start + PREDICT_CHUNK]), pooled)

    def _outputs(self, tokens: list[list[str]], pooled: bool) -> list[np.ndarray]:
        """One output array per direction (head outputs, or pooled features) for tokenized texts."""
        device = _resolve_device(self.device, fitted=True)
        bf16 = _use_bf16(self.precision, device, fitting=False)
        run = pooled_features if pooled else predict_logits
        _ready_for_prediction(self.models_, device)
        return [run(model, vocab.numericalize_many(tokens), batch_size=self.batch_size, device=device,
                    reverse=backwards, bf16=bf16)
                for model, vocab, backwards in zip(self.models_, self.vocab_, (False, True))]

    def explain(self, X, target=None, *, steps: int = 20) -> list:
        """Which tokens drove each prediction: integrated gradients on the input embeddings.

        Parameters
        ----------
        X : sequence of str
        target : optional
            The class to explain (a label of ``classes_``; for a regressor the output's index).
            Default: each text's predicted class (multi-label: its most probable label; regressor:
            output 0).
        steps : int, default=20
            Scales of the embeddings the integral is estimated with; 1 gives gradient x input.

        Returns
        -------
        list of :class:`skulmfit.explain.Explanation`
            Per text: its tokens and one attribution per token (positive pushed the explained
            log-probability, or predicted value, up). They render as coloured HTML in Jupyter and
            as text with ``print``. See :mod:`skulmfit.explain` for the method and its bounds.
        """
        from .explain import Explanation, check_steps, integrated_gradients
        check_is_fitted(self)
        check_steps(steps)
        texts = _check_texts(X)
        tokens = self.tokenizer_.tokenize_many(texts)
        units, values, labels, output, unit_scale = self._explained(self._outputs(tokens, pooled=False), target)
        device = _resolve_device(self.device, fitted=True)
        bf16 = _use_bf16(self.precision, device, fitting=False)
        per_direction = [integrated_gradients(model, vocab.numericalize_many(tokens), units, output=output, steps=steps,
                                              reverse=backwards, device=device, bf16=bf16)
                         for model, vocab, backwards in zip(self.models_, self.vocab_, (False, True))]
        return [Explanation(text, doc, np.mean([d[i] for d in per_direction], axis=0) * unit_scale[i], label, value)
                for i, (text, doc, label, value) in enumerate(zip(texts, tokens, labels, values))]

    # ------------------------------------------------------------------------- persistence

    def save(self, path) -> None:
        """Writes the fitted estimator to ``path`` in a format that cannot run code when loaded.

        Load it with :func:`skulmfit.load`: tensors and plain values only, read with
        ``torch.load(weights_only=True)``; predictions equal this estimator's bit for bit, on any
        device. Prefer it to ``pickle``/``joblib`` for a model you send or receive; the parameter
        ``memory`` is kept as its folder and a ``RandomState`` ``random_state`` as ``None``.

        Raises ``OSError`` (``IsADirectoryError``, ``NotADirectoryError``, ``FileNotFoundError``,
        ...) naming ``path`` if it cannot be written; a failed save leaves no file behind and keeps
        a model already at ``path`` whole.
        """
        from .persistence import save
        save(self, path)

    # ------------------------------------------------------------------------- scikit-learn plumbing

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        return tags

    def __getstate__(self):
        """Torch modules travel as a ``torch.save`` blob of CPU tensors, so a model fitted on a GPU
        loads on a machine without one."""
        state = self.__dict__.copy()
        if "models_" in state:
            buffer = io.BytesIO()
            torch.save([_model_spec(m) for m in state.pop("models_")], buffer)
            state["_models_blob"] = buffer.getvalue()
        state["_versions"] = {"skulmfit": __version__, "torch": torch.__version__}
        return state

    def __setstate__(self, state):
        saved = state.pop("_versions", {})
        current = {"skulmfit": __version__, "torch": torch.__version__}
        for name, version in saved.items():
            if version != current[name]:
                warnings.warn(f"this model was saved with {name} {version} and is loaded with {name} "
                              f"{current[name]}; predictions may differ", UserWarning, stacklevel=2)
        blob = state.pop("_models_blob", None)
        if "vocab_" in state:  # fitted before models carried their tokenizer: all were word-level
            state.setdefault("tokenizer_", Tokenizer())
        state.setdefault("n_jobs", None)  # pickled before the parameter existed
        self.__dict__.update(state)
        if blob is not None:
            specs = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
            self.models_ = [_model_from_spec(spec) for spec in specs]
        if hasattr(self, "models_") and not hasattr(self, "bidirectional_"):  # fitted before "auto" existed
            self.bidirectional_ = len(self.models_) == 2



class ULMFiTClassifier(ClassifierMixin, _ULMFiTEstimator):
    """Text classifier that fine-tunes a pretrained AWD-LSTM language model (ULMFiT).

    ``fit`` runs the recipe of Howard & Ruder (2018): the pretrained language model is
    fine-tuned on the training texts (discriminative learning rates, slanted triangular
    schedule), then a classifier head on concat pooling is trained with gradual unfreezing;
    long documents are read with BPT3C.

    Parameters
    ----------
    pretrained : str, path or None, default="wiki-en-sub"
        A bundled model's name (see :func:`skulmfit.available_models`), a skulmfit weight file,
        a folder or file of fastai WT103 weights, or ``None`` for random initialisation. The
        pretrained model brings its own tokenizer (word-level or subword); with ``None`` the
        texts are cut into words by fastai's rules.
    lm_epochs : int, default=2
        Epochs of language-model fine-tuning on the training (and ``unlabeled``) texts; 0 skips it.
    epochs : int or "auto", default="auto"
        Classifier epochs with every layer trainable, after the gradual-unfreezing epochs
        (one per layer group but the lowest). ``"auto"`` gives small training sets more
        epochs: enough for about 300 updates, between 2 and 20 epochs.
    lr : float, default=5e-2
        Peak learning rate of the classifier's top layer group.
    lm_lr : float, default=4e-3
        Peak learning rate of the language model's top layer group.
    batch_size : int, default=32
        Documents per classifier batch and rows per language-model batch.
    bptt : int, default=70
        Back-propagation-through-time length of the language model and BPT3C chunk length.
    max_len : int, default=1400
        The classifier pools and backpropagates over each document's last ``max_len`` tokens;
        earlier tokens only carry the hidden state, so memory is bounded for any length.
    drop_mult : float in [0, 2), default=0.5
        Multiplier of fastai's classifier dropouts; language-model fine-tuning uses fastai's LM
        dropouts times ``2 * drop_mult``, so the default reproduces fastai's defaults for both.
        The largest rate is the classifier's DropConnect, ``0.5 * drop_mult``: below 2 every
        dropout probability stays below 1.
    bidirectional : bool or "auto", default="auto"
        Fine-tune a forward and a backward model and average their probabilities. ``"auto"`` does
        so when ``pretrained`` has a backward model (the bundled models, or a folder from
        ``skulmfit.pretrain`` with both directions) and fits the forward model alone otherwise (a
        single weight file, fastai weights of one direction, ``pretrained=None``).
        ``bidirectional_`` says which it was. Both directions were 0 to 4 points more accurate
        than the forward model alone in every measured setting; prediction takes twice as long.
    n_jobs : int or None, default=None
        For a bidirectional fit on the CPU: how many processes fit the two directions. With 2 (or
        -1) the backward model is fitted in a second process while this one fits the forward
        model, each on half of torch's threads, which on two or more cores is about twice as fast
        as one model after the other on all of them; progress bars show the forward model.
        ``None`` does so when torch may use at least two threads (not in a joblib or Dask worker,
        which has one); 1 fits them one after the other, as a GPU always does.
    device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    precision : {"auto", "fp32", "bf16"}, default="auto"
        ``"bf16"`` uses bfloat16 autocast; ``"auto"`` does so where the hardware computes in bf16
        natively: GPUs that support it and CPUs with AVX512-BF16 or AMX. Elsewhere an explicit
        ``"bf16"`` is refused by ``fit`` with a ValueError (the CPU's LSTM kernels have no bf16 form
        there), and a model fitted in bf16 on other hardware predicts in fp32 with a warning.
        ``benchmarks/accuracy.py`` checks bf16 accuracy against fp32.
    max_vocab : int, default=30000
        Size limit of a word-level vocabulary (pretrained tokens plus new words from the training
        texts). A subword model's vocabulary is fixed: it has no unknown words to add.
    min_freq : int, default=2
        A new word joins a word-level vocabulary when it occurs at least this often in the
        training texts.
    gradual_unfreezing, discriminative_lr, slanted_triangular : bool, default=True
        Switch off one part of the recipe each (the paper's ablations).
    validation_fraction : float or None, default=None
        Hold out this stratified fraction of the labelled data to pick the best epoch.
    n_iter_no_change : int or None, default=None
        With ``validation_fraction``, stop when the held-out accuracy has not improved for this
        many epochs of the final stage.
    class_weight : dict, "balanced" or None, default=None
        Weights of the classes in the loss (single-label targets).
    threshold : float in [0, 1], default=0.5
        Multi-label only: ``predict`` gives each text the labels whose probability reaches it.
    memory : joblib.Memory, str or None, default=None
        Caches the fine-tuned language model: refitting on the same texts with only classifier
        parameters changed (as a grid search does) skips language-model fine-tuning. With
        ``random_state=None`` a cached language model is reused as is, as a Pipeline's memory does.
    random_state : int, RandomState or None, default=None
        Seeds every random choice; the same value gives identical results on the same device with
        the same number of torch threads (``torch.get_num_threads()``). Another thread count changes
        the order of floating-point sums, so results differ in the last digits and, through
        training, a little more: a run in a Dask or joblib worker (one thread per task) equals a
        local run after ``torch.set_num_threads(1)``.
    verbose : int, default=0
        1 shows a progress bar for every stage.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels; multi-label: the column indices of ``y``'s labels.
    multilabel_ : bool
        Whether ``y`` was a 2-D indicator matrix of labels (dense or sparse, as
        ``sklearn.preprocessing.MultiLabelBinarizer`` gives it): then one sigmoid per label is
        trained with binary cross-entropy, and ``history_`` records ``valid_micro_f1``.
    tokenizer_ : Tokenizer
        The pretrained model's tokenizer (raw text -> tokens), shared by both directions.
    vocab_ : list of Vocab
        The vocabulary (tokens -> ids) of each direction's model.
    models_ : list of TextClassifier
        The fine-tuned classifier of each direction (forward first).
    history_ : list of dict
        Loss (and validation accuracy) of every classifier epoch, per direction.
    n_threads_ : int
        Torch threads while fitting (with the directions in two processes, each used half).
    bidirectional_ : bool
        Whether a backward model was fitted beside the forward one (``bidirectional`` resolved).
    epochs_ : int
        Classifier epochs of the final stage (``epochs`` resolved).
    precision_ : {"fp32", "bf16"}
        The precision training used (``precision`` resolved for the training device).

    Examples
    --------
    >>> from skulmfit import ULMFiTClassifier
    >>> clf = ULMFiTClassifier(random_state=0).fit(texts, labels)  # doctest: +SKIP
    >>> clf.predict(["what a wonderful film"])  # doctest: +SKIP
    """

    _parameter_constraints: dict = {**_ULMFiTEstimator._parameter_constraints,
                                    "class_weight": [dict, StrOptions({"balanced"}), None],
                                    "threshold": [Interval(numbers.Real, 0, 1, closed="both")]}

    def __init__(self, pretrained=DEFAULT_MODEL, *, lm_epochs=2, epochs="auto", lr=5e-2, lm_lr=4e-3, batch_size=32,
                 bptt=70, max_len=1400, drop_mult=0.5, bidirectional="auto", n_jobs=None, device="auto",
                 precision="auto", max_vocab=30000, min_freq=2, gradual_unfreezing=True, discriminative_lr=True,
                 slanted_triangular=True, validation_fraction=None, n_iter_no_change=None, class_weight=None,
                 threshold=0.5, memory=None, random_state=None, verbose=0):
        super().__init__(pretrained, lm_epochs=lm_epochs, epochs=epochs, lr=lr, lm_lr=lm_lr, batch_size=batch_size,
                         bptt=bptt, max_len=max_len, drop_mult=drop_mult, bidirectional=bidirectional, n_jobs=n_jobs,
                         device=device, precision=precision, max_vocab=max_vocab, min_freq=min_freq,
                         gradual_unfreezing=gradual_unfreezing, discriminative_lr=discriminative_lr,
                         slanted_triangular=slanted_triangular, validation_fraction=validation_fraction,
                         n_iter_no_change=n_iter_no_change, memory=memory, random_state=random_state, verbose=verbose)
        self.class_weight = class_weight
        self.threshold = threshold

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, unlabeled=None, sample_weight=None):
        """Fine-tune the language model on ``X`` (and ``unlabeled``), then train the classifier.

        Parameters
        ----------
        X : sequence of str
        y : array-like of shape (n_samples,), or (n_samples, n_labels) for multi-label
            Labels of any type scikit-learn accepts (str, int, bool), or a 0/1 indicator matrix
            (dense or scipy sparse) with one column per label.
        unlabeled : sequence of str, optional
            Extra texts used only for language-model fine-tuning (semi-supervised ULMFiT).
            A labelled text that is also among them is read once; so with ``memory``, label
            samples drawn from one unlabelled corpus share one fine-tuned language model.
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weight of each text's label in the classifier's loss, multiplied with
            ``class_weight``. Each batch's loss is the weighted mean, so a weight of 2 counts as the
            text twice and 0 leaves its label out; every text still feeds language-model
            fine-tuning.

        Returns
        -------
        self
        """
        return self._fit(X, y, unlabeled, sample_weight)

    def _check_targets(self, y, n_samples: int) -> tuple[np.ndarray, np.ndarray | None, dict]:
        """``(encoded labels, labels to stratify by, fitted target attributes)``; sets no attribute."""
        if y is None:
            raise ValueError("y is required: ULMFiTClassifier is supervised")
        if sparse.issparse(y) or _ndim(y) == 2:
            return self._check_label_matrix(y, n_samples)
        y = y.to_numpy() if hasattr(y, "to_numpy") else y
        # Missing labels are looked for before np.asarray, which turns NaN among str labels into 'nan'.
        y, as_objects = np.asarray(y), np.asarray(y, dtype=object)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D (one label per text); got shape {y.shape}")
        if len(y) != n_samples:
            raise ValueError(f"X has {n_samples} texts but y has {len(y)} labels")
        if n_samples == 0:
            raise ValueError("X is empty: fit needs at least two texts of two classes")
        for i, label in enumerate(as_objects):
            if label is None or (isinstance(label, float) and math.isnan(label)):
                raise ValueError(f"y[{i}] is missing ({label}); every text needs a label")
        check_classification_targets(y)
        try:
            classes, encoded = np.unique(y, return_inverse=True)
        except TypeError as error:
            raise TypeError(f"the labels in y cannot be ordered (mixed types?): {error}") from None
        if len(classes) < 2:
            raise ValueError(f"y has a single class ({classes.tolist()[0]!r}); a classifier needs at least two")
        encoded = encoded.astype(np.int64)
        return encoded, encoded, {"classes_": classes, "multilabel_": False}

    def _check_label_matrix(self, Y, n_samples: int) -> tuple[np.ndarray, None, dict]:
        """A multi-label indicator matrix (dense or sparse, as ``MultiLabelBinarizer`` gives it).

        Every column is a label, however often it occurs: a label no training text has is kept,
        and learns a probability near 0.
        """
        if not sparse.issparse(Y):
            Y = Y.to_numpy() if hasattr(Y, "to_numpy") else np.asarray(Y)
        # type_of_target calls any matrix of two integer values an indicator matrix: {0, 2} and
        # {-1, 1} too, which binary cross-entropy would train into nonsense.
        if Y.dtype.kind in "biuf":
            values = np.unique(Y.data) if sparse.issparse(Y) else np.unique(Y)
            if sparse.issparse(Y) and Y.nnz < Y.shape[0] * Y.shape[1]:
                values = np.union1d(values, [0])
            if not np.isin(values, (0, 1)).all():
                raise ValueError(f"a 2-D y is a multi-label indicator matrix and must hold only 0 and 1; "
                                 f"it holds {values[:10].tolist()}")
        if type_of_target(Y) != "multilabel-indicator":
            raise ValueError(f"y must be 1-D (one label per text) or a 0/1 indicator matrix of labels "
                             f"(multi-label); got shape {Y.shape} of {type_of_target(Y)!r} targets")
        if Y.shape[0] != n_samples:
            raise ValueError(f"X has {n_samples} texts but y has {Y.shape[0]} rows")
        if self.class_weight is not None:
            raise ValueError("class_weight applies to single-label targets; weight multi-label texts with sample_weight")
        dense = (Y.toarray() if sparse.issparse(Y) else np.asarray(Y)).astype(np.float32)
        return dense, None, {"classes_": np.arange(dense.shape[1]), "multilabel_": True,
                             "_sparse_target": sparse.issparse(Y)}

    def _training_loss(self, target_attributes: dict) -> str:
        return "bce" if target_attributes["multilabel_"] else "cross_entropy"

    def _explained(self, outputs: list[np.ndarray], target):
        """Per text: the head unit to explain, its probability, its label; the output's link; unit scales."""
        proba = self._probabilities(outputs)
        if target is None:
            units = proba.argmax(axis=1)
        else:
            matches = np.flatnonzero(self.classes_ == target)
            if len(matches) != 1:
                raise ValueError(f"target={target!r} is not one of classes_ {self.classes_.tolist()}")
            units = np.full(len(proba), matches[0])
        values = proba[np.arange(len(proba)), units]
        output = "log_sigmoid" if self.multilabel_ else "log_softmax"
        return units, values.tolist(), self.classes_[units].tolist(), output, np.ones(len(proba))

    def _class_weights(self, target_attributes: dict, y_encoded: np.ndarray) -> np.ndarray | None:
        classes = target_attributes["classes_"]
        if self.class_weight is None:
            return None
        if self.class_weight == "balanced":
            return compute_class_weight("balanced", classes=np.arange(len(classes)), y=y_encoded)
        unknown = set(self.class_weight) - set(classes.tolist())
        if unknown:
            raise ValueError(f"class_weight names classes not in y: {sorted(map(str, unknown))}")
        weights = {}
        for c in classes.tolist():
            value = self.class_weight.get(c, 1.0)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
                raise ValueError(f"class_weight[{c!r}] is {value!r}; class weights must be finite numbers >= 0")
            weights[c] = float(value)
        if not any(weights.values()):
            raise ValueError("class_weight gives every class weight 0: at least one must be positive")
        return np.array(list(weights.values()))

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes), columns in the order of ``classes_``.

        Multi-label: the probability of each label, independently (rows need not sum to 1).
        """
        probabilities = [self._probabilities(outputs) for outputs in self._chunks(X, pooled=False)]
        return np.concatenate(probabilities) if probabilities else np.zeros((0, len(self.classes_)))

    def _probabilities(self, outputs: list[np.ndarray]) -> np.ndarray:
        """The directions' logits -> probabilities, averaged over the directions."""
        link = torch.sigmoid if self.multilabel_ else partial(torch.softmax, dim=1)
        return np.mean([link(torch.from_numpy(logits)).numpy() for logits in outputs], axis=0)

    def predict(self, X):
        """The most probable class of each text; multi-label: the indicator matrix of the labels whose
        probability reaches ``threshold`` (sparse if ``y`` was)."""
        proba = self.predict_proba(X)  # first: it raises NotFittedError before classes_ is looked up
        if not self.multilabel_:
            return self.classes_[proba.argmax(axis=1)]
        indicator = (proba >= self.threshold).astype(np.int64)
        return sparse.csr_matrix(indicator) if self._sparse_target else indicator


# ----------------------------------------------------------------------------- helpers

class ULMFiTRegressor(RegressorMixin, _ULMFiTEstimator):
    """Text regressor: the ULMFiT recipe with a regression head.

    Everything but the targets works as in :class:`ULMFiTClassifier`: the pretrained language model
    is fine-tuned on the texts, then a head on concat pooling is trained with gradual unfreezing,
    discriminative learning rates and slanted triangular schedules, reading long documents with
    BPT3C. The head minimises the mean squared error of the standardised targets (each output
    centred and scaled to unit variance on the training data); ``predict`` restores their scale,
    and ``score`` is R^2.

    Parameters
    ----------
    pretrained, lm_epochs, epochs, lr, lm_lr, batch_size, bptt, max_len, drop_mult, bidirectional, \
n_jobs, device, precision, max_vocab, min_freq, gradual_unfreezing, discriminative_lr, slanted_triangular, \
validation_fraction, n_iter_no_change, memory, random_state, verbose
        As in :class:`ULMFiTClassifier` (which adds ``class_weight``). With ``validation_fraction``
        the kept epoch is the one of highest held-out R^2; in a bidirectional fit the two
        directions' predictions are averaged.

    Attributes
    ----------
    n_outputs_ : int
        Number of targets (columns of a 2-D ``y``; 1 for a 1-D ``y``).
    y_mean_, y_scale_ : ndarray of shape (n_outputs,)
        Mean and standard deviation of each training target; a constant target (scale 0) is
        predicted as that constant.
    tokenizer_, vocab_, models_, history_, n_threads_, bidirectional_, epochs_, precision_
        As in :class:`ULMFiTClassifier`; ``history_`` records ``valid_r2`` where the classifier
        records ``valid_accuracy``.

    Examples
    --------
    >>> from skulmfit import ULMFiTRegressor
    >>> reg = ULMFiTRegressor(random_state=0).fit(reviews, star_ratings)  # doctest: +SKIP
    >>> reg.predict(["an unforgettable film"])  # doctest: +SKIP
    """

    def _training_loss(self, target_attributes: dict) -> str:
        return "mse"

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, unlabeled=None, sample_weight=None):
        """Fine-tune the language model on ``X`` (and ``unlabeled``), then train the regression head.

        Parameters
        ----------
        X : sequence of str
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Real targets, finite.
        unlabeled : sequence of str, optional
            Extra texts used only for language-model fine-tuning.
            A labelled text that is also among them is read once; so with ``memory``, label
            samples drawn from one unlabelled corpus share one fine-tuned language model.
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weight of each text in the loss (weighted mean per batch).

        Returns
        -------
        self
        """
        return self._fit(X, y, unlabeled, sample_weight)

    def _check_targets(self, y, n_samples: int) -> tuple[np.ndarray, None, dict]:
        """``(standardised targets of shape (n, n_outputs), None, fitted target attributes)``."""
        if y is None:
            raise ValueError("y is required: ULMFiTRegressor is supervised")
        y = check_array(y, ensure_2d=False, dtype=np.float64, input_name="y")
        if y.ndim not in (1, 2):
            raise ValueError(f"y must be 1-D or 2-D (one row of targets per text); got shape {y.shape}")
        if len(y) != n_samples:
            raise ValueError(f"X has {n_samples} texts but y has {len(y)} targets")
        if n_samples < 2:
            raise ValueError("fit needs at least two texts")
        table = y.reshape(n_samples, -1)
        mean, scale = table.mean(axis=0), table.std(axis=0)
        # A constant target trains towards 0 and is predicted as its constant (scale 0).
        standardised = ((table - mean) / np.where(scale > 0, scale, 1.0)).astype(np.float32)
        return standardised, None, {"n_outputs_": table.shape[1], "y_mean_": mean, "y_scale_": scale,
                                    "_y_ndim": y.ndim}

    def _explained(self, outputs: list[np.ndarray], target):
        """Per text: the output to explain, its prediction, its index; identity link; the target's scale
        (attributions are reported in the target's units)."""
        output_index = 0 if target is None else target
        if not isinstance(output_index, numbers.Integral) or not 0 <= output_index < self.n_outputs_:
            raise ValueError(f"target={target!r}: a regressor's target is an output index in [0, {self.n_outputs_})")
        predictions = self._values(outputs)[:, output_index]
        units = np.full(len(predictions), output_index)
        scale = np.full(len(predictions), self.y_scale_[output_index])
        return units, predictions.tolist(), [output_index] * len(predictions), "identity", scale

    def predict(self, X) -> np.ndarray:
        """Predicted targets: shape (n_samples,) if ``y`` was 1-D, else (n_samples, n_outputs)."""
        blocks = [self._values(outputs) for outputs in self._chunks(X, pooled=False)]
        values = np.concatenate(blocks) if blocks else np.zeros((0, self.n_outputs_), np.float32)
        return values.ravel() if self._y_ndim == 1 else values

    def _values(self, outputs: list[np.ndarray]) -> np.ndarray:
        """The directions' standardised outputs -> targets in y's units, shape (n, n_outputs)."""
        return np.mean(outputs, axis=0) * self.y_scale_ + self.y_mean_


def _ndim(y) -> int:
    """Dimensions of array-like targets (a ragged list counts as 1-D, to be refused as such)."""
    if hasattr(y, "ndim"):
        return y.ndim
    try:
        return np.ndim(y)
    except ValueError:
        return 1


def _split(n_samples: int, stratify: np.ndarray | None, validation_fraction: float | None, seed: int):
    """Training and validation indices (stratified where every class has two samples), or all and None."""
    everything = np.arange(n_samples)
    if validation_fraction is None:
        return everything, None
    from sklearn.model_selection import train_test_split
    if stratify is not None and np.bincount(stratify).min() < 2:
        stratify = None
    try:
        return train_test_split(everything, test_size=validation_fraction, random_state=seed, stratify=stratify)
    except ValueError as error:
        raise ValueError(f"validation_fraction={validation_fraction} cannot split {n_samples} samples: {error}") from None


def _check_weights(sample_weight, texts: list[str]) -> np.ndarray | None:
    """``sample_weight`` validated as scikit-learn does: its length, finite, >= 0, one positive."""
    if sample_weight is None:
        return None
    return _check_sample_weight(sample_weight, texts, dtype=np.float64, ensure_non_negative=True)


@contextlib.contextmanager
def _explain_non_finite_loss(estimator: _ULMFiTEstimator, bf16: bool):
    """Adds the likely causes to a :class:`NonFiniteLossError` from training."""
    try:
        yield
    except NonFiniteLossError as error:
        causes = [f"a learning rate too high (lr={estimator.lr}, lm_lr={estimator.lm_lr})",
                  "non-finite pretrained weights"]
        if bf16:
            causes.insert(1, "bf16 overflow (try precision='fp32')")
        raise NonFiniteLossError(f"{error}; the fit stopped and left the estimator as it was. "
                                 f"Likely causes: {', '.join(causes)}") from None


_MODEL_MOVE_LOCK = threading.Lock()


def _ready_for_prediction(models: list[TextClassifier], device: torch.device) -> None:
    """Puts the models in eval mode on ``device``, the first time only and under a lock: prediction
    itself never changes a module, so threads may then predict with one fitted model at once."""
    with _MODEL_MOVE_LOCK:
        for model in models:
            if model.training or not _on_device(model, device):
                model.to(device).eval()


def _model_spec(model: TextClassifier) -> dict:
    return {"config": {k: getattr(model.config, k) for k in model.config.__dataclass_fields__},
            "n_classes": model[1].layers[-1].out_features, "bptt": model.bptt, "max_len": model.max_len,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}


def _model_from_spec(spec: dict) -> TextClassifier:
    model = TextClassifier(AWDLSTMConfig(**spec["config"]), spec["n_classes"], spec["bptt"], spec["max_len"])
    model.load_state_dict(spec["state_dict"])
    return model.eval()


def _resolve_device(device, fitted: bool = False) -> torch.device:
    """``'auto'`` -> CUDA when available; an unavailable CUDA device is an error when fitting and a
    warning (then CPU) when predicting with a model fitted elsewhere."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # A malformed device is an invalid parameter, as sklearn's own checks report it (a ValueError too).
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidParameterError(
            f"device={device!r} is not a valid torch device ('auto', 'cpu', 'cuda', 'cuda:1')") from None
    if resolved.type == "cuda":
        index = resolved.index or 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            message = f"device={device!r} is not available on this machine"
            if not fitted:
                raise ValueError(message + "; use device='auto' or 'cpu'")
            warnings.warn(message + "; predicting on the CPU", UserWarning, stacklevel=3)
            return torch.device("cpu")
    elif resolved.type != "cpu":
        raise InvalidParameterError(f"device={device!r}: only 'cpu' and CUDA devices are supported")
    return resolved


def _use_bf16(precision: str, device: torch.device, fitting: bool = True) -> bool:
    """Whether to compute in bfloat16 on ``device``.

    ``"auto"`` does so where the hardware computes bf16 natively. An explicit ``"bf16"`` where it
    does not is refused when fitting (the CPU's LSTM kernels have no bf16 form there, and emulation
    would be slower than fp32); a model fitted with it elsewhere predicts in fp32, with a warning.
    """
    if precision == "fp32":
        return False
    native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_computes_bf16()
    if precision == "auto" or native:
        return native
    hardware = ("this GPU has no bfloat16 support" if device.type == "cuda"
                else "this CPU has neither AVX512-BF16 nor AMX, so it cannot run the LSTM in bfloat16")
    if fitting:
        raise ValueError(f"precision='bf16': {hardware}; use precision='auto' (bf16 wherever the hardware "
                         "has it, fp32 elsewhere) or precision='fp32'")
    warnings.warn(f"precision='bf16': {hardware}; predicting in fp32", UserWarning, stacklevel=4)
    return False


def _cuda_devices(device: torch.device) -> list:
    return [device] if device.type == "cuda" else []


def _cached(memory, function, ignore_seed: bool = False):
    if memory is None:
        return function
    if isinstance(memory, str):
        from joblib import Memory
        memory = Memory(memory, verbose=0)
    # The pretrained model is identified by its fingerprint: hashing its weights at every call would be slow.
    ignored = ["lm_source", "verbose"]
    return memory.cache(function, ignore=ignored + ["seed"] if ignore_seed else ignored)


def _language_model_corpus(texts: list[str], extra: list[str], tokens: list[list[str]]) -> list[list[str]]:
    """The documents the language model is fine-tuned on: the labelled texts that are not also among
    the unlabelled ones, then the unlabelled texts (``tokens`` holds both, in that order).

    A text given in both is read once. So when every labelled text is drawn from the unlabelled
    corpus, as when one corpus serves several label budgets or samples, the language-model corpus is
    the same for all of them and ``memory`` fine-tunes it once.
    """
    if not extra:
        return tokens
    unlabeled = set(extra)
    return [doc for text, doc in zip(texts, tokens) if text not in unlabeled] + tokens[len(texts):]


def _shared_tokenizer(lm_sources: list[PretrainedLM | None], pretrained) -> Tokenizer:
    """The tokenizer of the pretrained model(s); fastai's word rules without one."""
    if lm_sources[0] is None:
        return Tokenizer()
    tokenizer = lm_sources[0].tokenizer
    if any(lm.tokenizer != tokenizer for lm in lm_sources[1:]):
        raise ValueError(f"the forward and backward models of pretrained={pretrained!r} use different "
                         "tokenizers; a bidirectional classifier needs one text pipeline")
    return tokenizer


def _fingerprint(pretrained) -> str | None:
    """Identifies the weights behind ``pretrained`` for the cache: a changed file is a new key."""
    if pretrained is None:
        return None
    from pathlib import Path
    from .pretrained import _registry
    registry = _registry()
    if isinstance(pretrained, str) and pretrained in registry:
        return str(registry[pretrained])
    path = Path(pretrained)
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*")) if p.is_file()] \
        if path.is_dir() else [(str(path), path.stat().st_size, path.stat().st_mtime_ns)] if path.exists() else []
    return str(stats)


def target_vocab(pretrained: PretrainedLM | None, tokens: list[list[str]], max_vocab: int, min_freq: int) -> Vocab:
    """The vocabulary a classifier uses.

    A subword model's own (it has no unknown tokens); a word-level model's, extended by the target
    texts' frequent new words (up to ``max_vocab`` tokens in all); or the target texts' own
    vocabulary without a pretrained model.
    """
    if pretrained is not None and pretrained.tokenizer.subword:
        return Vocab(pretrained.itos)
    counts = Counter(t for doc in tokens for t in doc)
    if pretrained is None:
        return Vocab.from_counts(counts, max_size=max_vocab, min_freq=min_freq)
    room = max(0, max_vocab - len(pretrained.itos))
    return Vocab(pretrained.itos).extend(counts, max_new=room, min_freq=min_freq)


def fine_tune_encoder(tokens: list[list[str]], lm_source: PretrainedLM | None, fingerprint, backwards: bool,
                      settings: dict, seed: int, device: str, verbose: int) -> dict:
    """Target-task language-model fine-tuning; returns the vocabulary, sizes and encoder weights.

    A module-level function so that ``joblib.Memory`` can cache it: ``fingerprint`` identifies
    ``lm_source`` in the cache key, which leaves ``lm_source`` itself out.
    """
    vocab = target_vocab(lm_source, tokens, settings["max_vocab"], settings["min_freq"])
    if lm_source is None:
        config = AWDLSTMConfig(len(vocab), **RANDOM_INIT_SIZES)
    else:
        config = AWDLSTMConfig(len(vocab), **{k: v for k, v in lm_source.config.sizes().items() if k != "vocab_size"})
    with torch.random.fork_rng(devices=_cuda_devices(torch.device(device))):
        torch.manual_seed(seed)
        model = LanguageModel(config.scaled(settings["drop_mult"] * settings["drop_scale"]))
        if lm_source is not None:
            model.load_state_dict(match_embeddings(lm_source.state_dict, lm_source.itos, vocab.itos))
        if settings["lm_epochs"] > 0:
            fine_tune_language_model(
                model, vocab.numericalize_many(tokens), epochs=settings["lm_epochs"], lr=settings["lm_lr"],
                batch_size=settings["batch_size"], bptt=settings["bptt"], device=device,
                rng=np.random.default_rng(seed), reverse=backwards, discriminative=settings["discriminative_lr"],
                stlr=settings["slanted_triangular"], bf16=settings["bf16"],
                sampled_softmax=settings["sampled_softmax"], progress=ProgressBar() if verbose else SilentProgress())
    return {"itos": vocab.itos, "sizes": config.sizes(),
            "encoder_state": {k: v.detach().cpu() for k, v in model[0].state_dict().items()}}


@dataclass
class _DirectionPlan:
    """Everything that fitting one direction needs, validated and drawn by ``_fit``. It is picklable,
    so that the backward direction can be fitted in another process at the same time."""
    lm_corpus: list[list[str]]  # tokenized documents for language-model fine-tuning
    tokens: list[list[str]]  # the labelled texts, tokenized
    targets: np.ndarray
    train_idx: np.ndarray
    valid_idx: np.ndarray | None
    sample_weight: np.ndarray | None
    n_outputs: int
    fingerprint: str | None
    memory: object
    ignore_seed: bool
    seed: int
    device: torch.device
    verbose: int
    lm_settings: dict  # fine_tune_encoder's settings (the memory cache key)
    head_settings: dict  # bptt, max_len and drop_mult of the classifier
    training: dict  # train_classifier's other keyword arguments, the same for both directions

    def fit(self, backwards: bool, lm_source: PretrainedLM | None, progress) -> tuple[Vocab, TextClassifier, dict]:
        """One direction: its language model fine-tuned (or read from ``memory``), then its classifier."""
        encoder = _cached(self.memory, fine_tune_encoder, ignore_seed=self.ignore_seed)(
            self.lm_corpus, lm_source, self.fingerprint, backwards, self.lm_settings, self.seed, str(self.device),
            self.verbose)
        vocab = Vocab(encoder["itos"])
        docs = vocab.numericalize_many(self.tokens)
        config = AWDLSTMConfig(**encoder["sizes"]).for_classifier().scaled(self.head_settings["drop_mult"])
        with torch.random.fork_rng(devices=_cuda_devices(self.device)):
            torch.manual_seed(self.seed + 1)  # before the head's random initialisation
            model = TextClassifier(config, self.n_outputs, bptt=self.head_settings["bptt"],
                                   max_len=self.head_settings["max_len"])
            model[0].load_state_dict(encoder["encoder_state"])
            validation = None if self.valid_idx is None else (
                [docs[i] for i in self.valid_idx], self.targets[self.valid_idx])
            history = train_classifier(
                model, [docs[i] for i in self.train_idx], self.targets[self.train_idx],
                device=self.device, rng=np.random.default_rng(self.seed + 1), reverse=backwards,
                sample_weight=None if self.sample_weight is None else self.sample_weight[self.train_idx],
                validation=validation, progress=progress, **self.training)
        return vocab, model, history


def _fit_directions(plan: _DirectionPlan, lm_sources: list, progress, parallel: bool) -> list[tuple]:
    """``(vocab, model, history)`` of each direction, forward first.

    With ``parallel`` the backward direction is fitted in a second process while this one fits the
    forward direction, each with half of torch's threads: two single-threaded processes on two
    cores do more work than one process with two threads. The results equal a fit one after the
    other with those thread counts (each direction is seeded on its own).
    """
    directions = (False, True)[: len(lm_sources)]
    if not parallel:
        return [plan.fit(backwards, source, progress) for backwards, source in zip(directions, lm_sources)]
    threads = torch.get_num_threads()
    forward_threads = max(1, threads // 2)
    with _backward_worker() as executor:
        backward = executor.submit(_fit_backward_in_worker, plan, lm_sources[1], max(1, threads - forward_threads))
        with _torch_threads(forward_threads):
            forward = plan.fit(False, lm_sources[0], progress)
        vocab, spec, history = backward.result()
    return [forward, (vocab, _model_from_spec(spec), history)]


# The process that fits backward directions: skulmfit's own, never the process-wide executor that
# joblib's loky backend reuses (sharing that one breaks a later cross_val_score(n_jobs=2)). It is
# kept between fits, as a grid search fits many times, and its worker exits after idling a while.
_WORKER_IDLE_SECONDS = 300
_shared_worker = None
_shared_worker_lock = threading.Lock()


@contextlib.contextmanager
def _backward_worker():
    """A one-process executor for the length of a fit.

    The shared one, or a private one while another thread's fit holds it. On an error or Ctrl-C its
    worker is killed, so it never trains on in the background, and the next fit starts a new one.
    """
    global _shared_worker
    from joblib.externals.loky import ProcessPoolExecutor
    shared = _shared_worker_lock.acquire(blocking=False)
    try:
        if shared:
            if _shared_worker is None:
                _shared_worker = ProcessPoolExecutor(max_workers=1, timeout=_WORKER_IDLE_SECONDS)
            executor = _shared_worker
        else:
            executor = ProcessPoolExecutor(max_workers=1)
        try:
            yield executor
        except BaseException:
            executor.shutdown(wait=False, kill_workers=True)
            if shared:
                _shared_worker = None
            raise
        if not shared:
            executor.shutdown(wait=False)
    finally:
        if shared:
            _shared_worker_lock.release()


def _fit_backward_in_worker(plan: _DirectionPlan, lm_source: PretrainedLM | None, threads: int) -> tuple:
    """The backward direction in a worker process; the model travels back as a spec of CPU tensors."""
    torch.set_num_threads(threads)
    quiet = replace(plan, verbose=0)  # the forward direction's bars in the caller's process show progress
    vocab, model, history = quiet.fit(True, lm_source, SilentProgress())
    return vocab, _model_spec(model), history


@contextlib.contextmanager
def _torch_threads(n: int):
    """torch's intra-op threads set to ``n`` for the block, then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
