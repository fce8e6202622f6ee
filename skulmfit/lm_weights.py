"""A pretrained language model in memory, and its embedding moved onto another vocabulary.

What both loaders produce, skulmfit's own weight files (:mod:`skulmfit.pretrained`) and fastai's
checkpoints (:mod:`skulmfit.fastai_import`), and what fitting a classifier on a target vocabulary
needs of it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .model import AWDLSTMConfig, LanguageModel
from .text import Tokenizer

#: The two copies of the embedding tied to ``0.encoder.weight``: weight files do not store them.
TIED_KEYS = ("0.encoder_dp.emb.weight", "1.decoder.weight")


@dataclass
class PretrainedLM:
    """A language model's sizes, tokenizer, vocabulary and fp32 state dict (all 16 fastai v2 keys)."""

    config: AWDLSTMConfig
    itos: list[str]
    state_dict: dict[str, torch.Tensor]
    backwards: bool = False
    card: dict = field(default_factory=dict)
    tokenizer: Tokenizer = field(default_factory=Tokenizer)

    def build(self) -> LanguageModel:
        """The language model with these weights.

        Returns
        -------
        LanguageModel
        """
        model = LanguageModel(self.config)
        model.load_state_dict(self.state_dict)
        return model


def move_embedding_rows(state_dict: dict[str, torch.Tensor], rows: torch.Tensor,
                        mean_over: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The state dict with embedding row ``i`` (and decoder bias ``i``) taken from old row ``rows[i]``.

    Parameters
    ----------
    state_dict : dict of str to Tensor
        Holds ``0.encoder.weight``; the tied copies and ``1.decoder.bias`` are moved where present.
    rows : Tensor of int
        The old row of each new row; ``-1`` where there is none: such a row starts from the mean
        embedding row and the mean decoder bias (ULMFiT / fastai ``match_embeds``).
    mean_over : Tensor of int, optional
        The old rows the means are taken over; default all.

    Returns
    -------
    dict of str to Tensor
        A new dict; the tied copies point at the same new matrix.
    """
    known = rows >= 0
    old_emb = state_dict["0.encoder.weight"]
    new_emb = (old_emb if mean_over is None else old_emb[mean_over]).mean(0, keepdim=True).repeat(len(rows), 1)
    new_emb[known] = old_emb[rows[known]]
    result = dict(state_dict)
    for key in ("0.encoder.weight",) + TIED_KEYS:
        if key in result:
            result[key] = new_emb
    if "1.decoder.bias" in result:
        old_bias = state_dict["1.decoder.bias"]
        new_bias = (old_bias if mean_over is None else old_bias[mean_over]).mean().repeat(len(rows))
        new_bias[known] = old_bias[rows[known]]
        result["1.decoder.bias"] = new_bias
    return result


def match_embeddings(state_dict: dict[str, torch.Tensor], old_itos: list[str],
                     new_itos: list[str]) -> dict[str, torch.Tensor]:
    """Re-indexes the embedding and decoder bias from ``old_itos`` to ``new_itos``.

    Parameters
    ----------
    state_dict : dict of str to Tensor
    old_itos, new_itos : list of str

    Returns
    -------
    dict of str to Tensor
        A new state dict; tokens the pretrained vocabulary lacks start from the mean embedding row
        and the mean decoder bias (see :func:`move_embedding_rows`).
    """
    old_index = {token: i for i, token in enumerate(old_itos)}
    return move_embedding_rows(state_dict, torch.tensor([old_index.get(t, -1) for t in new_itos]))
