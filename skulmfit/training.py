"""ULMFiT's training loops: target-task language-model fine-tuning (§3.2), staged classifier
training with gradual unfreezing (§3.3), and prediction.

Choices where the paper and fastai differ (see the project notes): Adam betas (0.7, 0.99) as in
the paper, with decoupled weight decay 0.01 as in fastai v2; slanted triangular learning rates
(cut_frac 0.1, ratio 32) in every stage as in the paper, not fastai's one-cycle; the same peak
rate in every unfreezing stage; variable-length BPTT for the language model as in AWD-LSTM.
"""
from __future__ import annotations

import contextlib
import copy
import math
import threading
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .batching import bptt_lengths, classifier_batches, lm_batches, lm_rows, lm_stream, pad_batch
from .loss import SampledSoftmax, linear_cross_entropy
from .model import LanguageModel, TextClassifier
from .progress import SilentProgress
from .schedule import discriminative_lrs, freeze_to, param_groups, set_stlr, unfreezing_stages

ADAM_BETAS = (0.7, 0.99)
ADAM_EPS = 1e-5
LM_CLIP = 0.4
CLASSIFIER_CLIP = 25.0
AR_ALPHA = 2.0
TAR_BETA = 1.0
# Long documents are predicted at least this many at a time: narrower batches leave the LSTM's
# matrix products too small to use the CPU well (measured in benchmarks/speed/speed.py). Without
# gradients, 64 rows of max_len positions stay far below what training holds.
INFERENCE_MIN_ROWS = 64


class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN or infinite: the update is not applied and training stops."""


def _check_finite(loss: float, what: str) -> None:
    if not math.isfinite(loss):
        raise NonFiniteLossError(f"the {what} became {loss}")


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on ``device`` when asked for, otherwise a no-op context."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def cpu_computes_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), so bf16 autocast pays.

    torch.cpu's capability checks are private; a torch without them gets the safe answer, fp32.
    """
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check is not None and check() for check in checks)


