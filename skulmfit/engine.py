"""The fitting engine behind the estimators: language-model fine-tuning (cached with ``memory``),
then the classifier head of each direction, the backward one in a second process where asked.

The estimators (:mod:`skulmfit.estimator`) validate their parameters and data and call
:func:`fit_directions` with what they resolved: the pretrained models
(:class:`skulmfit.pretrained.ResolvedPretrained`), the settings of the two stages
(:class:`LMFineTuning`, :class:`HeadTraining`) and the seed.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch

from .environment import torch_threads
from .lm_weights import PretrainedLM, match_embeddings
from .model import AWDLSTMConfig, LanguageModel, TextClassifier
from .pretrained import ResolvedPretrained
from .progress import ProgressBar, SilentProgress
from .training import fine_tune_language_model, train_classifier
from .vocab import Vocab

# Sizes of the language model when ``pretrained=None``: the bundled model's shape.
RANDOM_INIT_SIZES = dict(emb_size=128, hidden_size=384, n_layers=2)
# Language-model fine-tuning scores each step's own targets plus this many drawn ids, not the whole
# vocabulary (sampled softmax; 0 = full softmax): about 2.3x the tokens/s at 16,000 subword pieces.
LM_SAMPLED_SOFTMAX = 1024
# The language model is fine-tuned with its base dropouts times drop_mult times this.
LM_DROP_SCALE = 2.0
# Epochs of the head alone on the frozen encoder's features before gradual unfreezing (LP-FT;
# 0: ULMFiT's recipe as the paper has it).
HEAD_WARMUP_EPOCHS = 0


@dataclass(frozen=True)
class LMFineTuning:
    """How the language model is fine-tuned on the target texts: the estimator's parameters of that
    stage, under their own names, and the engine's choices that are no parameters.

    Every field is part of ``memory``'s cache key: a fit that changes none reuses the cached
    language model.

    Attributes
    ----------
    lm_epochs, lm_lr, batch_size, bptt, drop_mult, max_vocab, min_freq, discriminative_lr, slanted_triangular
        As the estimators take them.
    precision : {"fp32", "bf16"}
        The estimator's ``precision`` resolved for the device.
    sampled_softmax : int, default=LM_SAMPLED_SOFTMAX
        Drawn ids scored beside each step's targets (0: the full softmax).
    drop_scale : float, default=LM_DROP_SCALE
        The language model's base dropouts are scaled by ``drop_mult * drop_scale``.
    """

    lm_epochs: int
    lm_lr: float
    batch_size: int
    bptt: int
    drop_mult: float
    max_vocab: int
    min_freq: int
    discriminative_lr: bool
    slanted_triangular: bool
    precision: str
    sampled_softmax: int = LM_SAMPLED_SOFTMAX
    drop_scale: float = LM_DROP_SCALE


@dataclass(frozen=True, eq=False)
class HeadTraining:
    """How each direction's classifier (or regressor) is trained on the labelled texts.

    Attributes
    ----------
    epochs, lr, batch_size, bptt, max_len, drop_mult, gradual_unfreezing, discriminative_lr, slanted_triangular, \
