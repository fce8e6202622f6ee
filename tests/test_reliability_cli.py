"""The command line under a reliability probe: every subcommand with bad files, encodings, missing
and empty fields, and every model kind (classifier, multi-label, regressor), driven in-process
through ``main(argv)``. A mistake is one line on standard error and exit status 2; no work is lost."""
import csv
import gzip
import io
import json
import pickle

import numpy as np
import pytest
from sklearn.metrics import f1_score, mean_absolute_error, r2_score

import skulmfit
import skulmfit.cli as cli
from skulmfit import ULMFiTClassifier, ULMFiTRegressor
from skulmfit.cli import main

TINY = dict(lm_epochs=1, epochs=1, batch_size=8, bptt=10, max_len=50, random_state=0)
TEXTS = ["a great film", "an awful film", "great acting", "awful acting", "so great", "so awful"] * 3
LABELS = ["pos", "neg"] * 9
LABEL_SETS = [[0, 2], [1], [0], [1, 2], [0], []] * 3  # multi-label: the model's labels are column indices
SCORES = [9.0, 2.0, 8.0, 1.0, 9.0, 2.0] * 3


def tiny(weights):
    return ["--param", f"pretrained={weights}", "--param", "lm_epochs=1", "--param", "epochs=1",
            "--param", "batch_size=8", "--param", "bptt=10", "--param", "max_len=50", "--param", "random_state=0"]


def write_csv(path, rows, fields=("text", "label"), delimiter=",", encoding="utf-8"):
    with open(path, "w", newline="", encoding=encoding) as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def indicator(label_sets, n_labels=3):
    return np.array([[int(i in labels) for i in range(n_labels)] for labels in label_sets])


def fails(argv, capsys, *messages):
    """Runs ``argv``, which must end in one line on standard error and exit status 2; returns the line."""
    capsys.readouterr()
    try:
        status = main(argv)
    except SystemExit as exit_info:  # argparse's own mistakes
        status = exit_info.code
    err = capsys.readouterr().err
    assert status == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for message in messages:
        assert message in err, err
    return err.strip()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def train_csv(folder):
    return write_csv(folder / "train.csv", [{"text": t, "label": y} for t, y in zip(TEXTS, LABELS)])


@pytest.fixture(scope="module")
def classifier(folder, train_csv, tiny_weights):
    path = str(folder / "classifier.skulmfit")
    assert main(["fit", train_csv, "-o", path, *tiny(tiny_weights)]) == 0
    return path


@pytest.fixture(scope="module")
def multilabel(folder, tiny_weights):
    path = str(folder / "multilabel.skulmfit")
    ULMFiTClassifier(pretrained=str(tiny_weights), **TINY).fit(TEXTS, indicator(LABEL_SETS)).save(path)
    return path


@pytest.fixture(scope="module")
def regressor(folder, tiny_weights):
    path = str(folder / "regressor.skulmfit")
    ULMFiTRegressor(pretrained=str(tiny_weights), **TINY).fit(TEXTS, SCORES).save(path)
    return path


@pytest.fixture(scope="module")
def regressor_2_outputs(folder, tiny_weights):
    path = str(folder / "regressor2.skulmfit")
    targets = np.column_stack([SCORES, np.array(SCORES) * -2])
    ULMFiTRegressor(pretrained=str(tiny_weights), **TINY).fit(TEXTS, targets).save(path)
    return path


@pytest.fixture
def queries(tmp_path):
    return write_csv(tmp_path / "queries.csv", [{"text": t} for t in TEXTS[:6]], fields=("text",))


# ----------------------------------------------------------------------------- fit: no work lost

@pytest.fixture
def no_training(monkeypatch):
    """Makes any fit fail loudly: a refused output must be refused before training starts."""
    def fit(*args, **kwargs):
        raise AssertionError("fit ran although its output cannot be written")
    monkeypatch.setattr(ULMFiTClassifier, "fit", fit)


@pytest.mark.parametrize("output, message", [
    ("{tmp}/missing_folder/model.skulmfit", "does not exist"),
    ("{tmp}", "is a folder"),
    ("{train}/model.skulmfit", "is a file, not a folder"),
    ("-", "a model is written to a file"),
    ("/dev/null", "a model is written to a file"),
])
def test_fit_refuses_an_unwritable_output_before_training(output, message, train_csv, tmp_path, capsys,
                                                          no_training):
    fails(["fit", train_csv, "-o", output.format(tmp=tmp_path, train=train_csv)], capsys, message)


