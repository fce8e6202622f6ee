"""Tests of the fused decoder + softmax loss (skulmfit/loss.py)."""
import math

import pytest
import torch
import torch.nn.functional as F

import skulmfit.loss as loss_module
from skulmfit.loss import SampledSoftmax, linear_cross_entropy
from skulmfit.model import AWDLSTMConfig, LanguageModel
from skulmfit.training import lm_train_step, make_optimizer


def inputs(n=37, d=8, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=g).requires_grad_()
    weight = torch.randn(vocab, d, generator=g).requires_grad_()
    bias = torch.randn(vocab, generator=g).requires_grad_()
    target = torch.randint(0, vocab, (n,), generator=g)
    return hidden, weight, bias, target


def grads_of(loss, tensors):
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize("slice_elements", [1, 50 * 5, 2**18])  # one row, several rows, all rows per slice
def test_matches_cross_entropy_of_linear_in_fp32(monkeypatch, slice_elements):
    monkeypatch.setattr(loss_module, "_CPU_SLICE_ELEMENTS", slice_elements)
    hidden, weight, bias, target = inputs()
    expected = F.cross_entropy(F.linear(hidden, weight, bias), target)
    got = linear_cross_entropy(hidden, weight, bias, target)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected)
    for g, e in zip(grads_of(got, (hidden, weight, bias)), grads_of(expected, (hidden, weight, bias))):
        torch.testing.assert_close(g, e)


def test_upstream_gradient_scales_every_gradient():
    hidden, weight, bias, target = inputs()
    expected = grads_of(3.5 * F.cross_entropy(F.linear(hidden, weight, bias), target), (hidden, weight, bias))
    got = grads_of(3.5 * linear_cross_entropy(hidden, weight, bias, target), (hidden, weight, bias))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def test_gradient_only_for_inputs_that_need_it():
    hidden, weight, bias, target = inputs()
    frozen_weight, frozen_bias = weight.detach(), bias.detach()
    (grad_hidden,) = grads_of(linear_cross_entropy(hidden, frozen_weight, frozen_bias, target), (hidden,))
    (expected,) = grads_of(F.cross_entropy(F.linear(hidden, frozen_weight, frozen_bias), target), (hidden,))
    torch.testing.assert_close(grad_hidden, expected)


def test_backward_twice_with_retain_graph_gives_the_same_gradient():
    hidden, weight, bias, target = inputs()
    loss = linear_cross_entropy(hidden, weight, bias, target)
    first = torch.autograd.grad(loss, (hidden, weight), retain_graph=True)
    second = torch.autograd.grad(loss, (hidden, weight))
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b)


def test_inference_mode_gives_the_loss_without_a_graph():
    hidden, weight, bias, target = inputs()
    expected = F.cross_entropy(F.linear(hidden, weight, bias), target)
    with torch.inference_mode():
        got = linear_cross_entropy(hidden, weight, bias, target)
    assert not got.requires_grad
    torch.testing.assert_close(got, expected.detach())


def test_large_logits_do_not_overflow():
    hidden, weight, bias, target = inputs()
    expected = F.cross_entropy(F.linear(hidden, weight, bias * 0 + 1e4), target)
    torch.testing.assert_close(linear_cross_entropy(hidden, weight, bias * 0 + 1e4, target), expected)


def test_bf16_matches_autocast_cross_entropy_within_bf16_rounding():
    hidden, weight, bias, target = inputs(n=200, d=32, vocab=300)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = F.linear(hidden, weight, bias)
    expected = F.cross_entropy(logits.float(), target)
    got = linear_cross_entropy(hidden, weight, bias, target, torch.bfloat16)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)
    for g, e in zip(grads_of(got, (hidden, weight, bias)), grads_of(expected, (hidden, weight, bias))):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, e, rtol=0.05, atol=0.02 * e.abs().max().item())


@pytest.mark.parametrize("target", [torch.zeros(37, dtype=torch.int32), torch.zeros(36, dtype=torch.long),
                                    torch.full((37,), 50), torch.full((37,), -1)])
def test_rejects_a_target_of_the_wrong_type_length_or_range(target):
    hidden, weight, bias, _ = inputs()  # vocabulary of 50
    with pytest.raises(ValueError, match="target"):
        linear_cross_entropy(hidden, weight, bias, target)


def test_rejects_empty_hidden_states_instead_of_returning_nan():
    _, weight, bias, _ = inputs()
    with pytest.raises(ValueError, match="non-empty"):
        linear_cross_entropy(torch.zeros(0, 8), weight, bias, torch.zeros(0, dtype=torch.long))


def test_lm_train_step_reports_the_cross_entropy_of_the_model_logits():
    torch.manual_seed(0)
    model = LanguageModel(AWDLSTMConfig(40, 8, 16, 2).scaled(0.0))  # no dropout: forward is deterministic
    x, y = torch.randint(0, 40, (3, 9)), torch.randint(0, 40, (3, 9))
    with torch.no_grad():
        logits = model(x)[0]
    expected = F.cross_entropy(logits.reshape(-1, 40), y.reshape(-1)).item()
    optimizer = make_optimizer(model.layer_groups(), [0.0] * 3, 0.0)
    loss, _ = lm_train_step(model, optimizer, x, y, None, alpha=0.0, beta=0.0)
    assert loss == pytest.approx(expected, rel=1e-5)


