"""AWD-LSTM (Merity et al. 2017) and the ULMFiT language-model and classifier heads.

Module and parameter names follow fastai v2 (``fastai/text/models/awdlstm.py``) so that a fastai
state dict maps one-to-one onto these modules: a language model is ``Sequential(AWDLSTM,
LinearDecoder)`` with keys ``0.encoder.weight``, ``0.rnns.0.weight_hh_l0_raw``,
``0.rnns.0.module.weight_ih_l0``, ..., ``1.decoder.weight``, ``1.decoder.bias``.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from .vocab import PAD_ID


@dataclass(frozen=True)
class AWDLSTMConfig:
    """Sizes and dropout probabilities of an AWD-LSTM.

    The dropout defaults are fastai v2's ``awd_lstm_lm_config``; :meth:`for_classifier` gives
    ``awd_lstm_clas_config``. ``drop_mult`` scales all five at once (:meth:`scaled`).
    """

    vocab_size: int
    emb_size: int = 400
    hidden_size: int = 1152
    n_layers: int = 3
    output_p: float = 0.1
    hidden_p: float = 0.15
    input_p: float = 0.25
    embed_p: float = 0.02
    weight_p: float = 0.2

    def scaled(self, drop_mult: float) -> "AWDLSTMConfig":
        return replace(self, **{name: getattr(self, name) * drop_mult for name in DROPOUT_FIELDS})

    def for_classifier(self) -> "AWDLSTMConfig":
        return replace(self, output_p=0.4, hidden_p=0.3, input_p=0.4, embed_p=0.05, weight_p=0.5)

    def sizes(self) -> dict:
        """The shape-defining fields only (what a checkpoint must record)."""
        return {k: v for k, v in asdict(self).items() if k not in DROPOUT_FIELDS}


#: :class:`AWDLSTMConfig`'s fields that define the shapes of the weights, and its dropout probabilities.
SIZE_FIELDS = ("vocab_size", "emb_size", "hidden_size", "n_layers")
DROPOUT_FIELDS = ("output_p", "hidden_p", "input_p", "embed_p", "weight_p")


class RNNDropout(nn.Module):
    """Variational (locked) dropout: one mask per call, shared over all its time steps.

    A classifier reading a document in chunks draws one per chunk, as fastai does; only the
    DropConnect mask is held for the whole document batch (:meth:`AWDLSTM.one_weight_mask`).
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (batch, time, features)
        if not self.training or self.p == 0.0:
            return x
        mask = x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1 - self.p) / (1 - self.p)
        return x * mask


class EmbeddingDropout(nn.Module):
    """Drops whole word vectors: a dropped word is zero wherever it occurs in the batch."""

    def __init__(self, emb: nn.Embedding, p: float):
        super().__init__()
        self.emb = emb
        self.p = p

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        weight = self.emb.weight
        if self.training and self.p > 0.0:
            mask = weight.new_empty(weight.size(0), 1).bernoulli_(1 - self.p) / (1 - self.p)
            weight = weight * mask
        return F.embedding(ids, weight, self.emb.padding_idx)


# cuDNN warns that a weight passed to the LSTM kernel is not in the module's flat buffer; with
# DropConnect that copy is intended. Filtered once here: warnings.catch_warnings() around each call
# would rewrite the global filters from every predicting thread.
warnings.filterwarnings("ignore", message="RNN module weights are not part")
# What nn.LSTM.forward calls; WeightDropout calls it with the weights given, not read from a module.
_lstm_kernel = torch._VF.lstm


