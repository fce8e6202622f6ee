"""benchmarks/pretraining/distill.py: the passages, the student's pooling, and a distillation run that
pulls a tiny language model towards a (fake) teacher and resumes where it stopped."""
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.pretraining import distill
from skulmfit.model import AWDLSTMConfig, TextClassifier

SENTENCE = "The {} film was shown in {} cinemas across the whole country last year."


def write_shard(path: Path, articles: list[list[str]]) -> None:
    """A WikiExtractor-style shard: a title line, paragraphs, an empty line between articles."""
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n\n".join("\n".join(article) for article in articles) + "\n")


def test_sentences_skip_titles_and_short_or_long_ones(tmp_path):
    shard = tmp_path / "train.00.txt.gz"
    long_sentence = "Long " + " ".join(["word"] * 70) + "."
    write_shard(shard, [["A Title Of Six Words Here", "Short one. " + SENTENCE.format("new", 3) + " " + long_sentence],
                        ["Second", "History.", "It was\u2028split by a line separator in the middle of it."]])
    assert list(distill.sentences(shard)) == [SENTENCE.format("new", 3),
                                              "It was split by a line separator in the middle of it."]


def test_the_corpus_is_deterministic_and_held_out_passages_come_from_the_valid_shard(tmp_path):
    wiki = tmp_path / "wiki"
    wiki.mkdir()
    write_shard(wiki / "train.00.txt.gz", [["T", " ".join(SENTENCE.format(i, i) for i in range(50))]])
    write_shard(wiki / "valid.txt.gz", [["V", " ".join(SENTENCE.format("valid", i) for i in range(8))]])
    first = distill.build_corpus(wiki, tmp_path / "a", n_passages=20)
    second = distill.build_corpus(wiki, tmp_path / "b", n_passages=20)
    assert first["sha256"] == second["sha256"] and first["passages"] == 20 and first["pool"] == 50
    passages = distill.read_lines(tmp_path / "a" / "passages.txt")
    assert len(set(passages)) == 20 and all("valid" not in p for p in passages)
    assert all("valid" in p for p in distill.read_lines(tmp_path / "a" / "valid_passages.txt"))


def test_the_student_pools_as_the_classifier_does():
    """The distilled features must be the classifier's concat pooling, or fit would not see them."""
    torch.manual_seed(0)
    classifier = TextClassifier(AWDLSTMConfig(vocab_size=30, emb_size=8, hidden_size=16, n_layers=2), 2).eval()
    lengths = torch.tensor([9, 6, 2])
    ids = torch.randint(2, 30, (3, 9))
    ids[1, 6:] = ids[2, 2:] = 1
    with torch.no_grad():
        top, _, _ = classifier[0](ids)
        torch.testing.assert_close(distill.concat_pool(top, lengths), classifier.pool(ids, lengths))


