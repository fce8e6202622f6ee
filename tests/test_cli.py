"""The ``skulmfit`` command line, driven through ``main(argv)``."""
import csv
import io
import json

import numpy as np
import pytest

import skulmfit
import skulmfit.cli as cli
import skulmfit.pretrained
from skulmfit.cli import main

TEXTS = ["a great film", "an awful film", "great acting", "awful acting", "so great", "so awful"] * 3
LABELS = ["pos", "neg"] * 9


def tiny(weights):
    return ["--param", f"pretrained={weights}", "--param", "lm_epochs=1", "--param", "epochs=1",
            "--param", "batch_size=8", "--param", "random_state=0"]


def write_csv(path, rows, fields=("text", "label"), delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


@pytest.fixture
def train_csv(tmp_path):
    return write_csv(tmp_path / "train.csv", [{"text": t, "label": y} for t, y in zip(TEXTS, LABELS)])


@pytest.fixture
def model(tmp_path, train_csv, tiny_weights):
    path = str(tmp_path / "model.skulmfit")
    assert main(["fit", train_csv, "-o", path, *tiny(tiny_weights)]) == 0
    return path


def test_fit_writes_a_safe_model_that_predicts_like_the_estimator(model):
    clf = skulmfit.load(model)
    assert clf.classes_.tolist() == ["neg", "pos"] and clf.lm_epochs == 1 and clf.random_state == 0


def test_predict_keeps_input_order_streams_in_chunks_and_adds_probabilities(model, tmp_path, monkeypatch):
    queries = ["so great", "awful acting", "a great film", "an awful film", "great"]
    source = write_csv(tmp_path / "in.csv", [{"text": t} for t in queries], fields=("text",))
    monkeypatch.setattr(cli, "PREDICT_CHUNK_ROWS", 2)
    out = tmp_path / "out.csv"
    assert main(["predict", model, source, "-o", str(out), "--proba"]) == 0
    rows = list(csv.DictReader(open(out)))
    clf = skulmfit.load(model)
    assert [r["prediction"] for r in rows] == clf.predict(queries).tolist()
    proba = np.array([[float(r["proba_neg"]), float(r["proba_pos"])] for r in rows])
    np.testing.assert_allclose(proba, clf.predict_proba(queries), atol=1e-6)


def test_tsv_jsonl_gzip_and_standard_streams(model, tmp_path, monkeypatch, capsys):
    tsv = write_csv(tmp_path / "in.tsv", [{"text": "so great"}, {"text": "so awful"}], ("text",), "\t")
    jsonl = tmp_path / "in.jsonl.gz"
    import gzip
    with gzip.open(jsonl, "wt") as f:
        f.write(json.dumps({"review": "so great", "id": 1}) + "\n\n" + json.dumps({"review": "so awful"}) + "\n")
    assert main(["predict", model, tsv, "-o", str(tmp_path / "a.jsonl")]) == 0
    assert main(["predict", model, str(jsonl), "-o", str(tmp_path / "b.jsonl"), "--text-column", "review"]) == 0
    a = [json.loads(line) for line in open(tmp_path / "a.jsonl")]
    assert a == [json.loads(line) for line in open(tmp_path / "b.jsonl")] and len(a) == 2
    monkeypatch.setattr("sys.stdin", io.StringIO("text\nso great\nso awful\n"))
    capsys.readouterr()
    assert main(["predict", model, "-", "-o", "-"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "prediction" and out[1:] == [r["prediction"] for r in a]


def test_evaluate_prints_accuracy_macro_f1_report_and_confusion_matrix(model, train_csv, capsys):
    assert main(["evaluate", model, train_csv]) == 0
    out = capsys.readouterr().out
    assert out.startswith("accuracy ") and "macro-F1" in out and "precision" in out
    assert "confusion matrix" in out and out.rstrip().splitlines()[-1].split()[0] == "pos"


def test_explain_prints_each_text_with_its_token_attributions(model, capsys):
    assert main(["explain", model, "so great", "so awful", "--target", "pos", "--steps", "4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("target 'pos'") and "great[" in out[0] and out[1].startswith("  most positive:")
    assert main(["explain", model, "x", "--target", "neutral"]) == 2


def test_models_lists_the_bundled_models(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "wiki-en-small (forward)" in out
    assert out.splitlines()[0] == f"the default model: {skulmfit.pretrained.DEFAULT_MODEL}"


def test_pretrain_is_the_pretraining_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--help"])
    assert exit_info.value.code == 0 and "--cache" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["fit", "{missing}", "-o", "{model_out}"], "no such file"),
    (["fit", "{empty}", "-o", "{model_out}"], "is empty"),
    (["fit", "{train}", "-o", "{model_out}", "--label-column", "y"], "no label column 'y'"),
    (["fit", "{train}", "-o", "{model_out}", "--param", "lr"], "write NAME=VALUE"),
    (["fit", "{train}", "-o", "{model_out}", "--param", "speed=3"], "has no such parameter"),
    (["fit", "{train}", "-o", "{model_out}", "--param", "lr=-1"], "cannot fit: The 'lr' parameter"),
    (["fit", "{noname}", "-o", "{model_out}"], "cannot tell the format"),
    (["predict", "{train}", "{train}", "-o", "{out}"], "is not a skulmfit model file"),
    (["predict", "{missing}", "{train}", "-o", "{out}"], "does not exist: there is no skulmfit model file there"),
    (["predict", "{model}", "{train}", "-o", "{out}", "--text-column", "body"], "no text column 'body'"),
    (["evaluate", "{model}", "{badjson}"], "is not readable as jsonl"),
])
def test_user_mistakes_end_in_one_line_and_status_2(argv, message, model, train_csv, tmp_path, capsys):
    (tmp_path / "empty.csv").write_text("text,label\n")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    (tmp_path / "noname").write_text("text,label\na,b\n")
    paths = {"missing": tmp_path / "nope.csv", "empty": tmp_path / "empty.csv", "train": train_csv,
             "model": model, "model_out": tmp_path / "m", "out": tmp_path / "o.csv",
             "badjson": tmp_path / "bad.jsonl", "noname": tmp_path / "noname"}
    capsys.readouterr()
    assert main([a.format(**paths) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