class WeightDropout(nn.Module):
    """DropConnect on an LSTM's hidden-to-hidden matrix.

    The trainable matrix lives here as ``weight_hh_l0_raw``. Each forward passes the LSTM's
    weights, with a dropped copy of that matrix in training, straight to torch's fused LSTM
    kernel: nothing is assigned to any module during a forward, so one model can predict from
    several threads at once. The wrapped LSTM only keeps an empty placeholder where its
    ``weight_hh_l0`` was (``nn.LSTM`` looks the name up when moved between devices). Each
    training forward draws a new mask, except inside :meth:`one_mask`.
    """

    def __init__(self, module: nn.LSTM, p: float):
        super().__init__()
        if module.num_layers != 1 or module.bidirectional or not module.batch_first or module.proj_size:
            raise ValueError("WeightDropout wraps a single-layer, unidirectional, batch-first LSTM")
        self.module = module
        self.p = p
        raw = module.weight_hh_l0
        del module._parameters["weight_hh_l0"]
        self.weight_hh_l0_raw = nn.Parameter(raw.detach().clone())
        self._shared_weight = None
        self._release_weight()

    def _release_weight(self) -> None:
        self.module.weight_hh_l0 = self.weight_hh_l0_raw.new_empty(0)

    def dropped_weight(self) -> torch.Tensor:
        """The raw matrix with a fresh DropConnect mask (training), or the raw matrix itself (eval)."""
        raw = self.weight_hh_l0_raw
        if not self.training or self.p == 0.0:
            return raw
        # A uniform draw compared with p is cheaper than bernoulli_ on a CPU.
        keep = torch.rand_like(raw).ge_(self.p).div_(1 - self.p)
        return raw * keep

    @contextlib.contextmanager
    def one_mask(self):
        """Every training forward inside uses the same dropped matrix, as for one long sequence.

        Merity et al. keep the dropped weights for a whole forward and backward pass; a classifier
        reading a document in chunks therefore draws one mask per document batch, not per chunk.
        (Training only: it sets an attribute, which prediction must never do.)
        """
        self._shared_weight = self.dropped_weight()
        try:
            yield
        finally:
            self._shared_weight = None

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        lstm = self.module
        shared = self._shared_weight if self.training else None
        weights = [lstm.weight_ih_l0, shared if shared is not None else self.dropped_weight()]
        if lstm.bias:
            weights += [lstm.bias_ih_l0, lstm.bias_hh_l0]
        if state is None:
            zeros = x.new_zeros(1, x.size(0), lstm.hidden_size)
            state = (zeros, zeros)
        output, h, c = _lstm_kernel(x, state, weights, lstm.bias, 1, 0.0, self.training, False, True)
        return output, (h, c)

    def _apply(self, fn, recurse=True):
        # .to()/.half() must also move the placeholder, or the LSTM would see mixed devices.
        result = super()._apply(fn, recurse)
        self._release_weight()
        return result


class AWDLSTM(nn.Module):
    """Embedding, ``n_layers`` single-layer LSTMs with DropConnect, and locked dropouts between.

    The last LSTM's width is ``emb_size`` so the decoder can share the embedding matrix.
    :meth:`forward` returns the top layer's output (before output dropout), the raw outputs of
    every layer and the final hidden state of every layer.
    """

    def __init__(self, config: AWDLSTMConfig):
        super().__init__()
        c = config
        self.config = c
        self.encoder = nn.Embedding(c.vocab_size, c.emb_size, padding_idx=PAD_ID)
        self.encoder.weight.data.uniform_(-0.1, 0.1)
        self.encoder.weight.data[PAD_ID] = 0.0
        self.encoder_dp = EmbeddingDropout(self.encoder, c.embed_p)
        sizes = [c.emb_size] + [c.hidden_size] * (c.n_layers - 1) + [c.emb_size]
        self.rnns = nn.ModuleList(
            WeightDropout(nn.LSTM(sizes[i], sizes[i + 1], 1, batch_first=True), c.weight_p)
            for i in range(c.n_layers)
        )
        self.input_dp = RNNDropout(c.input_p)
        self.hidden_dps = nn.ModuleList(RNNDropout(c.hidden_p) for _ in range(c.n_layers - 1))

    def forward(self, ids: torch.Tensor, state: list | None = None, embedding_scale: torch.Tensor | None = None):
        x = self.encoder_dp(ids)
        if embedding_scale is not None:  # (batch, time, 1): scaled inputs, for integrated gradients
            x = x * embedding_scale
        x = self.input_dp(x)
        raw_outputs, new_state = [], []
        for layer, rnn in enumerate(self.rnns):
            x, layer_state = rnn(x, None if state is None else state[layer])
            raw_outputs.append(x)
            new_state.append(layer_state)
            if layer < len(self.hidden_dps):
                x = self.hidden_dps[layer](x)
        return x, raw_outputs, new_state

    @contextlib.contextmanager
    def one_weight_mask(self):
        """Every forward inside uses one DropConnect mask per layer (see :meth:`WeightDropout.one_mask`)."""
        with contextlib.ExitStack() as masks:
            for rnn in self.rnns:
                masks.enter_context(rnn.one_mask())
            yield

    def layer_groups(self) -> list[list[nn.Module]]:
        """Bottom-up groups for discriminative learning rates: embedding, then each LSTM."""
        return [[self.encoder]] + [[rnn] for rnn in self.rnns]


