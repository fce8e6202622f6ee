"""Tests of the AWD-LSTM modules, the heads and BPT3C pooling (skulmfit/model.py)."""
import copy
import io
import pickle
import time

import numpy as np
import pytest
import torch
from torch import nn

import skulmfit.model as model_module
from skulmfit.model import (
    PAD_ID,
    AWDLSTM,
    AWDLSTMConfig,
    EmbeddingDropout,
    LanguageModel,
    RNNDropout,
    TextClassifier,
    WeightDropout,
)



def tiny_config(n_layers=3, **kw):
    return AWDLSTMConfig(vocab_size=50, emb_size=10, hidden_size=24, n_layers=n_layers, **kw)


def random_ids(batch, time_steps, seed=0, low=2, high=50):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (batch, time_steps), generator=g)


# ----------------------------------------------------------------------------- state dict layout

FASTAI_LM_KEYS = (
    ["0.encoder.weight", "0.encoder_dp.emb.weight"]
    + [f"0.rnns.{i}.{name}" for i in range(3) for name in (
        "weight_hh_l0_raw", "module.weight_ih_l0", "module.bias_ih_l0", "module.bias_hh_l0")]
    + ["1.decoder.weight", "1.decoder.bias"]
)


def test_lm_state_dict_keys_match_fastai_v2_layout():
    torch.manual_seed(0)
    lm = LanguageModel(tiny_config())
    keys = list(lm.state_dict().keys())
    assert len(FASTAI_LM_KEYS) == 16
    assert sorted(keys) == sorted(FASTAI_LM_KEYS)
    # The dropped copy handed to the LSTM must never end up in a checkpoint (fastai v1's extra key).
    assert not any(k.endswith("module.weight_hh_l0") for k in keys)


def test_lm_state_dict_shapes_three_layers():
    torch.manual_seed(0)
    vocab, emb, hid = 50, 10, 24
    sd = LanguageModel(AWDLSTMConfig(vocab_size=vocab, emb_size=emb, hidden_size=hid, n_layers=3)).state_dict()
    expected = {
        "0.encoder.weight": (vocab, emb),
        "0.encoder_dp.emb.weight": (vocab, emb),
        "1.decoder.weight": (vocab, emb),
        "1.decoder.bias": (vocab,),
    }
    in_sizes, out_sizes = [emb, hid, hid], [hid, hid, emb]  # last LSTM width = emb size
    for i, (n_in, n_out) in enumerate(zip(in_sizes, out_sizes)):
        expected[f"0.rnns.{i}.weight_hh_l0_raw"] = (4 * n_out, n_out)
        expected[f"0.rnns.{i}.module.weight_ih_l0"] = (4 * n_out, n_in)
        expected[f"0.rnns.{i}.module.bias_ih_l0"] = (4 * n_out,)
        expected[f"0.rnns.{i}.module.bias_hh_l0"] = (4 * n_out,)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected


def test_lm_loads_a_state_dict_of_the_same_layout_strictly():
    torch.manual_seed(0)
    src, dst = LanguageModel(tiny_config()), LanguageModel(tiny_config())
    dst.load_state_dict(src.state_dict(), strict=True)
    src.eval(), dst.eval()
    ids = random_ids(2, 9)
    assert torch.equal(src(ids)[0], dst(ids)[0])
    assert dst[1].decoder.weight is dst[0].encoder.weight


def test_decoder_weight_is_the_embedding_tensor():
    torch.manual_seed(0)
    lm = LanguageModel(tiny_config())
    assert lm[1].decoder.weight is lm[0].encoder.weight
    assert lm[0].encoder_dp.emb is lm[0].encoder
    # Still tied after an optimizer step.
    opt = torch.optim.SGD(lm.parameters(), lr=0.1)
    lm.train()
    logits = lm(random_ids(3, 8))[0]
    logits.sum().backward()
    opt.step()
    assert lm[1].decoder.weight is lm[0].encoder.weight
    # Each tensor counted once by parameters().
    n_unique = len({id(p) for p in lm.parameters()})
    assert n_unique == len(list(lm.parameters())) == 14  # 16 state-dict keys, 2 aliases