def test_slices_are_cache_sized_on_a_cpu_and_few_on_a_gpu():
    cpu = list(loss_module._row_slices(4480, 60000, torch.device("cpu")))
    gpu = list(loss_module._row_slices(4480, 60000, torch.device("cuda")))  # a device name needs no GPU
    assert len(cpu) == 1120 and len(gpu) == 9
    for slices in (cpu, gpu):
        assert slices[0].start == 0 and slices[-1].stop == 4480
        assert all(a.stop == b.start for a, b in zip(slices, slices[1:]))


# ----------------------------------------------------------------------------- sampled softmax

def test_sampled_softmax_is_the_full_softmax_when_every_id_is_a_candidate():
    torch.manual_seed(0)
    hidden, weight, bias = torch.randn(30, 6), torch.randn(12, 6), torch.randn(12)
    target = torch.randint(0, 12, (30,))
    # 5,000 uniform draws from 12 ids: every id is a candidate and its inclusion log-probability ~0
    loss = SampledSoftmax(torch.ones(12), n_sampled=5000)(hidden, weight, bias, target)
    expected = F.cross_entropy(hidden @ weight.T + bias, target)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)


def test_sampled_softmax_takes_the_strided_targets_of_a_one_token_window_silently():
    """lm_batches' last window can be one token long: its targets flatten to a strided view."""
    import warnings
    window = torch.randint(50, (4, 2))
    target = window[:, 1:].reshape(-1)
    assert not target.is_contiguous()
    hidden, weight, bias = torch.randn(4, 6), torch.randn(50, 6), torch.randn(50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.manual_seed(0)
        strided = SampledSoftmax(torch.ones(50), 5)(hidden, weight, bias, target)
    torch.manual_seed(0)
    assert torch.equal(strided, SampledSoftmax(torch.ones(50), 5)(hidden, weight, bias, target.contiguous()))


def test_sampled_softmax_scores_only_the_candidates_and_corrects_for_their_inclusion():
    torch.manual_seed(0)
    vocab = 1000
    hidden, weight = torch.randn(8, 4), torch.randn(vocab, 4, requires_grad=True)
    bias = torch.zeros(vocab, requires_grad=True)
    target = torch.tensor([0, 0, 1, 0, 2, 0, 1, 0])
    counts = torch.ones(vocab)
    counts[:3] = 1000.0  # the targets are frequent ids
    sampled = SampledSoftmax(counts, n_sampled=5)
    loss = sampled(hidden, weight, bias, target)
    loss.backward()
    touched = (weight.grad.abs().sum(1) > 0).nonzero().flatten()
    assert set(target.tolist()) <= set(touched.tolist()) and len(touched) <= 3 + 5
    # By hand: logits of the candidates minus log P(candidate), P = 1 - P(missed by 8 targets and 5 draws)
    candidates = touched
    p = counts / counts.sum()
    log_inclusion = torch.log(-torch.expm1(8 * torch.log1p(-p[candidates]) + 5 * math.log1p(-1 / vocab)))
    logits = hidden @ weight[candidates].T - log_inclusion
    expected = F.cross_entropy(logits, torch.searchsorted(candidates, target))
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("counts, n_sampled, message", [
    (torch.zeros(5), 3, "not all zero"), (-torch.ones(5), 3, "non-negative"), (torch.ones(5), 0, "n_sampled")])
def test_sampled_softmax_refuses_bad_settings(counts, n_sampled, message):
    with pytest.raises(ValueError, match=message):
        SampledSoftmax(counts, n_sampled)


def test_sampled_softmax_counts_must_cover_the_decoder():
    with pytest.raises(ValueError, match="cover 5 ids, the decoder 7"):
        SampledSoftmax(torch.ones(5), 3)(torch.randn(2, 3), torch.randn(7, 3), torch.zeros(7), torch.tensor([1, 2]))


def test_lm_train_step_with_a_sampled_softmax_lowers_the_full_softmax_loss():
    torch.manual_seed(0)
    model = LanguageModel(AWDLSTMConfig(vocab_size=64, emb_size=8, hidden_size=16, n_layers=2).scaled(0.0))
    optimizer = make_optimizer(model.layer_groups(), [1e-2] * len(model.layer_groups()), 0.0)
    x = torch.randint(0, 64, (4, 10))
    y = (x + 1) % 64  # the next id is predictable

    def full_loss():
        with torch.no_grad():
            return F.cross_entropy(model(x)[0].reshape(-1, 64), y.reshape(-1)).item()
    before = full_loss()
    sampled = SampledSoftmax(torch.ones(64), n_sampled=8)
    for _ in range(100):
        lm_train_step(model, optimizer, x, y, None, sampled=sampled)
    assert full_loss() < before / 2
