"""The pretraining command on a tiny made-up corpus: token cache, checkpoints, resume, --init."""
import io
import gzip
import json
import sys

import numpy as np
import pytest
import torch

from skulmfit.pretrain import learning_rate, main, prepare_corpus
from skulmfit.pretrained import load_weights, resolve, sha256

TINY = ["--vocab-size", "64", "--min-freq", "1", "--emb-size", "8", "--hidden-size", "16", "--layers", "2",
        "--batch-size", "4", "--bptt", "8", "--warmup-tokens", "100", "--planned-tokens", "2000",
        "--checkpoint-minutes", "0"]


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    rng = np.random.default_rng(0)
    words = "the cat sat on a mat while dogs ran in parks and birds sang".split()
    lines = [" ".join(rng.choice(words, size=12)).capitalize() + "." for _ in range(300)]
    (folder / "train.00.txt").write_text("\n".join(lines[:150]) + "\n\n")
    with gzip.open(folder / "train.01.txt.gz", "wt") as f:
        f.write("\n".join(lines[150:280]))
    (folder / "valid.txt").write_text("\n".join(lines[280:]))
    return folder


def test_prepare_corpus_caches_ids_and_builds_the_vocabulary_from_training_files(corpus, tmp_path):
    train, valid, vocab, tokenizer = prepare_corpus(corpus, tmp_path / "cache", vocab_size=64, min_freq=1, n_jobs=1)
    assert not tokenizer.subword
    assert vocab.itos[:3] == ["xxunk", "xxpad", "xxbos"] and "cat" in vocab
    assert (train == vocab.bos_id).sum() == 280 and (valid == vocab.bos_id).sum() == 20  # one per line
    assert train.max() < len(vocab) and not (train == vocab.unk_id).any()
    again = prepare_corpus(corpus, tmp_path / "cache", vocab_size=64, min_freq=1, n_jobs=1)
    np.testing.assert_array_equal(again[0], train)  # read back from the cache
    assert not list((tmp_path / "cache").glob("*.raw.npy"))
    with pytest.raises(SystemExit, match="another --cache folder"):  # other vocabulary settings
        prepare_corpus(corpus, tmp_path / "cache", vocab_size=32, min_freq=1, n_jobs=1)


def test_a_file_of_blank_lines_is_no_error(corpus, tmp_path):
    (corpus / "train.02.txt").write_text("\n\n  \n")
    train, _, _, _ = prepare_corpus(corpus, tmp_path / "cache", vocab_size=64, min_freq=1, n_jobs=1)
    assert (train == 2).sum() == 280


def test_subword_corpus_spells_every_word_in_known_pieces(corpus, tmp_path):
    pytest.importorskip("sentencepiece", reason="learning a subword vocabulary needs sentencepiece")
    words = prepare_corpus(corpus, tmp_path / "words", vocab_size=64, min_freq=1, n_jobs=1)
    train, valid, vocab, tokenizer = prepare_corpus(corpus, tmp_path / "pieces", vocab_size=400, min_freq=1,
                                                    n_jobs=1, subword=True)
    assert tokenizer.subword and len(vocab) % 8 == 0 and len(vocab) <= 400
    assert vocab.itos[:9] == words[2].itos[:9]  # fastai's special tokens keep their ids
    assert not (train == vocab.unk_id).any() and not (valid == vocab.unk_id).any()
    # Joining the pieces gives back the word stream, word for word.
    for pieces, word_ids, word_vocab in ((train, words[0], words[2]), (valid, words[1], words[2])):
        text = "".join(vocab.itos[i] for i in pieces)
        expected = "".join(t if t.startswith("xx") else "\u2581" + t for t in map(word_vocab.itos.__getitem__, word_ids))
        assert text.replace("\u2581", " ") == expected.replace("\u2581", " ")
    again = prepare_corpus(corpus, tmp_path / "pieces", vocab_size=400, min_freq=1, n_jobs=1, subword=True)
    assert again[3] == tokenizer
    np.testing.assert_array_equal(again[0], train)
    with pytest.raises(SystemExit, match="another --cache folder"):  # the word-level settings
        prepare_corpus(corpus, tmp_path / "pieces", vocab_size=400, min_freq=1, n_jobs=1)


