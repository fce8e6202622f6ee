"""The ``skulmfit`` command: fit, predict, evaluate, pretrain and list models from files.

    skulmfit fit TRAIN.csv -o MODEL [--text-column text --label-column label] [--param lr=0.02 ...] [-v]
    skulmfit predict MODEL INPUT.csv -o OUT.csv [--proba]
    skulmfit evaluate MODEL TEST.csv
    skulmfit explain MODEL "a text" ["another text" ...] [--target LABEL] [--steps 20]
    skulmfit pretrain CORPUS OUT --cache CACHE ...        (python -m skulmfit.pretrain's options)
    skulmfit models

Tables are CSV, TSV or JSON Lines, told apart by the file name (``.csv``, ``.tsv``, ``.jsonl``,
each optionally ``.gz``) or by ``--format``; ``-`` reads standard input or writes standard output.
They are read as UTF-8, with or without a byte-order mark (Excel's "CSV UTF-8"). Rows are counted
as data rows from 1, the header not included.

``fit`` writes a classifier (one label per text). ``predict`` and ``evaluate`` also serve the
other models ``save`` writes, each in its own terms:

* a classifier: ``prediction`` is the most probable class; ``--proba`` adds ``proba_<class>``;
  ``evaluate`` prints accuracy, macro-F1, a per-class report and the confusion matrix, counting
  the labels the model never saw as errors and naming them.
* a multi-label classifier (fitted on a 0/1 indicator matrix): a label cell is a JSON list of the
  model's labels (its column indices), ``[0, 2]``, ``[]`` for none; ``prediction`` is the list of
  labels whose probability reaches the model's ``threshold``; ``--proba`` adds ``proba_<label>``;
  ``evaluate`` prints micro-F1, macro-F1, subset accuracy and a per-label report.
* a regressor: ``prediction`` is the predicted value (``prediction_0``, ``prediction_1``, ... for
  several outputs); ``evaluate`` prints RMSE, MAE and R^2 (of a one-output regressor).

Models are written with ``ULMFiTClassifier.save`` and read with :func:`skulmfit.load`, which never
runs code from the file. ``fit`` checks that its output can be written before it trains, and a
``predict`` that fails midway leaves no partial output file. A user mistake (a missing file or
column, an empty label, an empty table, a file that is no model) ends with one line on standard
error and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path

import numpy as np

FORMATS = ("csv", "tsv", "jsonl")
PREDICT_CHUNK_ROWS = 10_000  # rows read, predicted and written at a time: memory stays bounded


class UsageError(Exception):
    """A mistake in the command line or its files: reported in one line, exit status 2."""


# ----------------------------------------------------------------------------- tables

def _format_of(path: str, given: str | None) -> str:
    if given:
        return given
    name = path.removesuffix(".gz")
    for fmt, suffixes in (("csv", (".csv",)), ("tsv", (".tsv", ".tab")), ("jsonl", (".jsonl", ".ndjson"))):
        if name.endswith(suffixes):
            return fmt
    if path == "-":
        return "csv"
    raise UsageError(f"cannot tell the format of {path}: name it .csv, .tsv or .jsonl, or pass --format")


@contextmanager
def _open_input(path: str):
    """``path`` (``-``: standard input) as UTF-8 text; a byte-order mark is dropped."""
    if path == "-":
        if not hasattr(sys.stdin, "buffer"):  # standard input replaced by a text stream
            yield sys.stdin
            return
        stream = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline="")
        try:
            yield stream
        finally:
            stream.detach()  # standard input stays open
        return
    try:
        opener = gzip.open if path.endswith(".gz") else open
        f = opener(path, "rt", encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a folder, not a file") from None
    except OSError as error:
        raise UsageError(f"cannot open {path}: {error.strerror or error}") from None
    with f:
        yield f


@contextmanager
def _open_output(path: str):
    """``path`` (``-``: standard output) for writing UTF-8 text; removed again if the writing fails,
    so that no half-written table is left under the name."""
    if path == "-":
        yield sys.stdout
        return
    try:
        opener = gzip.open if path.endswith(".gz") else open
        f = opener(path, "wt", encoding="utf-8", newline="")
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror or error}") from None
    try:
        with f:
            yield f
    except BaseException:
        if os.path.isfile(path):  # not /dev/null or a pipe
            os.remove(path)
        raise


def _check_output_path(path: str) -> None:
    """Refuses, before any work is done, a file name that cannot be written (see ``check_destination``)."""
    from .persistence import check_destination
    try:
        check_destination(Path(path), "write")
    except OSError as error:
        raise UsageError(str(error)) from None


def _check_model_path(path: str) -> None:
    """Refuses, before fitting, a model file name that cannot be written: ``-``, a device, a folder
    in which no file can be created (the model is written beside its name first, then renamed)."""
    if path != "-":
        _check_output_path(path)
    if path == "-" or (os.path.exists(path) and not os.path.isfile(path)):
        raise UsageError(f"-o {path}: a model is written to a file; name one, e.g. -o model.skulmfit")
    folder = Path(path).parent
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UsageError(f"cannot write {path}: cannot create files in {folder} ({error.strerror or error})") from None


def read_rows(path: str, fmt: str | None = None) -> Iterator[dict]:
    """The rows of a table as dicts, read lazily."""
    fmt = _format_of(path, fmt)
    with _open_input(path) as f:
        try:
            if fmt == "jsonl":
                for number, line in enumerate(f, start=1):
                    if line.strip():
                        row = json.loads(line)
                        if not isinstance(row, dict):
                            raise UsageError(f"{path}, line {number}: a JSON object is expected")
                        yield row
            else:
                csv.field_size_limit(2**31 - 1)
                yield from csv.DictReader(f, delimiter="\t" if fmt == "tsv" else ",")
        except UnicodeDecodeError as error:
            raise UsageError(f"{path} is not UTF-8 text (byte 0x{error.object[error.start]:02x}: {error.reason}); "
                             "save it as UTF-8") from None
        except (json.JSONDecodeError, csv.Error, EOFError, gzip.BadGzipFile) as error:
            raise UsageError(f"{path} is not readable as {fmt}: {error}") from None


def _column(rows: list[dict], name: str, path: str, role: str, first_row: int = 1) -> list:
    """One column of some rows, the first of which is data row ``first_row``; every row must have it."""
    if name not in rows[0]:
        raise UsageError(f"{path} has no {role} column {name!r}; its columns: {', '.join(map(str, rows[0]))} "
                         f"(choose with --{role}-column)")
    missing = [i for i, row in enumerate(rows) if row.get(name) is None]
    if missing:
        raise UsageError(f"{path}: data row {first_row + missing[0]} has no {name!r} value")
    return [row[name] for row in rows]


def _read_table(path: str, fmt: str | None, columns: dict[str, str]) -> list[list]:
    """The named columns (role -> column name) of a whole table, which must not be empty."""
    rows = list(read_rows(path, fmt))
    if not rows:
        raise UsageError(f"{path} is empty: it has no rows")
    return [_column(rows, name, path, role) for role, name in columns.items()]


def _texts(values: list, path: str, first_row: int = 1) -> list[str]:
    bad = [i for i, v in enumerate(values) if not isinstance(v, str)]
    if bad:
        raise UsageError(f"{path}: the text in data row {first_row + bad[0]} is {type(values[bad[0]]).__name__}, "
                         "not a string")
    return values


def _labels(values: list, path: str, column: str) -> list:
    """Labels, none of them empty: an empty cell is how pandas writes a missing value."""
    for row, value in enumerate(values, start=1):
        if (isinstance(value, str) and not value.strip()) or (isinstance(value, float) and math.isnan(value)):
            raise UsageError(f"{path}: data row {row} has an empty {column!r} value; every text needs a label")
    return values


def _label_matrix(values: list, path: str, column: str, classes: list) -> np.ndarray:
    """A multi-label model's labels (each a JSON list of its labels, as predict writes them) as a 0/1
    indicator matrix with one column per label of ``classes``."""
    index = {str(c): i for i, c in enumerate(classes)}
    matrix = np.zeros((len(values), len(classes)), dtype=np.int64)
    for row, value in enumerate(values, start=1):
        labels = _json_list(value)
        if labels is None:
            raise UsageError(f"{path}: data row {row}: the {column!r} value {value!r} is not a JSON list of "
                             "labels such as [0, 2] ([] for none)")
        unknown = [label for label in labels if str(label) not in index]
        if unknown:
            raise UsageError(f"{path}: data row {row}: {unknown[0]!r} is not one of the model's labels {classes}")
        matrix[row - 1, [index[str(label)] for label in labels]] = 1
    return matrix


def _json_list(value) -> list | None:
    """A list from JSON Lines, or from a cell holding a JSON list; None for anything else."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    return value if isinstance(value, list) else None


