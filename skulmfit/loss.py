"""The language model's softmax loss, fused with its decoder.

``F.cross_entropy(hidden @ weight.T + bias, target)`` materialises the (tokens x vocabulary) logits
in fp32 several times over: the upcast of bf16 logits, the log-softmax, its gradient, and a zero-filled
gradient buffer for the target gather. At the bundled size each is 4,480 x 8,000 floats per batch.
Here the logits are computed once in the compute dtype and
reduced in cache-sized fp32 slices to the loss and, when a gradient is wanted, to the softmax gradient,
which overwrites the logits in the same buffer. No vocabulary-sized tensor is ever allocated in fp32,
and each logit is exponentiated once.
"""
from __future__ import annotations

import math

import torch

# fp32 logits handled at a time. On a CPU, 1 MiB stays in cache, and stays below the size from which
# the C allocator maps fresh pages (whose first touch costs a page fault each); larger slices were
# slower when tried. A GPU wants few, large kernels instead: 128 MiB slices.
_CPU_SLICE_ELEMENTS = 2**18
_GPU_SLICE_ELEMENTS = 2**25


def _row_slices(n_rows: int, vocab_size: int, device: torch.device):
    elements = _CPU_SLICE_ELEMENTS if device.type == "cpu" else _GPU_SLICE_ELEMENTS
    step = max(1, elements // max(1, vocab_size))
    return (slice(start, min(start + step, n_rows)) for start in range(0, n_rows, step))


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, target):
        logits = torch.addmm(bias, hidden, weight.t())
        n_rows, vocab_size = logits.shape
        wants_grad = any(ctx.needs_input_grad[:3])
        losses = torch.empty(n_rows, dtype=torch.float32, device=logits.device)
        grad_bias = torch.zeros(vocab_size, dtype=torch.float32, device=logits.device) if wants_grad else None
        for rows in _row_slices(n_rows, vocab_size, logits.device):
            shifted = logits[rows].float()
            shifted -= shifted.amax(dim=1, keepdim=True)
            target_rows = target[rows].unsqueeze(1)
            target_shifted = shifted.gather(1, target_rows).squeeze(1)
            probs = shifted.exp_()
            normaliser = probs.sum(dim=1)
            losses[rows] = normaliser.log() - target_shifted
            if wants_grad:
                # The gradient for an upstream gradient of n_rows, while this slice is in cache: the
                # logits buffer becomes d(sum of losses)/d(logits), and backward only rescales.
                probs /= normaliser.unsqueeze(1)
                probs.scatter_add_(1, target_rows, probs.new_full(target_rows.shape, -1.0))
                grad_bias += probs.sum(dim=0)
                logits[rows] = probs
        if wants_grad:
            ctx.save_for_backward(hidden, weight, logits, grad_bias)
        return losses.mean()

    @staticmethod
    def backward(ctx, grad_loss):
        hidden, weight, grad_logits, grad_bias = ctx.saved_tensors
        scale = grad_loss / len(hidden)
        grad_hidden = (grad_logits @ weight).mul_(scale) if ctx.needs_input_grad[0] else None
        grad_weight = (grad_logits.t() @ hidden).mul_(scale) if ctx.needs_input_grad[1] else None
        grad_bias = (grad_bias * scale).to(weight.dtype) if ctx.needs_input_grad[2] else None
        return grad_hidden, grad_weight, grad_bias, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, target: torch.Tensor,
                         dtype: torch.dtype | None = None) -> torch.Tensor:
    """Mean ``cross_entropy(hidden @ weight.T + bias, target)`` without fp32 vocabulary-sized tensors.

    Parameters
    ----------
    hidden : Tensor of shape (n, d)
    weight : Tensor of shape (vocab, d)
    bias : Tensor of shape (vocab,)
    target : LongTensor of shape (n,)
    dtype : torch.dtype, optional
        Dtype of the matrix products (``torch.bfloat16`` on the fast path); the log-sum-exp is
        always taken in fp32. Default: ``hidden``'s dtype.

    Returns
    -------
    Tensor
        The scalar loss, in fp32.
    """
    dtype = dtype or hidden.dtype
    if hidden.dim() != 2 or len(hidden) == 0:
        raise ValueError(f"hidden must be a non-empty (n, d) tensor; got shape {tuple(hidden.shape)}")
    if target.dtype != torch.long or target.shape != hidden.shape[:1]:
        raise ValueError(f"target must be a LongTensor of shape {tuple(hidden.shape[:1])}")
    if target.min() < 0 or target.max() >= len(weight):
        raise ValueError(f"target ids must lie in [0, {len(weight)}); got {target.min().item()}..{target.max().item()}")
    return _LinearCrossEntropy.apply(hidden.to(dtype), weight.to(dtype), bias.to(dtype), target)


class SampledSoftmax:
    """The softmax loss over a sample of the vocabulary, for training language models with large
    vocabularies (pretraining, and the language-model fine-tuning inside ``fit``).

    When the decoder dominates a training step (a 16,000-token vocabulary at the bundled size makes
    a step 1.5x slower than 8,000 tokens), each batch scores only its *candidates*: the ids of its
    own targets, which serve as each other's negatives, plus ``n_sampled`` ids drawn uniformly.
    Every candidate's logit is lowered by the log-probability that it was among the candidates
    (sampled softmax with the log-Q correction, Jean et al. 2015), so that frequent words, always
    present, are not favoured over rare ones. The decoder stays tied to the embedding; evaluation
    uses the full softmax.

    Parameters
    ----------
    counts : array-like of shape (vocab,)
        How often each id occurs in the training stream (its unigram frequency).
    n_sampled : int
        Ids drawn uniformly per batch besides the batch's own targets.
    """

    def __init__(self, counts, n_sampled: int):
        counts = torch.as_tensor(counts, dtype=torch.float64)
        if counts.dim() != 1 or (counts < 0).any() or counts.sum() <= 0:
            raise ValueError("counts must be a 1-D array of non-negative counts, not all zero")
        if n_sampled < 1:
            raise ValueError(f"n_sampled must be >= 1, got {n_sampled}")
        self.n_sampled = int(n_sampled)
        # log(1 - p) per id: the log-probability that one target is not this id
        self.log_not_target = torch.log1p(-(counts / counts.sum()).clamp(max=1 - 1e-12))

    def __call__(self, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, target: torch.Tensor,
                 dtype: torch.dtype | None = None) -> torch.Tensor:
        """Mean sampled cross-entropy; arguments as in :func:`linear_cross_entropy`."""
        vocab_size = len(weight)
        if len(self.log_not_target) != vocab_size:
            raise ValueError(f"counts cover {len(self.log_not_target)} ids, the decoder {vocab_size}")
        # A one-token BPTT window flattens to a strided view, which searchsorted would warn about.
        target = target.contiguous()
        drawn = torch.randint(vocab_size, (self.n_sampled,), device=target.device)
        candidates = torch.unique(torch.cat([target, drawn]))  # sorted
        # log P(id is not among the candidates) = len(target) * log(1 - p) + n_sampled * log(1 - 1/vocab)
        log_missed = (len(target) * self.log_not_target.to(target.device)[candidates]
                      + self.n_sampled * math.log1p(-1 / vocab_size))
        log_inclusion = torch.log(-torch.expm1(log_missed)).to(bias.dtype)
        return linear_cross_entropy(hidden, weight[candidates], bias[candidates] - log_inclusion,
                                    torch.searchsorted(candidates, target), dtype)