def test_embedding_init_and_pad_row_zero():
    torch.manual_seed(0)
    enc = AWDLSTM(tiny_config())
    w = enc.encoder.weight
    assert torch.all(w[PAD_ID] == 0)
    others = torch.cat([w[:PAD_ID], w[PAD_ID + 1:]])
    assert others.abs().max() <= 0.1 and others.abs().max() > 0.05
    assert enc.encoder.padding_idx == PAD_ID


def test_forward_shapes_lm_and_encoder():
    torch.manual_seed(0)
    cfg = tiny_config()
    lm = LanguageModel(cfg).train()
    ids = random_ids(4, 7)
    logits, dropped, raw, state = lm(ids)
    assert logits.shape == (4, 7, cfg.vocab_size)
    assert dropped.shape == raw.shape == (4, 7, cfg.emb_size)
    assert len(state) == 3
    widths = [cfg.hidden_size, cfg.hidden_size, cfg.emb_size]
    for (h, c), width in zip(state, widths):
        assert h.shape == c.shape == (1, 4, width)
    top, raw_outputs, _ = lm[0](ids)
    assert [r.shape[-1] for r in raw_outputs] == widths


def test_lm_state_carries_over_like_one_pass():
    torch.manual_seed(0)
    lm = LanguageModel(tiny_config()).eval()
    ids = random_ids(2, 12)
    with torch.no_grad():
        full = lm(ids)[0]
        first, _, _, state = lm(ids[:, :5])
        second = lm(ids[:, 5:], state)[0]
    torch.testing.assert_close(torch.cat([first, second], 1), full, atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------- dropouts

def test_rnn_dropout_mask_shared_over_time_and_scaled():
    torch.manual_seed(0)
    p = 0.5
    drop = RNNDropout(p).train()
    x = torch.ones(6, 9, 20)
    out = drop(x)
    # Every time step of a row is identical.
    assert torch.equal(out, out[:, :1, :].expand_as(out))
    values = set(out.unique().tolist())
    assert values <= {0.0, 1 / (1 - p)}
    assert values == {0.0, 1 / (1 - p)}
    frac_zero = (out[:, 0] == 0).float().mean().item()
    assert 0.3 < frac_zero < 0.7
    # Different rows get different masks.
    assert not all(torch.equal(out[0, 0], out[i, 0]) for i in range(1, 6))


def test_rnn_dropout_eval_and_zero_p_are_identity():
    x = torch.randn(3, 4, 5)
    assert torch.equal(RNNDropout(0.5).eval()(x), x)
    assert torch.equal(RNNDropout(0.0).train()(x), x)


def test_embedding_dropout_drops_whole_words():
    torch.manual_seed(0)
    emb = nn.Embedding(50, 8, padding_idx=PAD_ID)
    with torch.no_grad():
        emb.weight.uniform_(0.5, 1.0)  # no entry is zero by chance
        emb.weight[PAD_ID] = 0.0
    p = 0.5
    drop = EmbeddingDropout(emb, p).train()
    ids = torch.arange(50).repeat(4, 3)[:, torch.randperm(150)]  # every word several times per row
    out = drop(ids)
    assert out.shape == (4, 150, 8)
    dropped, kept = 0, 0
    for word in range(50):
        vectors = out[ids == word]  # (occurrences, 8)
        if word == PAD_ID:
            assert torch.all(vectors == 0)
            continue
        if torch.all(vectors == 0):
            dropped += 1
        else:
            kept += 1
            expected = (emb.weight[word] / (1 - p)).expand_as(vectors)
            torch.testing.assert_close(vectors, expected)
    assert dropped > 5 and kept > 5
    # Eval: a plain lookup.
    drop.eval()
    assert torch.equal(drop(ids), emb(ids))


def test_pad_row_gets_no_gradient_through_the_embedding():
    # Only the input side: in a language model the tied decoder legitimately trains that row.
    torch.manual_seed(0)
    enc = AWDLSTM(tiny_config()).train()
    ids = random_ids(3, 10)
    ids[:, -3:] = PAD_ID
    top, _, _ = enc(ids)
    top.sum().backward()
    grad = enc.encoder.weight.grad
    assert torch.all(grad[PAD_ID] == 0)
    assert grad[ids[0, 0]].abs().sum() > 0
    assert torch.all(enc.encoder.weight[PAD_ID] == 0)


def _wrapped_lstm(n_in=8, n_out=16, p=0.5, seed=0):
    torch.manual_seed(seed)
    lstm = nn.LSTM(n_in, n_out, 1, batch_first=True)
    reference = copy.deepcopy(lstm)
    return WeightDropout(lstm, p), reference


def test_weight_dropout_parameters_and_layout():
    wd, reference = _wrapped_lstm()
    names = dict(wd.named_parameters())
    assert set(names) == {"weight_hh_l0_raw", "module.weight_ih_l0", "module.bias_ih_l0", "module.bias_hh_l0"}
    assert torch.equal(wd.weight_hh_l0_raw, reference.weight_hh_l0)


def test_weight_dropout_eval_equals_plain_lstm():
    wd, reference = _wrapped_lstm()
    wd.eval()
    x = torch.randn(3, 11, 8)
    h0 = (torch.randn(1, 3, 16), torch.randn(1, 3, 16))
    with torch.no_grad():
        out, (h, c) = wd(x)
        ref_out, (ref_h, ref_c) = reference(x)
        torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(h, ref_h, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(c, ref_c, atol=1e-6, rtol=1e-5)
        out2, _ = wd(x, h0)
        ref_out2, _ = reference(x, h0)
        torch.testing.assert_close(out2, ref_out2, atol=1e-6, rtol=1e-5)
    # Eval is deterministic.
    assert torch.equal(wd(x)[0], wd(x)[0])


def hidden_weights_seen(monkeypatch) -> list:
    """Records the hidden-to-hidden matrix of every call of the LSTM kernel."""
    seen = []
    kernel = model_module._lstm_kernel

    def recording(x, state, weights, *args):
        seen.append(weights[1].detach().clone())
        return kernel(x, state, weights, *args)
    monkeypatch.setattr(model_module, "_lstm_kernel", recording)
    return seen


def test_weight_dropout_training_drops_about_p_and_gradient_reaches_raw(monkeypatch):
    p = 0.5
    wd, _ = _wrapped_lstm(n_in=8, n_out=32, p=p)
    wd.train()
    seen = hidden_weights_seen(monkeypatch)
    x = torch.randn(4, 6, 8)
    out, _ = wd(x)
    assert len(seen) == 1
    effective = seen[0]
    raw = wd.weight_hh_l0_raw.detach()
    assert effective.shape == raw.shape == (128, 32)
    zero = effective == 0
    frac = zero.float().mean().item()
    assert abs(frac - p) < 0.05, frac
    torch.testing.assert_close(effective[~zero], raw[~zero] / (1 - p))
    out.pow(2).sum().backward()
    grad = wd.weight_hh_l0_raw.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert torch.all(grad[zero] == 0)  # dropped entries get no gradient
    assert (grad[~zero] != 0).float().mean() > 0.9
    # The forward assigns nothing: the LSTM keeps its empty placeholder.
    assert wd.module.weight_hh_l0.numel() == 0


def test_weight_dropout_training_output_differs_from_eval_and_between_calls():
    wd, _ = _wrapped_lstm(p=0.5)
    x = torch.randn(2, 7, 8)
    with torch.no_grad():
        wd.eval()
        ev = wd(x)[0]
        wd.train()
        a, b = wd(x)[0], wd(x)[0]
    assert not torch.allclose(a, ev)
    assert not torch.allclose(a, b)


def test_weight_dropout_one_mask_shares_the_dropped_weight_across_calls(monkeypatch):
    wd, _ = _wrapped_lstm(n_in=8, n_out=32, p=0.5)
    wd.train()
    seen = hidden_weights_seen(monkeypatch)
    x = torch.randn(2, 5, 8)
    with wd.one_mask():
        out1, state = wd(x)
        out2, _ = wd(x, state)
    wd(x)
    assert torch.equal(seen[0], seen[1])
    assert not torch.equal(seen[1], seen[2])  # outside the context each call draws again
    (out1.sum() + out2.sum()).backward()  # one graph through both calls reaches the raw weight
    grad = wd.weight_hh_l0_raw.grad
    assert torch.all(grad[seen[0] == 0] == 0) and grad.abs().sum() > 0
    assert wd._shared_weight is None and wd.module.weight_hh_l0.numel() == 0


def test_classifier_draws_one_weight_mask_per_batch_not_per_chunk(monkeypatch):
    torch.manual_seed(0)
    model = TextClassifier(tiny_config(n_layers=2), 2, bptt=4, max_len=20).train()
    seen = hidden_weights_seen(monkeypatch)
    model(random_ids(2, 13), torch.tensor([13, 10]))
    first_layer = seen[::2]  # the kernel runs layer 0, then layer 1, for each chunk
    assert len(first_layer) == 4  # 13 tokens in chunks of 4
    assert all(torch.equal(first_layer[0], w) for w in first_layer[1:])


def test_prediction_assigns_nothing_to_any_module():
    torch.manual_seed(0)
    model = TextClassifier(tiny_config(n_layers=2), 2, bptt=4, max_len=20).eval()

    def snapshot():
        """Identity of every attribute of every module, and of what its dicts and lists hold."""
        seen = []
        for module in model.modules():
            for name, value in vars(module).items():
                contents = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
                seen.append((id(module), name, id(value), [id(v) for v in contents]))
        return seen
    before = snapshot()
    with torch.inference_mode():
        model(random_ids(2, 13), torch.tensor([13, 10]))
    assert snapshot() == before


def test_weight_dropout_eval_gradient_reaches_raw():
    wd, _ = _wrapped_lstm()
    wd.eval()
    wd(torch.randn(2, 5, 8))[0].sum().backward()
    assert wd.weight_hh_l0_raw.grad is not None and wd.weight_hh_l0_raw.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- copies and dtypes

def _trained_one_step(model_kind):
    torch.manual_seed(0)
    if model_kind == "lm":
        model = LanguageModel(tiny_config(n_layers=2))
        ids = random_ids(3, 8)
        loss = model.train()(ids)[0].logsumexp(-1).mean()
        run = lambda m: m(ids)[0]  # noqa: E731
    else:
        model = TextClassifier(tiny_config(n_layers=2), 3, bptt=4, max_len=6)
        ids = random_ids(3, 9)
        lengths = torch.tensor([9, 7, 3])
        ids[1, 7:] = PAD_ID
        ids[2, 3:] = PAD_ID
        loss = model.train()(ids, lengths).logsumexp(-1).mean()
        run = lambda m: m(ids, lengths)  # noqa: E731
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss.backward()
    opt.step()
    model.eval()
    return model, run


def _roundtrip(model, how):
    if how == "deepcopy":
        return copy.deepcopy(model)
    if how == "pickle":
        return pickle.loads(pickle.dumps(model))
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("kind", ["lm", "clas"])
@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save"])
def test_copies_after_training_step_give_identical_outputs(kind, how):
    model, run = _trained_one_step(kind)
    with torch.no_grad():
        expected = run(model)
    clone = _roundtrip(model, how).eval()
    with torch.no_grad():
        got = run(clone)
    assert torch.equal(got, expected)
    if kind == "lm":
        assert clone[1].decoder.weight is clone[0].encoder.weight
    # The clone uses its own weights: changing them changes its output but not the original's.
    with torch.no_grad():
        clone[0].rnns[0].module.weight_ih_l0.add_(0.5)
        clone[0].rnns[0].weight_hh_l0_raw.add_(0.5)
        assert not torch.allclose(run(clone), expected)
        assert torch.equal(run(model), expected)
    # And the clone still trains.
    clone.train()
    (run(clone).sum()).backward()
    assert clone[0].rnns[0].weight_hh_l0_raw.grad is not None


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save"])
def test_copies_after_inference_mode_prediction(how):
    # inference_mode leaves an inference-tensor placeholder in each LSTM; copies and training must still work.
    model, run = _trained_one_step("clas")
    with torch.inference_mode():
        expected = run(model)
    clone = _roundtrip(model, how).eval()
    with torch.no_grad():
        assert torch.equal(run(clone), expected)
    for m in (model, clone):
        m.train()
        run(m).sum().backward()
        assert m[0].rnns[1].weight_hh_l0_raw.grad.abs().sum() > 0


def test_load_state_dict_into_fresh_classifier_gives_identical_outputs():
    model, run = _trained_one_step("clas")
    fresh = TextClassifier(tiny_config(n_layers=2), 3, bptt=4, max_len=6)
    fresh.load_state_dict(model.state_dict())
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(run(fresh), run(model))


@pytest.mark.parametrize("convert", ["double", "to"])
def test_lm_to_float64_then_forward(convert):
    torch.manual_seed(0)
    lm = LanguageModel(tiny_config(n_layers=2)).eval()
    ids = random_ids(2, 6)
    with torch.no_grad():
        ref = lm(ids)[0]
    lm = lm.double() if convert == "double" else lm.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in lm.parameters())
    with torch.no_grad():
        out = lm(ids)[0]
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), ref, atol=1e-5, rtol=1e-4)
    # Training forward + backward in float64 too.
    lm.train()
    logits = lm(ids)[0]
    logits.sum().backward()
    assert lm[0].rnns[0].weight_hh_l0_raw.grad.dtype == torch.float64


