"""Tests of the training loops and prediction (skulmfit/training.py)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skulmfit.loss import SampledSoftmax
from skulmfit.model import AWDLSTMConfig, LanguageModel, TextClassifier
from skulmfit.progress import SilentProgress
from skulmfit.training import (
    evaluate_language_model,
    fine_tune_language_model,
    inference_batches,
    lm_batch_size,
    make_optimizer,
    pooled_features,
    predict_logits,
    train_classifier,
    warm_up_head,
    weighted_cross_entropy,
)



def toy_task(n, seed):
    """Class 0 docs hold one id in 10-19 among noise ids 30-49, class 1 one id in 20-29; lengths 5-30."""
    rng = np.random.default_rng(seed)
    docs, labels = [], rng.integers(0, 2, n)
    for label in labels:
        length = int(rng.integers(5, 31))
        doc = rng.integers(30, 50, length)
        doc[rng.integers(0, length)] = rng.integers(10, 20) + 10 * label
        docs.append(doc)
    return docs, labels


def test_the_fused_optimizer_makes_adamws_updates_with_each_groups_rate():
    """make_optimizer's fused kernel gives the per-tensor AdamW's updates (up to rounding), frozen groups untouched."""
    ours, reference = small_classifier(seed=3), small_classifier(seed=3)
    lrs = [1e-3, 2e-3, 4e-3, 8e-3]
    fused = make_optimizer(ours.layer_groups(), lrs, weight_decay=0.01)
    plain = torch.optim.AdamW([{"params": [p for m in group for p in m.parameters()], "lr": lr}
                               for group, lr in zip(reference.layer_groups(), lrs)],
                              betas=(0.7, 0.99), eps=1e-5, weight_decay=0.01, foreach=False)
    assert fused.defaults["fused"] and [g["lr"] for g in fused.param_groups] == lrs
    docs, y = toy_task(16, seed=0)
    ids = torch.from_numpy(np.stack([np.resize(d, 12) for d in docs]))
    lengths = torch.full((16,), 12)
    for model, optimizer in ((ours, fused), (reference, plain)):
        model.train()
        model[0].encoder.weight.requires_grad_(False)  # a frozen group keeps its weights
        for step in range(3):
            torch.manual_seed(step)
            optimizer.zero_grad()
            F.cross_entropy(model(ids, lengths), torch.from_numpy(y)).backward()
            optimizer.step()
    for (name, a), b in zip(ours.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert torch.equal(ours[0].encoder.weight, small_classifier(seed=3)[0].encoder.weight)


def small_classifier(n_classes=2, n_layers=2, seed=0, bptt=20, max_len=50):
    torch.manual_seed(seed)
    cfg = AWDLSTMConfig(vocab_size=56, emb_size=16, hidden_size=32, n_layers=n_layers).for_classifier().scaled(0.5)
    return TextClassifier(cfg, n_classes, bptt=bptt, max_len=max_len)


class Snapshots(SilentProgress):
    """Records the model's weights at the end of every epoch."""

    def __init__(self, model):
        self.model, self.states, self.stages = model, [], []

    def start(self, stage, total_steps):
        self.stages.append((stage, total_steps))

    def end(self, **metrics):
        self.states.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- language model

def test_lm_batch_size():
    assert lm_batch_size(10_000, 64, 70) == 64
    assert lm_batch_size(1_000, 64, 70) == 1_000 // 71 == 14
    assert lm_batch_size(10, 64, 70) == 1
    assert lm_batch_size(0, 64, 70) == 1
    assert lm_batch_size(71 * 3, 64, 70) == 3


def pattern_corpus(seed=0, n_docs=60):
    rng = np.random.default_rng(seed)
    pattern = np.arange(10, 30)
    return [np.tile(pattern, 3)[rng.integers(0, 20):][:rng.integers(20, 50)] for _ in range(n_docs)], np.tile(pattern, 30)


def tiny_lm(seed=0):
    torch.manual_seed(seed)
    return LanguageModel(AWDLSTMConfig(vocab_size=50, emb_size=16, hidden_size=32, n_layers=2).scaled(0.2))


