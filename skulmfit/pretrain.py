"""Pretrain an AWD-LSTM language model on a folder of text: ``python -m skulmfit.pretrain``.

The corpus is tokenized once, streaming, into a token-id cache (files named ``valid*`` are the
validation split, every other ``*.txt`` / ``*.txt.gz`` file is training text; each non-empty
line is one document). Training is resumable: a full checkpoint (model, optimizer, position in
the stream, clock) goes to the cache folder every few minutes, and a run started again with the
same cache folder continues from it. At every checkpoint the fp16 weights and a model card are
also written to the output folder, so the latest weights can be committed at any time; with
``--init`` a run on a fresh machine starts from such committed weights. Each checkpoint prints a
JSON line (tokens seen, tokens/s, validation perplexity, minutes left); on a terminal a bar
counts down to the planned end in between.

With ``--init MODEL --fine-tune`` the same command fine-tunes a pretrained model on a large
target corpus (ULMFiT's second stage, for tens of thousands of unlabelled texts): the model keeps
its sizes, tokenizer and vocabulary, its learning-rate schedule starts afresh over ``--epochs``
passes of the corpus, and the card records the model it started from and its validation
perplexity before fine-tuning. The result is a weight file for ``pretrained=`` (with
``lm_epochs=0``: the language model is then fine-tuned once for every classifier fitted on it).

Examples::

    python -m skulmfit.pretrain corpus/ out/ --name wiki-en-small --cache cache/ --hours 2
    python -m skulmfit.pretrain reviews/ out/ --name reviews-lm --cache cache/ \
        --init wiki-en-sub --fine-tune --epochs 2 --lr-factor 2.6 --sampled-softmax 2048 --hours 3
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from .batching import bptt_lengths, lm_batches, lm_rows  # noqa: E402
from .environment import machine_description  # noqa: E402
from .model import AWDLSTMConfig, LanguageModel  # noqa: E402
from .progress import ProgressBar, SilentProgress  # noqa: E402
from .pretrained import (PretrainedLM, available_models, load_weights, model_card, resolve,  # noqa: E402
                         save_weights, sha256)
from .subword import learn_unigram  # noqa: E402
from .text import Tokenizer  # noqa: E402
from .tokenizer import SPECIAL_TOKENS, tokenize_many  # noqa: E402
from .loss import SampledSoftmax  # noqa: E402
from .schedule import discriminative_lrs  # noqa: E402
from .training import evaluate_language_model, lm_train_step, make_optimizer  # noqa: E402
from .vocab import Vocab  # noqa: E402

LINES_PER_CHUNK = 20_000
# Card entries written by benchmarks that a later checkpoint keeps: the size comparison behind the
# model's sizes stays valid, while perplexity evaluations go stale and are dropped.
KEPT_CARD_KEYS = ("size_comparison",)
VALID_TOKENS = 250_000  # enough for a stable perplexity, cheap enough to measure at every checkpoint


# ----------------------------------------------------------------------------- corpus cache

def corpus_files(corpus: Path) -> tuple[list[Path], list[Path]]:
    files = sorted(p for p in corpus.iterdir() if p.name.endswith((".txt", ".txt.gz")))
    valid = [p for p in files if p.name.startswith("valid")]
    train = [p for p in files if not p.name.startswith("valid")]
    if not train or not valid:
        raise SystemExit(f"{corpus} needs training files and a valid* file (*.txt or *.txt.gz)")
    return train, valid


def _read_lines(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                yield line


def _chunks(lines, size):
    chunk = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def tokenize_corpus(files: list[Path], cache: Path, token_ids: dict[str, int], n_jobs: int) -> tuple[list[Path], Counter]:
    """Tokenizes each file into provisional ids and counts the tokens.

    ``token_ids`` (token -> provisional id, grown here) keeps memory at one int32 per token
    instead of a Python string; ids are mapped to the final vocabulary once all counts are known.
    """
    counts = Counter()
    outputs = []
    for path in files:
        out = cache / (path.name.removesuffix(".gz").removesuffix(".txt") + ".raw.npy")
        outputs.append(out)
        pieces = []
        started = time.perf_counter()
        for chunk in _chunks(_read_lines(path), LINES_PER_CHUNK):
            for tokens in tokenize_many(chunk, n_jobs=n_jobs):
                pieces.append(np.fromiter((token_ids.setdefault(t, len(token_ids)) for t in tokens),
                                          dtype=np.int32, count=len(tokens)))
        ids = np.concatenate(pieces) if pieces else np.zeros(0, np.int32)  # a file of blank lines
        unique, freq = np.unique(ids, return_counts=True)
        counts.update(dict(zip(unique.tolist(), freq.tolist())))
        np.save(out, ids)
        print(f"tokenized {path.name}: {len(ids):,} tokens in {time.perf_counter() - started:.0f} s", flush=True)
    return outputs, counts


def prepare_corpus(corpus: Path, cache: Path, vocab_size: int, min_freq: int, n_jobs: int, subword: bool = False,
                   given: tuple[Tokenizer, Vocab] | None = None):
    """Token-id streams for training and validation, the vocabulary and the tokenizer, from the cache
    when there.

    The vocabulary (and a subword model's pieces) come from the training files only. A word-level
    vocabulary keeps the ``vocab_size`` most frequent words counted at least ``min_freq`` times; a
    subword vocabulary has ``vocab_size`` entries (special tokens and padding included), learnt from
    the counts of the words seen at least twice. ``given`` (a model's tokenizer and vocabulary, to
    continue training it) replaces all of that.
    """
    cache.mkdir(parents=True, exist_ok=True)
    paths = {name: cache / f"{name}.ids.npy" for name in ("train", "valid")}
    vocab_path, tokenizer_path = cache / "vocab.json", cache / "tokenizer.json"
    settings_path = cache / "vocab_settings.json"
    if given is not None:
        subword, vocab_size, min_freq = given[0].subword, len(given[1]), 0
    settings = {"vocab_size": vocab_size, "min_freq": min_freq, "tokenizer": "subword" if subword else "word"}
    if given is not None:
        settings["from_model"] = True  # the vocabulary came with --init or --vocab-from, not from counts
    if settings_path.exists() and given is None:  # with given, train() compares the vocabularies themselves
        saved = json.loads(settings_path.read_text())
        if {"tokenizer": "word", **saved} != settings:  # caches from before subwords are word-level
            hint = "; it was built from a model's vocabulary: name that model again with --init or --vocab-from" \
                if saved.get("from_model") else ""
            raise SystemExit(f"{cache} holds a corpus cache built with {saved}, not {settings}{hint}; "
                             "or use another --cache folder")
    if not (all(p.exists() for p in paths.values()) and vocab_path.exists()):
        train_files, valid_files = corpus_files(corpus)
        token_ids: dict[str, int] = {}
        raw_train, train_counts = tokenize_corpus(train_files, cache, token_ids, n_jobs)
        words = list(token_ids)  # dicts keep insertion order: position = provisional id
        word_counts = {words[i]: c for i, c in train_counts.items()}
        if given is not None:
            tokenizer, vocab = given
        elif subword:
            started = time.perf_counter()
            n_pieces = vocab_size // 8 * 8 - len(SPECIAL_TOKENS)  # so that padding to 8 stays within vocab_size
            segmenter = learn_unigram({w: c for w, c in word_counts.items() if c >= 2}, n_pieces, threads=n_jobs)
            tokenizer = Tokenizer(segmenter)
            vocab = Vocab.from_pieces(segmenter.pieces)
            print(f"learnt {len(segmenter.pieces):,} pieces in {time.perf_counter() - started:.0f} s", flush=True)
        else:
            tokenizer = Tokenizer()
            vocab = Vocab.from_counts(word_counts, max_size=vocab_size, min_freq=min_freq)
        raw_valid, _ = tokenize_corpus(valid_files, cache, token_ids, n_jobs)
        to_final = _final_ids(list(token_ids), tokenizer, vocab)
        for name, files in (("train", raw_train), ("valid", raw_valid)):
            np.save(paths[name], np.concatenate([to_final(np.load(p)) for p in files]))
            for p in files:
                p.unlink()
        vocab_path.write_text(json.dumps(vocab.to_list()))
        tokenizer_path.write_text(json.dumps(tokenizer.to_dict()))
        settings_path.write_text(json.dumps(settings))
    vocab = Vocab(json.loads(vocab_path.read_text()))
    tokenizer = Tokenizer.from_dict(json.loads(tokenizer_path.read_text()) if tokenizer_path.exists() else None)
    return np.load(paths["train"], mmap_mode="r"), np.load(paths["valid"]), vocab, tokenizer


def _final_ids(words: list[str], tokenizer: Tokenizer, vocab: Vocab):
    """A function from a stream of provisional word ids to the stream of final token ids.

    A word-level vocabulary maps each word to one id (``xxunk`` if it is not in it); a subword
    tokenizer maps each word to the ids of its pieces, so the stream grows.
    """
    if tokenizer.segmenter is None:
        final_id = np.array([vocab.stoi.get(w, vocab.unk_id) for w in words], dtype=np.int32)
        return lambda raw: final_id[raw]
    pieces = tokenizer.segmenter.segment_tokens
    per_word = [vocab.numericalize(pieces([w])) for w in words]
    lengths = np.array([len(ids) for ids in per_word], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    flat = np.concatenate(per_word)

    def to_final(raw: np.ndarray) -> np.ndarray:
        n = lengths[raw]
        # The k-th piece of the j-th word sits at offsets[word] + k in flat.
        first = np.repeat(offsets[raw] - np.concatenate([[0], np.cumsum(n)[:-1]]), n)
        return flat[first + np.arange(int(n.sum()))]
    return to_final


# ----------------------------------------------------------------------------- training

def learning_rate(tokens_seen: int, planned_tokens: int, peak: float, warmup_tokens: int) -> float:
    """Linear warm-up to ``peak``, then linear decay to a tenth of it at ``planned_tokens``."""
    warm = min(1.0, (tokens_seen + 1) / max(1, warmup_tokens))
    decay = 1.0 - 0.9 * min(1.0, tokens_seen / max(1, planned_tokens))
    return peak * warm * decay


class Checkpointer:
    """Full resumable state in the cache folder, fp16 weights and model card in the output folder."""

    def __init__(self, cache: Path, out: Path, name: str, backwards: bool):
        direction = "bwd" if backwards else "fwd"
        self.state_path = cache / f"checkpoint.{direction}.pt"
        self.weights_path = out / f"{name}.{direction}.pt"
        self.card_path = out / f"{name}.{direction}.json"
        self.backwards = backwards

    def save(self, model, optimizer, progress: dict, vocab: Vocab, tokenizer: Tokenizer, card: dict) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "progress": progress}, tmp)
        tmp.replace(self.state_path)
        checksum = save_weights(self.weights_path, model, vocab.to_list(), tokenizer=tokenizer,
                                backwards=self.backwards, card=card)
        # The card carries the weight file's checksum, so it cannot live inside that file.
        kept = {}
        if self.card_path.exists():  # measurements that stay true as training goes on
            kept = {k: v for k, v in json.loads(self.card_path.read_text()).items() if k in KEPT_CARD_KEYS}
        tmp_card = self.card_path.with_suffix(".tmp")
        tmp_card.write_text(json.dumps({**card, **kept, "file": self.weights_path.name, "sha256": checksum}, indent=2))
        tmp_card.replace(self.card_path)

    def load(self):
        if not self.state_path.exists():
            return None
        return torch.load(self.state_path, map_location="cpu", weights_only=True)


def _load_start(spec: str, backwards: bool) -> PretrainedLM:
    """The model named by ``--init``: a skulmfit weight file or folder, or a bundled model's name."""
    try:
        lm = resolve(spec, backwards) if not Path(spec).is_file() else load_weights(spec)
    except ValueError as error:
        raise SystemExit(f"--init {spec}: {error}") from None
    if lm.backwards != backwards:
        raise SystemExit(f"--init {spec} is a {'backward' if lm.backwards else 'forward'} model; "
                         f"{'drop' if lm.backwards else 'add'} --backwards")
    return lm


def _origin(spec: str, lm: PretrainedLM, backwards: bool) -> dict:
    """What a fine-tuned model's card says of the model it started from."""
    path = Path(spec)
    checksum = sha256(path) if path.is_file() else \
        model_card(spec, backwards)["sha256"] if spec in available_models() else None
    return {"model": path.name if path.is_file() else spec, "name": lm.card.get("name"), "sha256": checksum,
            "corpus": lm.card.get("corpus"), "tokens_seen": lm.card.get("tokens_seen")}


def train(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.fine_tune and not args.init:
        raise SystemExit("--fine-tune needs --init: the pretrained model to fine-tune")
    cache, out = Path(args.cache), Path(args.out)
    init = _load_start(args.init, args.backwards) if args.init else None
    # A run from committed weights keeps their tokenizer and vocabulary, on any corpus; so does the
    # other direction of a model (--vocab-from), whose two directions must share one text pipeline.
    source = init if init is not None else (load_weights(args.vocab_from) if args.vocab_from else None)
    given = None if source is None else (source.tokenizer, Vocab(source.itos))
    train_ids, valid_ids, vocab, tokenizer = prepare_corpus(Path(args.corpus), cache, args.vocab_size, args.min_freq,
                                                            args.jobs, subword=args.tokenizer == "subword",
                                                            given=given)
    if source is not None and (source.itos != vocab.to_list() or source.tokenizer != tokenizer):
        raise SystemExit(f"{args.cache} holds a corpus cache with another tokenizer or vocabulary than "
                         f"{args.init or args.vocab_from}; use another --cache folder")
    if args.backwards:
        train_ids, valid_ids = train_ids[::-1], valid_ids[::-1].copy()
    valid_ids = valid_ids[:VALID_TOKENS]
    if args.epochs:  # the schedule and the stop in passes over this corpus
        args.planned_tokens = args.max_tokens = args.epochs * len(train_ids)
    sizes = init.config.sizes() if init is not None else \
        {"vocab_size": len(vocab), "emb_size": args.emb_size, "hidden_size": args.hidden_size, "n_layers": args.layers}
    config = AWDLSTMConfig(**sizes).scaled(args.drop_mult)
    model = LanguageModel(config)
    groups = model.layer_groups()
    # Each group's share of the scheduled rate: 1 at the top, --lr-factor times less per group below.
    lr_shares = discriminative_lrs(1.0, len(groups), args.lr_factor)
    optimizer = make_optimizer(groups, [args.lr * share for share in lr_shares], args.weight_decay)
    checkpointer = Checkpointer(cache, out, args.name, args.backwards)
    progress = {"tokens_seen": 0, "epoch": 0, "batch": 0, "seconds": 0.0, "log": []}

    saved = checkpointer.load()
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        progress = saved["progress"]
        print(f"resuming from {checkpointer.state_path}: {progress['tokens_seen']:,} tokens seen", flush=True)
    elif init is not None:
        model.load_state_dict(init.state_dict)
        if args.fine_tune:  # a new schedule on a new corpus: the counts start at zero
            before = evaluate_language_model(model, valid_ids, batch_size=args.batch_size, bptt=args.bptt,
                                             bf16=args.bf16)
            progress.update(fine_tuned_from=_origin(args.init, init, args.backwards),
                            valid_perplexity_before=round(math.exp(before), 2))
            print(f"fine-tuning {args.init}: validation perplexity {math.exp(before):.2f} before", flush=True)
        else:
            # The card records how far training got, so a fresh machine continues where it stopped
            # (with a fresh optimizer: its state is too large to commit).
            progress.update({k: init.card.get(k, progress[k]) for k in ("tokens_seen", "seconds")})
            progress.update(init.card.get("position", {}))
            progress["log"] = init.card.get("log", [])
            # A fine-tuned model continued on a fresh machine keeps saying what it was fine-tuned from.
            progress.update({k: init.card[k] for k in ("fine_tuned_from", "valid_perplexity_before")
                             if k in init.card})
            print(f"starting from weights {args.init}: {progress['tokens_seen']:,} tokens seen", flush=True)

    sampled = None
    if args.sampled_softmax:
        sampled = SampledSoftmax(np.bincount(train_ids, minlength=len(vocab)), args.sampled_softmax)
    planned = int(args.planned_tokens)
    deadline = time.perf_counter() + args.hours * 3600
    rows = lm_rows(train_ids, args.batch_size)
    bar = _progress_bar(args, progress["tokens_seen"])
    while progress["tokens_seen"] < args.max_tokens and time.perf_counter() < deadline:
        rng = np.random.default_rng(args.seed + progress["epoch"])
        lengths = bptt_lengths(rows.shape[1] - 1, args.bptt, rng)
        state = None
        model.train()
        window_start, window_tokens = time.perf_counter(), 0
        for x, y in lm_batches(rows, lengths, start=progress["batch"]):
            step_start = time.perf_counter()
            lr = learning_rate(progress["tokens_seen"], planned, args.lr, args.warmup_tokens)
            for group, share in zip(optimizer.param_groups, lr_shares):
                group["lr"] = lr * share * x.size(1) / args.bptt
            loss, state = lm_train_step(model, optimizer, x, y, state, bf16=args.bf16, sampled=sampled)
            bar.step(loss)
            progress["batch"] += 1
            progress["tokens_seen"] += x.numel()
            progress["seconds"] += time.perf_counter() - step_start
            window_tokens += x.numel()
            done = progress["tokens_seen"] >= args.max_tokens or time.perf_counter() >= deadline
            if done or time.perf_counter() - window_start >= args.checkpoint_minutes * 60:
                rate = window_tokens / (time.perf_counter() - window_start)
                seconds_left = min((args.max_tokens - progress["tokens_seen"]) / rate, deadline - time.perf_counter())
                _checkpoint(model, optimizer, progress, vocab, tokenizer, config, args, checkpointer, valid_ids,
                            rate, bar, max(0.0, seconds_left))
                window_start, window_tokens = time.perf_counter(), 0
                model.train()
            if done:
                bar.end()
                return
        progress["epoch"] += 1
        progress["batch"] = 0
    bar.end()


def _progress_bar(args: argparse.Namespace, tokens_seen: int) -> SilentProgress:
    """A bar with the time left to the planned end (a number of tokens), shown on a terminal only:
    in a log file, checkpoint lines report progress instead of thousands of redraws."""
    import sys
    if not sys.stderr.isatty() or args.max_tokens == float("inf"):
        return SilentProgress()
    bar = ProgressBar(min_interval=1.0)
    what = f"fine-tuning {args.init}" if args.fine_tune else f"pretraining {args.name}"
    bar.start(what, math.ceil(max(0, args.max_tokens - tokens_seen) / (args.batch_size * args.bptt)))
    return bar


def _checkpoint(model, optimizer, progress, vocab, tokenizer, config, args, checkpointer, valid_ids, tokens_per_s,
                bar: SilentProgress, seconds_left: float):
    valid_loss = evaluate_language_model(model, valid_ids, batch_size=args.batch_size, bptt=args.bptt, bf16=args.bf16)
    entry = {"tokens_seen": progress["tokens_seen"], "train_seconds": round(progress["seconds"]),
             "tokens_per_s": round(tokens_per_s), "valid_perplexity": round(math.exp(valid_loss), 2),
             "lr": optimizer.param_groups[-1]["lr"]}
    progress["log"].append(entry)
    # The time left (to the planned tokens or the --hours stop) goes to the screen, not to the card.
    bar.write(json.dumps({**entry, "minutes_left": round(seconds_left / 60, 1)}))
    card = {
        "name": args.name, "direction": "backward" if args.backwards else "forward",
        "corpus": str(Path(args.corpus).resolve().name), "tokens_seen": progress["tokens_seen"],
        "epochs_completed": progress["epoch"], "position": {"epoch": progress["epoch"], "batch": progress["batch"]},
        "tokenizer": tokenizer.to_dict()["kind"], "vocab_size": len(vocab), "sizes": config.sizes(), "dropouts": {k: getattr(config, k) for k in
                                                                        ("output_p", "hidden_p", "input_p", "embed_p", "weight_p")},
        "valid_perplexity": entry["valid_perplexity"], "valid_tokens": len(valid_ids),
        "seconds": progress["seconds"], "machine": machine_description(),
        "training": {k: (None if v == float("inf") else v) for k, v in vars(args).items()},  # JSON has no inf
        "log": progress["log"],
        **{k: progress[k] for k in ("fine_tuned_from", "valid_perplexity_before") if k in progress},
    }
    checkpointer.save(model, optimizer, progress, vocab, tokenizer, card)


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number >= 0, not {text!r}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m skulmfit.pretrain", description=__doc__.split("\n")[0])
    parser.add_argument("corpus", help="folder of *.txt / *.txt.gz files; valid* files are the validation split")
    parser.add_argument("out", help="folder for the fp16 weights and the model card")
    parser.add_argument("--name", default="wiki-en-small")
    parser.add_argument("--cache", required=True, help="folder for the token cache and resumable checkpoints")
    parser.add_argument("--backwards", action="store_true", help="train a backward (right-to-left) model")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--init", help="skulmfit weight file (or bundled model name) to start from when the cache "
                                      "holds no checkpoint; the model keeps its sizes, and a new corpus cache "
                                      "takes its tokenizer and vocabulary")
    start.add_argument("--vocab-from", help="skulmfit weight file whose tokenizer and vocabulary (not weights) a "
                                            "new corpus cache takes: to train the other direction of that model")
    parser.add_argument("--fine-tune", action="store_true",
                        help="with --init: fine-tune that model on this corpus (its sizes; a fresh schedule; "
                             "the card records the start and its validation perplexity before)")
    parser.add_argument("--tokenizer", choices=("word", "subword"), default="word",
                        help="whole words (out-of-vocabulary words become xxunk) or unigram subword pieces")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--min-freq", type=int, default=3)
    parser.add_argument("--emb-size", type=int, default=128)
    parser.add_argument("--hidden-size", type=int, default=384)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--drop-mult", type=float, default=0.2, help="times fastai's LM dropouts")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--bptt", type=int, default=70)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--lr-factor", type=float, default=1.0,
                        help="each lower layer group learns this many times slower (ULMFiT fine-tuning: 2.6)")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup-tokens", type=float, default=2e6)
    parser.add_argument("--planned-tokens", type=float, default=1e8, help="the learning rate decays over this many tokens")
    parser.add_argument("--max-tokens", type=float, default=float("inf"), help="stop after this many tokens")
    parser.add_argument("--epochs", type=_non_negative, default=0,
                        help="passes over the training files: sets --planned-tokens and --max-tokens")
    parser.add_argument("--hours", type=float, default=1.0, help="stop after this much wall time in this run")
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0)
    parser.add_argument("--sampled-softmax", type=int, default=0, metavar="N",
                        help="train on a sampled softmax: each batch's targets plus N uniformly drawn ids "
                             "(0 = the full softmax); validation always uses the full softmax")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CPUs with avx512_bf16, GPUs)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--jobs", type=int, default=1, help="processes for tokenizing the corpus")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main()