@pytest.mark.parametrize("convert", ["double", "to"])
def test_classifier_to_float64_then_forward(convert):
    torch.manual_seed(0)
    model = TextClassifier(tiny_config(n_layers=2), 2, bptt=4, max_len=6).eval()
    ids = random_ids(2, 9)
    lengths = torch.tensor([9, 9])
    with torch.no_grad():
        ref = model(ids, lengths)
    model = model.double() if convert == "double" else model.to(torch.float64)
    with torch.no_grad():
        out = model(ids, lengths)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), ref, atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------- groups and config

def test_lm_layer_groups():
    lm = LanguageModel(tiny_config())
    groups = lm.layer_groups()
    assert len(groups) == 4
    for i in range(3):
        assert len(groups[i]) == 1 and groups[i][0] is lm[0].rnns[i]
    assert len(groups[3]) == 2 and groups[3][0] is lm[0].encoder and groups[3][1] is lm[1]
    covered = {id(p) for g in groups for m in g for p in m.parameters()}
    assert covered == {id(p) for p in lm.parameters()}


def test_classifier_layer_groups():
    model = TextClassifier(tiny_config(), 2)
    groups = model.layer_groups()
    assert len(groups) == 5
    assert groups[0] == [model[0].encoder]
    for i in range(3):
        assert len(groups[i + 1]) == 1 and groups[i + 1][0] is model[0].rnns[i]
    assert len(groups[4]) == 1 and groups[4][0] is model[1]
    covered = {id(p) for g in groups for m in g for p in m.parameters()}
    assert covered == {id(p) for p in model.parameters()}


