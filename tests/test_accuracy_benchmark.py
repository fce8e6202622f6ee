"""The accuracy benchmark's own parts, on tiny made-up data: no data folder, no network, no model."""
import numpy as np
import pytest

from benchmarks.accuracy import accuracy as accuracy_benchmark


@pytest.fixture(scope="module")
def accuracy():
    return accuracy_benchmark


def toy_dataset(accuracy, n_train=40, unlabeled=()):
    X = [f"text {i}" for i in range(n_train)]
    y = np.array(["a", "b"] * (n_train // 2))
    return accuracy.Dataset("toy", X, y, X[:10], y[:10], list(unlabeled))


def test_nbsvm_learns_binary_and_multiclass_tasks(accuracy):
    from sklearn.feature_extraction.text import CountVectorizer

    texts = ["good fine film", "good great", "bad awful film", "awful bad", "dull boring", "boring film dull"] * 3
    for labels in (["pos", "pos", "neg", "neg", "neg", "neg"], ["pos", "pos", "neg", "neg", "dull", "dull"]):
        X = CountVectorizer().fit_transform(texts)
        y = np.array(labels * 3)
        model = accuracy.NBSVM(C=1.0, random_state=0).fit(X, y)
        assert (model.predict(X) == y).all()
        assert model.coef_.shape == (1 if len(set(labels)) == 2 else 3, X.shape[1])


def test_unlabeled_corpus_leaves_out_the_labelled_texts_and_caps_with_the_seed(accuracy):
    data = toy_dataset(accuracy, unlabeled=["extra 1", "extra 2"])
    subset = accuracy.label_subset(data.y_train, 10, seed=0)
    corpus, available = accuracy.unlabeled_corpus(data, subset, cap=0, seed=0)
    assert available == len(corpus) == 40 - 10 + 2
    assert not {data.X_train[i] for i in subset} & set(corpus)
    capped, _ = accuracy.unlabeled_corpus(data, subset, cap=5, seed=1)
    assert len(capped) == 5 and set(capped) <= set(corpus)
    assert capped == accuracy.unlabeled_corpus(data, subset, cap=5, seed=1)[0]


def test_test_samples_are_stratified_the_same_whatever_else_is_drawn(accuracy):
    y = np.array(["a"] * 30 + ["b"] * 10)
    small, large, whole = accuracy.test_samples(y, [8, 20, 0])
    assert len(small) == 8 and (y[small] == "b").sum() == 2  # the test set's 3:1 ratio
    assert len(large) == 20 and len(whole) == 40
    assert (accuracy.test_samples(y, [8])[0] == small).all()
    assert len(accuracy.test_samples(y, [500])[0]) == 40  # a size past the test set: all of it
    with pytest.raises(SystemExit):
        accuracy.parse_args(["--data", "x", "--max-test", "-5"])


class FirstLetter:
    """A stand-in classifier: predicts the text's first letter."""

    def fit(self, X, y):
        return self

    def predict(self, X):
        return np.array([text[0] for text in X])


def test_one_fit_is_scored_on_each_test_sample_with_its_own_record(accuracy):
    X = ["a1", "a2", "b3", "x4", "b5", "a6", "b7", "b8"]  # "x4" is scored wrong
    y = np.array(["a", "a", "b", "a", "b", "a", "b", "b"])
    data = accuracy.Dataset("toy", X, y, X, y, [])
    samples = [np.array([0, 1, 2, 3]), np.arange(8)]
    scores = accuracy.fit_and_score(FirstLetter(), data, np.arange(8), None, samples)
    assert [s["accuracy"] for s in scores] == [0.75, 7 / 8]
    assert scores[0]["fit_seconds"] == scores[1]["fit_seconds"] and scores[0]["predicted"] == 8
    assert accuracy.reductions(data, 4) == ["test 4/8"] and accuracy.reductions(data, 8) == []


def test_set_overrides_are_literals_need_a_tag_and_win_below_the_method(accuracy):
    args = accuracy.parse_args(["--data", "x", "--set", "lr=0.02", "epochs=1", "device=cpu", "--tag", "t"])
    assert args.overrides == {"lr": 0.02, "epochs": 1, "device": "cpu"}
    for argv in (["--set", "lr=0.02"], ["--set", "nope=1", "--tag", "t"], ["--set", "random_state=3", "--tag", "t"]):
        with pytest.raises(SystemExit):
            accuracy.parse_args(["--data", "x", *argv])
    model = accuracy.make_model("no-lm-finetuning", 7, 100, {"lm_epochs": 3, "lr": 0.02})
    assert (model.lm_epochs, model.lr, model.random_state) == (0, 0.02, 7)


def test_table_pivots_methods_by_budget_with_reductions_in_the_row(accuracy, tmp_path):
    records = [{"dataset": "trec", "method": "skulmfit", "budget": "100", "labels": 100, "seed": seed, "accuracy": a}
               for seed, a in enumerate((0.7, 0.8))]
    records += [{"dataset": "trec", "method": "nbsvm", "budget": "all", "labels": 5452, "accuracy": 0.9,
                 "reduced": ["test 50/500"]}]
    accuracy.write_table(records, tmp_path / "t.md")
    lines = (tmp_path / "t.md").read_text().splitlines()
    assert "| method | 100 | all (5452) |" in lines
    assert "| skulmfit | 75.0 ± 7.1 (2) |  |" in lines
    assert "| nbsvm (test 50/500) |  | 90.0 (1) |" in lines


def test_table_counts_a_rerun_of_the_same_seed_once_the_latest(accuracy, tmp_path):
    def record(seed, a):
        return {"dataset": "trec", "method": "skulmfit", "budget": "100", "labels": 100, "seed": seed, "accuracy": a}
    accuracy.write_table([record(0, 0.5), record(1, 0.6), record(0, 0.7)], tmp_path / "t.md")
    assert "| skulmfit | 65.0 ± 7.1 (2) |" in (tmp_path / "t.md").read_text().splitlines()


def test_rows_name_the_pretrained_model_unless_a_tag_names_the_run(accuracy, tmp_path):
    def record(method, pretrained, a):
        return {"dataset": "sst2", "method": method, "budget": "500", "labels": 500, "seed": 0, "accuracy": a,
                "params": {"pretrained": pretrained}}
    records = [record("bidirectional", "wiki-en-sub", 0.68), record("bidirectional", "en-distilled", 0.76),
               record("bidirectional[lr0.02]", "wiki-en-sub", 0.7), record("no-pretraining", "None", 0.58),
               record("skulmfit", "runs/my-model.fwd.pt", 0.6), record("tfidf-lr", None, 0.69)]
    accuracy.write_table(records, tmp_path / "t.md")
    lines = (tmp_path / "t.md").read_text().splitlines()
    for row in ("| bidirectional[wiki-en-sub] | 68.0 (1) |", "| bidirectional[en-distilled] | 76.0 (1) |",
                "| bidirectional[lr0.02] | 70.0 (1) |", "| no-pretraining | 58.0 (1) |",
                "| skulmfit[my-model.fwd.pt] | 60.0 (1) |", "| tfidf-lr | 69.0 (1) |"):
        assert row in lines


def test_records_name_the_commit_they_ran(accuracy):
    commit = accuracy.versions("skulmfit")["skulmfit_commit"]
    assert commit is None or len(commit.split("+")[0]) >= 7


def test_records_say_which_weight_file_a_run_used(accuracy, tiny_weights):
    from skulmfit import ULMFiTClassifier
    from skulmfit.pretrained import sha256

    used = accuracy.pretrained_model(ULMFiTClassifier(pretrained=str(tiny_weights)))
    assert used["sha256"] == sha256(tiny_weights)[:16] and used["name"] == "tiny"
    assert accuracy.pretrained_model(ULMFiTClassifier(pretrained=None)) is None


def test_records_say_which_files_a_two_direction_folder_holds(accuracy, tiny_weights, tiny_weights_bwd, tmp_path):
    import json

    from skulmfit import ULMFiTClassifier
    from skulmfit.pretrained import sha256
    for source, direction in ((tiny_weights, "forward"), (tiny_weights_bwd, "backward")):
        (tmp_path / source.name).write_bytes(source.read_bytes())
        card = {"name": "tiny", "direction": direction, "file": source.name, "sha256": sha256(source)}
        (tmp_path / f"tiny.{source.name.split('.')[1]}.json").write_text(json.dumps(card))
    used = accuracy.pretrained_model(ULMFiTClassifier(pretrained=str(tmp_path)))
    assert set(used) == {"forward", "backward"}
    assert used["backward"]["sha256"] == sha256(tiny_weights_bwd)[:16] and used["backward"]["name"] == "tiny"
    other = tmp_path / "fastai"  # a folder without model cards is not described
    other.mkdir()
    assert accuracy.pretrained_model(ULMFiTClassifier(pretrained=str(other))) is None


def test_linear_probe_slices_each_pooling_across_both_directions(tiny_weights, tiny_weights_bwd, tmp_path,
                                                                  keyword_task):
    """The columns named "max" are the max pooling of each direction, nothing else."""
    import json

    from benchmarks.accuracy import linear_probe
    from skulmfit import ULMFiTClassifier
    from skulmfit.pretrained import sha256
    for source, direction in ((tiny_weights, "forward"), (tiny_weights_bwd, "backward")):
        (tmp_path / source.name).write_bytes(source.read_bytes())
        card = {"name": "tiny", "direction": direction, "file": source.name, "sha256": sha256(source)}
        (tmp_path / f"tiny.{source.name.split('.')[1]}.json").write_text(json.dumps(card))
    texts, labels = keyword_task(8, 0)
    model = ULMFiTClassifier(str(tmp_path), lm_epochs=0, epochs=0, random_state=0).fit(texts, labels)
    features = model.transform(texts)
    columns = linear_probe.pooling_columns(features.shape[1], model)
    assert sorted(np.concatenate(list(columns.values())).tolist()) == list(range(features.shape[1]))
    # The max pooling is at least every other pooling of the same unit; the last state is among the states.
    width = model.models_[0].config.emb_size
    assert len(columns["max"]) == 2 * width
    assert np.all(features[:, columns["max"]] >= features[:, columns["mean"]] - 1e-5)
    assert np.all(features[:, columns["max"]] >= features[:, columns["last"]] - 1e-5)


def test_long_news_keeps_long_articles_labelled_with_their_first_topic(tmp_path):
    import csv
    import gzip

    from benchmarks.common import read_long_news, tuning_split
    long_text = " ".join(["word"] * 300)
    rows = [(long_text, "acq earn")] * 130 + [(long_text, "crude")] * 130 + [(long_text, "zinc")] * 4 \
        + [("too short an article", "acq")] * 5
    (tmp_path / "reuters").mkdir()
    with gzip.open(tmp_path / "reuters" / "train.csv.gz", "wt", newline="") as f:
        csv.writer(f).writerows([("text", "labels"), *rows])
    texts, labels = read_long_news(tmp_path)
    assert len(texts) == 264  # the short ones are left out
    assert list(labels[:130]) == ["acq"] * 130 and labels[130] == "crude"
    assert list(labels[260:]) == ["other"] * 4  # fewer than 20 long articles begin with zinc
    pool, pool_labels, held_out, held_out_labels = tuning_split(tmp_path, "news")
    assert (len(pool), len(held_out)) == (64, 200)
    assert set(pool_labels) == set(held_out_labels) == {"acq", "crude", "other"}  # stratified