def make_optimizer(groups: list[list[torch.nn.Module]], lrs: list[float], weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the layer groups, one rate each, in torch's fused kernel: one pass over all
    parameters instead of a loop over tensors, the same update up to rounding (a default fit of
    500 short texts 7% faster on a CPU; ``benchmarks/speed/results/fit_time_optimizer.json``)."""
    return torch.optim.AdamW(param_groups(groups, lrs), betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=weight_decay,
                             fused=True)


# ----------------------------------------------------------------------------- language model

def lm_batch_size(n_tokens: int, batch_size: int, bptt: int) -> int:
    """Fewer rows than asked when the corpus is small, so each row still holds one BPTT window."""
    return max(1, min(batch_size, n_tokens // (bptt + 1)))


def _lm_loss(model: LanguageModel, hidden: torch.Tensor, y: torch.Tensor, bf16: bool,
             sampled: SampledSoftmax | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy of the decoder on ``hidden`` (the fused loss: no fp32 logits),
    over the whole vocabulary or, with ``sampled``, over a sample of it."""
    decoder = model[1].decoder
    loss = linear_cross_entropy if sampled is None else sampled
    return loss(hidden.reshape(-1, hidden.size(-1)), decoder.weight, decoder.bias, y.reshape(-1),
                torch.bfloat16 if bf16 else None)


def lm_train_step(model: LanguageModel, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                  state: list | None, *, bf16: bool = False, clip: float = LM_CLIP,
                  alpha: float = AR_ALPHA, beta: float = TAR_BETA,
                  sampled: SampledSoftmax | None = None) -> tuple[float, list]:
    """One truncated-BPTT update; returns the cross-entropy (over the sampled candidates with
    ``sampled``) and the detached state to carry on."""
    with autocast(x.device, bf16):
        top, raw_outputs, state = model[0](x, state)
        dropped = model[1].output_dp(top)
    loss = _lm_loss(model, dropped, y, bf16, sampled)
    raw = raw_outputs[-1]
    total = loss
    if alpha:  # AR: keep the dropped-out activations small
        total = total + alpha * dropped.float().pow(2).mean()
    if beta and raw.size(1) > 1:  # TAR: keep consecutive hidden states close
        total = total + beta * (raw[:, 1:] - raw[:, :-1]).float().pow(2).mean()
    _check_finite(total.item(), "language-model loss")
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss.item(), [(h.detach(), c.detach()) for h, c in state]


def fine_tune_language_model(model: LanguageModel, docs: Sequence[np.ndarray], *, epochs: int, lr: float,
                             batch_size: int = 64, bptt: int = 70, device: torch.device | str = "cpu",
                             rng: np.random.Generator | None = None, backwards: bool = False,
                             discriminative_lr: bool = True, slanted_triangular: bool = True,
                             cut_frac: float = 0.1, ratio: float = 32.0, weight_decay: float = 0.01,
                             bf16: bool = False, sampled_softmax: int = 0,
                             progress: SilentProgress | None = None) -> list[float]:
    """Fine-tunes a language model on the target texts; returns the mean loss of each epoch.

    Each epoch shuffles the documents, concatenates them into one stream, cuts it into
    ``batch_size`` contiguous rows and walks them with variable-length BPTT, carrying the
    hidden state. Learning rates are discriminative (each lower group /2.6) and follow one
    slanted triangular schedule over all epochs; each step's rate is scaled by its sequence
    length over ``bptt``, as in AWD-LSTM.

    With ``sampled_softmax=N`` each step scores only its batch's targets plus N drawn ids
    (:class:`~skulmfit.loss.SampledSoftmax`, counts from ``docs``) when that is less than half the
    vocabulary; the losses returned are then over those candidates.
    """
    device = torch.device(device)
    rng = rng if rng is not None else np.random.default_rng()
    progress = progress or SilentProgress()
    n_tokens = sum(len(d) for d in docs)
    rows_per_batch = lm_batch_size(n_tokens, batch_size, bptt)
    row_len = n_tokens // rows_per_batch
    if epochs < 1 or row_len < 2:
        return []
    epoch_lengths = [bptt_lengths(row_len - 1, bptt, rng) for _ in range(epochs)]
    total_steps = sum(len(lengths) for lengths in epoch_lengths)
    vocab_size = model[1].decoder.weight.shape[0]
    sampled = None
    if 0 < sampled_softmax < vocab_size // 2:
        sampled = SampledSoftmax(np.bincount(np.concatenate(docs), minlength=vocab_size), sampled_softmax)

    groups = model.layer_groups()
    lrs = discriminative_lrs(lr, len(groups)) if discriminative_lr else [lr] * len(groups)
    optimizer = make_optimizer(groups, lrs, weight_decay)
    freeze_to(groups, len(groups))
    model.to(device).train()
    epoch_losses, step = [], 0
    progress.start("LM fine-tuning", total_steps)
    for lengths in epoch_lengths:
        rows = lm_rows(lm_stream(docs, backwards, rng), rows_per_batch)
        state, losses = None, []
        for x, y in lm_batches(rows, lengths):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if slanted_triangular:
                set_stlr(optimizer, step, total_steps, cut_frac, ratio, scale=x.size(1) / bptt)
            try:
                loss, state = lm_train_step(model, optimizer, x, y, state, bf16=bf16, sampled=sampled)
            except NonFiniteLossError as error:
                raise NonFiniteLossError(f"{error} in fine-tuning, at step {step + 1} of {total_steps}") from None
            losses.append(loss)
            progress.step(loss)
            step += 1
        epoch_losses.append(float(np.mean(losses)))
    progress.end(loss=epoch_losses[-1])
    return epoch_losses


def evaluate_language_model(model: LanguageModel, stream: np.ndarray, *, batch_size: int = 64, bptt: int = 70,
                            device: torch.device | str = "cpu", bf16: bool = False) -> float:
    """Mean next-token cross-entropy (nats) over ``stream``; ``exp`` of it is the perplexity."""
    device = torch.device(device)
    rows = lm_rows(stream, lm_batch_size(len(stream), batch_size, bptt))
    model.to(device).eval()
    total, count, state = 0.0, 0, None
    with torch.inference_mode(), autocast(device, bf16):
        for x, y in lm_batches(rows, bptt_lengths(rows.shape[1] - 1, bptt, None)):
            x, y = x.to(device), y.to(device)
            top, _, state = model[0](x, state)
            total += _lm_loss(model, top, y, bf16).item() * y.numel()
            count += y.numel()
    return total / count


# ----------------------------------------------------------------------------- classifier

def train_classifier(model: TextClassifier, docs: Sequence[np.ndarray], y: np.ndarray, *, epochs: int, lr: float,
                     batch_size: int = 64, device: torch.device | str = "cpu",
                     rng: np.random.Generator | None = None, backwards: bool = False,
                     class_weight: np.ndarray | None = None, sample_weight: np.ndarray | None = None,
                     gradual_unfreezing: bool = True, discriminative_lr: bool = True,
                     slanted_triangular: bool = True, cut_frac: float = 0.1, ratio: float = 32.0,
                     weight_decay: float = 0.01, bf16: bool = False,
                     validation: tuple[Sequence[np.ndarray], np.ndarray] | None = None,
                     n_iter_no_change: int | None = None, loss: str = "cross_entropy",
                     head_warmup_epochs: int = 0, progress: SilentProgress | None = None) -> list[dict]:
    """Trains the classifier (or regressor) head and encoder in ULMFiT's stages; returns one record per epoch.

    With ``gradual_unfreezing`` the top layer group trains alone for an epoch, then one more
    group joins per epoch, then all groups train for ``epochs`` epochs; without it all groups
    train from the start for the same total number of epochs. Every stage has its own slanted
    triangular schedule. Each epoch's record holds its mean training loss and the seconds its
    updates took (validation excluded). ``loss="cross_entropy"`` takes class indices ``y`` (with optional
    ``class_weight``); ``loss="bce"`` a 0/1 indicator matrix of labels (multi-label, one sigmoid
    per label); ``loss="mse"`` real targets ``y`` of shape (n, n_outputs), best standardised.
    With ``validation`` the accuracy (micro-F1, R^2) is measured after every epoch, the
    best weights are restored at the end, and ``n_iter_no_change`` epochs without improvement
    in the last stage stop training early. ``head_warmup_epochs`` > 0 first fits the head alone to
    the frozen encoder's features (:func:`warm_up_head`), before the stages.
    """
    device = torch.device(device)
    rng = rng if rng is not None else np.random.default_rng()
    progress = progress or SilentProgress()
    groups = model.layer_groups()
    n_groups = len(groups)
    stages = unfreezing_stages(n_groups, epochs) if gradual_unfreezing else [(n_groups, n_groups - 1 + epochs)]
    lrs = discriminative_lrs(lr, n_groups) if discriminative_lr else [lr] * n_groups
    optimizer = make_optimizer(groups, lrs, weight_decay)
    class_weight = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32, device=device)
    sample_weight = None if sample_weight is None else torch.as_tensor(sample_weight, dtype=torch.float32)
    losses_by_name = {"cross_entropy": weighted_cross_entropy, "bce": weighted_bce, "mse": weighted_mse}
    if loss not in losses_by_name:
        raise ValueError(f"loss must be one of {sorted(losses_by_name)}, got {loss!r}")
    loss_name, loss_function = loss, losses_by_name[loss]  # (the name loss is the batch's loss below)
    targets = torch.as_tensor(np.asarray(y), dtype=torch.long if loss_name == "cross_entropy" else torch.float32)
    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    model.to(device)

    history: list[dict] = []
    if head_warmup_epochs > 0:
        history += warm_up_head(model, docs, targets, epochs=head_warmup_epochs, lr=lrs[-1], batch_size=batch_size,
                                device=device, rng=rng, backwards=backwards, loss_function=loss_function,
                                class_weight=class_weight, sample_weight=sample_weight, weight_decay=weight_decay,
                                slanted_triangular=slanted_triangular, cut_frac=cut_frac, ratio=ratio, bf16=bf16)
    best_score, best_state, stale = -np.inf, None, 0
    for stage_index, (n_trainable, stage_epochs) in enumerate(stages):
        freeze_to(groups, n_trainable)
        last_stage = stage_index == len(stages) - 1
        if last_stage:
            stale = 0  # n_iter_no_change counts epochs of the final stage only
        epoch_batches = [classifier_batches(lengths, batch_size, rng) for _ in range(stage_epochs)]
        total_steps = sum(len(b) for b in epoch_batches)
        step = 0
        for epoch, batches in enumerate(epoch_batches, start=1):
            model.train()
            label = f"classifier {n_trainable}/{n_groups} groups, epoch {epoch}/{stage_epochs}"
            progress.start(label, len(batches))
            losses, started = [], time.perf_counter()
            for indices in batches:
                ids, doc_lengths = pad_batch(docs, indices, backwards)
                if slanted_triangular:
                    set_stlr(optimizer, step, total_steps, cut_frac, ratio)
                with autocast(device, bf16):
                    logits = model(ids.to(device), doc_lengths.to(device))
                losses.append(_classifier_step(model, optimizer, logits, indices, targets=targets,
                                               loss_function=loss_function, class_weight=class_weight,
                                               sample_weight=sample_weight, what=f"{label}, step {len(losses) + 1}"))
                progress.step(losses[-1])
                step += 1
            record = {"trainable_groups": n_trainable, "loss": float(np.mean(losses)),
                      "seconds": round(time.perf_counter() - started, 3)}
            if validation is not None:
                scores = predict_logits(model, validation[0], batch_size=batch_size, device=device,
                                        backwards=backwards, bf16=bf16)
                metric, score = _validation_score(scores, np.asarray(validation[1]), loss_name)
                record[metric] = score
                if score > best_score:
                    best_score, stale = score, 0
                    best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
                else:
                    stale += 1
            history.append(record)
            progress.end(**{k: v for k, v in record.items() if k not in ("trainable_groups", "seconds")})
            if last_stage and n_iter_no_change is not None and stale >= n_iter_no_change:
                break
    freeze_to(groups, n_groups)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def _classifier_step(module: torch.nn.Module, optimizer: torch.optim.Optimizer, outputs: torch.Tensor,
                     indices: np.ndarray, *, targets: torch.Tensor, loss_function, class_weight: torch.Tensor | None,
                     sample_weight: torch.Tensor | None, what: str) -> float:
    """One update of ``module`` from the ``outputs`` of the batch of documents ``indices``; returns its loss."""
    device = outputs.device
    batch_weight = None if sample_weight is None else sample_weight[indices].to(device)
    loss = loss_function(outputs.float(), targets[indices].to(device), class_weight, batch_weight)
    value = loss.item()
    _check_finite(value, f"classifier loss ({what})")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), CLASSIFIER_CLIP)
    optimizer.step()
    return value