def _numbers(values: list, path: str, column: str) -> list[float]:
    """A regressor's targets: finite numbers."""
    targets = []
    for row, value in enumerate(values, start=1):
        try:
            target = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"{path}: data row {row}: the {column!r} value {value!r} is not a number") from None
        if not math.isfinite(target):
            raise UsageError(f"{path}: data row {row}: the {column!r} value {value!r} is not a finite number")
        targets.append(target)
    return targets


class _Writer:
    """Rows to CSV, TSV or JSON Lines; a list (a multi-label prediction) is a JSON list in a CSV cell."""

    def __init__(self, f, fmt: str, fields: list[str]):
        self.f, self.fmt = f, fmt
        if fmt != "jsonl":
            self.csv = csv.DictWriter(f, fieldnames=fields, delimiter="\t" if fmt == "tsv" else ",",
                                      lineterminator="\n")
            self.csv.writeheader()

    def write(self, row: dict) -> None:
        if self.fmt == "jsonl":
            self.f.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            self.csv.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})


# ----------------------------------------------------------------------------- parameters

def parse_params(pairs: list[str]) -> dict:
    """``["lr=0.02", "bidirectional=true", "pretrained=null"]`` -> parameters of ULMFiTClassifier.

    Values are read as JSON where they parse (numbers, true/false, null, lists), else as strings.
    """
    from .estimator import ULMFiTClassifier
    known = ULMFiTClassifier().get_params()
    params = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--param {pair!r}: write NAME=VALUE, e.g. --param lr=0.02")
        if name not in known:
            raise UsageError(f"--param {name}: ULMFiTClassifier has no such parameter; it has {', '.join(known)}")
        try:
            params[name] = json.loads(text)
        except json.JSONDecodeError:
            params[name] = text
    return params


