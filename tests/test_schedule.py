"""Tests of the learning-rate schedules, discriminative rates and gradual unfreezing (skulmfit/schedule.py)."""
import math

import pytest
import torch
from torch import nn

from skulmfit.model import AWDLSTMConfig, LanguageModel, TextClassifier
from skulmfit.schedule import (
    LR_DECAY_PER_GROUP,
    discriminative_lrs,
    freeze_to,
    param_groups,
    set_stlr,
    slanted_triangular,
    unfreezing_stages,
)


def tiny_config(n_layers=3):
    return AWDLSTMConfig(vocab_size=50, emb_size=8, hidden_size=16, n_layers=n_layers)


def paper_stlr(t, T, cut_frac=0.1, ratio=32.0):
    """Paper eq. 3 (fastai v0.7 CircularLR form)."""
    cut = math.floor(T * cut_frac)
    p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / cut_frac - 1))
    return (1 + p * (ratio - 1)) / ratio


# ----------------------------------------------------------------------------- STLR

@pytest.mark.parametrize("t,expected", [
    (0, 1 / 32),
    (1, (1 + 0.1 * 31) / 32),
    (5, (1 + 0.5 * 31) / 32),
    (10, 1.0),
    (55, (1 + 0.5 * 31) / 32),
    (91, (1 + 0.1 * 31) / 32),
    (100, 1 / 32),
])
def test_stlr_exact_values_t100(t, expected):
    assert slanted_triangular(t, 100) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("T,cut_frac,ratio", [(100, 0.1, 32), (50, 0.2, 10), (1000, 0.1, 32), (40, 0.25, 8)])
def test_stlr_matches_paper_formula_when_cut_is_whole(T, cut_frac, ratio):
    for t in range(T + 1):
        assert slanted_triangular(t, T, cut_frac, ratio) == pytest.approx(paper_stlr(t, T, cut_frac, ratio), rel=1e-12)


def test_stlr_rises_then_decays_monotonically():
    values = [slanted_triangular(t, 100) for t in range(101)]
    assert values.index(max(values)) == 10
    assert all(a < b for a, b in zip(values[:10], values[1:11]))
    assert all(a > b for a, b in zip(values[10:], values[11:]))


@pytest.mark.parametrize("T", [37, 7, 3, 1, 2, 15])
def test_stlr_non_integer_cut_stays_in_range(T):
    ratio = 32.0
    values = [slanted_triangular(t, T, 0.1, ratio) for t in range(T + 1)]
    assert all(1 / ratio - 1e-12 <= v <= 1 + 1e-12 for v in values)
    assert values[0] == pytest.approx(1 / ratio)
    cut = max(1, math.floor(T * 0.1))
    if T > cut:  # (T == 1 has no decay phase: its only training step is t = 0)
        assert values[-1] == pytest.approx(1 / ratio)
        assert max(values) == pytest.approx(1.0)
        assert values[cut] == pytest.approx(1.0)


def test_stlr_non_integer_t37_values():
    # cut = floor(3.7) = 3; decay over the remaining 34 steps.
    assert slanted_triangular(0, 37) == pytest.approx(1 / 32)
    assert slanted_triangular(3, 37) == pytest.approx(1.0)
    assert slanted_triangular(20, 37) == pytest.approx((1 + (1 - 17 / 34) * 31) / 32)
    assert slanted_triangular(37, 37) == pytest.approx(1 / 32)


@pytest.mark.parametrize("T", [0, -1, -100])
def test_stlr_invalid_total_steps(T):
    with pytest.raises(ValueError):
        slanted_triangular(0, T)


# ----------------------------------------------------------------------------- discriminative rates

def test_discriminative_lrs_paper_factor():
    assert LR_DECAY_PER_GROUP == 2.6
    got = discriminative_lrs(0.01, 4)
    expected = [0.01 / 2.6 ** 3, 0.01 / 2.6 ** 2, 0.01 / 2.6, 0.01]
    assert got == pytest.approx(expected, rel=1e-12)
    assert discriminative_lrs(0.5, 1) == [0.5]
    assert discriminative_lrs(1.0, 3, factor=2.0) == pytest.approx([0.25, 0.5, 1.0])


# ----------------------------------------------------------------------------- unfreezing

def test_unfreezing_stages():
    assert unfreezing_stages(5, 3) == [(1, 1), (2, 1), (3, 1), (4, 1), (5, 3)]
    assert unfreezing_stages(5, 0) == [(1, 1), (2, 1), (3, 1), (4, 1)]
    assert unfreezing_stages(1, 4) == [(1, 4)]
    assert unfreezing_stages(4, 1) == [(1, 1), (2, 1), (3, 1), (4, 1)]


def _trainable_ids(model):
    return {id(p) for p in model.parameters() if p.requires_grad}


def _group_param_ids(groups, indices):
    return {id(p) for i in indices for m in groups[i] for p in m.parameters()}


