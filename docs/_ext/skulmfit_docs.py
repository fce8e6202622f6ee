"""Sphinx directives that generate pages from the package itself, so that nothing is written twice.

``.. model-cards::``
    One section per bundled language model, from its cards (``skulmfit/weights/<name>.{fwd,bwd}.json``
    through :func:`skulmfit.pretrained.model_card`): sizes, training, distillation where there was
    one, evaluation, checksum. Values that
    are paths on the machine that trained the model are left out.

``.. cli-help:: COMMAND``
    The ``--help`` text of ``skulmfit`` (``COMMAND`` = ``skulmfit``), of one of its subcommands, or of
    ``pretrain`` (``python -m skulmfit.pretrain``), as a literal block.

The estimators' pages also show the methods they inherit from scikit-learn (``score``,
``get_params``, ...), whose docstrings refer to labels and glossary terms of scikit-learn's own
documentation; :func:`plain_sklearn_references` turns those references into plain text.
"""
from __future__ import annotations

import contextlib
import io
import os
import re

from docutils import nodes
from docutils.parsers.rst import Directive, directives
from docutils.statemachine import StringList

# --------------------------------------------------------------------------------------------- model cards

DIRECTIONS = ("forward", "backward")
# Training settings that name files or folders of the machine that trained a model: not for users.
PATH_SETTINGS = {"corpus", "out", "cache", "init", "vocab_from"}
EVALUATIONS = (("wikipedia_valid", "held-out Wikipedia"), ("wikitext2_test", "WikiText-2 test"))


def _cards(name: str) -> dict[str, dict]:
    from skulmfit.pretrained import model_card
    cards = {}
    for direction in DIRECTIONS:
        with contextlib.suppress(ValueError):
            cards[direction] = model_card(name, backwards=direction == "backward")
    return cards


def _number(value, digits: int | None = None) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) >= 1000:
            return f"{int(value):,}"
        return f"{value:.{digits}f}" if digits is not None else f"{value:g}"
    return str(value)


def _is_path(value) -> bool:
    return isinstance(value, str) and ("/" in value or value.startswith("."))


def _list_table(title: str, header: list[str], rows: list[list[str]], widths: str = "auto") -> list[str]:
    lines = [f".. list-table:: {title}", "   :header-rows: 1", f"   :widths: {widths}", ""]
    for row in [header] + rows:
        for i, cell in enumerate(row):
            text = str(cell).replace("\n", " ").strip() or "\u2013"
            lines.append(("   * - " if i == 0 else "     - ") + text)
    return lines + [""]


