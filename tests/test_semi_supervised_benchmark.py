"""The semi-supervised benchmark on a tiny made-up IMDb: corpus, fine-tuning, validation."""
import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.semi_supervised import semi_supervised
from skulmfit.pretrain import main as pretrain

TINY = ["--vocab-size", "64", "--min-freq", "1", "--emb-size", "8", "--hidden-size", "16", "--layers", "2",
        "--batch-size", "4", "--bptt", "8", "--warmup-tokens", "100", "--checkpoint-minutes", "0"]


def write_csv(path: Path, rows: list[dict]) -> None:
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    good, bad = "great fine lovely superb".split(), "awful dull boring poor".split()
    filler = "the film was a story of people and\nit".split()  # a newline inside a review too

    def review(words):
        return " ".join(rng.choice(filler + words, size=10)) + "."
    folder = tmp_path / "data" / "imdb"
    folder.mkdir(parents=True)
    train = [{"text": review(good if i % 2 else bad), "label": "pos" if i % 2 else "neg"} for i in range(60)]
    write_csv(folder / "train.csv.gz", train)
    write_csv(folder / "unsup.csv.gz", [{"text": f"unlabelled {review(good + bad)}"} for _ in range(30)])
    return tmp_path / "data", train


def read_lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


def test_corpus_holds_unlabelled_and_training_reviews_but_not_the_held_out_ones(data, tmp_path):
    folder, train = data
    out = tmp_path / "corpus"
    semi_supervised.main(["corpus", "--data", str(folder), "--out", str(out), "--holdout", "10"])
    lines, valid = read_lines(out / "train.txt.gz"), read_lines(out / "valid.txt.gz")
    summary = json.loads((out / "holdout.json").read_text())
    held_out = summary["held_out"]
    assert len(lines) == 50 + 30 and len(valid) == 10 and summary["test_split_used"] is False
    one_line = [" ".join(row["text"].split()) for row in train]
    assert valid == [one_line[i] for i in held_out]
    assert sorted(line for line in lines if not line.startswith("unlabelled")) == \
        sorted(one_line[i] for i in range(60) if i not in held_out)
    assert sum(line.startswith("unlabelled") for line in lines) == 30
    assert sorted(np.array([train[i]["label"] for i in held_out]).tolist()) == ["neg"] * 5 + ["pos"] * 5
    assert lines[:5] != [one_line[i] for i in range(60) if i not in held_out][:5]  # shuffled


def test_a_model_fine_tuned_on_the_corpus_is_validated_on_the_held_out_reviews(data, tmp_path):
    folder, _ = data
    corpus = tmp_path / "corpus"
    semi_supervised.main(["corpus", "--data", str(folder), "--out", str(corpus), "--holdout", "10"])
    pretrain([str(corpus), str(tmp_path / "base"), "--cache", str(tmp_path / "cache"), "--name", "toy",
              "--max-tokens", "300", *TINY])
    pretrain([str(corpus), str(tmp_path / "tuned"), "--cache", str(tmp_path / "cache-tuned"), "--name", "toy-tuned",
              "--init", str(tmp_path / "base" / "toy.fwd.pt"), "--fine-tune", "--epochs", "1", *TINY])
    out = tmp_path / "valid.jsonl"
    semi_supervised.main(["validate", "--data", str(folder), "--corpus", str(corpus), "--models",
                          str(tmp_path / "tuned" / "toy-tuned.fwd.pt"), "--budget", "20", "--seeds", "0", "1",
                          "--set", "epochs=1", "batch_size=8", "--out", str(out)])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["seed"] for r in records] == [0, 1]
    first = records[0]
    assert first["valid_size"] == 10 and first["budget"] == 20 and 0 <= first["valid_accuracy"] <= 1
    assert first["params"]["lm_epochs"] == "0"  # the fine-tuned model is used as it is
    assert first["fine_tuned_from"]["name"] == "toy" and first["valid_perplexity_before"] > 0
    assert first["held_out_lm"]["bits_per_char"] > 0 and first["held_out_lm"]["unknown_rate"] < 1


def test_labels_to_reach_interpolates_in_log_labels():
    curve = {100: 30.0, 1000: 20.0, 10000: 10.0}
    assert semi_supervised.labels_to_reach(curve, 30.0) == 100
    assert semi_supervised.labels_to_reach(curve, 15.0) == pytest.approx(10 ** 3.5)
    assert semi_supervised.labels_to_reach(curve, 5.0) is None
    assert semi_supervised.labels_to_reach({100: 10.0, 1000: 40.0, 10000: 5.0}, 20.0) == 100


def test_figure_states_the_claim_from_the_records(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [("skulmfit[lm]", 100, 0.80), ("no-pretraining", 100, 0.55), ("no-pretraining", 1000, 0.70),
            ("no-pretraining", 10000, 0.85), ("tfidf-lr", 100, 0.70), ("tfidf-lr", 1000, 0.78)]
    records = tmp_path / "records.jsonl"
    records.write_text("\n".join(json.dumps({"dataset": "imdb", "method": m, "labels": n, "budget": str(n),
                                               "seed": seed, "accuracy": a, "reduced": []})
                                   for m, n, a in rows for seed in (0, 1)))
    out = tmp_path / "figure.png"
    semi_supervised.main(["figure", "--records", str(records), "--line", "semi=skulmfit[lm]",
                          "scratch=no-pretraining", "tfidf=tfidf-lr", "--reference", "semi", "--out", str(out)])
    claim = json.loads(out.with_suffix(".json").read_text())["claim"]
    assert out.stat().st_size > 0 and claim["error"] == pytest.approx(20.0)
    scratch = claim["lines"]["scratch"]
    assert 1000 < scratch["labels_to_reach"] < 10000 and scratch["multiple"] == pytest.approx(
        scratch["labels_to_reach"] / 100, abs=0.05)
    assert claim["lines"]["tfidf"]["labels_to_reach"] is None and claim["lines"]["tfidf"]["most_labels_run"] == 1000


def test_figure_keeps_each_line_on_one_test_sample(tmp_path):
    pytest.importorskip("matplotlib")
    records = tmp_path / "records.jsonl"
    records.write_text("\n".join(json.dumps({"dataset": "imdb", "method": m, "labels": 100, "budget": "100",
                                               "seed": 0, "accuracy": a, "test_size": size,
                                               "reduced": [f"test {size}/25000"]})
                                   for m, a, size in [("semi", 0.8, 2000), ("semi", 0.7, 5000), ("tfidf", 0.75, 5000)]))
    args = ["figure", "--records", str(records), "--line", "semi=semi", "tfidf=tfidf", "--reference", "semi",
            "--out", str(tmp_path / "figure.png")]
    with pytest.raises(SystemExit, match="--test-size"):
        semi_supervised.main(args)
    semi_supervised.main(args + ["--test-size", "5000"])
    summary = json.loads((tmp_path / "figure.json").read_text())
    assert summary["claim"]["error"] == pytest.approx(30.0) and summary["test_size"] == 5000