# ----------------------------------------------------------------------------- models

def _load_model(path: str):
    """The model in ``path``, or a one-line reason why it holds none (:func:`skulmfit.load` names it)."""
    from .estimator import load
    try:
        return load(path)
    except (OSError, ValueError) as error:
        raise UsageError(str(error)) from None


def _kind(model) -> str:
    """The kind of a fitted model: "classifier", "multi-label classifier" or "regressor"."""
    if not hasattr(model, "classes_"):
        return "regressor"
    return "multi-label classifier" if model.multilabel_ else "classifier"


# ----------------------------------------------------------------------------- commands

def cmd_fit(args) -> None:
    from .estimator import ULMFiTClassifier
    _check_model_path(args.output)
    texts, labels = _read_table(args.train, args.format, {"text": args.text_column, "label": args.label_column})
    texts, labels = _texts(texts, args.train), _labels(labels, args.train, args.label_column)
    params = parse_params(args.param)
    params.setdefault("verbose", args.verbose)
    try:
        clf = ULMFiTClassifier(**params).fit(texts, labels)
    except (ValueError, TypeError) as error:  # scikit-learn's InvalidParameterError is both
        raise UsageError(f"cannot fit: {error}") from None
    try:
        clf.save(args.output)
    except OSError as error:
        raise UsageError(f"fitted, but cannot write {args.output}: {error.strerror or error}") from None
    print(f"fitted on {len(texts):,} texts ({len(clf.classes_)} classes); model written to {args.output}",
          file=sys.stderr)


def _prediction_fields(model, proba: bool) -> list[str]:
    """The output columns of ``predict`` for this model (see the module docstring)."""
    if _kind(model) == "regressor":
        return ["prediction"] if model.n_outputs_ == 1 else [f"prediction_{i}" for i in range(model.n_outputs_)]
    return ["prediction"] + ([f"proba_{c}" for c in model.classes_.tolist()] if proba else [])


def _prediction_rows(model, texts: list[str], fields: list[str], proba: bool) -> list[dict]:
    """One output row per text, with the columns ``fields``."""
    if _kind(model) == "regressor":
        values = np.asarray(model.predict(texts), dtype=float).reshape(len(texts), len(fields))
        return [dict(zip(fields, row)) for row in values.tolist()]
    classes = model.classes_.tolist()
    rows = []
    for p in model.predict_proba(texts).tolist():
        if model.multilabel_:  # the labels predict gives, as a list
            row = {"prediction": [c for c, v in zip(classes, p) if v >= model.threshold]}
        else:
            row = {"prediction": classes[int(np.argmax(p))]}
        if proba:
            row.update({f"proba_{c}": round(v, 6) for c, v in zip(classes, p)})
        rows.append(row)
    return rows