def warm_up_head(model: TextClassifier, docs: Sequence[np.ndarray], targets: torch.Tensor, *, epochs: int,
                 lr: float, batch_size: int, device: torch.device, rng: np.random.Generator, backwards: bool,
                 loss_function, class_weight: torch.Tensor | None, sample_weight: torch.Tensor | None,
                 weight_decay: float, slanted_triangular: bool, cut_frac: float, ratio: float,
                 bf16: bool) -> list[dict]:
    """The head alone fitted to the frozen encoder's pooled features, before gradual unfreezing: the
    linear probe of LP-FT (Kumar et al., 2022), which keeps a randomly initialised head from
    distorting good pretrained features while it is still wrong. The features are computed once,
    without dropout, so each of the ``epochs`` costs next to nothing; with ``slanted_triangular`` one
    schedule spans them all. Returns one record per epoch, marked ``frozen_features``."""
    if len(docs) < 2:  # BatchNorm cannot train on one row
        return []
    features = torch.from_numpy(pooled_features(model, docs, batch_size=batch_size, device=device,
                                                backwards=backwards, bf16=bf16)).to(device)
    head = model[1]
    optimizer = make_optimizer([[head]], [lr], weight_decay)
    batches_per_epoch = max(1, len(docs) // batch_size)  # so that no batch has a single row
    total_steps, step, history = epochs * batches_per_epoch, 0, []
    head.train()
    for _ in range(epochs):
        started, losses = time.perf_counter(), []
        for indices in np.array_split(rng.permutation(len(docs)), batches_per_epoch):
            if slanted_triangular:
                set_stlr(optimizer, step, total_steps, cut_frac, ratio)
            outputs = head(features[indices])
            losses.append(_classifier_step(head, optimizer, outputs, indices, targets=targets,
                                           loss_function=loss_function, class_weight=class_weight,
                                           sample_weight=sample_weight, what=f"head warm-up, step {step + 1}"))
            step += 1
        history.append({"trainable_groups": 1, "frozen_features": True, "loss": float(np.mean(losses)),
                        "seconds": round(time.perf_counter() - started, 3)})
    return history


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, class_weight: torch.Tensor | None = None,
                           sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy averaged with each sample weighted by ``class_weight[target] * sample_weight``.

    The weighted mean (PyTorch's convention for class weights): a sample of weight 2 counts exactly
    as the same sample twice in the batch, and a weight of 0 leaves its label out. A batch whose
    weights are all 0 gives a loss of 0, not NaN.
    """
    if class_weight is None and sample_weight is None:
        return F.cross_entropy(logits, target)
    weight = torch.ones_like(target, dtype=logits.dtype) if class_weight is None else class_weight[target]
    if sample_weight is not None:
        weight = weight * sample_weight
    losses = F.cross_entropy(logits, target, reduction="none")
    return (weight * losses).sum() / weight.sum().clamp_min(torch.finfo(weight.dtype).tiny)


def weighted_mse(outputs: torch.Tensor, target: torch.Tensor, class_weight: None = None,
                 sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Squared error averaged over outputs, then over samples with ``sample_weight`` (as in
    :func:`weighted_cross_entropy`; there are no class weights in regression)."""
    return _weighted_mean((outputs - target).pow(2).mean(dim=1), sample_weight)


def weighted_bce(logits: torch.Tensor, target: torch.Tensor, class_weight: None = None,
                 sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy of one sigmoid per label, averaged over labels, then over samples with
    ``sample_weight`` (multi-label classification)."""
    losses = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=1)
    return _weighted_mean(losses, sample_weight)


def _weighted_mean(losses: torch.Tensor, sample_weight: torch.Tensor | None) -> torch.Tensor:
    if sample_weight is None:
        return losses.mean()
    return (sample_weight * losses).sum() / sample_weight.sum().clamp_min(torch.finfo(losses.dtype).tiny)


def _validation_score(outputs: np.ndarray, y: np.ndarray, loss: str) -> tuple[str, float]:
    """The held-out score that picks the best epoch: accuracy for classes, micro-F1 (at probability
    0.5) for labels, R^2 (all outputs together) for real targets."""
    if loss == "cross_entropy":
        return "valid_accuracy", float(np.mean(outputs.argmax(1) == y))
    if loss == "bce":
        predicted, actual = outputs > 0, y > 0.5
        hits = float((predicted & actual).sum())
        total = float(predicted.sum() + actual.sum())
        return "valid_micro_f1", 2 * hits / total if total else 1.0
    spread = float(((y - y.mean(axis=0)) ** 2).sum())
    return "valid_r2", 1.0 - float(((outputs - y) ** 2).sum()) / spread if spread > 0 else 0.0


def inference_batches(lengths: np.ndarray, max_tokens: int, max_len: int, max_rows: int = 1024,
                      min_rows: int = 1, max_padding: float = 0.1) -> list[np.ndarray]:
    """Length-sorted batches sized by a token budget: many short documents, at least ``min_rows`` long ones.

    A row costs ``min(length, max_len)`` tokens of activations at a time, because BPT3C never
    holds more than ``max_len`` positions of a document. ``min_rows`` keeps the LSTM's matrix
    products wide enough to be efficient when documents are long. Beyond ``min_rows`` a batch only
    takes documents at most ``max_padding`` shorter than its first, so that padding costs little.
    """
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    ascending = lengths[order][::-1]
    batches, start = [], 0
    while start < len(order):
        longest = int(lengths[order[start]])
        by_budget = max_tokens // max(min(longest, max_len), 1)
        close_in_length = len(order) - int(np.searchsorted(ascending, longest * (1 - max_padding))) - start
        rows = max(1, min_rows, min(max_rows, by_budget, close_in_length))
        batches.append(order[start:start + rows])
        start += rows
    return batches


def _classifier_outputs(model: TextClassifier, docs: Sequence[np.ndarray], *, pooled: bool, batch_size: int,
                        device: torch.device | str, backwards: bool, bf16: bool) -> np.ndarray:
    device = torch.device(device)
    _ready_for_prediction(model, device)
    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    width = model.config.emb_size * 3 if pooled else model.n_classes
    result = np.empty((len(docs), width), dtype=np.float32)
    max_tokens = batch_size * min(model.max_len, 400)
    with torch.inference_mode(), autocast(device, bf16):
        batches = inference_batches(lengths, max_tokens, model.max_len, min_rows=max(batch_size, INFERENCE_MIN_ROWS))
        for indices in batches:
            ids, doc_lengths = pad_batch(docs, indices, backwards)
            ids, doc_lengths = ids.to(device), doc_lengths.to(device)
            out = model.pool(ids, doc_lengths) if pooled else model(ids, doc_lengths)
            result[indices] = out.float().cpu().numpy()
    return result


_MODEL_MOVE_LOCK = threading.Lock()


def _ready_for_prediction(model: TextClassifier, device: torch.device) -> None:
    """Puts the model in eval mode on ``device``, the first time only and under a lock: prediction
    itself never changes a module, so threads may then predict with one fitted model at once."""
    with _MODEL_MOVE_LOCK:
        if model.training or not _on_device(model, device):
            model.to(device).eval()


def _on_device(model: torch.nn.Module, device: torch.device) -> bool:
    current = next(model.parameters()).device
    # torch.device("cuda") has no index while a parameter's device has one: "cuda" matches any.
    return current.type == device.type and (device.index is None or current.index == device.index)


def predict_logits(model: TextClassifier, docs: Sequence[np.ndarray], *, batch_size: int = 64,
                   device: torch.device | str = "cpu", backwards: bool = False, bf16: bool = False) -> np.ndarray:
    """Class logits ``(n_docs, n_classes)`` in the order of ``docs``."""
    return _classifier_outputs(model, docs, pooled=False, batch_size=batch_size, device=device,
                               backwards=backwards, bf16=bf16)


def pooled_features(model: TextClassifier, docs: Sequence[np.ndarray], *, batch_size: int = 64,
                    device: torch.device | str = "cpu", backwards: bool = False, bf16: bool = False) -> np.ndarray:
    """Concat-pooled document embeddings ``(n_docs, 3 * emb_size)`` in the order of ``docs``."""
    return _classifier_outputs(model, docs, pooled=True, batch_size=batch_size, device=device,
                               backwards=backwards, bf16=bf16)