def test_fit_refuses_a_folder_it_cannot_write_to_before_training(train_csv, tmp_path, capsys, monkeypatch,
                                                                 no_training):
    def read_only(*args, **kwargs):  # chmod would not stop root, who runs these tests in containers
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(cli.tempfile, "TemporaryFile", read_only)
    fails(["fit", train_csv, "-o", str(tmp_path / "m.skulmfit")], capsys, "cannot create files in", "Permission denied")


def test_a_model_that_cannot_be_saved_after_fitting_is_one_line(train_csv, tiny_weights, tmp_path, capsys,
                                                                 monkeypatch):
    def full_disk(self, path):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(ULMFiTClassifier, "save", full_disk)
    fails(["fit", train_csv, "-o", str(tmp_path / "m.skulmfit"), *tiny(tiny_weights)], capsys,
          "fitted, but cannot write", "No space left on device")


# ----------------------------------------------------------------------------- missing and empty fields

@pytest.mark.parametrize("command", ["fit", "evaluate"])
@pytest.mark.parametrize("table, message", [
    ("text,label\na great film,pos\nan awful film,neg\nso great,\n", "data row 3 has an empty 'label' value"),
    ("text,label\na great film,pos\nan awful film,neg\nso great\n", "data row 3 has no 'label' value"),
    ("text,label\na great film,pos\nan awful film,  \n", "data row 2 has an empty 'label' value"),
])
def test_an_empty_or_missing_label_is_refused_naming_its_row(command, table, message, classifier, tmp_path,
                                                             capsys, no_training):
    (tmp_path / "t.csv").write_text(table)
    model = str(tmp_path / "m.skulmfit") if command == "fit" else classifier
    argv = ["fit", str(tmp_path / "t.csv"), "-o", model] if command == "fit" else ["evaluate", model,
                                                                                   str(tmp_path / "t.csv")]
    fails(argv, capsys, message)
    assert command == "evaluate" or not (tmp_path / "m.skulmfit").exists()


@pytest.mark.parametrize("line, message", [
    ('{"text": "so great", "label": null}', "data row 2 has no 'label' value"),
    ('{"text": "so great", "label": ""}', "data row 2 has an empty 'label' value"),
    ('{"text": "so great", "label": NaN}', "data row 2 has an empty 'label' value"),
    ('{"text": 3, "label": "pos"}', "the text in data row 2 is int"),
])
def test_json_lines_missing_fields_are_refused_naming_their_row(line, message, tmp_path, capsys, no_training):
    (tmp_path / "t.jsonl").write_text('{"text": "a great film", "label": "pos"}\n' + line + "\n")
    fails(["fit", str(tmp_path / "t.jsonl"), "-o", str(tmp_path / "m")], capsys, message)


def test_a_missing_text_in_a_later_chunk_names_its_row_and_leaves_no_output(classifier, tmp_path, capsys,
                                                                          monkeypatch):
    (tmp_path / "in.csv").write_text("id,text\n1,so great\n2,so awful\n3,great\n4\n5,awful\n")
    monkeypatch.setattr(cli, "PREDICT_CHUNK_ROWS", 2)
    out = tmp_path / "out.csv"
    fails(["predict", classifier, str(tmp_path / "in.csv"), "-o", str(out)], capsys, "data row 4 has no 'text'")
    assert not out.exists()  # no half-written table that looks like a result