n_iter_no_change
        As the estimators take them (``epochs`` resolved from ``"auto"``).
    precision : {"fp32", "bf16"}
        The estimator's ``precision`` resolved for the device.
    class_weight : ndarray of shape (n_classes,) or None
        The weight of each encoded class in the loss.
    loss : {"cross_entropy", "bce", "mse"}
        Single-label classes, multi-label labels, or real targets.
    warmup_epochs : int, default=HEAD_WARMUP_EPOCHS
        Epochs of the head alone on the frozen encoder's pooled features, computed once, before
        gradual unfreezing (LP-FT's linear probe; 0: none).
    """

    epochs: int
    lr: float
    batch_size: int
    bptt: int
    max_len: int
    drop_mult: float
    gradual_unfreezing: bool
    discriminative_lr: bool
    slanted_triangular: bool
    precision: str
    n_iter_no_change: int | None
    class_weight: np.ndarray | None
    loss: str
    warmup_epochs: int = HEAD_WARMUP_EPOCHS


def fit_directions(lm_corpus: list[list[str]], tokens: list[list[str]], targets: np.ndarray, *,
                   train_idx: np.ndarray, valid_idx: np.ndarray | None, sample_weight: np.ndarray | None,
                   n_outputs: int, pretrained: ResolvedPretrained, lm: LMFineTuning, head: HeadTraining,
                   seed: int, ignore_seed: bool, memory, device: torch.device, parallel: bool,
                   verbose: int) -> list[tuple[Vocab, TextClassifier, list[dict]]]:
    """Fine-tunes the language model of each direction, then trains its classifier head.

    Parameters
    ----------
    lm_corpus : list of list of str
        The tokenized documents of language-model fine-tuning (see :func:`language_model_corpus`).
    tokens : list of list of str
        The labelled texts, tokenized.
    targets : ndarray
        Encoded classes, a 0/1 label matrix, or standardised real targets, one row per text.
    train_idx, valid_idx : ndarray of int
        The texts the head trains on, and those held out to pick its best epoch (or None).
    sample_weight : ndarray of shape (n_texts,) or None
    n_outputs : int
        Outputs of the head.
    pretrained : ResolvedPretrained
        The language model of each direction, and their fingerprint for the cache.
    lm : LMFineTuning
    head : HeadTraining
    seed : int
        Seeds each direction's language model (``seed``) and head (``seed + 1``).
    ignore_seed : bool
        Whether the seed stays out of the cache key (an estimator with ``random_state=None``).
    memory : joblib.Memory, str or None
        Caches language-model fine-tuning (:func:`fine_tune_encoder`).
    device : torch.device
    parallel : bool
        Fit the backward direction in a second process while this one fits the forward direction,
        each with half of torch's threads: two single-threaded processes on two cores do more work
        than one process with two threads. The results equal a fit one after the other with those
        thread counts (each direction is seeded on its own).
    verbose : int
        1 shows a progress bar for every stage (of the forward direction, when parallel).

    Returns
    -------
    list of (Vocab, TextClassifier, list of dict, dict)
        Each direction's vocabulary, fitted model, classifier history (a record per epoch) and
        language-model record (see :func:`fine_tune_encoder`), forward first.
    """
    plan = _DirectionPlan(lm_corpus=lm_corpus, tokens=tokens, targets=targets, train_idx=train_idx,
                          valid_idx=valid_idx, sample_weight=sample_weight, n_outputs=n_outputs,
                          fingerprint=pretrained.fingerprint, memory=memory, ignore_seed=ignore_seed, seed=seed,
                          device=device, verbose=verbose, lm=lm, head=head)
    progress = ProgressBar() if verbose else SilentProgress()
    sources = pretrained.models
    if not parallel or len(sources) < 2:
        return [_fit_direction(plan, backwards=backwards, source=source, progress=progress)
                for backwards, source in zip((False, True), sources)]
    threads = torch.get_num_threads()
    forward_threads = max(1, threads // 2)
    with _backward_worker() as executor:
        backward = executor.submit(_fit_backward_in_worker, plan, sources[1], max(1, threads - forward_threads))
        with torch_threads(forward_threads):
            forward = _fit_direction(plan, backwards=False, source=sources[0], progress=progress)
        vocab, spec, history, lm_record = backward.result()
    return [forward, (vocab, TextClassifier.from_spec(spec), history, lm_record)]


def language_model_corpus(texts: list[str], extra: list[str], tokens: list[list[str]]) -> list[list[str]]:
    """The documents the language model is fine-tuned on: the labelled texts that are not also among
    the unlabelled ones, then the unlabelled texts.

    A text given in both is read once. So when every labelled text is drawn from the unlabelled
    corpus, as when one corpus serves several label budgets or samples, the language-model corpus is
    the same for all of them and ``memory`` fine-tunes it once.

    Parameters
    ----------
    texts : list of str
        The labelled texts.
    extra : list of str
        The unlabelled texts.
    tokens : list of list of str
        Both tokenized, in that order.

    Returns
    -------
    list of list of str
    """
    if not extra:
        return tokens
    unlabeled = set(extra)
    return [doc for text, doc in zip(texts, tokens) if text not in unlabeled] + tokens[len(texts):]


def target_vocab(pretrained: PretrainedLM | None, tokens: list[list[str]], max_vocab: int, min_freq: int) -> Vocab:
    """The vocabulary a classifier uses.

    Parameters
    ----------
    pretrained : PretrainedLM or None
    tokens : list of list of str
        The target texts, tokenized.
    max_vocab, min_freq : int
        As the estimators take them.

    Returns
    -------
    Vocab
        A subword model's own (it has no unknown tokens); a word-level model's, extended by the
        target texts' frequent new words (up to ``max_vocab`` tokens in all); or the target texts'
        own vocabulary without a pretrained model.
    """
    if pretrained is not None and pretrained.tokenizer.subword:
        return Vocab(pretrained.itos)
    counts = Counter(t for doc in tokens for t in doc)
    if pretrained is None:
        return Vocab.from_counts(counts, max_size=max_vocab, min_freq=min_freq)
    room = max(0, max_vocab - len(pretrained.itos))
    return Vocab(pretrained.itos).extend(counts, max_new=room, min_freq=min_freq)


def fine_tune_encoder(tokens: list[list[str]], *, source: PretrainedLM | None, fingerprint: str | None,
                      backwards: bool, settings: LMFineTuning, seed: int, device: str, verbose: int) -> dict:
    """Target-task language-model fine-tuning of one direction.

    A module-level function so that ``joblib.Memory`` can cache it: ``fingerprint`` identifies
    ``source`` in the cache key, which leaves ``source`` itself (and ``verbose``) out.

    Parameters
    ----------
    tokens : list of list of str
        The documents to fine-tune on.
    source : PretrainedLM or None
        The pretrained language model of this direction; None for random initialisation.
    fingerprint : str or None
        Identifies ``source``'s weights.
    backwards : bool
        Whether the model reads the documents from their ends.
    settings : LMFineTuning
    seed : int
    device : str
    verbose : int

    Returns
    -------
    dict
        ``itos`` (the vocabulary), ``sizes`` (of the AWD-LSTM), ``encoder_state`` (CPU tensors) and
        ``record``: the mean loss of each epoch (``losses``) and the stage's duration (``seconds``).
    """
    vocab = target_vocab(source, tokens, settings.max_vocab, settings.min_freq)
    if source is None:
        config = AWDLSTMConfig(len(vocab), **RANDOM_INIT_SIZES)
    else:
        config = AWDLSTMConfig(len(vocab), **{k: v for k, v in source.config.sizes().items() if k != "vocab_size"})
    started, losses = time.perf_counter(), []
    with torch.random.fork_rng(devices=_cuda_devices(torch.device(device))):
        torch.manual_seed(seed)
        model = LanguageModel(config.scaled(settings.drop_mult * settings.drop_scale))
        if source is not None:
            model.load_state_dict(match_embeddings(source.state_dict, source.itos, vocab.itos))
        if settings.lm_epochs > 0:
            losses = fine_tune_language_model(
                model, vocab.numericalize_many(tokens), epochs=settings.lm_epochs, lr=settings.lm_lr,
                batch_size=settings.batch_size, bptt=settings.bptt, device=device,
                rng=np.random.default_rng(seed), backwards=backwards, discriminative_lr=settings.discriminative_lr,
                slanted_triangular=settings.slanted_triangular, bf16=settings.precision == "bf16",
                sampled_softmax=settings.sampled_softmax, progress=ProgressBar() if verbose else SilentProgress())
    return {"itos": vocab.itos, "sizes": config.sizes(),
            "encoder_state": {k: v.detach().cpu() for k, v in model[0].state_dict().items()},
            "record": {"losses": losses, "seconds": round(time.perf_counter() - started, 3)}}


@dataclass(frozen=True)
class _DirectionPlan:
    """:func:`fit_directions`' arguments that each direction's fit needs: picklable, so that the
    backward direction can be fitted in another process at the same time."""

    lm_corpus: list[list[str]]
    tokens: list[list[str]]
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
    lm: LMFineTuning
    head: HeadTraining


def _fit_direction(plan: _DirectionPlan, *, backwards: bool, source: PretrainedLM | None,
                   progress) -> tuple[Vocab, TextClassifier, list[dict], dict]:
    """One direction: its language model fine-tuned (or read from ``memory``, with the record of the
    fit that fine-tuned it), then its classifier."""
    encoder = _cached(plan.memory, fine_tune_encoder, ignore_seed=plan.ignore_seed)(
        plan.lm_corpus, source=source, fingerprint=plan.fingerprint, backwards=backwards, settings=plan.lm,
        seed=plan.seed, device=str(plan.device), verbose=plan.verbose)
    vocab = Vocab(encoder["itos"])
    docs = vocab.numericalize_many(plan.tokens)
    head = plan.head
    config = AWDLSTMConfig(**encoder["sizes"]).for_classifier().scaled(head.drop_mult)
    with torch.random.fork_rng(devices=_cuda_devices(plan.device)):
        torch.manual_seed(plan.seed + 1)  # before the head's random initialisation
        model = TextClassifier(config, plan.n_outputs, bptt=head.bptt, max_len=head.max_len)
        model[0].load_state_dict(encoder["encoder_state"])
        validation = None if plan.valid_idx is None else (
            [docs[i] for i in plan.valid_idx], plan.targets[plan.valid_idx])
        history = train_classifier(
            model, [docs[i] for i in plan.train_idx], plan.targets[plan.train_idx], epochs=head.epochs,
            lr=head.lr, batch_size=head.batch_size, device=plan.device, rng=np.random.default_rng(plan.seed + 1),
            backwards=backwards, class_weight=head.class_weight,
            sample_weight=None if plan.sample_weight is None else plan.sample_weight[plan.train_idx],
            gradual_unfreezing=head.gradual_unfreezing, discriminative_lr=head.discriminative_lr,
            slanted_triangular=head.slanted_triangular, bf16=head.precision == "bf16", validation=validation,
            n_iter_no_change=head.n_iter_no_change, loss=head.loss, head_warmup_epochs=head.warmup_epochs,
            progress=progress)
    return vocab, model, history, encoder["record"]


def _cached(memory, function, ignore_seed: bool = False):
    """``function`` cached in ``memory`` (a ``joblib.Memory`` or its folder); itself without one."""
    if memory is None:
        return function
    if isinstance(memory, str):
        from joblib import Memory
        memory = Memory(memory, verbose=0)
    # The pretrained model is identified by its fingerprint: hashing its weights at every call would be slow.
    ignored = ["source", "verbose"]
    return memory.cache(function, ignore=ignored + ["seed"] if ignore_seed else ignored)


def _cuda_devices(device: torch.device) -> list:
    return [device] if device.type == "cuda" else []


# The process that fits backward directions: skulmfit's own, never the process-wide executor that
# joblib's loky backend reuses (sharing that one breaks a later cross_val_score(n_jobs=2)). It is
# kept between fits, as a grid search fits many times, and its worker exits after idling a while.
_WORKER_IDLE_SECONDS = 300
_shared_worker = None
_shared_worker_lock = threading.Lock()


@contextlib.contextmanager
def _backward_worker() -> Iterator:
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


def _fit_backward_in_worker(plan: _DirectionPlan, source: PretrainedLM | None, threads: int) -> tuple:
    """The backward direction in a worker process; the model travels back as a spec of CPU tensors."""
    torch.set_num_threads(threads)
    quiet = replace(plan, verbose=0)  # the forward direction's bars in the caller's process show progress
    vocab, model, history, lm_record = _fit_direction(quiet, backwards=True, source=source,
                                                      progress=SilentProgress())
    return vocab, model.spec(), history, lm_record