def cmd_predict(args) -> None:
    model = _load_model(args.model)
    if args.proba and _kind(model) == "regressor":
        raise UsageError(f"--proba: {args.model} is a regressor; it predicts values, not probabilities")
    fmt_out = _format_of(args.output, args.output_format or (args.format if args.output == "-" else None))
    if args.output != "-":
        _check_output_path(args.output)
        if args.input != "-" and os.path.exists(args.output) and os.path.samefile(args.input, args.output):
            raise UsageError(f"-o {args.output} is the input table; write the predictions to another file")
    rows = read_rows(args.input, args.format)
    first = list(islice(rows, PREDICT_CHUNK_ROWS))
    if not first:
        raise UsageError(f"{args.input} is empty: it has no rows")
    fields = _prediction_fields(model, args.proba)
    with _open_output(args.output) as f:
        writer, chunk, done = _Writer(f, fmt_out, fields), first, 0
        while chunk:
            texts = _texts(_column(chunk, args.text_column, args.input, "text", done + 1), args.input, done + 1)
            for row in _prediction_rows(model, texts, fields, args.proba):
                writer.write(row)
            done += len(chunk)
            chunk = list(islice(rows, PREDICT_CHUNK_ROWS))
    print(f"{done:,} predictions written to {args.output}", file=sys.stderr)


def cmd_evaluate(args) -> None:
    model = _load_model(args.model)
    if _kind(model) == "regressor" and model.n_outputs_ > 1:
        raise UsageError(f"{args.model} is a regressor of {model.n_outputs_} outputs and a table has one label "
                         "column; evaluate it in Python (score)")
    texts, labels = _read_table(args.test, args.format, {"text": args.text_column, "label": args.label_column})
    texts, labels = _texts(texts, args.test), _labels(labels, args.test, args.label_column)
    if _kind(model) == "regressor":
        _evaluate_regressor(model, texts, _numbers(labels, args.test, args.label_column))
    elif model.multilabel_:
        classes = model.classes_.tolist()
        _evaluate_multilabel(model, texts, _label_matrix(labels, args.test, args.label_column, classes))
    else:
        _evaluate_classifier(model, texts, labels)


def _evaluate_classifier(model, texts: list[str], labels: list) -> None:
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score
    # Labels read from a file are strings; compare them as the model's classes are written.
    y_true = np.array([str(label) for label in labels])
    y_pred = np.array([str(label) for label in model.predict(texts)])
    names = [str(c) for c in model.classes_.tolist()]
    unseen = sorted(set(y_true.tolist()) - set(names))
    names += unseen  # rows and columns of their own in the report and the matrix
    print(f"accuracy {accuracy_score(y_true, y_pred):.4f}   "
          f"macro-F1 {f1_score(y_true, y_pred, labels=names, average='macro', zero_division=0):.4f}"
          f"   ({len(texts):,} texts)")
    if unseen:
        print(f"{np.isin(y_true, unseen).sum():,} texts have labels the model never saw, counted as errors: "
              f"{', '.join(unseen)}")
    print()
    print(classification_report(y_true, y_pred, labels=names, zero_division=0, digits=4))
    print("confusion matrix (rows: true class, columns: predicted class)")
    matrix = confusion_matrix(y_true, y_pred, labels=names)
    width = max(len(n) for n in names + [str(matrix.max())]) + 1
    print(" " * width + "".join(n.rjust(width) for n in names))
    for name, row in zip(names, matrix):
        print(name.rjust(width) + "".join(str(v).rjust(width) for v in row))


def _evaluate_multilabel(model, texts: list[str], Y_true: np.ndarray) -> None:
    from scipy import sparse
    from sklearn.metrics import accuracy_score, classification_report, f1_score
    Y_pred = model.predict(texts)
    Y_pred = Y_pred.toarray() if sparse.issparse(Y_pred) else Y_pred
    print(f"micro-F1 {f1_score(Y_true, Y_pred, average='micro', zero_division=0):.4f}   "
          f"macro-F1 {f1_score(Y_true, Y_pred, average='macro', zero_division=0):.4f}   "
          f"subset accuracy {accuracy_score(Y_true, Y_pred):.4f}   "
          f"({len(texts):,} texts, threshold {model.threshold})\n")
    print(classification_report(Y_true, Y_pred, target_names=[str(c) for c in model.classes_.tolist()],
                                zero_division=0, digits=4))


def _evaluate_regressor(model, texts: list[str], y_true: list[float]) -> None:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
    y_pred = np.asarray(model.predict(texts), dtype=float).ravel()
    rmse = math.sqrt(mean_squared_error(y_true, y_pred))
    r2 = r2_score(y_true, y_pred) if len(texts) > 1 else float("nan")
    print(f"RMSE {rmse:.4f}   MAE {mean_absolute_error(y_true, y_pred):.4f}   R^2 {r2:.4f}   ({len(texts):,} texts)")