def test_config_defaults_are_fastai_lm_config():
    cfg = AWDLSTMConfig(vocab_size=50)
    assert (cfg.emb_size, cfg.hidden_size, cfg.n_layers) == (400, 1152, 3)
    assert (cfg.output_p, cfg.hidden_p, cfg.input_p, cfg.embed_p, cfg.weight_p) == (0.1, 0.15, 0.25, 0.02, 0.2)


def test_config_scaled_and_for_classifier():
    cfg = AWDLSTMConfig(vocab_size=50, emb_size=12, hidden_size=20, n_layers=2)
    clas = cfg.for_classifier()
    assert (clas.output_p, clas.hidden_p, clas.input_p, clas.embed_p, clas.weight_p) == (0.4, 0.3, 0.4, 0.05, 0.5)
    half = clas.scaled(0.5)
    got = (half.output_p, half.hidden_p, half.input_p, half.embed_p, half.weight_p)
    assert got == pytest.approx((0.2, 0.15, 0.2, 0.025, 0.25))
    assert half.sizes() == cfg.sizes() == {"vocab_size": 50, "emb_size": 12, "hidden_size": 20, "n_layers": 2}
    zero = cfg.scaled(0.0)
    assert (zero.output_p, zero.hidden_p, zero.input_p, zero.embed_p, zero.weight_p) == (0, 0, 0, 0, 0)
    # Dropouts reach the modules.
    model = TextClassifier(half, 2)
    assert model[0].rnns[0].p == pytest.approx(0.25)
    assert model[0].input_dp.p == pytest.approx(0.2)
    assert model[0].encoder_dp.p == pytest.approx(0.025)
    assert model[0].hidden_dps[0].p == pytest.approx(0.15)
    assert model[1].layers[1].p == pytest.approx(0.2)


