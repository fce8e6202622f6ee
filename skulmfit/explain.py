"""Which tokens drove a prediction: integrated gradients on the input embeddings.

For a text with embeddings ``e_1 .. e_T`` and a model output ``F`` (the log-probability of the
explained class, or a regression output), the attribution of token ``t`` is

    (e_t - 0) . integral over a in [0, 1] of dF/de_t (a * e)  da

(Sundararajan et al. 2017, from the all-zero embedding), estimated by the midpoint rule over
``steps`` scales. The model reads ``a * e`` through a per-position scale of its embeddings, whose
gradient is exactly ``dF/de_t . e_t``, so one backward pass per batch gives every token's term.
The attributions of a text sum to about ``F(e) - F(0)``. ``steps=1`` is gradient x input at the
midpoint, ``a = 0.5``.

Every step of every text is a row of one batch; rows are grouped so that a batch holds at most
``max_rows`` of them. Only each text's last ``max_len`` tokens get attributions (earlier tokens only
carry the model's state, without gradient), so memory is bounded for any length. A bidirectional
model's attributions are the mean of the two directions'.
"""
from __future__ import annotations

import html
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from .batching import pad_batch
from .training import autocast


@dataclass
class Explanation:
    """The tokens of one text and the attribution of each to the explained output.

    Attributes
    ----------
    text : str
    tokens : list of str
        The model's tokens, ``xxbos`` first (subword pieces for a subword model).
    scores : ndarray of shape (len(tokens),)
        Positive: the token pushed the output up; negative: down.
    target : object
        The class (or regression output index) explained.
    value : float
        The explained output for the text: the class probability, or the predicted value.
    """

    text: str
    tokens: list
    scores: np.ndarray
    target: object
    value: float

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` tokens of largest attribution, largest first."""
        order = np.argsort(-self.scores)[:k]
        return [(self.tokens[i], float(self.scores[i])) for i in order]

    def __str__(self) -> str:
        words = " ".join(f"{token}[{score:+.2f}]" for token, score in zip(self.tokens, self.scores))
        return f"target {self.target!r} ({self.value:.3f}): {words}"

    def _repr_html_(self) -> str:
        """Tokens on a background green where they push the output up, red where down (Jupyter)."""
        extent = float(np.abs(self.scores).max()) or 1.0
        spans = []
        for token, score in zip(self.tokens, self.scores):
            colour = "0,160,0" if score >= 0 else "200,0,0"
            alpha = min(1.0, abs(float(score)) / extent)
            spans.append(f'<span title="{score:+.3f}" style="background: rgba({colour},{alpha:.2f}); '
                         f'padding: 1px 2px; border-radius: 3px">{html.escape(token)}</span>')
        return (f"<div><b>{html.escape(repr(self.target))}</b> ({self.value:.3f})<br>"
                + " ".join(spans) + "</div>")


def check_steps(steps) -> None:
    """``steps`` must be a whole number of scales, at least 1 (refused by name before any work)."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")


def integrated_gradients(model, docs: list[np.ndarray], targets: np.ndarray, *, output: str, steps: int = 20,
                         backwards: bool = False, device: torch.device = torch.device("cpu"), bf16: bool = False,
                         max_rows: int = 256) -> list[np.ndarray]:
    """Attribution of every token of each document (in reading order of ``docs``) to ``output``
    (``"log_softmax"``, ``"log_sigmoid"`` or ``"identity"``) of the head unit ``targets[i]``."""
    check_steps(steps)
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps  # midpoint rule
    order = np.argsort([-len(d) for d in docs], kind="stable")  # pool() wants rows longest first
    per_batch = max(1, max_rows // steps)
    results: list[np.ndarray | None] = [None] * len(docs)
    for start in range(0, len(order), per_batch):
        chosen = order[start:start + per_batch]
        ids, lengths = pad_batch(docs, np.repeat(chosen, steps), backwards)
        scale = alphas.repeat(len(chosen)).view(-1, 1, 1).expand(-1, ids.size(1), 1).contiguous()
        scale = scale.to(device).requires_grad_(True)
        with autocast(device, bf16):
            outputs = model(ids.to(device), lengths.to(device), scale).float()
        if output == "log_softmax":
            outputs = torch.log_softmax(outputs, dim=1)
        elif output == "log_sigmoid":
            outputs = torch.nn.functional.logsigmoid(outputs)
        units = torch.as_tensor(np.repeat(targets[chosen], steps), device=device)
        explained = outputs.gather(1, units.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(explained, scale)
        grad = grad.squeeze(2).view(len(chosen), steps, -1).mean(dim=1).float().cpu().numpy()
        for row, i in enumerate(chosen):
            attribution = grad[row, :len(docs[i])]
            results[i] = attribution[::-1].copy() if backwards else attribution
    return results