def test_subword_model_carries_its_tokenizer_into_the_classifier(corpus, tmp_path):
    pytest.importorskip("sentencepiece", reason="learning a subword vocabulary needs sentencepiece")
    from skulmfit import ULMFiTClassifier
    out = tmp_path / "out"
    main([str(corpus), str(out), "--cache", str(tmp_path / "cache"), "--name", "toy", "--max-tokens", "300",
          *TINY, "--tokenizer", "subword", "--vocab-size", "400", "--sampled-softmax", "32"])
    lm = resolve(out)
    assert lm.tokenizer.subword and lm.card["tokenizer"] == "subword-unigram"
    assert lm.card["training"]["sampled_softmax"] == 32 and lm.card["valid_perplexity"] < len(lm.itos)
    texts, y = ["the cat sat", "a dog ran", "the cat ran", "a dog sat"] * 3, [1, 0, 1, 0] * 3
    clf = ULMFiTClassifier(out, lm_epochs=1, epochs=1, batch_size=4, random_state=0).fit(texts, y)
    assert clf.tokenizer_ == lm.tokenizer and clf.vocab_[0].itos == lm.itos  # no words added
    tokens = clf.tokenizer_.tokenize_many(["Zebras😀 sat"])[0]
    assert tokens[:2] == ["xxbos", "xxmaj"] and not (clf.vocab_[0].numericalize(tokens) == 0).any()
    assert clf.predict_proba(["Zebras😀 sat"]).shape == (1, 2)


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    assert learning_rate(0, 1000, 1.0, 100) == pytest.approx(0.01)
    assert learning_rate(99, 1000, 1.0, 100) == pytest.approx(1.0 - 0.9 * 0.099)
    assert learning_rate(1000, 1000, 1.0, 100) == pytest.approx(0.1)
    assert learning_rate(5000, 1000, 1.0, 100) == pytest.approx(0.1)