def cmd_explain(args) -> None:
    clf = _load_model(args.model)
    target = args.target
    if target is not None and hasattr(clf, "classes_"):  # a label from the command line is a string
        matches = [c for c in clf.classes_.tolist() if str(c) == target]
        if not matches:
            raise UsageError(f"--target {target!r} is not one of the model's classes {clf.classes_.tolist()}")
        target = matches[0]
    elif target is not None:
        if not target.isdigit():
            raise UsageError(f"--target {target!r}: a regressor's target is an output index")
        target = int(target)
    try:
        explanations = clf.explain(args.texts, target=target, steps=args.steps)
    except ValueError as error:
        raise UsageError(str(error)) from None
    for explanation in explanations:
        print(explanation)
        print("  most positive:", ", ".join(f"{t} {s:+.3f}" for t, s in explanation.top(5)))


def cmd_models(args) -> None:
    from .pretrained import DEFAULT_MODEL, available_models, model_card
    names = available_models()
    if not names:
        print("no bundled models")
    elif DEFAULT_MODEL in names:
        print(f"the default model: {DEFAULT_MODEL}")
    for name in names:
        for direction, backwards in (("backward", True), ("forward", False)):
            try:
                card = model_card(name, backwards)
            except ValueError:  # this model has no weights of that direction
                continue
            sizes = card.get("sizes", {})
            print(f"{name} ({direction}): {card.get('tokenizer', 'word')} tokenizer, vocabulary "
                  f"{sizes.get('vocab_size', '?'):,}, {sizes.get('emb_size')}/{sizes.get('hidden_size')}/"
                  f"{sizes.get('n_layers')} (emb/hidden/layers), {card.get('tokens_seen', 0):,} tokens of "
                  f"{card.get('corpus', '?')}")
            if args.verbose:
                print(json.dumps({k: v for k, v in card.items() if k != "log"}, indent=2))


class _Parser(argparse.ArgumentParser):
    """argparse, with a mistake on the command line reported in one line (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} -h)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="skulmfit", description="ULMFiT text classification from files.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def table_options(p, label=True):
        p.add_argument("--text-column", default="text")
        if label:
            p.add_argument("--label-column", default="label")
        p.add_argument("--format", choices=FORMATS, help="of the input (default: from its name; csv for -)")

    fit = commands.add_parser("fit", help="fit a classifier on a labelled table and save it")
    fit.add_argument("train", help="table with text and label columns (- for standard input)")
    fit.add_argument("-o", "--output", required=True, help="model file to write")
    fit.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="a ULMFiTClassifier parameter, e.g. --param lr=0.02 (repeatable)")
    fit.add_argument("-v", "--verbose", action="count", default=0, help="progress bars on standard error")
    table_options(fit)
    fit.set_defaults(run=cmd_fit)

    predict = commands.add_parser("predict", help="predict the class, labels or value of every row of a table")
    predict.add_argument("model")
    predict.add_argument("input", help="table with a text column (- for standard input)")
    predict.add_argument("-o", "--output", required=True, help="table to write (- for standard output)")
    predict.add_argument("--proba", action="store_true", help="add one probability column per class or label")
    predict.add_argument("--output-format", choices=FORMATS, help="default: from the output's name")
    table_options(predict, label=False)
    predict.set_defaults(run=cmd_predict)

    evaluate = commands.add_parser("evaluate", help="accuracy, macro-F1, per-class report, confusion matrix "
                                   "(multi-label: micro/macro-F1, subset accuracy; regressor: RMSE, MAE, R^2)")
    evaluate.add_argument("model")
    evaluate.add_argument("test", help="table with text and label columns (- for standard input)")
    table_options(evaluate)
    evaluate.set_defaults(run=cmd_evaluate)

    explain = commands.add_parser("explain", help="which tokens drove the predictions of some texts")
    explain.add_argument("model")
    explain.add_argument("texts", nargs="+", help="texts to explain")
    explain.add_argument("--target", help="the class to explain (default: the predicted one)")
    explain.add_argument("--steps", type=int, default=20, help="integrated-gradients steps (1: gradient x input)")
    explain.set_defaults(run=cmd_explain)

    # Listed for the help text; main() hands its arguments to skulmfit.pretrain untouched.
    commands.add_parser("pretrain", help="pretrain a language model (options: skulmfit pretrain -h)", add_help=False)

    models = commands.add_parser("models", help="the bundled language models and their cards")
    models.add_argument("-v", "--verbose", action="store_true", help="print each whole model card")
    models.set_defaults(run=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0, or 2 for a user mistake)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["pretrain"]:
        from .pretrain import main as pretrain
        pretrain(argv[1:])
        return 0
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except UsageError as error:
        message = " ".join(str(error).split())  # one line, whatever the message quotes
        print(f"skulmfit {args.command}: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of standard output went away (| head)
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