class LinearDecoder(nn.Module):
    """Output dropout then a linear layer whose weight is tied to the embedding."""

    def __init__(self, embedding: nn.Embedding, output_p: float):
        super().__init__()
        self.output_dp = RNNDropout(output_p)
        self.decoder = nn.Linear(embedding.embedding_dim, embedding.num_embeddings)
        self.decoder.weight = embedding.weight
        nn.init.zeros_(self.decoder.bias)

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dropped = self.output_dp(hidden)
        return self.decoder(dropped), dropped


class LanguageModel(nn.Sequential):
    """``Sequential(AWDLSTM, LinearDecoder)``; ``self[0]`` is the encoder, ``self[1]`` the decoder."""

    def __init__(self, config: AWDLSTMConfig):
        encoder = AWDLSTM(config)
        super().__init__(encoder, LinearDecoder(encoder.encoder, config.output_p))

    @property
    def config(self) -> AWDLSTMConfig:
        return self[0].config

    def forward(self, ids: torch.Tensor, state: list | None = None):
        """Returns logits (batch, time, vocab), the dropped top output, raw top output, new state."""
        top, raw_outputs, new_state = self[0](ids, state)
        logits, dropped = self[1](top)
        return logits, dropped, raw_outputs[-1], new_state

    def layer_groups(self) -> list[list[nn.Module]]:
        """fastai's LM split: each LSTM, then embedding + decoder (the decoder shares its weight)."""
        encoder = self[0]
        return [[rnn] for rnn in encoder.rnns] + [[encoder.encoder, self[1]]]


