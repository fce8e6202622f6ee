"""The public estimators, ``ULMFiTClassifier`` and ``ULMFiTRegressor``: their parameters and
validation, the scikit-learn contract, prediction and persistence. Fitting itself is
:mod:`skulmfit.engine`'s."""
from __future__ import annotations

import contextlib
import io
import math
import numbers
import warnings
from collections.abc import Iterable, Iterator, Mapping, Set
from dataclasses import replace
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy import sparse
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, Options, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import _check_sample_weight, check_array, check_is_fitted

from . import persistence
from .engine import HeadTraining, LMFineTuning, fit_directions, language_model_corpus
from .environment import resolve_device, resolve_precision
from .model import TextClassifier
from .pretrained import DEFAULT_MODEL, resolve_pretrained
from .text import Tokenizer, read_part
from .training import NonFiniteLossError, pooled_features, predict_logits

if TYPE_CHECKING:
    from .explain import Explanation

AUTO_EPOCHS_UPDATES = 300  # epochs="auto": about this many updates in the final stage...
AUTO_EPOCHS_RANGE = (2, 20)  # ...within these bounds (a first choice from a short trial on TREC-6 / SST-2)
PREDICT_CHUNK = 4096  # documents tokenized at a time when predicting: bounds memory for any input size
#: Default of ``max_tokens``: documents up to about 15,000 words are read whole; a longer one costs a
#: few seconds per read on a 2-core CPU instead of minutes (a 5 MB base64 blob is 4 million pieces).
MAX_TOKENS = 20_000


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
    """What the ULMFiT estimators share: parameters and their validation, the fit (data checked and
    settings resolved here, the training itself in :mod:`skulmfit.engine`), prediction in chunks,
    explanations, persistence.

    A subclass says what its targets are (``_check_targets``), how its head is trained
    (``_training_loss``) and what its outputs mean (``predict``).
    """

    #: Fields of :class:`skulmfit.engine.LMFineTuning` that are no parameters (``sampled_softmax``,
    #: ``drop_scale``), with the values to use instead of their defaults. Empty: the measured
    #: defaults. Benchmarks compare other choices in a subclass that sets it
    #: (``python -m benchmarks.accuracy.tune_defaults --engine``).
    lm_engine_choices: Mapping[str, object] = MappingProxyType({})
    #: The same for :class:`skulmfit.engine.HeadTraining` (``warmup_epochs``).
    head_engine_choices: Mapping[str, object] = MappingProxyType({})

    _parameter_constraints: dict = {
        "pretrained": [str, HasMethods("__fspath__"), None],
        "lm_epochs": [Interval(numbers.Integral, 0, None, closed="left")],
        "epochs": [Interval(numbers.Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "lr": [Interval(numbers.Real, 0, None, closed="neither")],
        "lm_lr": [Interval(numbers.Real, 0, None, closed="neither")],
        "batch_size": [Interval(numbers.Integral, 2, None, closed="left")],
        "bptt": [Interval(numbers.Integral, 5, None, closed="left")],
        "max_len": [Interval(numbers.Integral, 1, None, closed="left")],
        "max_tokens": [Interval(numbers.Integral, 2, None, closed="left"), None],  # a token for each end
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
                 bptt=70, max_len=1400, max_tokens=MAX_TOKENS, drop_mult=0.5, bidirectional="auto", n_jobs=None,
                 device="auto", precision="auto", max_vocab=30000, min_freq=2, gradual_unfreezing=True,
                 discriminative_lr=True, slanted_triangular=True, validation_fraction=None, n_iter_no_change=None,
                 memory=None, random_state=None, verbose=0):
        self.pretrained = pretrained
        self.lm_epochs = lm_epochs
        self.epochs = epochs
        self.lr = lr
        self.lm_lr = lm_lr
        self.batch_size = batch_size
        self.bptt = bptt
        self.max_len = max_len
        self.max_tokens = max_tokens
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
        device = resolve_device(self.device)
        precision = resolve_precision(self.precision, device)
        class_weight = self._class_weights(target_attributes, targets)
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        train_idx, valid_idx = _split(len(texts), stratify, self.validation_fraction, seed)

        pretrained = resolve_pretrained(self.pretrained, self.bidirectional)
        tokens = self._read_parts(pretrained.tokenizer.tokenize_many(texts + extra))
        epochs = self._final_epochs(len(train_idx))
        lm = replace(LMFineTuning(
            lm_epochs=self.lm_epochs, lm_lr=self.lm_lr, batch_size=self.batch_size, bptt=self.bptt,
            drop_mult=self.drop_mult, max_vocab=self.max_vocab, min_freq=self.min_freq,
            discriminative_lr=self.discriminative_lr, slanted_triangular=self.slanted_triangular,
            precision=precision), **self.lm_engine_choices)
        head = HeadTraining(
            epochs=epochs, lr=self.lr, batch_size=self.batch_size, bptt=self.bptt, max_len=self.max_len,
            drop_mult=self.drop_mult, gradual_unfreezing=self.gradual_unfreezing,
            discriminative_lr=self.discriminative_lr, slanted_triangular=self.slanted_triangular,
            precision=precision, n_iter_no_change=self.n_iter_no_change, class_weight=class_weight,
            loss=self._training_loss(target_attributes), **self.head_engine_choices)
        n_threads = torch.get_num_threads()
        with _explain_non_finite_loss(self, precision):
            fits = fit_directions(
                language_model_corpus(texts, extra, tokens), tokens[: len(texts)], targets, train_idx=train_idx,
                valid_idx=valid_idx, sample_weight=sample_weight, n_outputs=n_outputs, pretrained=pretrained,
                lm=lm, head=head, seed=seed,
                # With random_state=None the seed stays out of the cache key (as in a Pipeline's memory):
                # otherwise every fit would draw a new seed and never reuse a cached language model.
                ignore_seed=self.random_state is None, memory=self.memory, device=device,
                parallel=self._parallel_directions(device, len(pretrained.models)), verbose=self.verbose)
        vocabs, models, histories, lm_histories = (list(column) for column in zip(*fits))
        # Fitted attributes are set together at the end: a fit that fails leaves the estimator as it was.
        fitted = {**target_attributes, "tokenizer_": pretrained.tokenizer, "vocab_": vocabs, "models_": models,
                  "history_": histories, "lm_history_": lm_histories, "n_threads_": n_threads, "epochs_": epochs,
                  "precision_": precision, "bidirectional_": pretrained.bidirectional}
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

    def transform(self, X: Iterable[str]) -> np.ndarray:
        """Concat-pooled document embeddings from the fine-tuned encoder(s).

        Parameters
        ----------
        X : sequence of str

        Returns
        -------
        ndarray of shape (n_samples, 3 * emb_size), or twice that for a bidirectional fit
            Forward features first; ready for any other scikit-learn model.
        """
        chunks = [np.concatenate(chunk, axis=1) for chunk in self._chunks(X, pooled=True)]
        width = sum(3 * m.config.emb_size for m in self.models_)
        return np.concatenate(chunks) if chunks else np.zeros((0, width), np.float32)

    def _chunks(self, X, pooled: bool) -> Iterator[list[np.ndarray]]:
        """For each block of :data:`PREDICT_CHUNK` texts, one output array per direction."""
        check_is_fitted(self)
        self._validate_params()  # set_params after fit (threshold, batch_size, device) is checked here
        texts = _check_texts(X)
        device, bf16 = self._prediction_device()
        for start in range(0, len(texts), PREDICT_CHUNK):
            tokens = self._read_parts(self.tokenizer_.tokenize_many(texts[start:start + PREDICT_CHUNK]))
            yield self._outputs(tokens, pooled, device, bf16)

    def _read_parts(self, docs: list[list[str]]) -> list[list[str]]:
        """The part of each tokenized document that is read (``max_tokens``), with a warning when one is cut."""
        lengths = [len(doc) for doc in docs if self.max_tokens is not None and len(doc) > self.max_tokens]
        if lengths:
            head = self.max_tokens // 2
            warnings.warn(f"{len(lengths)} text(s) longer than max_tokens={self.max_tokens} tokens (the longest has "
                          f"{max(lengths):,}) are read as their first {head:,} and last {self.max_tokens - head:,} "
                          "tokens; set max_tokens higher, or to None, to read them whole", UserWarning, stacklevel=3)
        return [read_part(doc, self.max_tokens) for doc in docs]

    def _prediction_device(self) -> tuple[torch.device, bool]:
        """The device a fitted model predicts on, and whether in bf16 there."""
        device = resolve_device(self.device, fitted=True)
        return device, resolve_precision(self.precision, device, fitting=False) == "bf16"

    def _outputs(self, tokens: list[list[str]], pooled: bool, device: torch.device, bf16: bool) -> list[np.ndarray]:
        """One output array per direction (head outputs, or pooled features) for tokenized texts."""
        run = pooled_features if pooled else predict_logits
        return [run(model, vocab.numericalize_many(tokens), batch_size=self.batch_size, device=device,
                    backwards=backwards, bf16=bf16)
                for model, vocab, backwards in zip(self.models_, self.vocab_, (False, True))]

    def explain(self, X: Iterable[str], target=None, *, steps: int = 20) -> list[Explanation]:
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
        tokens = self._read_parts(self.tokenizer_.tokenize_many(texts))
        device, bf16 = self._prediction_device()
        outputs = self._outputs(tokens, pooled=False, device=device, bf16=bf16)
        units, values, labels, output, unit_scale = self._explained(outputs, target)
        per_direction = [integrated_gradients(model, vocab.numericalize_many(tokens), units, output=output, steps=steps,
                                              backwards=backwards, device=device, bf16=bf16)
                         for model, vocab, backwards in zip(self.models_, self.vocab_, (False, True))]
        return [Explanation(text, doc, np.mean([d[i] for d in per_direction], axis=0) * unit_scale[i], label, value)
                for i, (text, doc, label, value) in enumerate(zip(texts, tokens, labels, values))]

    # ------------------------------------------------------------------------- persistence

    def save(self, path: str | Path) -> None:
        """Writes the fitted estimator to ``path`` in a format that cannot run code when loaded.

        Load it with :func:`skulmfit.load`: tensors and plain values only, read with
        ``torch.load(weights_only=True)``; predictions equal this estimator's bit for bit, on any
        device. Prefer it to ``pickle``/``joblib`` for a model you send or receive; the parameter
        ``memory`` is kept as its folder and a ``RandomState`` ``random_state`` as ``None``.

        Parameters
        ----------
        path : str or Path

        Raises
        ------
        NotFittedError
            If the estimator is not fitted.
        OSError
            ``IsADirectoryError``, ``NotADirectoryError``, ``FileNotFoundError``, ... naming ``path``
            if it cannot be written; a failed save leaves no file behind and keeps a model already at
            ``path`` whole.
        """
        persistence.save(self, path)

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
            torch.save([model.spec() for model in state.pop("models_")], buffer)
            state["_models_blob"] = buffer.getvalue()
        state["_versions"] = persistence.current_versions()
        return state

    def __setstate__(self, state):
        for difference in persistence.version_differences(state.pop("_versions", {})):
            warnings.warn(difference, UserWarning, stacklevel=2)
        blob = state.pop("_models_blob", None)
        if "vocab_" in state:  # fitted before models carried their tokenizer: all were word-level
            state.setdefault("tokenizer_", Tokenizer())
        state.setdefault("n_jobs", None)  # pickled before these parameters existed
        state.setdefault("max_tokens", MAX_TOKENS)
        self.__dict__.update(state)
        if blob is not None:
            specs = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
            self.models_ = [TextClassifier.from_spec(spec) for spec in specs]
        if hasattr(self, "models_") and not hasattr(self, "bidirectional_"):  # fitted before "auto" existed
            self.bidirectional_ = len(self.models_) == 2
        if hasattr(self, "models_") and not hasattr(self, "lm_history_"):  # fitted before it was recorded
            self.lm_history_ = [{} for _ in self.models_]



class ULMFiTClassifier(ClassifierMixin, _ULMFiTEstimator):
    """Text classifier that fine-tunes a pretrained AWD-LSTM language model (ULMFiT).

    ``fit`` runs the recipe of Howard & Ruder (2018): the pretrained language model is
    fine-tuned on the training texts (discriminative learning rates, slanted triangular
    schedule), then a classifier head on concat pooling is trained with gradual unfreezing;
    long documents are read with BPT3C.

    Parameters
    ----------
    pretrained : str, path or None, default="en-distilled"
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
    max_tokens : int >= 2 or None, default=20000
        Most tokens read of one document, in every stage (language-model fine-tuning, training,
        prediction, ``transform``, ``explain``), so that time too is bounded for any length. A longer
        document is read as its first ``max_tokens // 2`` tokens followed by its last
        ``max_tokens - max_tokens // 2``, with a warning: the forward model pools the document's end,
        and the backward model, which reads it from its end, pools its beginning, so each direction
        reads what it pools and the context before it (see :func:`skulmfit.text.read_part`). Keep it
        at least ``2 * max_len`` so that neither pooled window reaches the cut. ``None`` reads every
        token.
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
        ``benchmarks/accuracy/accuracy.py`` checks bf16 accuracy against fp32.
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
    history_ : list of list of dict
        Every classifier epoch of each direction: its layer groups trained (``trainable_groups``),
        mean training loss, validation accuracy (with ``validation_fraction``) and ``seconds``.
    lm_history_ : list of dict
        The language-model fine-tuning of each direction: the mean loss of each epoch (``losses``)
        and the stage's ``seconds`` (a language model reused from ``memory`` reports the fit that
        fine-tuned it).
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
                 bptt=70, max_len=1400, max_tokens=MAX_TOKENS, drop_mult=0.5, bidirectional="auto", n_jobs=None,
                 device="auto", precision="auto", max_vocab=30000, min_freq=2, gradual_unfreezing=True,
                 discriminative_lr=True, slanted_triangular=True, validation_fraction=None, n_iter_no_change=None,
                 class_weight=None, threshold=0.5, memory=None, random_state=None, verbose=0):
        super().__init__(pretrained, lm_epochs=lm_epochs, epochs=epochs, lr=lr, lm_lr=lm_lr, batch_size=batch_size,
                         bptt=bptt, max_len=max_len, max_tokens=max_tokens, drop_mult=drop_mult,
                         bidirectional=bidirectional, n_jobs=n_jobs, device=device, precision=precision,
                         max_vocab=max_vocab, min_freq=min_freq, gradual_unfreezing=gradual_unfreezing,
                         discriminative_lr=discriminative_lr, slanted_triangular=slanted_triangular,
                         validation_fraction=validation_fraction, n_iter_no_change=n_iter_no_change, memory=memory,
                         random_state=random_state, verbose=verbose)
        self.class_weight = class_weight
        self.threshold = threshold

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Iterable[str], y, unlabeled: Iterable[str] | None = None,
            sample_weight=None) -> ULMFiTClassifier:
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

    def predict_proba(self, X: Iterable[str]) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes), columns in the order of ``classes_``.

        Multi-label: the probability of each label, independently (rows need not sum to 1).
        """
        probabilities = [self._probabilities(outputs) for outputs in self._chunks(X, pooled=False)]
        return np.concatenate(probabilities) if probabilities else np.zeros((0, len(self.classes_)))

    def _probabilities(self, outputs: list[np.ndarray]) -> np.ndarray:
        """The directions' logits -> probabilities, averaged over the directions."""
        link = torch.sigmoid if self.multilabel_ else partial(torch.softmax, dim=1)
        return np.mean([link(torch.from_numpy(logits)).numpy() for logits in outputs], axis=0)

    def predict(self, X: Iterable[str]) -> np.ndarray | sparse.csr_matrix:
        """The most probable class of each text; multi-label: the indicator matrix of the labels whose
        probability reaches ``threshold`` (sparse if ``y`` was)."""
        proba = self.predict_proba(X)  # first: it raises NotFittedError before classes_ is looked up
        if not self.multilabel_:
            return self.classes_[proba.argmax(axis=1)]
        indicator = (proba >= self.threshold).astype(np.int64)
        return sparse.csr_matrix(indicator) if self._sparse_target else indicator


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
    pretrained, lm_epochs, epochs, lr, lm_lr, batch_size, bptt, max_len, max_tokens, drop_mult, bidirectional, \
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
    tokenizer_, vocab_, models_, history_, lm_history_, n_threads_, bidirectional_, epochs_, precision_
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
    def fit(self, X: Iterable[str], y, unlabeled: Iterable[str] | None = None,
            sample_weight=None) -> ULMFiTRegressor:
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

    def predict(self, X: Iterable[str]) -> np.ndarray:
        """Predicted targets: shape (n_samples,) if ``y`` was 1-D, else (n_samples, n_outputs)."""
        blocks = [self._values(outputs) for outputs in self._chunks(X, pooled=False)]
        values = np.concatenate(blocks) if blocks else np.zeros((0, self.n_outputs_), np.float32)
        return values.ravel() if self._y_ndim == 1 else values

    def _values(self, outputs: list[np.ndarray]) -> np.ndarray:
        """The directions' standardised outputs -> targets in y's units, shape (n, n_outputs)."""
        return np.mean(outputs, axis=0) * self.y_scale_ + self.y_mean_


# ----------------------------------------------------------------------------- helpers

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
def _explain_non_finite_loss(estimator: _ULMFiTEstimator, precision: str) -> Iterator[None]:
    """Adds the likely causes to a :class:`NonFiniteLossError` from training."""
    try:
        yield
    except NonFiniteLossError as error:
        causes = [f"a learning rate too high (lr={estimator.lr}, lm_lr={estimator.lm_lr})",
                  "non-finite pretrained weights"]
        if precision == "bf16":
            causes.insert(1, "bf16 overflow (try precision='fp32')")
        raise NonFiniteLossError(f"{error}; the fit stopped and left the estimator as it was. "
                                 f"Likely causes: {', '.join(causes)}") from None


def load(path: str | Path) -> ULMFiTClassifier | ULMFiTRegressor:
    """Reads a model written by ``ULMFiTClassifier.save``; never runs code from the file.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    ULMFiTClassifier or ULMFiTRegressor
        Fitted, predicting exactly as the saved estimator did.

    Raises
    ------
    FileNotFoundError
        If nothing is at ``path``.
    ValueError
        In one line naming ``path``: if it is a folder, empty, truncated, not a torch file, not a
        skulmfit model (a pickle, a weight file, a file of another program), a file holding
        objects other than tensors and plain values, or a model file whose contents disagree
        with each other (missing keys, sizes that do not match the tensors, ...).

    See Also
    --------
    skulmfit.persistence : the file format and what is checked.
    """
    return persistence.load_estimator(path, (ULMFiTClassifier, ULMFiTRegressor))