def test_freeze_to_classifier_leaves_exactly_top_groups_trainable():
    model = TextClassifier(tiny_config(), 2)
    groups = model.layer_groups()
    n = len(groups)
    assert n == 5
    for k in range(1, n + 1):
        freeze_to(groups, k)
        assert _trainable_ids(model) == _group_param_ids(groups, range(n - k, n)), k
    freeze_to(groups, 1)
    assert {name for name, p in model.named_parameters() if p.requires_grad} == {
        name for name, _ in model.named_parameters() if name.startswith("1.")}
    freeze_to(groups, 0)
    assert _trainable_ids(model) == set()


def test_freeze_to_language_model_with_tied_weight():
    lm = LanguageModel(tiny_config())
    groups = lm.layer_groups()
    freeze_to(groups, 1)
    trainable = {name for name, p in lm.named_parameters(remove_duplicate=False) if p.requires_grad}
    # Embedding (= tied decoder weight) and decoder bias only.
    assert trainable == {"0.encoder.weight", "0.encoder_dp.emb.weight", "1.decoder.weight", "1.decoder.bias"}
    freeze_to(groups, 2)
    assert _trainable_ids(lm) == _group_param_ids(groups, [2, 3])
    freeze_to(groups, len(groups))
    assert all(p.requires_grad for p in lm.parameters())


def test_frozen_groups_do_not_change_in_an_optimizer_step():
    torch.manual_seed(0)
    model = TextClassifier(tiny_config(n_layers=2), 2, bptt=4, max_len=8).train()
    groups = model.layer_groups()
    freeze_to(groups, 2)  # head and last LSTM
    opt = torch.optim.AdamW(param_groups(groups, discriminative_lrs(0.01, len(groups))))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(2, 50, (4, 9))
    model(ids, torch.tensor([9, 9, 9, 9])).sum().backward()
    opt.step()
    after = model.state_dict()
    assert torch.equal(before["0.encoder.weight"], after["0.encoder.weight"])
    assert torch.equal(before["0.rnns.0.weight_hh_l0_raw"], after["0.rnns.0.weight_hh_l0_raw"])
    assert not torch.equal(before["0.rnns.1.weight_hh_l0_raw"], after["0.rnns.1.weight_hh_l0_raw"])
    assert not torch.equal(before["1.layers.2.weight"], after["1.layers.2.weight"])


# ----------------------------------------------------------------------------- optimizer groups

def test_param_groups_lm_lists_each_parameter_once():
    lm = LanguageModel(tiny_config())
    groups = lm.layer_groups()
    lrs = discriminative_lrs(0.01, len(groups))
    result = param_groups(groups, lrs)
    assert len(result) == len(groups)
    all_ids = [id(p) for g in result for p in g["params"]]
    assert len(all_ids) == len(set(all_ids))
    assert set(all_ids) == {id(p) for p in lm.parameters()}
    for g, lr in zip(result, lrs):
        assert g["lr"] == g["initial_lr"] == lr
    top = {id(p) for p in result[-1]["params"]}
    assert top == {id(lm[0].encoder.weight), id(lm[1].decoder.bias)}
    # torch accepts them (it refuses a parameter that appears in two groups).
    torch.optim.AdamW(result)


def test_param_groups_shared_parameter_across_groups_listed_once():
    shared = nn.Linear(3, 3)
    a, b = nn.Sequential(shared, nn.Linear(3, 2)), nn.Sequential(shared)
    result = param_groups([[a], [b]], [0.1, 0.2])
    ids = [id(p) for g in result for p in g["params"]]
    assert len(ids) == len(set(ids)) == 4
    torch.optim.SGD(result)


def test_param_groups_length_mismatch_raises():
    lm = LanguageModel(tiny_config())
    with pytest.raises(ValueError):
        param_groups(lm.layer_groups(), [0.1, 0.2])


def test_set_stlr_sets_initial_lr_times_multiplier_times_scale():
    model = TextClassifier(tiny_config(), 2)
    groups = model.layer_groups()
    lrs = discriminative_lrs(0.02, len(groups))
    opt = torch.optim.AdamW(param_groups(groups, lrs))
    for step, scale in [(0, 1.0), (5, 0.5), (10, 1.3), (55, 1.0), (99, 2.0)]:
        set_stlr(opt, step, 100, 0.1, 32.0, scale=scale)
        mult = slanted_triangular(step, 100, 0.1, 32.0)
        for group, lr in zip(opt.param_groups, lrs):
            assert group["lr"] == pytest.approx(lr * mult * scale, rel=1e-12)
            assert group["initial_lr"] == lr  # the peak is kept
    set_stlr(opt, 5, 100, 0.1, 32.0)
    assert opt.param_groups[-1]["lr"] == pytest.approx(0.02 * (1 + 0.5 * 31) / 32)