class PoolingClassifierHead(nn.Module):
    """Two linear blocks (BatchNorm, dropout, Linear) with ReLU between, on concat-pooled features."""

    def __init__(self, in_features: int, n_classes: int, hidden: int = 50, ps: tuple[float, float] = (0.4, 0.1)):
        super().__init__()
        self.layers = nn.Sequential(
            nn.BatchNorm1d(in_features),
            nn.Dropout(ps[0]),
            nn.Linear(in_features, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(hidden),
            nn.Dropout(ps[1]),
            nn.Linear(hidden, n_classes, bias=False),
        )

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.layers(pooled)


class TextClassifier(nn.Sequential):
    """``Sequential(AWDLSTM, PoolingClassifierHead)`` reading documents with BPT3C.

    Parameters
    ----------
    config : AWDLSTMConfig
    n_classes : int
    bptt : int
        Chunk length for the part of a document that keeps activations for backpropagation.
    max_len : int
        Only the last ``max_len`` tokens of each document are pooled and backpropagated through;
        earlier tokens only carry the hidden state forward, without gradient, so memory stays
        bounded however long the document is.
    """

    def __init__(self, config: AWDLSTMConfig, n_classes: int, bptt: int = 70, max_len: int = 1400,
                 head_hidden: int = 50):
        encoder = AWDLSTM(config)
        head = PoolingClassifierHead(3 * config.emb_size, n_classes, head_hidden, (config.output_p, 0.1))
        super().__init__(encoder, head)
        self.bptt = bptt
        self.max_len = max_len

    @property
    def config(self) -> AWDLSTMConfig:
        return self[0].config

    @property
    def n_classes(self) -> int:
        """Outputs of the head: classes, labels or regression targets."""
        return self[1].layers[-1].out_features

    def spec(self) -> dict:
        """The model as plain values and CPU tensors, which :meth:`from_spec` rebuilds.

        Returns
        -------
        dict
            ``config`` (every field of :class:`AWDLSTMConfig`), ``n_classes``, ``bptt``,
            ``max_len`` and ``state_dict``.
        """
        return {"config": asdict(self.config), "n_classes": self.n_classes, "bptt": self.bptt,
                "max_len": self.max_len, "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}

    @classmethod
    def from_spec(cls, spec: dict) -> TextClassifier:
        """The model a :meth:`spec` describes, in eval mode.

        Parameters
        ----------
        spec : dict
            As :meth:`spec` gives it.

        Returns
        -------
        TextClassifier
        """
        model = cls(AWDLSTMConfig(**spec["config"]), spec["n_classes"], spec["bptt"], spec["max_len"])
        model.load_state_dict(spec["state_dict"])
        return model.eval()

    def layer_groups(self) -> list[list[nn.Module]]:
        """fastai's classifier split: embedding, each LSTM, head."""
        return self[0].layer_groups() + [[self[1]]]

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, embedding_scale: torch.Tensor | None = None
                ) -> torch.Tensor:
        return self[1](self.pool(ids, lengths, embedding_scale))

    def pool(self, ids: torch.Tensor, lengths: torch.Tensor, embedding_scale: torch.Tensor | None = None
             ) -> torch.Tensor:
        """Concat pooling ``[last hidden state, max, mean]`` over each document's last ``max_len`` tokens.

        ``embedding_scale`` (batch, time, 1), optional, multiplies each input embedding: its gradient
        at a position is the output's gradient with respect to that embedding, dotted with it (what
        integrated gradients sum; see :mod:`skulmfit.explain`).

        ``ids`` (batch, time) is padded at the end and its rows are sorted by ``lengths``, longest
        first (see :func:`skulmfit.batching.classifier_batches`), so the documents still running
        at any position are a prefix of the batch and finished ones drop out of the computation.
        """
        lengths_list = lengths.tolist()
        if any(a < b for a, b in zip(lengths_list, lengths_list[1:])) or lengths_list[-1] < 1:
            raise ValueError("rows must be sorted by length, longest first, and be non-empty")
        encoder = self[0]
        n_rows, total = ids.shape
        window_start = (lengths - self.max_len).clamp(min=0)
        window_list = window_start.tolist()
        last = max_pool = sum_pool = None
        state, n_active, pos = None, n_rows, 0
        # One DropConnect mask per document batch in training; prediction changes no module.
        with encoder.one_weight_mask() if encoder.training else contextlib.nullcontext():
            while pos < lengths_list[0]:
                while lengths_list[n_active - 1] <= pos:
                    n_active -= 1
                if state is not None and state[0][0].size(1) != n_active:
                    state = [(h[:, :n_active], c[:, :n_active]) for h, c in state]
                # Before the shortest running row's window nothing is kept: run without gradient,
                # in long chunks (as long as max_len), stopping exactly where a window starts.
                first_window = window_list[n_active - 1]
                keeps_grad = pos >= first_window
                end = min(pos + self.bptt, total) if keeps_grad else min(pos + max(self.max_len, self.bptt), first_window)
                with torch.set_grad_enabled(keeps_grad and torch.is_grad_enabled()):
                    scale = None if embedding_scale is None else embedding_scale[:n_active, pos:end]
                    out, _, state = encoder(ids[:n_active, pos:end], state, scale)
                if keeps_grad:
                    out = out.to(torch.promote_types(out.dtype, torch.float32))  # pool bf16 in fp32
                    last, max_pool, sum_pool = self._update_pools(
                        out, pos, lengths[:n_active], window_start[:n_active], last, max_pool, sum_pool, n_rows)
                pos = end
        mean_pool = sum_pool / (lengths - window_start).unsqueeze(1).to(sum_pool.dtype)
        return torch.cat([last, max_pool, mean_pool], dim=1)

    @staticmethod
    def _update_pools(out, pos, lengths, window_start, last, max_pool, sum_pool, n_rows):
        n_active, chunk_len, width = out.shape
        if last is None:
            last = out.new_zeros(n_rows, width)
            max_pool = out.new_full((n_rows, width), float("-inf"))
            sum_pool = out.new_zeros(n_rows, width)
        positions = torch.arange(pos, pos + chunk_len, device=out.device)
        keep = (positions >= window_start.unsqueeze(1)) & (positions < lengths.unsqueeze(1))
        chunk_max = out.masked_fill(~keep.unsqueeze(2), float("-inf")).amax(dim=1)
        chunk_sum = (out * keep.unsqueeze(2)).sum(dim=1)
        last_index = (lengths - 1 - pos).clamp(0, chunk_len - 1)
        ends_here = (lengths <= pos + chunk_len).unsqueeze(1)
        chunk_last = torch.where(ends_here, out[torch.arange(n_active, device=out.device), last_index], last[:n_active])
        # Out-of-place updates: autograd needs the earlier values.
        last = torch.cat([chunk_last, last[n_active:]])
        max_pool = torch.cat([torch.maximum(max_pool[:n_active], chunk_max), max_pool[n_active:]])
        sum_pool = torch.cat([sum_pool[:n_active] + chunk_sum, sum_pool[n_active:]])
        return last, max_pool, sum_pool