def _summary_rows(cards: dict[str, dict]) -> list[list[str]]:
    def row(label, get):
        values = []
        for card in cards.values():
            try:
                values.append(get(card))
            except (KeyError, TypeError):
                values.append("")
        return [label] + values

    def evaluation(key, metric, digits=None, percent=False):
        def get(card):
            value = card["evaluation"][key][metric]
            return f"{100 * value:.1f}%" if percent else _number(value, digits)
        return get

    rows = [
        row("weight file", lambda c: f"``skulmfit/weights/{c['file']}``"),
        row("SHA-256", lambda c: f"``{c['sha256']}``"),
        row("tokenizer", lambda c: c.get("tokenizer", "word (fastai rules)")),
        row("vocabulary", lambda c: _number(c["vocab_size"])),
        row("embedding / hidden / layers",
            lambda c: f"{c['sizes']['emb_size']} / {c['sizes']['hidden_size']} / {c['sizes']['n_layers']}"),
        row("pretraining corpus", lambda c: c["corpus"]),
        row("tokens seen", lambda c: _number(c["tokens_seen"])),
        row("pretraining time", lambda c: f"{c['seconds'] / 3600:.1f} h"),
        row("machine", lambda c: f"{c['machine']['cpu']}, {c['machine']['cores']} cores, "
                                 f"{c['machine']['torch_threads']} torch thread(s), torch {c['machine']['torch']}"),
        row("validation perplexity during pretraining (per token)", lambda c: _number(
            c["distillation"]["valid_perplexity_before"] if "distillation" in c else c["valid_perplexity"])),
        row("distilled from (sentence encoder)", lambda c: c["distillation"]["teacher"]),
        row("distillation: passages seen", lambda c: _number(c["distillation"]["passages_seen"])),
        row("distillation: loss weight", lambda c: _number(c["distillation"]["distill_weight"])),
        row("distillation: time, machine", lambda c: (
            f"{c['distillation']['seconds'] / 3600:.1f} h, {c['distillation']['machine']['cpu']}, "
            f"{c['distillation']['machine']['torch_threads']} torch thread(s)")),
        row("distillation: held-out cosine to the teacher", lambda c: _number(c["distillation"]["valid_cosine"])),
        row("validation perplexity after distillation (per token)",
            lambda c: _number(c["valid_perplexity"]) if "distillation" in c else ""),
    ]
    for key, label in EVALUATIONS:
        rows += [
            row(f"{label}: bits per character before distillation",
                lambda c, key=key: _number(c["distillation"]["before"]["bits_per_char"][key], 4)),
            row(f"{label}: bits per character", evaluation(key, "bits_per_char", 4)),
            row(f"{label}: open-vocabulary bits per character", evaluation(key, "open_bits_per_char", 4)),
            row(f"{label}: per-word perplexity", evaluation(key, "word_perplexity")),
            row(f"{label}: per-token perplexity", evaluation(key, "perplexity")),
            row(f"{label}: unknown-token rate", evaluation(key, "unknown_rate", percent=True)),
        ]
    rows.append(row("unknown-token rate, TREC-6 / SST-2 / IMDb train", lambda c: " / ".join(
        f"{100 * c['evaluation']['unknown_rate_train_texts'][k]:.1f}%" for k in ("trec", "sst2", "imdb"))))
    rows.append(row("status", lambda c: c["status"]))
    # A row with nothing in any direction says nothing.
    return [r for r in rows if any(cell not in ("", None) for cell in r[1:])]


def _training_rows(cards: dict[str, dict]) -> list[list[str]]:
    keys: list[str] = []
    for card in cards.values():
        keys += [k for k in card.get("training", {}) if k not in keys]
    rows = []
    for key in keys:
        values = [card.get("training", {}).get(key, "") for card in cards.values()]
        if key in PATH_SETTINGS or any(_is_path(v) for v in values):
            continue
        rows.append([f"``{key}``"] + [_number(v) for v in values])
    return rows


def _log_rows(card: dict) -> list[list[str]]:
    return [[_number(entry.get("tokens_seen")), _number(entry.get("train_seconds")),
             _number(entry.get("tokens_per_s")), _number(entry.get("valid_perplexity")),
             f"{entry['lr']:.3g}" if "lr" in entry else ""] for entry in card.get("log", [])]


def _distillation_rows(card: dict) -> list[list[str]]:
    batch = card.get("distillation", {}).get("batch_size", 0)
    return [[_number(entry["step"]), _number(entry["step"] * batch), _number(entry["seconds"]),
             _number(entry["valid_perplexity"]), _number(entry["valid_cosine"])]
            for entry in card.get("distillation", {}).get("log", [])]


def _distillation_judgement(distillation: dict) -> list[str]:
    """What a distilled model was judged on (``distill.py report``): every probed arm beside the
    teacher, and the accuracy inside ``fit``; the same in both directions' cards."""
    lines = []
    probe = distillation.get("frozen_probe")
    if probe:
        rows = [[f"``{model}``", *cells] for model, cells in probe["rows"].items()]
        lines += _list_table(f"Distillation arms and the teacher's ceiling: {probe['method']}",
                             ["features", *probe["columns"]], rows)
    in_fit = distillation.get("in_fit")
    if in_fit:
        columns = list(dict.fromkeys(column for row in in_fit["rows"] for column in row["accuracy"]))
        rows = [[f"``{row['model']}``", *(f"{row['accuracy'][c]['mean']:.1f} ({row['accuracy'][c]['samples']})"
                                          if c in row["accuracy"] else "" for c in columns)]
                for row in in_fit["rows"]]
        lines += _list_table(f"Inside fit: {in_fit['method']}, (label samples)", ["model", *columns], rows)
    return lines


