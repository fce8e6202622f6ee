"""Tests of the fused decoder + softmax loss (skulmfit/loss.py)."""
import pytest
import torch
import torch.nn.functional as F

import skulmfit.loss as loss_module
from skulmfit.loss import linear_cross_entropy
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