def test_classifier_head_layout():
    cfg = tiny_config(n_layers=2)
    model = TextClassifier(cfg, 4, head_hidden=7)
    layers = model[1].layers
    assert isinstance(layers[0], nn.BatchNorm1d) and layers[0].num_features == 3 * cfg.emb_size
    assert isinstance(layers[2], nn.Linear) and (layers[2].in_features, layers[2].out_features) == (30, 7)
    assert layers[2].bias is None and layers[6].bias is None
    assert isinstance(layers[3], nn.ReLU)
    assert (layers[6].in_features, layers[6].out_features) == (7, 4)
    assert layers[5].p == pytest.approx(0.1)


# ----------------------------------------------------------------------------- BPT3C pooling

def reference_pool(encoder, doc, max_len):
    """[last, max, mean] over the last max_len outputs of the document run alone in one pass."""
    out = encoder(doc[None])[0][0]
    window = out[max(0, len(doc) - max_len):]
    return torch.cat([out[-1], window.max(0).values, window.mean(0)])


def padded_batch(docs):
    lengths = torch.tensor([len(d) for d in docs])
    ids = torch.full((len(docs), int(lengths.max())), PAD_ID, dtype=torch.long)
    for i, d in enumerate(docs):
        ids[i, :len(d)] = d
    return ids, lengths