def _size_comparison(card: dict) -> list[str]:
    comparison = card.get("size_comparison")
    if not comparison or "table" not in comparison:
        return []
    table = [line.strip().strip("|").split("|") for line in comparison["table"].strip().splitlines()]
    header, rows = [c.strip() for c in table[0]], [[c.strip() for c in r] for r in table[2:]]
    machine = comparison.get("machine", {})
    caption = (f"Sizes pretrained for {comparison.get('minutes_each', '?'):g} minutes each "
               f"({machine.get('cpu', '?')}, {machine.get('cores', '?')} cores; "
               f"``{comparison.get('command', '')}``)")
    return _list_table(caption, header, rows)


def model_cards_rst() -> list[str]:
    from skulmfit import available_models
    from skulmfit.pretrained import DEFAULT_MODEL
    lines: list[str] = []
    for name in available_models():
        cards = _cards(name)
        title = f"{name} (the default)" if name == DEFAULT_MODEL else name
        lines += [title, "-" * len(title), ""]
        lines += [f"Directions: {', '.join(cards)}. Use it with ``ULMFiTClassifier(pretrained=\"{name}\")``.", ""]
        lines += _list_table("Card", ["field", *cards], _summary_rows(cards), "40 " + " ".join(["60"] * len(cards)))
        training = _training_rows(cards)
        if training:
            lines += _list_table("Pretraining settings (``skulmfit pretrain``)", ["setting", *cards], training)
        first = next(iter(cards.values()))
        lines += _size_comparison(first)
        lines += _distillation_judgement(first.get("distillation", {}))
        for direction, card in cards.items():
            rows = _log_rows(card)
            if rows:
                lines += _list_table(f"Checkpoints of the {direction} model",
                                     ["tokens seen", "training seconds", "tokens/s", "validation perplexity",
                                      "learning rate"], rows)
            rows = _distillation_rows(card)
            if rows:
                lines += _list_table(f"Distillation checkpoints of the {direction} model",
                                     ["step", "passages seen", "seconds", "validation perplexity",
                                      "held-out cosine to the teacher"], rows)
    return lines


class ModelCards(Directive):
    has_content = False

    def run(self):
        from sphinx.util.nodes import nested_parse_with_titles
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(self.state, StringList(model_cards_rst(), source="skulmfit/weights/*.json"),
                                 container)
        return container.children


# --------------------------------------------------------------------------------------------- command line

def _help_text(command: str) -> str:
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        if command == "pretrain":
            from skulmfit.pretrain import main
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
                main(["-h"])
            return out.getvalue()
        from skulmfit.cli import build_parser
        parser = build_parser()
        if command == "skulmfit":
            return parser.format_help()
        [subcommands] = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
        return subcommands.choices[command].format_help()
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous


class CliHelp(Directive):
    required_arguments = 1
    option_spec = {"caption": directives.unchanged}

    def run(self):
        text = _help_text(self.arguments[0]).rstrip()
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


# --------------------------------------------------------------------------------------------- sklearn docstrings

SKLEARN_REFERENCE = re.compile(r":(?:ref|term):`(?:([^`<]*?)\s*<[^`>]*>|([^`]*))`")


def plain_sklearn_references(app, what, name, obj, options, lines):
    """In docstrings that come from scikit-learn, ``:ref:`text <label>``` -> ``text`` (and ``:term:``)."""
    module = getattr(obj, "__module__", "") or ""
    if not module.startswith("sklearn"):
        return
    for i, line in enumerate(lines):
        lines[i] = SKLEARN_REFERENCE.sub(lambda m: (m.group(1) or m.group(2)).strip(), line)


def setup(app):
    app.add_directive("model-cards", ModelCards)
    app.add_directive("cli-help", CliHelp)
    # Before numpydoc (priority 500) parses the docstring.
    app.connect("autodoc-process-docstring", plain_sklearn_references, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