def test_fine_tune_language_model_lowers_loss_and_perplexity():
    docs, valid = pattern_corpus()
    lm = tiny_lm()
    before = evaluate_language_model(lm, valid, batch_size=8, bptt=20)
    assert math.isfinite(before)
    assert before == pytest.approx(math.log(50), abs=0.3)  # untrained: near uniform
    losses = fine_tune_language_model(lm, docs, epochs=5, lr=3e-2, batch_size=8, bptt=20,
                                      rng=np.random.default_rng(1), discriminative_lr=False)
    assert len(losses) == 5 and all(math.isfinite(x) for x in losses)
    assert all(a > b for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < losses[0] - 1.0
    after = evaluate_language_model(lm, valid, batch_size=8, bptt=20)
    assert math.isfinite(after)
    assert math.exp(after) < 0.25 * math.exp(before)
    assert all(p.requires_grad for p in lm.parameters())
    assert lm[1].decoder.weight is lm[0].encoder.weight


def test_fine_tune_language_model_default_discriminative_and_backwards():
    docs, valid = pattern_corpus(seed=1, n_docs=30)
    lm = tiny_lm(seed=1)
    before = evaluate_language_model(lm, valid[::-1].copy(), batch_size=8, bptt=20)
    progress = Snapshots(lm)
    losses = fine_tune_language_model(lm, docs, epochs=3, lr=3e-2, batch_size=8, bptt=20, backwards=True,
                                      rng=np.random.default_rng(2), progress=progress)
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert len(progress.stages) == 1 and progress.stages[0][1] > 3
    # Trained on reversed text: the reversed pattern becomes more likely.
    assert evaluate_language_model(lm, valid[::-1].copy(), batch_size=8, bptt=20) < before
    assert all(p.requires_grad for p in lm.parameters())


def test_fine_tune_language_model_on_a_sampled_softmax_learns_the_full_distribution(monkeypatch):
    docs, valid = pattern_corpus()

    def fine_tune(sampled_softmax):
        lm = tiny_lm()
        torch.manual_seed(3)
        losses = fine_tune_language_model(lm, docs, epochs=5, lr=3e-2, batch_size=8, bptt=20, discriminative_lr=False,
                                          rng=np.random.default_rng(1), sampled_softmax=sampled_softmax)
        return lm, losses

    calls = []
    original = SampledSoftmax.__call__
    monkeypatch.setattr(SampledSoftmax, "__call__", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    full_lm, full_losses = fine_tune(0)
    assert calls == []
    sampled_lm, sampled_losses = fine_tune(4)  # each batch's targets plus 4 of the 50 ids
    assert len(calls) > 5 and sampled_losses != full_losses
    before = evaluate_language_model(tiny_lm(), valid, batch_size=8, bptt=20)
    after = evaluate_language_model(sampled_lm, valid, batch_size=8, bptt=20)  # full softmax
    assert math.exp(after) < 0.5 * math.exp(before)
    # Sampling half the vocabulary or more would save nothing: the full softmax is used.
    calls.clear()
    assert fine_tune(25)[1] == full_losses and calls == []


def test_fine_tune_language_model_nothing_to_do():
    lm = tiny_lm()
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    assert fine_tune_language_model(lm, [np.array([5, 6, 7])], epochs=0, lr=1e-2) == []
    assert fine_tune_language_model(lm, [np.array([5])], epochs=2, lr=1e-2) == []
    assert same_state(before, lm.state_dict())


def test_evaluate_language_model_equals_cross_entropy_of_one_pass():
    lm = tiny_lm().eval()
    stream = np.random.default_rng(0).integers(2, 50, 41)
    got = evaluate_language_model(lm, stream, batch_size=1, bptt=70)
    with torch.no_grad():
        ids = torch.from_numpy(stream).long()[None]
        logits = lm(ids[:, :-1])[0]
        expected = F.cross_entropy(logits[0], ids[0, 1:]).item()
    assert got == pytest.approx(expected, rel=1e-5)
    # State carries across bptt windows: smaller windows give the same answer.
    assert evaluate_language_model(lm, stream, batch_size=1, bptt=7) == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- classifier training

def test_train_classifier_stage_history_gradual_unfreezing():
    docs, y = toy_task(40, seed=1)
    model = small_classifier()
    n_groups = len(model.layer_groups())
    assert n_groups == 4
    progress = Snapshots(model)
    history = train_classifier(model, docs, y, epochs=2, lr=1e-2, batch_size=16,
                               rng=np.random.default_rng(0), progress=progress)
    assert [r["trainable_groups"] for r in history] == [1, 2, 3, 4, 4]
    assert all(math.isfinite(r["loss"]) for r in history)
    assert all("valid_accuracy" not in r for r in history)
    assert all(p.requires_grad for p in model.parameters())
    assert not model.training
    # Frozen groups really stay put: encoder weights after each stage.
    s = progress.states
    init = small_classifier().state_dict()
    assert same_state({k: v for k, v in s[0].items() if k.startswith("0.")},
                      {k: v for k, v in init.items() if k.startswith("0.")})  # stage 1: head only
    assert not torch.equal(s[0]["1.layers.2.weight"], init["1.layers.2.weight"])
    assert not torch.equal(s[1]["0.rnns.1.weight_hh_l0_raw"], s[0]["0.rnns.1.weight_hh_l0_raw"])
    assert torch.equal(s[1]["0.rnns.0.weight_hh_l0_raw"], init["0.rnns.0.weight_hh_l0_raw"])
    assert torch.equal(s[2]["0.encoder.weight"], init["0.encoder.weight"])
    assert not torch.equal(s[2]["0.rnns.0.weight_hh_l0_raw"], init["0.rnns.0.weight_hh_l0_raw"])
    assert not torch.equal(s[3]["0.encoder.weight"], init["0.encoder.weight"])


@pytest.mark.parametrize("n_docs", [40, 33])
def test_a_head_warm_up_fits_the_head_alone_to_frozen_features(n_docs):
    docs, y = toy_task(n_docs, seed=1)
    model = small_classifier()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = warm_up_head(model, docs, torch.as_tensor(y), epochs=5, lr=1e-2, batch_size=16, device=torch.device("cpu"),
                           rng=np.random.default_rng(0), backwards=False, loss_function=weighted_cross_entropy,
                           class_weight=None, sample_weight=None, weight_decay=0.01, slanted_triangular=True,
                           cut_frac=0.1, ratio=32.0, bf16=False)
    assert len(history) == 5 and all(r["frozen_features"] and r["trainable_groups"] == 1 for r in history)
    assert history[-1]["loss"] < history[0]["loss"]
    after = model.state_dict()
    assert same_state({k: v for k, v in after.items() if k.startswith("0.")},
                      {k: v for k, v in before.items() if k.startswith("0.")})
    assert not torch.equal(after["1.layers.2.weight"], before["1.layers.2.weight"])
    one = warm_up_head(model, docs[:1], torch.as_tensor(y[:1]), epochs=5, lr=1e-2, batch_size=16,
                       device=torch.device("cpu"), rng=np.random.default_rng(0), backwards=False,
                       loss_function=weighted_cross_entropy, class_weight=None, sample_weight=None,
                       weight_decay=0.01, slanted_triangular=True, cut_frac=0.1, ratio=32.0, bf16=False)
    assert one == []  # BatchNorm cannot train on one document: no warm-up


def test_train_classifier_warms_the_head_up_before_the_stages():
    docs, y = toy_task(40, seed=1)
    history = train_classifier(small_classifier(), docs, y, epochs=2, lr=1e-2, batch_size=16,
                               rng=np.random.default_rng(0), head_warmup_epochs=3)
    assert [(r["trainable_groups"], r.get("frozen_features", False)) for r in history] == (
        [(1, True)] * 3 + [(1, False), (2, False), (3, False), (4, False), (4, False)])


def test_train_classifier_without_gradual_unfreezing():
    docs, y = toy_task(40, seed=1)
    model = small_classifier()
    history = train_classifier(model, docs, y, epochs=2, lr=1e-2, batch_size=16,
                               rng=np.random.default_rng(0), gradual_unfreezing=False)
    assert [r["trainable_groups"] for r in history] == [4] * 5


@pytest.mark.parametrize("n_docs,batch_size", [(33, 32), (17, 8)])
def test_train_classifier_when_one_document_is_left_over(n_docs, batch_size, monkeypatch):
    # n % batch_size == 1: the leftover document joins another batch; none is lost or repeated.
    import skulmfit.training as training

    seen = []
    real_pad_batch = training.pad_batch

    def recording_pad_batch(docs, indices, backwards=False):
        seen.append(np.asarray(indices).copy())
        return real_pad_batch(docs, indices, backwards)

    monkeypatch.setattr(training, "pad_batch", recording_pad_batch)
    docs, y = toy_task(n_docs, seed=4)
    model = small_classifier()
    history = train_classifier(model, docs, y, epochs=1, lr=1e-2, batch_size=batch_size,
                               rng=np.random.default_rng(0), gradual_unfreezing=False)
    assert len(history) == 4
    assert min(len(b) for b in seen) > 1
    flat = np.concatenate(seen)
    # Four epochs, every document exactly once in each.
    assert sorted(flat.tolist()) == sorted(list(range(n_docs)) * 4)
    batches_per_epoch = len(seen) // 4
    for epoch in range(4):
        epoch_indices = np.concatenate(seen[epoch * batches_per_epoch:(epoch + 1) * batches_per_epoch])
        assert sorted(epoch_indices.tolist()) == list(range(n_docs))


def _constant_accuracy_validation():
    # The same document twice with both labels: accuracy is exactly 0.5 whatever the model does.
    doc = np.array([31, 12, 40, 41, 35])
    return [doc, doc.copy()], np.array([0, 1])


@pytest.mark.parametrize("gradual", [True, False])
def test_train_classifier_early_stopping_and_best_weights(gradual):
    docs, y = toy_task(40, seed=2)
    model = small_classifier()
    progress = Snapshots(model)
    epochs, patience = 10, 2
    history = train_classifier(model, docs, y, epochs=epochs, lr=1e-2, batch_size=16,
                               rng=np.random.default_rng(0), gradual_unfreezing=gradual,
                               validation=_constant_accuracy_validation(), n_iter_no_change=patience,
                               progress=progress)
    full_length = 3 + epochs
    assert all(r["valid_accuracy"] == 0.5 for r in history)
    assert len(history) < full_length  # stopped early
    assert history[-1]["trainable_groups"] == 4
    if gradual:
        assert [r["trainable_groups"] for r in history[:3]] == [1, 2, 3]
        assert 4 <= len(history) <= 3 + patience
    else:
        assert len(history) == 1 + patience
    # Best (= first) epoch's weights restored, though training went on after it.
    assert not same_state(progress.states[0], progress.states[-1])
    assert same_state(model.state_dict(), progress.states[0])
    assert not model.training


def test_train_classifier_validation_without_early_stopping_runs_all_epochs():
    docs, y = toy_task(40, seed=2)
    model = small_classifier()
    history = train_classifier(model, docs, y, epochs=3, lr=1e-2, batch_size=16, rng=np.random.default_rng(0),
                               gradual_unfreezing=False, validation=_constant_accuracy_validation())
    assert len(history) == 6


def _run_with_weight(class_weight):
    docs, y = toy_task(40, seed=3)
    y = np.where(np.arange(40) < 30, 0, 1)  # imbalanced, so weights matter
    model = small_classifier(seed=5)
    torch.manual_seed(11)
    return train_classifier(model, docs, y, epochs=1, lr=1e-2, batch_size=16, rng=np.random.default_rng(4),
                            gradual_unfreezing=False, class_weight=class_weight)


def test_class_weight_changes_the_loss():
    plain = [r["loss"] for r in _run_with_weight(None)]
    again = [r["loss"] for r in _run_with_weight(None)]
    assert plain == pytest.approx(again, rel=1e-6)  # deterministic
    uniform = [r["loss"] for r in _run_with_weight(np.array([3.0, 3.0]))]
    assert uniform == pytest.approx(plain, rel=1e-4)  # uniform weights: same normalised loss
    skewed = [r["loss"] for r in _run_with_weight(np.array([1.0, 10.0]))]
    assert skewed[0] != pytest.approx(plain[0], rel=1e-3)


# ----------------------------------------------------------------------------- prediction

def _random_docs(n, seed, low=1, high=80):
    rng = np.random.default_rng(seed)
    return [rng.integers(2, 56, int(rng.integers(low, high))) for _ in range(n)]


def test_predict_logits_in_input_order():
    model = small_classifier(n_classes=3, bptt=7, max_len=20).eval()
    docs = _random_docs(37, seed=0)
    got = predict_logits(model, docs, batch_size=4)
    assert got.shape == (37, 3) and got.dtype == np.float32
    alone = np.concatenate([predict_logits(model, [d], batch_size=4) for d in docs])
    np.testing.assert_allclose(got, alone, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        direct = model(torch.from_numpy(docs[5]).long()[None], torch.tensor([len(docs[5])]))
    np.testing.assert_allclose(got[5], direct[0].numpy(), atol=1e-5, rtol=1e-4)
    assert len({tuple(np.round(r, 4)) for r in got}) > 30  # rows really differ


def test_predict_logits_backwards_reads_documents_from_their_ends():
    model = small_classifier(bptt=7, max_len=20).eval()
    docs = _random_docs(12, seed=1)
    backwards = predict_logits(model, docs, batch_size=4, backwards=True)
    flipped = predict_logits(model, [d[::-1].copy() for d in docs], batch_size=4)
    np.testing.assert_allclose(backwards, flipped, atol=1e-6)
    assert not np.allclose(backwards, predict_logits(model, docs, batch_size=4), atol=1e-4)


def test_pooled_features_shape_and_values():
    model = small_classifier(bptt=7, max_len=20).eval()
    docs = _random_docs(15, seed=2)
    feats = pooled_features(model, docs, batch_size=4)
    assert feats.shape == (15, 3 * 16)
    assert np.isfinite(feats).all()
    with torch.no_grad():
        for i in (0, 7, 14):
            ref = model.pool(torch.from_numpy(docs[i]).long()[None], torch.tensor([len(docs[i])]))[0]
            np.testing.assert_allclose(feats[i], ref.numpy(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("max_tokens,max_len,max_rows,min_rows",
                         [(1000, 100, 1024, 1), (300, 1000, 1024, 1), (5000, 50, 7, 1), (10, 100, 1024, 1),
                          (1000, 400, 1024, 16)])
def test_inference_batches_cover_and_respect_budget(max_tokens, max_len, max_rows, min_rows):
    lengths = np.random.default_rng(0).integers(1, 500, 400)
    batches = inference_batches(lengths, max_tokens, max_len, max_rows, min_rows)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(400))
    assert np.all(np.diff(lengths[flat]) <= 0)  # longest first
    for b in batches[:-1]:
        assert min_rows <= len(b) <= max_rows
    for b in batches:
        if len(b) > min_rows:
            assert len(b) * min(lengths[b].max(), max_len) <= max_tokens
            assert lengths[b].min() >= 0.9 * lengths[b].max()  # padding stays under max_padding
    # Not needlessly small: the next document would have broken the budget, max_rows or max_padding.
    for b, nxt in zip(batches, batches[1:]):
        width = min(lengths[b[0]], max_len)
        assert (len(b) in (max_rows, min_rows) or (len(b) + 1) * width > max_tokens
                or lengths[nxt[0]] < 0.9 * lengths[b[0]])


def test_inference_batches_keep_short_documents_of_similar_length_together():
    lengths = np.random.default_rng(0).integers(10, 31, 1000)
    batches = inference_batches(lengths, max_tokens=25600, max_len=1400, min_rows=64, max_padding=0.1)
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert padded <= 1.1 * lengths.sum()
    assert len(batches) < 20


def test_end_to_end_toy_task_learned_from_scratch():
    np.random.seed(0)
    train_docs, train_y = toy_task(300, seed=0)
    test_docs, test_y = toy_task(200, seed=1)
    model = small_classifier(seed=0)
    torch.manual_seed(0)
    history = train_classifier(model, train_docs, train_y, epochs=15, lr=3e-2, batch_size=16,
                               discriminative_lr=False, rng=np.random.default_rng(0))
    assert len(history) == 3 + 15
    assert history[-1]["loss"] < history[0]["loss"]
    accuracy = np.mean(predict_logits(model, test_docs).argmax(1) == test_y)
    assert accuracy > 0.95, accuracy


# ----------------------------------------------------------------------------- weighted loss

def test_a_weight_of_two_counts_as_the_sample_twice():
    from skulmfit.training import weighted_cross_entropy
    torch.manual_seed(0)
    logits, target = torch.randn(3, 4), torch.tensor([1, 0, 3])
    weighted = weighted_cross_entropy(logits, target, sample_weight=torch.tensor([2.0, 1.0, 1.0]))
    duplicated = torch.nn.functional.cross_entropy(torch.cat([logits[:1], logits]), torch.cat([target[:1], target]))
    torch.testing.assert_close(weighted, duplicated)
    # with class weights too: the product of both
    class_weight = torch.tensor([1.0, 3.0, 1.0, 0.5])
    both = weighted_cross_entropy(logits, target, class_weight, torch.tensor([2.0, 1.0, 1.0]))
    expected = torch.nn.functional.cross_entropy(torch.cat([logits[:1], logits]), torch.cat([target[:1], target]),
                                                 weight=class_weight)
    torch.testing.assert_close(both, expected)


def test_zero_weights_leave_labels_out_and_an_all_zero_batch_gives_zero():
    from skulmfit.training import weighted_cross_entropy
    torch.manual_seed(0)
    logits = torch.randn(3, 2, requires_grad=True)
    loss = weighted_cross_entropy(logits, torch.tensor([0, 1, 1]), sample_weight=torch.tensor([1.0, 0.0, 1.0]))
    flipped = weighted_cross_entropy(logits, torch.tensor([0, 0, 1]), sample_weight=torch.tensor([1.0, 0.0, 1.0]))
    assert loss.item() == flipped.item()
    loss.backward()
    assert (logits.grad[1] == 0).all()
    nothing = weighted_cross_entropy(logits, torch.tensor([0, 1, 1]), sample_weight=torch.zeros(3))
    assert nothing.item() == 0.0
