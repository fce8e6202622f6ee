"""The ``skulmfit`` command: fit, predict, evaluate, pretrain and list models from files.

    skulmfit fit TRAIN.csv -o MODEL [--text-column text --label-column label] [--param lr=0.02 ...] [-v]
    skulmfit predict MODEL INPUT.csv -o OUT.csv [--proba]
    skulmfit evaluate MODEL TEST.csv
    skulmfit explain MODEL "a text" ["another text" ...] [--target LABEL] [--steps 20]
    skulmfit pretrain CORPUS OUT --cache CACHE ...        (python -m skulmfit.pretrain's options)
    skulmfit models

Tables are CSV, TSV or JSON Lines, told apart by the file name (``.csv``, ``.tsv``, ``.jsonl``,
each optionally ``.gz``) or by ``--format``; ``-`` reads standard input or writes standard output.
Models are written with ``ULMFiTClassifier.save`` and read with :func:`skulmfit.load`, which never
runs code from the file. A user mistake (a missing file or column, an empty table, a file that is
no model) ends with one line on standard error and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice

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
def _open_text(path: str, mode: str):
    if path == "-":
        stream = sys.stdin if mode == "r" else sys.stdout
        yield stream
        return
    try:
        opener = gzip.open if path.endswith(".gz") else open
        f = opener(path, mode + "t", encoding="utf-8", newline="")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a folder, not a file") from None
    except OSError as error:
        raise UsageError(f"cannot open {path}: {error.strerror or error}") from None
    with f:
        yield f


def read_rows(path: str, fmt: str | None = None) -> Iterator[dict]:
    """The rows of a table as dicts, read lazily."""
    fmt = _format_of(path, fmt)
    with _open_text(path, "r") as f:
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
        except (json.JSONDecodeError, csv.Error, UnicodeDecodeError, EOFError, gzip.BadGzipFile) as error:
            raise UsageError(f"{path} is not readable as {fmt}: {error}") from None


def _column(rows: list[dict], name: str, path: str, role: str) -> list:
    if name not in rows[0]:
        raise UsageError(f"{path} has no {role} column {name!r}; its columns: {', '.join(map(str, rows[0]))} "
                         f"(choose with --{role}-column)")
    missing = [i for i, row in enumerate(rows) if row.get(name) is None]
    if missing:
        raise UsageError(f"{path}: row {missing[0] + 1} has no {name!r} value")
    return [row[name] for row in rows]


def _read_table(path: str, fmt: str | None, columns: dict[str, str]) -> list[list]:
    """The named columns (role -> column name) of a whole table, which must not be empty."""
    rows = list(read_rows(path, fmt))
    if not rows:
        raise UsageError(f"{path} is empty: it has no rows")
    return [_column(rows, name, path, role) for role, name in columns.items()]


def _texts(values: list, path: str) -> list[str]:
    bad = [i for i, v in enumerate(values) if not isinstance(v, str)]
    if bad:
        raise UsageError(f"{path}: the text in row {bad[0] + 1} is {type(values[bad[0]]).__name__}, not a string")
    return values


class _Writer:
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
            self.csv.writerow(row)


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


# ----------------------------------------------------------------------------- commands

def _load_model(path: str):
    from .persistence import load
    try:
        return load(path)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a folder, not a model file") from None
    except ValueError as error:
        raise UsageError(str(error)) from None


def cmd_fit(args) -> None:
    from sklearn.utils._param_validation import InvalidParameterError

    from .estimator import ULMFiTClassifier
    texts, labels = _read_table(args.train, args.format, {"text": args.text_column, "label": args.label_column})
    params = parse_params(args.param)
    params.setdefault("verbose", args.verbose)
    try:
        clf = ULMFiTClassifier(**params).fit(_texts(texts, args.train), labels)
    except (InvalidParameterError, ValueError, TypeError) as error:
        raise UsageError(f"cannot fit: {error}") from None
    clf.save(args.output)
    print(f"fitted on {len(texts):,} texts ({len(clf.classes_)} classes); model written to {args.output}",
          file=sys.stderr)


def cmd_predict(args) -> None:
    clf = _load_model(args.model)
    fmt_out = _format_of(args.output, args.output_format or (args.format if args.output == "-" else None))
    rows = read_rows(args.input, args.format)
    first = list(islice(rows, PREDICT_CHUNK_ROWS))
    if not first:
        raise UsageError(f"{args.input} is empty: it has no rows")
    fields = ["prediction"] + ([f"proba_{c}" for c in clf.classes_.tolist()] if args.proba else [])
    with _open_text(args.output, "w") as f:
        writer, chunk, done = _Writer(f, fmt_out, fields), first, 0
        while chunk:
            texts = _texts(_column(chunk, args.text_column, args.input, "text"), args.input)
            proba = clf.predict_proba(texts)
            for label, p in zip(clf.classes_[proba.argmax(1)].tolist(), proba.tolist()):
                row = {"prediction": label}
                if args.proba:
                    row.update({f"proba_{c}": round(v, 6) for c, v in zip(clf.classes_.tolist(), p)})
                writer.write(row)
            done += len(chunk)
            chunk = list(islice(rows, PREDICT_CHUNK_ROWS))
    print(f"{done:,} predictions written to {args.output}", file=sys.stderr)


def cmd_evaluate(args) -> None:
    import numpy as np
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score
    clf = _load_model(args.model)
    texts, labels = _read_table(args.test, args.format, {"text": args.text_column, "label": args.label_column})
    # Labels read from a file are strings; compare them as the model's classes are written.
    y_true = np.array([str(label) for label in labels])
    y_pred = np.array([str(label) for label in clf.predict(_texts(texts, args.test))])
    names = [str(c) for c in clf.classes_.tolist()]
    print(f"accuracy {accuracy_score(y_true, y_pred):.4f}   macro-F1 {f1_score(y_true, y_pred, average='macro'):.4f}"
          f"   ({len(texts):,} texts)\n")
    print(classification_report(y_true, y_pred, labels=names, zero_division=0, digits=4))
    print("confusion matrix (rows: true class, columns: predicted class)")
    matrix = confusion_matrix(y_true, y_pred, labels=names)
    width = max(len(n) for n in names + [str(matrix.max())]) + 1
    print(" " * width + "".join(n.rjust(width) for n in names))
    for name, row in zip(names, matrix):
        print(name.rjust(width) + "".join(str(v).rjust(width) for v in row))


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
    from .pretrained import _registry
    registry = _registry()
    if not registry:
        print("no bundled models")
    for name, directions in sorted(registry.items()):
        for direction, card in sorted(directions.items()):
            sizes = card.get("sizes", {})
            print(f"{name} ({direction}): {card.get('tokenizer', 'word')} tokenizer, vocabulary "
                  f"{sizes.get('vocab_size', '?'):,}, {sizes.get('emb_size')}/{sizes.get('hidden_size')}/"
                  f"{sizes.get('n_layers')} (emb/hidden/layers), {card.get('tokens_seen', 0):,} tokens of "
                  f"{card.get('corpus', '?')}")
            if args.verbose:
                print(json.dumps({k: v for k, v in card.items() if k != "log"}, indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skulmfit", description="ULMFiT text classification from files.")
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

    predict = commands.add_parser("predict", help="predict the class of every row of a table")
    predict.add_argument("model")
    predict.add_argument("input", help="table with a text column (- for standard input)")
    predict.add_argument("-o", "--output", required=True, help="table to write (- for standard output)")
    predict.add_argument("--proba", action="store_true", help="add one probability column per class")
    predict.add_argument("--output-format", choices=FORMATS, help="default: from the output's name")
    table_options(predict, label=False)
    predict.set_defaults(run=cmd_predict)

    evaluate = commands.add_parser("evaluate", help="accuracy, macro-F1, per-class report, confusion matrix")
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
        print(f"skulmfit {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of standard output went away (| head)
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