def test_train_checkpoint_resume_and_init(corpus, tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    main([str(corpus), str(out), "--cache", str(cache), "--name", "toy", "--max-tokens", "600", *TINY])
    card = json.loads((out / "toy.fwd.json").read_text())
    assert card["tokens_seen"] >= 600 and card["name"] == "toy" and card["direction"] == "forward"
    assert card["valid_perplexity"] > 1 and card["log"][-1]["tokens_seen"] == card["tokens_seen"]
    first = load_weights(out / "toy.fwd.pt", card["sha256"])
    assert first.config.sizes() == {"vocab_size": len(first.itos), "emb_size": 8, "hidden_size": 16, "n_layers": 2}

    # A benchmark adds measurements to the card: the size comparison survives later checkpoints,
    # a perplexity evaluation (stale once training goes on) does not.
    (out / "toy.fwd.json").write_text(json.dumps({**card, "size_comparison": {"table": "x"}, "evaluation": {}}))

    # Same cache: resumes from the full checkpoint and goes on to the new limit.
    main([str(corpus), str(out), "--cache", str(cache), "--name", "toy", "--max-tokens", "1200", *TINY])
    assert "resuming from" in capsys.readouterr().out
    resumed = json.loads((out / "toy.fwd.json").read_text())
    assert resumed["tokens_seen"] >= 1200 and len(resumed["log"]) > len(card["log"])
    assert resumed["size_comparison"] == {"table": "x"} and "evaluation" not in resumed

    # A fresh machine: no checkpoint, but the committed weights and their card.
    (cache / "checkpoint.fwd.pt").unlink()
    main([str(corpus), str(out), "--cache", str(cache), "--name", "toy", "--max-tokens", "1800",
          "--init", str(out / "toy.fwd.pt"), *TINY])
    assert "starting from weights" in capsys.readouterr().out
    continued = json.loads((out / "toy.fwd.json").read_text())
    assert continued["tokens_seen"] >= 1800 and continued["position"]["batch"] > 0

    # The output folder is usable as ``pretrained=`` for its direction.
    assert resolve(out).card["tokens_seen"] == continued["tokens_seen"]

    # Another machine, another corpus: a new cache takes the weights' tokenizer and vocabulary.
    other = tmp_path / "other-corpus"
    other.mkdir()
    (other / "train.txt").write_text("\n".join(["A zebra sat on the mat."] * 200))
    (other / "valid.txt").write_text("The zebra ran.\n")
    main([str(other), str(tmp_path / "out2"), "--cache", str(tmp_path / "cache2"), "--name", "toy",
          "--max-tokens", "2400", "--init", str(out / "toy.fwd.pt"), *TINY])
    moved = load_weights(tmp_path / "out2" / "toy.fwd.pt")
    assert moved.itos == first.itos and "zebra" not in moved.itos


def test_the_backward_model_of_a_forward_one_shares_its_tokenizer(corpus, tmp_path):
    pytest.importorskip("sentencepiece", reason="learning a subword vocabulary needs sentencepiece")
    main([str(corpus), str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--name", "toy",
          "--max-tokens", "300", *TINY, "--tokenizer", "subword", "--vocab-size", "400"])
    forward = load_weights(tmp_path / "out" / "toy.fwd.pt")
    # Another machine (no cache), a corpus whose own pieces would differ: the pipeline is taken, not learnt.
    other = tmp_path / "other-corpus"
    other.mkdir()
    (other / "train.txt").write_text("\n".join(["Zebras and quokkas graze quietly."] * 200))
    (other / "valid.txt").write_text("The quokka ran.\n")
    main([str(other), str(tmp_path / "out"), "--cache", str(tmp_path / "cache2"), "--name", "toy", "--backwards",
          "--vocab-from", str(tmp_path / "out" / "toy.fwd.pt"), "--max-tokens", "300", *TINY])
    backward = load_weights(tmp_path / "out" / "toy.bwd.pt")
    assert backward.backwards and backward.itos == forward.itos and backward.tokenizer == forward.tokenizer
    # Resuming that run's checkpoint must name the vocabulary its cache was built from again.
    resume = [str(other), str(tmp_path / "out"), "--cache", str(tmp_path / "cache2"), "--name", "toy",
              "--backwards", "--max-tokens", "600", *TINY]
    with pytest.raises(SystemExit, match="name that model again with --init or --vocab-from"):
        main(resume)
    main(resume + ["--vocab-from", str(tmp_path / "out" / "toy.fwd.pt")])
    assert load_weights(tmp_path / "out" / "toy.bwd.pt").card["tokens_seen"] > backward.card["tokens_seen"]
    # A cache built for another pipeline (here word-level) is refused rather than silently mixed.
    main([str(corpus), str(tmp_path / "words"), "--cache", str(tmp_path / "cache-words"), "--max-tokens", "100", *TINY])
    with pytest.raises(SystemExit, match="another tokenizer or vocabulary"):
        main([str(corpus), str(tmp_path / "out3"), "--cache", str(tmp_path / "cache-words"), "--name", "toy",
              "--vocab-from", str(tmp_path / "out" / "toy.fwd.pt"), "--max-tokens", "300", *TINY])
    with pytest.raises(SystemExit):  # one or the other
        main([str(other), str(tmp_path / "out4"), "--cache", str(tmp_path / "cache4"),
              "--init", str(tmp_path / "out" / "toy.fwd.pt"), "--vocab-from", str(tmp_path / "out" / "toy.fwd.pt")])


def test_backwards_model(corpus, tmp_path):
    out = tmp_path / "out"
    main([str(corpus), str(out), "--cache", str(tmp_path / "cache"), "--name", "toy", "--backwards",
          "--max-tokens", "300", *TINY])
    assert resolve(out, backwards=True).backwards is True
    with pytest.raises(ValueError, match="no forward weights"):
        resolve(out)


def test_a_corpus_without_validation_file_is_refused(corpus, tmp_path):
    (corpus / "valid.txt").unlink()
    with pytest.raises(SystemExit, match="valid"):
        main([str(corpus), str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), *TINY])