@pytest.mark.parametrize("bptt,max_len", [(5, 8), (3, 20), (7, 7), (4, 1)])
def test_pool_matches_single_document_reference(bptt, max_len):
    torch.manual_seed(0)
    model = TextClassifier(tiny_config(n_layers=2), 2, bptt=bptt, max_len=max_len).eval()
    lengths = [23, 17, 12, 12, 8, 7, 4, 1]
    g = torch.Generator().manual_seed(1)
    docs = [torch.randint(2, 50, (n,), generator=g) for n in lengths]
    ids, lens = padded_batch(docs)
    with torch.no_grad():
        pooled = model.pool(ids, lens)
        assert pooled.shape == (len(docs), 3 * 10)
        for row, doc in enumerate(docs):
            torch.testing.assert_close(pooled[row], reference_pool(model[0], doc, max_len), atol=2e-6, rtol=1e-5)


def test_pool_only_uses_last_max_len_tokens_for_max_and_mean():
    torch.manual_seed(0)
    max_len = 6
    model = TextClassifier(tiny_config(n_layers=2), 2, bptt=4, max_len=max_len).eval()
    doc = torch.randint(2, 50, (30,))
    with torch.no_grad():
        pooled = model.pool(doc[None], torch.tensor([30]))[0]
        out = model[0](doc[None])[0][0]
    window = out[-max_len:]
    torch.testing.assert_close(pooled[10:20], window.max(0).values, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(pooled[20:], window.mean(0), atol=2e-6, rtol=1e-5)
    # Not the mean over the whole document.
    assert not torch.allclose(pooled[20:], out.mean(0), atol=1e-4)


def test_pool_ignores_extra_padding_and_padding_content():
    torch.manual_seed(0)
    model = TextClassifier(tiny_config(n_layers=2), 2, bptt=4, max_len=9).eval()
    docs = [torch.randint(2, 50, (n,)) for n in (13, 6, 2)]
    ids, lens = padded_batch(docs)
    with torch.no_grad():
        a = model.pool(ids, lens)
        wider = torch.cat([ids, torch.full((3, 5), PAD_ID)], 1)
        b = model.pool(wider, lens)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_pool_rejects_unsorted_or_empty_rows():
    model = TextClassifier(tiny_config(n_layers=1), 2, bptt=4, max_len=9).eval()
    ids = random_ids(2, 6)
    with pytest.raises(ValueError):
        model.pool(ids, torch.tensor([3, 6]))
    with pytest.raises(ValueError):
        model(ids, torch.tensor([3, 6]))
    with pytest.raises(ValueError):
        model.pool(ids, torch.tensor([6, 0]))


def _record_chunks(encoder):
    calls = []

    def hook(module, args):
        calls.append((args[0].shape[1], args[0].shape[0], torch.is_grad_enabled()))
    return calls, encoder.register_forward_pre_hook(hook)


def test_pool_long_document_runs_prefix_without_grad_and_window_with_grad():
    torch.manual_seed(0)
    model = TextClassifier(tiny_config(n_layers=2), 2, bptt=5, max_len=10).train()
    doc = torch.randint(2, 50, (1, 2000))
    calls, handle = _record_chunks(model[0])
    pooled = model.pool(doc, torch.tensor([2000]))
    handle.remove()
    starts = np.cumsum([0] + [n for n, _, _ in calls])[:-1]
    assert sum(n for n, _, _ in calls) == 2000
    for start, (n, _, grad) in zip(starts, calls):
        if start + n <= 1990:
            assert not grad, (start, n)
        else:
            assert grad and start >= 1990 and n <= 5, (start, n)
    grad_calls = [n for n, _, grad in calls if grad]
    assert grad_calls == [5, 5]
    # The prefix runs in long chunks, not bptt-sized ones.
    assert len(calls) < 2000 // 5
    pooled.sum().backward()
    for name, p in model[0].named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model[0].rnns[0].weight_hh_l0_raw.grad.abs().sum() > 0


def test_pool_grad_disabled_everywhere_under_no_grad():
    torch.manual_seed(0)
    model = TextClassifier(tiny_config(n_layers=1), 2, bptt=5, max_len=10).train()
    calls, handle = _record_chunks(model[0])
    with torch.no_grad():
        model.pool(torch.randint(2, 50, (1, 60)), torch.tensor([60]))
    handle.remove()
    assert calls and not any(grad for _, _, grad in calls)


def test_pool_gradient_equals_truncated_reference():
    """Gradient flows only through the last max_len tokens, starting from the prefix's final state."""
    torch.manual_seed(0)
    max_len, n = 10, 200
    model = TextClassifier(tiny_config(n_layers=2), 2, bptt=3, max_len=max_len).eval()
    g = torch.Generator().manual_seed(3)
    prefix = torch.randint(10, 30, (n - max_len,), generator=g)
    window = torch.randint(30, 50, (max_len,), generator=g)
    doc = torch.cat([prefix, window])[None]
    weights = torch.randn(30, generator=g)

    (model.pool(doc, torch.tensor([n]))[0] * weights).sum().backward()
    got = {k: p.grad.clone() for k, p in model[0].named_parameters()}
    model.zero_grad(set_to_none=True)

    encoder = model[0]
    with torch.no_grad():
        _, _, state = encoder(doc[:, :n - max_len])
    out = encoder(doc[:, n - max_len:], state)[0][0]
    ref = torch.cat([out[-1], out.max(0).values, out.mean(0)])
    (ref * weights).sum().backward()
    for k, p in model[0].named_parameters():
        torch.testing.assert_close(got[k], p.grad, atol=1e-6, rtol=1e-4, msg=k)
    emb_grad = got["encoder.weight"]
    assert torch.all(emb_grad[10:30] == 0)  # words only in the prefix get no gradient
    assert torch.all(emb_grad[window.unique()].abs().sum(1) > 0)


def test_pool_backward_batch_of_long_and_short_documents_train_mode():
    torch.manual_seed(0)
    model = TextClassifier(tiny_config(n_layers=2), 2, bptt=5, max_len=10).train()
    docs = [torch.randint(2, 50, (n,)) for n in (700, 300, 12, 3)]
    ids, lens = padded_batch(docs)
    logits = model(ids, lens)
    assert logits.shape == (4, 2) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 0, 1])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_pool_million_token_document_in_inference_mode():
    torch.manual_seed(0)
    cfg = AWDLSTMConfig(vocab_size=50, emb_size=8, hidden_size=16, n_layers=1)
    model = TextClassifier(cfg, 2, bptt=70, max_len=1000).eval()
    n = 1_000_000
    doc = torch.randint(2, 50, (1, n))
    calls, handle = _record_chunks(model[0])
    start = time.perf_counter()
    with torch.inference_mode():
        pooled = model.pool(doc, torch.tensor([n]))
        logits = model[1](pooled)
    elapsed = time.perf_counter() - start
    handle.remove()
    assert pooled.shape == (1, 24) and torch.isfinite(pooled).all()
    assert torch.isfinite(logits).all()
    assert sum(c[0] for c in calls) == n
    assert len(calls) < 1100  # the prefix runs in max_len-sized chunks
    assert elapsed < 30, elapsed