def test_empty_texts_are_texts(classifier, tmp_path):
    (tmp_path / "in.csv").write_text('text\n""\nso great\n')
    assert main(["predict", classifier, str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.csv")]) == 0
    assert len(list(csv.DictReader(open(tmp_path / "out.csv")))) == 2


# ----------------------------------------------------------------------------- encodings

BOM = "\ufeff"


@pytest.mark.parametrize("name", ["train.csv", "train.tsv", "train.csv.gz"])
def test_a_byte_order_mark_is_read_as_excel_writes_it(name, train_csv, tmp_path, capsys):
    delimiter = "\t" if ".tsv" in name else ","
    text = BOM + "".join(f"{t}{delimiter}{y}\n" for t, y in [("text", "label"), *zip(TEXTS, LABELS)])
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")
    assert main(["fit", str(path), "-o", str(tmp_path / "m.skulmfit"), "--param", "pretrained=null",
                 "--param", "lm_epochs=0", "--param", "epochs=1", "--param", "min_freq=1"]) == 0
    assert main(["evaluate", str(tmp_path / "m.skulmfit"), str(path)]) == 0
    assert capsys.readouterr().out.startswith("accuracy ")


def test_standard_input_with_a_byte_order_mark(classifier, monkeypatch, capsys):
    stdin = io.TextIOWrapper(io.BytesIO((BOM + "text\nso great\nso awful\n").encode("utf-8")))
    monkeypatch.setattr("sys.stdin", stdin)
    capsys.readouterr()
    assert main(["predict", classifier, "-", "-o", "-"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["prediction", *skulmfit.load(classifier).predict(["so great", "so awful"]).tolist()]


def test_latin_1_bytes_are_refused_as_not_utf8(classifier, tmp_path, capsys):
    path = write_csv(tmp_path / "latin.csv", [{"text": "un film génial", "label": "pos"}], encoding="latin-1")
    fails(["evaluate", classifier, path], capsys, "is not UTF-8 text (byte 0xe9", "save it as UTF-8")
    fails(["predict", classifier, path, "-o", str(tmp_path / "out.csv")], capsys, "is not UTF-8 text")
    assert not (tmp_path / "out.csv").exists()


# ----------------------------------------------------------------------------- model files

@pytest.fixture
def bad_models(tmp_path, classifier):
    """Files and paths that hold no model, by name."""
    (tmp_path / "random.bin").write_bytes(np.random.default_rng(0).bytes(3000))
    (tmp_path / "empty.skulmfit").write_bytes(b"")
    whole = open(classifier, "rb").read()
    (tmp_path / "truncated.skulmfit").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "model.pkl").write_bytes(pickle.dumps({"a": 1}))
    (tmp_path / "table.csv").write_text("text,label\na,b\n")
    (tmp_path / "folder").mkdir()
    return {name: str(tmp_path / name) for name in
            ("random.bin", "empty.skulmfit", "truncated.skulmfit", "model.pkl", "table.csv", "folder", "missing")}


@pytest.mark.parametrize("command", ["predict", "evaluate", "explain"])
@pytest.mark.parametrize("name, message", [
    ("random.bin", "is not a skulmfit model file: it is truncated or not a torch file"),
    ("empty.skulmfit", "is not a skulmfit model file: it is empty"),
    ("truncated.skulmfit", "is not a skulmfit model file: it is truncated or not a torch file"),
    ("model.pkl", "is not a skulmfit model file"),
    ("table.csv", "is not a skulmfit model file: it is truncated or not a torch file"),
    ("folder", "is a folder, not a skulmfit model file"),
    ("missing", "does not exist: there is no skulmfit model file there"),
])
def test_a_file_that_is_no_model_is_one_line_of_our_own(command, name, message, bad_models, train_csv, tmp_path,
                                                        capsys):
    model = bad_models[name]
    argv = {"predict": ["predict", model, train_csv, "-o", str(tmp_path / "out.csv")],
            "evaluate": ["evaluate", model, train_csv], "explain": ["explain", model, "so great"]}[command]
    err = fails(argv, capsys, model, message)
    for unsafe_advice_or_internals in ("weights_only", "Weights only", "joblib", "add_safe_globals", "Traceback"):
        assert unsafe_advice_or_internals not in err


@pytest.mark.parametrize("argv, message", [
    (["fit", "train.csv"], "the following arguments are required: -o/--output"),
    (["predict", "m", "in.csv", "-o", "out.csv", "--format", "xml"], "invalid choice: 'xml'"),
    (["nonsense"], "invalid choice: 'nonsense'"),
    (["evaluate", "m"], "the following arguments are required: test"),
    (["explain", "m", "text", "--steps", "many"], "invalid int value: 'many'"),
])
def test_command_line_mistakes_are_one_line(argv, message, capsys):
    fails(argv, capsys, message)


# ----------------------------------------------------------------------------- predict: every model kind

def test_predict_output_checks(classifier, queries, tmp_path, capsys):
    fails(["predict", classifier, queries, "-o", str(tmp_path / "nowhere" / "out.csv")], capsys,
          "does not exist")
    fails(["predict", classifier, queries, "-o", queries], capsys, "is the input table")
    assert open(queries).read().startswith("text\n")  # the input is intact
    assert main(["predict", classifier, queries, "-o", "/dev/null", "--output-format", "csv"]) == 0


def test_predict_multilabel_writes_label_lists_at_the_model_threshold(multilabel, queries, tmp_path):
    model = skulmfit.load(multilabel)
    texts = TEXTS[:6]
    out = tmp_path / "out.csv"
    assert main(["predict", multilabel, queries, "-o", str(out), "--proba"]) == 0
    rows = list(csv.DictReader(open(out)))
    assert list(rows[0]) == ["prediction", "proba_0", "proba_1", "proba_2"]
    np.testing.assert_array_equal(indicator([json.loads(r["prediction"]) for r in rows]), model.predict(texts))
    proba = np.array([[float(r[f"proba_{i}"]) for i in range(3)] for r in rows])
    np.testing.assert_allclose(proba, model.predict_proba(texts), atol=1e-6)
    # JSON Lines holds real lists; a model saved with another threshold predicts at that threshold.
    model.set_params(threshold=0.0).save(tmp_path / "every-label.skulmfit")
    assert main(["predict", str(tmp_path / "every-label.skulmfit"), queries, "-o", str(tmp_path / "o.jsonl")]) == 0
    assert [json.loads(line) for line in open(tmp_path / "o.jsonl")] == [{"prediction": [0, 1, 2]}] * 6


def test_predict_regressor_writes_values_and_refuses_proba(regressor, regressor_2_outputs, queries, tmp_path,
                                                           capsys):
    texts = TEXTS[:6]
    assert main(["predict", regressor, queries, "-o", str(tmp_path / "out.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    assert list(rows[0]) == ["prediction"]
    np.testing.assert_allclose([float(r["prediction"]) for r in rows], skulmfit.load(regressor).predict(texts))
    assert main(["predict", regressor_2_outputs, queries, "-o", str(tmp_path / "two.jsonl")]) == 0
    rows = [json.loads(line) for line in open(tmp_path / "two.jsonl")]
    assert list(rows[0]) == ["prediction_0", "prediction_1"]
    np.testing.assert_allclose([[r["prediction_0"], r["prediction_1"]] for r in rows],
                               skulmfit.load(regressor_2_outputs).predict(texts))
    fails(["predict", regressor, queries, "-o", str(tmp_path / "p.csv"), "--proba"], capsys,
          "--proba", "is a regressor")
    assert not (tmp_path / "p.csv").exists()


# ----------------------------------------------------------------------------- evaluate: every model kind

def test_evaluate_names_labels_the_model_never_saw_and_reports_them(classifier, tmp_path, capsys):
    rows = [{"text": t, "label": y} for t, y in zip(TEXTS[:6], LABELS[:6])]
    rows += [{"text": "so okay", "label": "neu"}, {"text": "okay", "label": "neu"}, {"text": "meh", "label": "mixed"}]
    capsys.readouterr()
    assert main(["evaluate", classifier, write_csv(tmp_path / "test.csv", rows)]) == 0
    out = capsys.readouterr().out
    assert "3 texts have labels the model never saw, counted as errors: mixed, neu" in out
    report = out[out.index("precision"):out.index("confusion matrix")]
    assert "mixed" in report and "neu" in report
    matrix = out[out.index("confusion matrix"):].splitlines()
    assert matrix[1].split() == ["neg", "pos", "mixed", "neu"]
    assert matrix[3].split()[0] == "pos" and matrix[4].split()[0] == "mixed" and matrix[5].split()[0] == "neu"
    assert sum(map(int, matrix[5].split()[1:])) == 2  # both "neu" texts are in the matrix


def test_evaluate_multilabel_prints_micro_macro_f1_and_subset_accuracy(multilabel, tmp_path, capsys):
    rows = [{"text": t, "label": json.dumps(y)} for t, y in zip(TEXTS, LABEL_SETS)]
    capsys.readouterr()
    assert main(["evaluate", multilabel, write_csv(tmp_path / "test.csv", rows)]) == 0
    out = capsys.readouterr().out
    Y_pred = skulmfit.load(multilabel).predict(TEXTS)
    Y_true = indicator(LABEL_SETS)
    assert f"micro-F1 {f1_score(Y_true, Y_pred, average='micro', zero_division=0):.4f}" in out
    assert f"macro-F1 {f1_score(Y_true, Y_pred, average='macro', zero_division=0):.4f}" in out
    assert f"subset accuracy {np.mean((Y_true == Y_pred).all(1)):.4f}" in out and "samples avg" in out


def test_evaluate_multilabel_reads_what_predict_writes(multilabel, queries, tmp_path, capsys):
    """predict's label lists, as the label column, are all right: a subset accuracy of 1."""
    for name in ("out.csv", "out.jsonl"):
        assert main(["predict", multilabel, queries, "-o", str(tmp_path / name)]) == 0
    predicted = [r["prediction"] for r in csv.DictReader(open(tmp_path / "out.csv"))]
    write_csv(tmp_path / "test.csv", [{"text": t, "label": p} for t, p in zip(TEXTS[:6], predicted)])
    with open(tmp_path / "test.jsonl", "w") as f:
        for text, line in zip(TEXTS[:6], open(tmp_path / "out.jsonl")):
            f.write(json.dumps({"text": text, "label": json.loads(line)["prediction"]}) + "\n")
    for name in ("test.csv", "test.jsonl"):
        capsys.readouterr()
        assert main(["evaluate", multilabel, str(tmp_path / name)]) == 0
        assert "subset accuracy 1.0000" in capsys.readouterr().out


def test_evaluate_regressor_prints_rmse_mae_r2(regressor, tmp_path, capsys):
    path = write_csv(tmp_path / "t.csv", [{"text": t, "label": y} for t, y in zip(TEXTS, SCORES)])
    capsys.readouterr()
    assert main(["evaluate", regressor, path]) == 0
    out = capsys.readouterr().out
    y_pred = skulmfit.load(regressor).predict(TEXTS)
    rmse = np.sqrt(np.mean((np.array(SCORES) - y_pred) ** 2))
    assert out.startswith(f"RMSE {rmse:.4f}   MAE {mean_absolute_error(SCORES, y_pred):.4f}   "
                          f"R^2 {r2_score(SCORES, y_pred):.4f}")


@pytest.mark.parametrize("kind, good, label, message", [
    ("multilabel", "[0]", "0 2", "data row 2: the 'label' value '0 2' is not a JSON list of labels such as [0, 2]"),
    ("multilabel", "[0]", "[0, 7]", "data row 2: 7 is not one of the model's labels [0, 1, 2]"),
    ("multilabel", "[0]", "", "data row 2 has an empty 'label' value"),
    ("regressor", "9", "good", "data row 2: the 'label' value 'good' is not a number"),
    ("regressor", "9", "nan", "data row 2: the 'label' value 'nan' is not a finite number"),
])
def test_evaluate_refuses_a_bad_label_cell_naming_its_row(kind, good, label, message, request, tmp_path, capsys):
    path = write_csv(tmp_path / "t.csv", [{"text": "so great", "label": good}, {"text": "so awful", "label": label}])
    fails(["evaluate", request.getfixturevalue(kind), path], capsys, message)


def test_evaluate_refuses_a_regressor_of_several_outputs_by_name(regressor_2_outputs, train_csv, capsys):
    fails(["evaluate", regressor_2_outputs, train_csv], capsys, "is a regressor of 2 outputs")


# ----------------------------------------------------------------------------- explain and models

def test_explain_serves_every_model_kind(classifier, multilabel, regressor, capsys):
    for model, target in ((classifier, "pos"), (multilabel, "2"), (regressor, "0")):
        capsys.readouterr()
        assert main(["explain", model, "so great", "--target", target, "--steps", "2"]) == 0
        assert "most positive:" in capsys.readouterr().out
    fails(["explain", multilabel, "so great", "--target", "7"], capsys, "is not one of the model's classes")
    fails(["explain", regressor, "so great", "--target", "first"], capsys, "a regressor's target is an output index")


def test_models_lists_both_directions_of_every_bundled_model(capsys):
    assert main(["models"]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.startswith("the default model: ")
    for name in skulmfit.available_models():
        assert f"{name} (forward)" in "\n".join(lines)
    assert lines == sorted(lines, key=lambda line: line.split(" (")[0])  # grouped by model