def test_fine_tune_starts_a_fresh_schedule_from_a_model_and_says_so(corpus, tmp_path, capsys):
    main([str(corpus), str(tmp_path / "base"), "--cache", str(tmp_path / "cache"), "--name", "toy",
          "--max-tokens", "600", *TINY])
    base_file = tmp_path / "base" / "toy.fwd.pt"
    base = load_weights(base_file)
    # The target corpus: other text, fine-tuned for two passes with discriminative rates; the sizes
    # come from the model (the TINY sizes are not repeated), the pipeline too.
    target = tmp_path / "target"
    target.mkdir()
    (target / "train.txt").write_text("\n".join(["The dogs sang in the parks while a cat ran."] * 120))
    (target / "valid.txt").write_text("\n".join(["A dog sang in the park."] * 20))
    tiny_run = ["--batch-size", "4", "--bptt", "8", "--warmup-tokens", "100", "--checkpoint-minutes", "0"]
    main([str(target), str(tmp_path / "tuned"), "--cache", str(tmp_path / "cache-target"), "--name", "toy-target",
          "--init", str(base_file), "--fine-tune", "--epochs", "2", "--lr-factor", "2.6", *tiny_run])
    assert "validation perplexity" in capsys.readouterr().out
    tuned = load_weights(tmp_path / "tuned" / "toy-target.fwd.pt")
    card = tuned.card
    n_train = len(np.load(tmp_path / "cache-target" / "train.ids.npy"))
    assert tuned.config.sizes() == base.config.sizes() and tuned.itos == base.itos
    assert 2 * n_train <= card["tokens_seen"] < 2 * n_train + 4 * 8 * 3  # a fresh count, two passes
    assert card["training"]["planned_tokens"] == 2 * n_train and card["corpus"] == "target"
    origin = card["fine_tuned_from"]
    assert origin["name"] == "toy" and origin["tokens_seen"] == base.card["tokens_seen"]
    assert origin["sha256"] == sha256(base_file)
    # Repetitive target text is learnt: the held-out perplexity falls below the one before.
    assert card["valid_perplexity"] < card["valid_perplexity_before"]
    assert not any(torch.equal(tuned.state_dict[k], base.state_dict[k]) for k in ("0.rnns.0.module.weight_ih_l0",))

    # Continued on a fresh machine from the committed file (no --fine-tune): the origin stays on the card.
    (tmp_path / "cache-target" / "checkpoint.fwd.pt").unlink()
    main([str(target), str(tmp_path / "tuned"), "--cache", str(tmp_path / "cache-target"), "--name", "toy-target",
          "--init", str(tmp_path / "tuned" / "toy-target.fwd.pt"), "--epochs", "3", *tiny_run])
    continued = load_weights(tmp_path / "tuned" / "toy-target.fwd.pt").card
    assert continued["tokens_seen"] >= 3 * n_train and continued["fine_tuned_from"] == origin


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_long_run_shows_its_time_left(corpus, tmp_path, capsys, monkeypatch):
    """On a terminal a bar counts down to the planned tokens; every checkpoint line says the minutes
    left, on screen only (the card's log keeps the measurements)."""
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    main([str(corpus), str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--name", "toy",
          "--max-tokens", "600", "--checkpoint-minutes", "0", *TINY])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert lines and all("minutes_left" in line for line in lines) and lines[-1]["minutes_left"] == 0
    assert "pretraining toy" in screen.getvalue() and " left" in screen.getvalue()
    card = load_weights(tmp_path / "out" / "toy.fwd.pt").card
    assert card["log"] and not any("minutes_left" in entry for entry in card["log"])


def test_fine_tune_needs_a_model_in_the_direction_asked_for(corpus, tmp_path):
    for bad in ("-1", "nan"):
        with pytest.raises(SystemExit):
            main([str(corpus), str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--epochs", bad, *TINY])
    with pytest.raises(SystemExit, match="needs --init"):
        main([str(corpus), str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--fine-tune", *TINY])
    main([str(corpus), str(tmp_path / "base"), "--cache", str(tmp_path / "cache"), "--name", "toy",
          "--max-tokens", "300", *TINY])
    with pytest.raises(SystemExit, match="forward model; add --backwards"):
        main([str(corpus), str(tmp_path / "out"), "--cache", str(tmp_path / "cache2"), "--backwards",
              "--init", str(tmp_path / "base" / "toy.fwd.pt"), "--fine-tune", *TINY])
    with pytest.raises(SystemExit, match="--init no-such-model"):
        main([str(corpus), str(tmp_path / "out"), "--cache", str(tmp_path / "cache2"),
              "--init", "no-such-model", "--fine-tune", *TINY])