def test_length_batches_read_every_passage_once_in_batches_of_similar_length():
    lengths = np.random.default_rng(0).integers(1, 100, 1000)
    batches = distill.length_batches(lengths, 16, np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 10  # sorted within blocks: far below the ~90 of random batches


@pytest.fixture
def distillation_work(tmp_path, tiny_itos):
    """Passages of two kinds ("great"/"awful" words, from the tiny vocabulary) whose fake teacher
    embeddings are two orthogonal directions, plus a Wikipedia folder for held-out perplexity."""
    rng = np.random.default_rng(0)
    words = {0: "great superb fine", 1: "awful dull poor"}

    def passages(n):
        kinds = rng.integers(0, 2, n)
        texts = [" ".join(rng.choice(words[k].split() + ["film", "plot", "the"], 8)) for k in kinds]
        targets = np.zeros((n, 6), np.float16)
        targets[np.arange(n), kinds] = 1
        return texts, targets

    work = tmp_path / "work"
    (work / "teacher-minilm").mkdir(parents=True)
    train_texts, train_targets = passages(256)
    valid_texts, valid_targets = passages(64)
    (work / "passages.txt").write_text("".join(t + "\n" for t in train_texts))
    (work / "valid_passages.txt").write_text("".join(t + "\n" for t in valid_texts))
    (work / "corpus.json").write_text(json.dumps({"passages": 256, "sha256": "test"}))
    np.save(work / "teacher-minilm" / "chunk_00000.npy", train_targets)
    np.save(work / "teacher-minilm" / "valid.npy", valid_targets)
    wiki = tmp_path / "wiki"
    wiki.mkdir()
    write_shard(wiki / "valid.txt.gz", [["T", " ".join(valid_texts)]])
    return work, wiki


def test_mixing_takes_each_works_encoded_chunks_in_turn_with_their_embeddings(tmp_path, monkeypatch):
    monkeypatch.setattr(distill, "CHUNK", 2)

    def work(name, n_passages, n_chunks):
        folder = tmp_path / name
        (folder / "teacher-minilm").mkdir(parents=True)
        (folder / "passages.txt").write_text("".join(f"{name} {i}\n" for i in range(n_passages)))
        (folder / "valid_passages.txt").write_text(f"{name} held out\n")
        (folder / "corpus.json").write_text(json.dumps({"sha256": name, "sources": [f"{name}.gz"],
                                                        "valid_passages": 1, "valid_sources": ["valid.txt.gz"]}))
        for chunk in range(n_chunks):  # embedding row = [work's number, passage index]
            rows = np.arange(chunk * 2, min(chunk * 2 + 2, n_passages))
            np.save(folder / "teacher-minilm" / f"chunk_{chunk:05d}.npy",
                    np.stack([np.full(len(rows), len(name)), rows], axis=1).astype(np.float16))
        np.save(folder / "teacher-minilm" / "valid.npy", np.full((1, 2), len(name), np.float16))
        return folder

    wiki, reviews = work("wiki", 5, 3), work("reviewsx", 6, 2)  # the last chunk of reviews not encoded yet
    info = distill.mix_corpora([wiki, reviews], tmp_path / "mixed", "minilm")
    passages, embeddings = distill.encoded_passages(tmp_path / "mixed", "minilm")
    assert passages == ["wiki 0", "wiki 1", "reviewsx 0", "reviewsx 1", "wiki 2", "wiki 3", "reviewsx 2",
                        "reviewsx 3", "wiki 4"]
    for passage, row in zip(passages, embeddings):
        name, index = passage.split()
        assert row.tolist() == [len(name), int(index)]
    assert info["chunk_sources"] == [0, 1, 0, 1, 0] and info["passages"] == 9
    assert distill.read_lines(tmp_path / "mixed" / "valid_passages.txt") == ["wiki held out"]
    assert [part["chunks"] for part in info["mixed_from"]] == [3, 2]


def test_distillation_moves_the_student_towards_the_teacher_and_resumes(distillation_work, tiny_weights, tmp_path):
    work, wiki = distillation_work
    out = tmp_path / "out"
    settings = dict(name="tiny", teacher="minilm", init=str(tiny_weights), backwards=False, distill_weight=1.0,
                    batch_size=16, lr=1e-2, wiki_dir=wiki, checkpoint_minutes=1e9, seed=0)
    distill.train(work, out, passages_seen=16 * 30, **settings)
    card = json.loads((out / "tiny.fwd.json").read_text())["distillation"]
    assert card["passages_seen"] == 480 and card["epoch_sizes"] == [256, 256]
    assert card["log"][-1]["valid_cosine"] > card["log"][0]["valid_cosine"] + 0.3
    distill.train(work, out, passages_seen=16 * 40, **settings)  # resumes at step 30
    resumed = json.loads((out / "tiny.fwd.json").read_text())["distillation"]
    assert [entry["step"] for entry in resumed["log"]] == [0, 30, 40]
    from skulmfit import ULMFiTClassifier  # the folder is a pretrained= source
    clf = ULMFiTClassifier(out, lm_epochs=0, epochs=1, batch_size=8, random_state=0).fit(["great film", "awful film"],
                                                                                        [1, 0])
    assert clf.bidirectional_ is False


def test_a_continued_student_can_keep_its_projection(distillation_work, tiny_weights, tmp_path):
    work, wiki = distillation_work
    settings = dict(teacher="minilm", backwards=False, distill_weight=1.0, batch_size=16, lr=1e-2, wiki_dir=wiki,
                    checkpoint_minutes=1e9, seed=0)
    distill.train(work, tmp_path / "first", name="first", init=str(tiny_weights), passages_seen=16 * 30, **settings)
    first = tmp_path / "first" / "first.fwd.pt"
    reached = json.loads(first.with_suffix(".json").read_text())["distillation"]["log"][-1]["valid_cosine"]
    for name, projection in (("fresh", None), ("kept", tmp_path / "first" / "first.fwd.projection.pt")):
        distill.train(work, tmp_path / name, name=name, init=str(first), passages_seen=16 * 2,
                      init_projection=projection, **settings)
    start = {name: json.loads((tmp_path / name / f"{name}.fwd.json").read_text())["distillation"]
             for name in ("fresh", "kept")}
    assert start["kept"]["init_projection"].endswith("first.fwd.projection.pt") and "init_projection" not in start["fresh"]
    began = {name: card["log"][2] for name, card in start.items()}  # after the first run's steps 0 and 30
    assert began["kept"]["valid_cosine"] == pytest.approx(reached, abs=0.02)  # the fp16 weights' rounding
    assert began["fresh"]["valid_cosine"] < reached - 0.2
    for wrong, message in ((tmp_path / "missing.pt", "no such file"), (first, "give the projection saved beside")):
        with pytest.raises(SystemExit, match=message):  # a weight file is not a projection
            distill.train(work, tmp_path / "wrong", name="wrong", init=str(first), passages_seen=16 * 2,
                          init_projection=wrong, **settings)


def test_a_continued_students_card_describes_the_whole_distillation(distillation_work, tiny_weights, tmp_path):
    """Begun from the first run's model, passages and seconds over both runs, the checkpoints in one
    sequence, each run's own record under runs; the corpus is not named twice."""
    from skulmfit.pretrained import sha256
    work, wiki = distillation_work
    settings = dict(teacher="minilm", backwards=False, distill_weight=1.0, batch_size=16, lr=1e-2, wiki_dir=wiki,
                    checkpoint_minutes=1e9, seed=0)
    distill.train(work, tmp_path / "first", name="first", init=str(tiny_weights), passages_seen=16 * 30, **settings)
    first = tmp_path / "first" / "first.fwd.pt"
    distill.train(work, tmp_path / "more", name="more", init=str(first), passages_seen=16 * 4,
                  init_projection=tmp_path / "first" / "first.fwd.projection.pt", **settings)
    earlier = json.loads(first.with_suffix(".json").read_text())
    card = json.loads((tmp_path / "more" / "more.fwd.json").read_text())
    whole = card["distillation"]
    assert whole["init"]["sha256"] == sha256(tiny_weights) == earlier["distillation"]["init"]["sha256"]
    assert whole["valid_perplexity_before"] == earlier["distillation"]["valid_perplexity_before"]
    assert whole["passages_seen"] == 16 * 34 and [e["step"] for e in whole["log"]] == [0, 30, 30, 34]
    assert whole["seconds"] == earlier["distillation"]["seconds"] + whole["runs"][1]["seconds"]
    assert [run["init"]["sha256"] for run in whole["runs"]] == [sha256(tiny_weights), sha256(first)]
    assert [run["passages_seen"] for run in whole["runs"]] == [480, 64] and "log" not in whole["runs"][1]
    assert whole["valid_cosine"] == whole["log"][-1]["valid_cosine"]
    assert card["corpus"] == earlier["corpus"] and card["corpus"].count("distilled on") == 1


def test_the_control_arm_trains_the_language_model_alone(distillation_work, tiny_weights_bwd, tmp_path):
    work, wiki = distillation_work
    distill.train(work, tmp_path / "out", name="control", teacher="minilm", init=str(tiny_weights_bwd), backwards=True,
                  distill_weight=0.0, passages_seen=16 * 10, batch_size=16, lr=1e-2, wiki_dir=wiki,
                  checkpoint_minutes=1e9, seed=0)
    card = json.loads((tmp_path / "out" / "control.bwd.json").read_text())
    assert card["direction"] == "backward" and card["distillation"]["distill_weight"] == 0.0
    log = card["distillation"]["log"]
    assert log[-1]["valid_perplexity"] < log[0]["valid_perplexity"]


def test_a_control_replays_an_arms_epoch_sizes_and_stops_where_it_stopped(distillation_work, tiny_weights, tmp_path):
    """--epoch-sizes and --stop-after: the control reads the arm's batches under the arm's schedule."""
    work, wiki = distillation_work
    common = dict(teacher="minilm", init=str(tiny_weights), backwards=False, passages_seen=16 * 40, batch_size=16,
                  lr=1e-2, wiki_dir=wiki, checkpoint_minutes=1e9, seed=0)
    distill.train(work, tmp_path / "arm", name="arm", distill_weight=1.0, epoch_sizes=[64, 128], stop_after=10, **common)
    distill.train(work, tmp_path / "control", name="control", distill_weight=0.0, epoch_sizes=[64, 128], stop_after=10,
                  **common)
    arm, control = (json.loads((tmp_path / n / f"{n}.fwd.json").read_text())["distillation"] for n in ("arm", "control"))
    for card in (arm, control):
        assert card["passages_seen"] == 160 and card["epoch_sizes"] == [64, 128]  # 4 + 6 of its 8 batches
        assert card["planned_passages"] == 640 and card["stop_after"] == 10
    assert [e["step"] for e in control["log"]] == [0, 10]


def test_the_probe_table_gives_each_model_its_mean_and_spread_per_budget(tmp_path):
    records = tmp_path / "probe.jsonl"
    rows = [{"model": "../out/student.fwd.pt", "dataset": "trec", "labels": 500, "accuracy": a} for a in (0.7, 0.8)]
    rows.append({"model": "teacher", "dataset": "sst2", "labels": 100, "accuracy": 0.75})
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert distill.table(records).splitlines() == [
        "| features | sst2 100 | trec 500 |", "|---|---|---|",
        "| student.fwd.pt | - | 75.0 ± 5.0 |", "| teacher | 75.0 ± 0.0 | - |"]


def test_a_students_card_has_the_bundled_layout_with_what_distillation_added(distillation_work, tiny_weights, tmp_path):
    """The card says what the model continued (sizes, tokenizer, its pretraining) and what the run
    added; an older card is rewritten in that layout with the weights unchanged."""
    from skulmfit.pretrained import load_weights, sha256
    work, wiki = distillation_work
    distill.train(work, tmp_path / "out", name="student", teacher="minilm", init=str(tiny_weights), backwards=False,
                  distill_weight=1.0, passages_seen=16 * 4, batch_size=16, lr=1e-2, wiki_dir=wiki,
                  checkpoint_minutes=1e9, seed=0)
    weights = tmp_path / "out" / "student.fwd.pt"
    card = json.loads(weights.with_suffix(".json").read_text())
    init = load_weights(tiny_weights)
    assert card["sizes"] == init.config.sizes() and card["vocab_size"] == len(init.itos)
    assert card["corpus"].endswith("then distilled on 256 sentences of unnamed sources")  # no sources recorded
    assert card["distillation"]["init"]["sha256"] == sha256(tiny_weights)
    assert card["distillation"]["teacher"] == "all-MiniLM-L6-v2" and card["distillation"]["passages_seen"] == 64
    assert card["valid_perplexity"] == card["distillation"]["log"][-1]["valid_perplexity"]
    assert card["sha256"] == sha256(weights) and load_weights(weights).card["distillation"] == card["distillation"]

    older = {key: card["distillation"][key] for key in ("passages_seen", "corpus", "valid_cosine", "log", "seconds",
                                                         "machine", "teacher", "distill_weight", "batch_size")}
    older.update(name="student", direction="forward", init=str(tiny_weights), valid_perplexity=card["valid_perplexity"])
    weights.with_suffix(".json").write_text(json.dumps(older))
    before = load_weights(weights).state_dict
    distill.rewrite_card(weights)
    rewritten = json.loads(weights.with_suffix(".json").read_text())
    assert rewritten["sizes"] == card["sizes"] and rewritten["distillation"]["passages_seen"] == 64
    assert rewritten["sha256"] == sha256(weights)
    after = load_weights(weights).state_dict
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_report_completes_the_cards_with_what_the_distillation_is_judged_on(monkeypatch, tmp_path, tiny_itos):
    """Bits/char of the model it continued, every probed arm with the teacher, in-fit accuracy per
    model; the weight file is not touched."""
    import skulmfit.pretrained
    from conftest import tiny_model_pair

    bundled = tiny_model_pair(tmp_path / "bundled", "base", tiny_itos)
    for direction, bits in (("fwd", 1.5), ("bwd", 1.4)):
        card = json.loads((bundled / f"base.{direction}.json").read_text())
        card["evaluation"] = {"wikipedia_valid": {"bits_per_char": bits}, "wikitext2_test": {"bits_per_char": bits + .1}}
        (bundled / f"base.{direction}.json").write_text(json.dumps(card))
    monkeypatch.setattr(skulmfit.pretrained, "_weights_dir", lambda: bundled)
    students = []
    for direction in ("forward", "backward"):
        weights = tmp_path / f"student.{'bwd' if direction == 'backward' else 'fwd'}.pt"
        weights.write_bytes(b"weights")
        weights.with_suffix(".json").write_text(json.dumps(
            {"name": "student", "direction": direction, "promoted_from": f"run.{weights.name.split('.')[1]}.pt",
             "distillation": {"init": {"name": "base"}}}))
        students.append(weights)
    probe = tmp_path / "probe.jsonl"
    probe.write_text("".join(json.dumps({"model": m, "dataset": "sst2", "labels": 500, "accuracy": a}) + "\n"
                             for m, a in (("base", 0.6), ("teacher", 0.77), ("out/run.fwd.pt", 0.76))))
    fit = tmp_path / "fit.jsonl"
    fit.write_text("".join(json.dumps({"tag": t, "dataset": "sst2", "labels": 500, "valid_accuracy": a}) + "\n"
                           for t, a in (("new", 0.75), ("new", 0.77), ("old", 0.7), ("other", 0.1))))
    distill.report(students, probe_records=probe, fit_records=fit, fit_tags={"student": "new", "base": "old"})
    forward, backward = (json.loads(w.with_suffix(".json").read_text())["distillation"] for w in students)
    assert forward["before"] == {"model": "base", "bits_per_char": {"wikipedia_valid": 1.5, "wikitext2_test": 1.6}}
    assert backward["before"]["bits_per_char"]["wikipedia_valid"] == 1.4
    assert forward["frozen_probe"]["columns"] == ["sst2 500"]
    assert forward["frozen_probe"]["rows"] == {"base": ["60.0 ± 0.0"], "teacher": ["77.0 ± 0.0"],
                                               "student, forward (run.fwd.pt)": ["76.0 ± 0.0"]}
    assert backward["frozen_probe"]["rows"] == forward["frozen_probe"]["rows"]
    assert forward["in_fit"]["rows"] == [
        {"model": "student", "tag": "new", "accuracy": {"sst2 500": {"mean": 76.0, "samples": 2}}},
        {"model": "base", "tag": "old", "accuracy": {"sst2 500": {"mean": 70.0, "samples": 1}}}]
    assert all(w.read_bytes() == b"weights" for w in students)
    with pytest.raises(SystemExit, match="no records tagged gone"):
        distill.report(students, probe_records=probe, fit_records=fit, fit_tags={"student": "gone"})
    with pytest.raises(SystemExit, match="no card"):
        distill.report([tmp_path / "other.fwd.pt"], probe_records=probe, fit_records=fit, fit_tags={"base": "old"})
    with pytest.raises(SystemExit):  # a tag without its model
        distill.main(["report", str(students[0]), "--fit-records", str(fit), "--fit-tag", "new"])


def test_the_distillation_corpus_is_described_by_its_sources(monkeypatch):
    monkeypatch.setattr(distill, "CHUNK", 10)
    wiki = {"chunks": 3, "sources": ["train.00.txt.gz", "train.01.txt.gz"]}
    reviews = {"chunks": 2, "sources": ["unsup.csv.gz"]}
    assert distill.passages_description({"mixed_from": [wiki, reviews]}) == (
        "30 Wikipedia sentences and 20 IMDb unlabelled-review sentences")
    assert distill.passages_description({"passages": 7, "sources": ["my-tickets.csv.gz"]}) == (
        "7 sentences of my-tickets.csv.gz")


def test_rewriting_a_card_needs_the_card(tmp_path):
    with pytest.raises(SystemExit, match="no card"):
        distill.rewrite_card(tmp_path / "student.fwd.pt")
