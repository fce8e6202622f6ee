"""skulmfit and fastai 2.8 side by side on this machine: tokenizer, training and inference speed, memory.

Same model sizes, batches and data on both sides:

1. tokenizer: skulmfit's ``tokenize_many`` vs fastai's defaults (``SpacyTokenizer`` = ``spacy.blank('en')``
   with ``defaults.text_proc_rules``), one process each, on ``--texts`` texts of ``--data``;
2. language-model fine-tuning tokens/s: batch 64 x BPTT 70, state carried, cross-entropy + AR/TAR, clip, AdamW;
3. classifier training tokens/s: 32 documents of 150-250 tokens, longest first, padded as each library pads
   (skulmfit at the end, fastai first in bptt chunks), BPT3C with bptt 70 and max_len 1400, all layers trainable;
4. inference documents/s, short (10-30 tokens) and long (750-1250) documents: skulmfit's ``predict_logits``
   vs fastai's classifier in a loop like ``get_preds`` (sorted by length, batches of 64 padded first, no_grad);
   and the same from text (``text-short``: 20 words, ``text-long``: 1,000 words of IMDb reviews), each
   library's tokenizer and numericalization included, as a user's ``predict`` on raw text pays them;
5. ``ULMFiTClassifier().fit`` seconds on TREC-6 and predict documents/s on its test set (skulmfit only),
   with the defaults and, where the default picks bf16, once more with ``precision="fp32"``;
6. peak memory: every case once more in a fresh child process (peak RSS, also after imports alone, and
   peak CUDA memory on a GPU).

Throughputs are medians of ``--repeats`` timed blocks after warm-up, skulmfit's and fastai's blocks taking
turns in one process so that drift hits both alike; ratios are skulmfit / fastai. Token ids are synthetic
(Zipf), so only the sizes matter. Both sides train with the same hand-written step (torch AdamW with
skulmfit's betas; no fastai Learner or callbacks): this compares models and data paths, not loop bookkeeping.
fastai runs in fp32 (its default) and, where bf16 is available (CUDA, CPUs with avx512_bf16/amx_bf16), under
the bf16 autocast of skulmfit's fast path too. Sizes: ``bundled`` and ``16k`` by default; ``paper`` runs on a
CPU only when named (very slow) and is meant as the GPU figure.

Run it on an idle machine (the load average at the start is recorded)::

    pip install -e '.[bench]'   # or, to keep torch as it is (fastai declares torchvision):
    # pip install --no-deps 'fastai>=2.8,<2.9' fastcore fastdownload fasttransform 'fastprogress<1.1'
    # pip install spacy plum-dispatch matplotlib pyyaml requests pillow cloudpickle
    python -m benchmarks.speed.speed --data ../shared/data/imdb/train.csv.gz --trec ../shared/data/trec
"""
from __future__ import annotations

import argparse
import functools
import importlib.metadata
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import read_csv, read_texts, time_blocks, time_tokenizer, zipf_ids
from skulmfit import tokenizer
from skulmfit.batching import pad_batch
from skulmfit.environment import machine_description, resolve_precision  # skulmfit's own bf16 choice
from skulmfit.model import AWDLSTMConfig, LanguageModel, TextClassifier
from skulmfit.pretrained import load_weights
from skulmfit.tokenizer import tokenize_many
from skulmfit.training import (ADAM_BETAS, ADAM_EPS, AR_ALPHA, CLASSIFIER_CLIP, LM_CLIP, TAR_BETA, autocast,
                               lm_train_step, make_optimizer, predict_logits)
from skulmfit.vocab import PAD_ID, Vocab

CONFIGS = {"bundled": (8000, 128, 384, 2), "16k": (16000, 200, 512, 3), "paper": (60000, 400, 1152, 3)}
CASES = ("lm", "classifier", "infer-short", "infer-long", "text-short", "text-long")
INFER_LENGTHS = {"infer-short": (10, 30), "infer-long": (750, 1250)}
TEXT_WORDS = {"text-short": 20, "text-long": 1000}  # words per document, cut from or joined out of reviews
SIDES = ("skulmfit", "fastai")
Step = Callable[[], object]


@functools.cache
def fastai_api() -> SimpleNamespace:
    """fastai's text modules, imported on first use (``fastai.text.all`` would pull torchvision)."""
    from fastai.text.core import SpacyTokenizer, TokenizeWithRules
    from fastai.text.data import pad_input_chunk
    from fastai.text.models.awdlstm import AWD_LSTM, awd_lstm_lm_config
    from fastai.text.models.core import get_language_model, get_text_classifier
    return SimpleNamespace(SpacyTokenizer=SpacyTokenizer, TokenizeWithRules=TokenizeWithRules,
                           pad_input_chunk=pad_input_chunk, AWD_LSTM=AWD_LSTM, awd_lstm_lm_config=awd_lstm_lm_config,
                           get_language_model=get_language_model, get_text_classifier=get_text_classifier)


def synced(step: Step, device: torch.device) -> Step:
    """``step`` followed by waiting for the GPU, so a timed block holds all its work."""
    if device.type != "cuda":
        return step
    return lambda: (step(), torch.cuda.synchronize())


def update(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor, clip: float) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()


def optimizer_for(side: str, model: torch.nn.Module) -> torch.optim.AdamW:
    """skulmfit's AdamW over its layer groups; for fastai's model torch AdamW with the same settings."""
    if side == "skulmfit":
        groups = model.layer_groups()
        return make_optimizer(groups, [1e-3] * len(groups), 0.01)
    return torch.optim.AdamW(model.parameters(), lr=1e-3, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=0.01)


def random_docs(rng: np.random.Generator, vocab: int, low: int, high: int, n: int) -> list[np.ndarray]:
    """``n`` documents of ``low``..``high`` Zipf token ids, longest first."""
    lengths = np.sort(rng.integers(low, high + 1, n))[::-1]
    return [zipf_ids(rng, vocab, (int(k),)).numpy() for k in lengths]


def classifier(side: str, sizes: tuple, device: torch.device, args) -> torch.nn.Module:
    vocab, emb, hidden, layers = sizes
    if side == "skulmfit":
        config = AWDLSTMConfig(vocab, emb, hidden, layers).for_classifier()
        return TextClassifier(config, 2, bptt=args.bptt, max_len=args.max_len).to(device)
    fa = fastai_api()
    return fa.get_text_classifier(fa.AWD_LSTM, vocab, 2, seq_len=args.bptt, max_len=args.max_len,
                                  config=dict(emb_sz=emb, n_hid=hidden, n_layers=layers)).to(device)


def logits(side: str, model: torch.nn.Module, docs: list[np.ndarray], device: torch.device, bptt: int) -> torch.Tensor:
    """Class logits of ``docs`` (sorted longest first), padded the way each library pads."""
    if side == "skulmfit":
        ids, lengths = pad_batch(docs, np.arange(len(docs)))
        return model(ids.to(device), lengths.to(device))
    rows = fastai_api().pad_input_chunk([(torch.from_numpy(d),) for d in docs], pad_idx=PAD_ID,
                                        pad_first=True, seq_len=bptt)
    return model(torch.stack([r[0] for r in rows]).to(device))[0]


def build(case: str, side: str, sizes: tuple, bf16: bool, device: torch.device, args) -> tuple[Step, int]:
    """A step of ``case`` for one library and the tokens (training) or documents (inference) it handles."""
    vocab, emb, hidden, layers = sizes
    rng = np.random.default_rng(0)  # the same data for every side and precision
    if case == "lm":
        x, y = (zipf_ids(rng, vocab, (args.batch_size, args.bptt)).to(device) for _ in range(2))
        if side == "skulmfit":
            model = LanguageModel(AWDLSTMConfig(vocab, emb, hidden, layers)).to(device).train()
            optimizer, state = optimizer_for(side, model), [None]

            def step():
                _, state[0] = lm_train_step(model, optimizer, x, y, state[0], bf16=bf16)
        else:
            fa = fastai_api()
            config = dict(fa.awd_lstm_lm_config, emb_sz=emb, n_hid=hidden, n_layers=layers)
            model = fa.get_language_model(fa.AWD_LSTM, vocab, config=config).to(device).train()
            model.reset()  # the hidden state (kept inside the model) on the model's device
            optimizer = optimizer_for(side, model)

            def step():  # fastai's RNNRegularizer: AR on the dropped output, TAR on the raw output
                with autocast(device, bf16):
                    out, raw, dropped = model(x)
                loss = F.cross_entropy(out.float().reshape(-1, vocab), y.reshape(-1))
                total = loss + AR_ALPHA * dropped.float().pow(2).mean()
                total = total + TAR_BETA * (raw[:, 1:] - raw[:, :-1]).float().pow(2).mean()
                update(model, optimizer, total, LM_CLIP)
                return loss.item()
        return synced(step, device), x.numel()
    model = classifier(side, sizes, device, args)
    if case.startswith("text"):
        return predict_texts(side, model, text_docs(args, case), vocab, bf16, device, args)
    if case == "classifier":
        docs = random_docs(rng, vocab, 150, 250, args.clf_batch)
        targets = torch.from_numpy(rng.integers(0, 2, len(docs))).to(device)
        optimizer = optimizer_for(side, model.train())

        def step():
            with autocast(device, bf16):
                out = logits(side, model, docs, device, args.bptt)
            update(model, optimizer, F.cross_entropy(out.float(), targets), CLASSIFIER_CLIP)
        return synced(step, device), sum(map(len, docs))
    docs = infer_docs(case, vocab, args)
    n_docs = len(docs)
    model.eval()
    if side == "skulmfit":
        return synced(lambda: predict_logits(model, docs, batch_size=args.infer_batch, device=device, bf16=bf16),
                      device), n_docs
    return synced(lambda: fastai_predict(model, docs, bf16, device, args), device), n_docs


def infer_docs(case: str, vocab: int, args) -> list[np.ndarray]:
    """The token ids an inference case predicts, in random order (sorting is part of predicting)."""
    rng = np.random.default_rng(0)
    n_docs = args.infer_docs if case == "infer-short" else max(8, args.infer_docs // 16)
    docs = random_docs(rng, vocab, *INFER_LENGTHS[case], n_docs)
    return [docs[i] for i in rng.permutation(n_docs)]


# ----------------------------------------------------------------------------- ceiling

def forward_flops_per_token(sizes: tuple, decoder: bool) -> int:
    """Multiply-adds x 2 of the LSTM stack for one token (and of the tied decoder for a language model)."""
    vocab, emb, hidden, layers = sizes
    widths = [emb] + [hidden] * (layers - 1) + [emb]
    lstm = sum(2 * 4 * out * (inp + out) for inp, out in zip(widths, widths[1:]))
    return lstm + (2 * vocab * emb if decoder else 0)


def case_flops_per_unit(case: str, sizes: tuple, args) -> float | None:
    """Model FLOPs per token (training: forward + backward = 3 x forward) or per document (inference)."""
    if case in ("lm", "classifier"):
        return 3 * forward_flops_per_token(sizes, decoder=case == "lm")
    if case.startswith("infer"):
        docs = infer_docs(case, sizes[0], args)
        return forward_flops_per_token(sizes, decoder=False) * sum(map(len, docs)) / len(docs)
    return None  # from text: the token count depends on each library's tokenizer


def matmul_gflops(m: int, k: int, n: int, dtype: torch.dtype, device: torch.device, seconds: float = 1.0) -> float:
    """GFLOP/s of a plain (m x k) @ (k x n) product, repeated for about ``seconds``."""
    a, b = torch.randn(m, k, device=device, dtype=dtype), torch.randn(k, n, device=device, dtype=dtype)
    step = synced(lambda: a @ b, device)
    for _ in range(3):
        step()
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step()
        count += 1
    return 2 * m * k * n * count / (time.perf_counter() - start) / 1e9


def bench_ceiling(configs: list[str], precisions: list[str], device: torch.device) -> dict:
    """What the machine's matrix products reach: a large square product, and the first LSTM layer's
    gate product (64 rows x (input + hidden) x 4 hidden), the shape that dominates every case here."""
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    result = {"square 2048": {p: matmul_gflops(2048, 2048, 2048, dtypes[p], device) for p in precisions}}
    for config in configs:
        _, emb, hidden, _ = CONFIGS[config]
        result[f"{config}: 64 x {emb + hidden} x {4 * hidden} (LSTM gates)"] = {
            p: matmul_gflops(64, emb + hidden, 4 * hidden, dtypes[p], device) for p in precisions}
    return result


def text_docs(args, case: str) -> list[str]:
    """IMDb text cut into short documents of 20 words, or joined into long ones of 1,000 words."""
    words_per_doc = TEXT_WORDS[case]
    n_docs = args.infer_docs if case == "text-short" else max(8, args.infer_docs // 16)
    texts = read_texts(Path(args.data), n_docs * max(1, words_per_doc // 200))
    words = " ".join(texts).split()
    if case == "text-short":
        return [" ".join(text.split()[:words_per_doc]) for text in texts[:n_docs]]
    return [" ".join(words[i * words_per_doc:(i + 1) * words_per_doc]) for i in range(n_docs)]


def predict_texts(side: str, model: torch.nn.Module, texts: list[str], vocab_size: int, bf16: bool,
                  device: torch.device, args) -> tuple[Step, int]:
    """Text in, logits out: each library's tokenizer and numericalization, then its inference loop."""
    if side == "skulmfit":
        vocab = Vocab.build(tokenize_many(texts), max_size=vocab_size, min_freq=1)

        def step():
            tokenizer.clear_caches()  # a fresh process's speed, as in the tokenizer timing
            ids = vocab.numericalize_many(tokenize_many(texts))
            return predict_logits(model, ids, batch_size=args.infer_batch, device=device, bf16=bf16)
        return synced(step, device), len(texts)
    tokenize = fastai_api().TokenizeWithRules(fastai_api().SpacyTokenizer())
    counts = Counter(token for doc in tokenize(texts) for token in doc)
    stoi = {token: i for i, (token, _) in enumerate(counts.most_common(vocab_size))}

    def step():  # fastai's Numericalize is a dictionary lookup per token, as here
        ids = [np.array([stoi.get(token, 0) for token in doc], dtype=np.int64) for doc in tokenize(texts)]
        return fastai_predict(model, ids, bf16, device, args)
    return step, len(texts)


def fastai_predict(model: torch.nn.Module, docs: list[np.ndarray], bf16: bool, device: torch.device, args):
    """Like fastai's get_preds: sorted by length, padded first, no_grad, back in input order."""
    order, result = np.argsort([-len(d) for d in docs], kind="stable"), np.empty((len(docs), 2), np.float32)
    with torch.no_grad(), autocast(device, bf16):
        for start in range(0, len(docs), args.infer_batch):
            batch = order[start:start + args.infer_batch]
            result[batch] = logits("fastai", model, [docs[i] for i in batch], device, args.bptt).float().cpu().numpy()
    return result


def alternate(blocks: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Seconds of every block, the variants taking turns within each repeat."""
    times = {name: [] for name in blocks}
    for _ in range(repeats):
        for name, block in blocks.items():
            times[name].append(block())
    return times


def summary(times: list[float], units: int, unit: str) -> dict:
    median = statistics.median(times)
    return {"block_s": times, "median_s": median, unit: units / median}


def bench_case(case: str, sizes: tuple, precisions: list[str], device: torch.device, args) -> dict:
    """Every side and precision of one case, warmed up, then timed in alternating blocks."""
    variants = {f"{side} {p}": build(case, side, sizes, p == "bf16", device, args)
                for p in precisions for side in SIDES}
    infer = case.startswith(("infer", "text"))
    steps, unit = (1, "docs_per_s") if infer else (args.steps, "tokens_per_s")  # inference: a block is a pass
    for step, _ in variants.values():
        for _ in range(1 if infer else args.warmup):
            step()

    def block(step: Step) -> float:
        return time_blocks(step, 0, steps, 1)[0]
    times = alternate({name: functools.partial(block, step) for name, (step, _) in variants.items()}, args.repeats)
    result = {name: summary(times[name], units, unit) for name, (_, units) in variants.items()}
    flops = case_flops_per_unit(case, sizes, args)
    for name in variants if flops else []:
        result[name]["model_gflops_per_s"] = result[name][unit] * flops / 1e9
    result["ratio"] = {p: result[f"skulmfit {p}"][unit] / result[f"fastai {p}"][unit] for p in precisions}
    if "bf16" in precisions:  # skulmfit's fast path against fastai's default
        result["ratio"]["skulmfit bf16 / fastai fp32"] = result["skulmfit bf16"][unit] / result["fastai fp32"][unit]
    return result


def bench_tokenizer(args) -> dict:
    texts = read_texts(Path(args.data), args.texts)
    fastai_tokenize = fastai_api().TokenizeWithRules(fastai_api().SpacyTokenizer())  # fastai's defaults
    counts = {}

    def ours() -> float:
        seconds, counts["skulmfit"] = time_tokenizer(texts, 1)  # caches emptied: a fresh process's speed
        return seconds[0]

    subword = load_weights(args.subword_weights).tokenizer if args.subword_weights else None

    def ours_subword() -> float:
        seconds, counts["skulmfit subword"] = time_tokenizer(texts, 1, subword)
        return seconds[0]

    def theirs() -> float:  # spaCy keeps its lexeme cache between blocks: if anything, this favours fastai
        start = time.perf_counter()
        counts["fastai"] = sum(map(len, fastai_tokenize(texts)))
        return time.perf_counter() - start
    time_tokenizer(texts[:100], 1)  # warm-up
    list(fastai_tokenize(texts[:100]))
    variants = {"skulmfit": ours, "fastai": theirs, **({"skulmfit subword": ours_subword} if subword else {})}
    times = alternate(variants, args.repeats)
    result = {name: dict(summary(times[name], counts[name], "tokens_per_s"), tokens=counts[name],
                         texts_per_s=len(texts) / statistics.median(times[name])) for name in times}
    result["ratio"] = result["skulmfit"]["texts_per_s"] / result["fastai"]["texts_per_s"]  # same texts
    if subword:
        result["ratio subword"] = result["skulmfit subword"]["texts_per_s"] / result["fastai"]["texts_per_s"]
    result["texts"] = len(texts)
    return result


def peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's RSS."""
    status = Path("/proc/self/status")
    for line in status.read_text().splitlines() if status.exists() else []:
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_child(argv: list[str]) -> dict:
    """Runs this script on one case in a fresh process and returns the JSON line it prints."""
    proc = subprocess.run([sys.executable, "-m", __spec__.name, *argv], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        return {"error": f"exit status {proc.returncode}", "argv": argv}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child(args, device: torch.device) -> None:
    """``--case``: one case in this fresh process; prints a JSON line with its peak memory."""
    if args.side == "fastai":
        fastai_api()  # imports first, so the after-imports figure includes the library
    result = {"rss_after_imports_mib": peak_rss_mib()}
    if args.case == "fit":
        from skulmfit import ULMFiTClassifier
        (x_train, y_train), (x_test, y_test) = (read_csv(Path(args.trec) / f"{s}.csv") for s in ("train", "test"))
        start = time.perf_counter()
        precision = args.precision or "auto"  # no --precision: every parameter at its default
        model = ULMFiTClassifier(device=str(device), precision=precision, random_state=0).fit(x_train, y_train)
        result["precision"] = f"{precision} ({model.precision_})" if precision == "auto" else precision
        result["fit_s"], start = time.perf_counter() - start, time.perf_counter()
        predicted = model.predict(x_test)
        result["predict_docs_per_s"] = len(x_test) / (time.perf_counter() - start)
        result["test_accuracy"] = float(np.mean(predicted == np.asarray(y_test)))
    else:
        step, _ = build(args.case, args.side, CONFIGS[args.config], args.precision == "bf16", device, args)
        for _ in range(2):
            step()
    result["peak_rss_mib"] = peak_rss_mib()
    if device.type == "cuda":
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(result))


def versions() -> dict:
    names = ("torch", "skulmfit", "fastai", "fastcore", "spacy", "numpy")
    installed = {d.metadata["Name"].lower(): d.version for d in importlib.metadata.distributions()}
    return {name: installed.get(name) for name in names}


def table(results: dict) -> str:
    def memory(run: dict | None) -> str:  # peak RSS, and in brackets what came after the imports
        if not run or "peak_rss_mib" not in run:
            return "-"
        return f"{run['peak_rss_mib']:,.0f} (+{run['peak_rss_mib'] - run['rss_after_imports_mib']:,.0f})"
    rows = ["| config | case | precision | skulmfit | fastai | skulmfit/fastai | model GFLOP/s skulmfit / fastai "
            "| peak RSS MiB skulmfit / fastai |", "|---|---|---|---|---|---|---|---|"]
    tok = results.get("tokenizer")
    if tok:
        rows.append(f"| - | tokenizer (tokens/s) | - | {tok['skulmfit']['tokens_per_s']:,.0f} | "
                    f"{tok['fastai']['tokens_per_s']:,.0f} | {tok['ratio']:.2f} | - | - |")
    for config, cases in results["models"].items():
        for case, entry in cases.items():
            unit = "docs_per_s" if case.startswith(("infer", "text")) else "tokens_per_s"
            for p in results["precisions"]:
                mem_text = " / ".join(memory(results["memory"].get(f"{config} {case} {side} {p}")) for side in SIDES)
                gflops = " / ".join(f"{entry[f'{side} {p}']['model_gflops_per_s']:.0f}"
                                    if "model_gflops_per_s" in entry[f"{side} {p}"] else "-" for side in SIDES)
                rows.append(f"| {config} | {case} ({unit.replace('_per_s', '/s')}) | {p} | "
                            f"{entry[f'skulmfit {p}'][unit]:,.1f} | {entry[f'fastai {p}'][unit]:,.1f} | "
                            f"{entry['ratio'][p]:.2f} | {gflops} | {mem_text} |")
    for i, run in enumerate(results.get("fit", [])):
        if "fit_s" in run:
            rows.append(f"| default | TREC-6 fit (run {i + 1}); predict | {run['precision']} | "
                        f"{run['fit_s']:.1f} s; {run['predict_docs_per_s']:,.0f} docs/s | - | - | - | "
                        f"{memory(run)} / - |")
    ceiling = results.get("ceiling_gflops_per_s", {})
    if ceiling:
        rows += ["", "| matrix product | " + " | ".join(f"{p} GFLOP/s" for p in results["precisions"]) + " |",
                 "|---|" + "---|" * len(results["precisions"])]
        rows += [f"| {shape} | " + " | ".join(f"{by_precision[p]:.0f}" for p in results["precisions"]) + " |"
                 for shape, by_precision in ceiling.items()]
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="CSV(.gz) with a text column (IMDb) for the tokenizer comparison")
    parser.add_argument("--trec", help="folder with TREC-6 train.csv/test.csv (text,label) for the fit timing")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS),
                        help="model sizes (default: bundled 16k; on CUDA also paper)")
    parser.add_argument("--cases", nargs="+", choices=CASES, help="model cases to time (default: all)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--texts", type=int, default=2000, help="texts for the tokenizer comparison")
    parser.add_argument("--subword-weights", help="a subword model's weight file: its tokenizer is timed too")
    parser.add_argument("--tokenizer-only", action="store_true", help="time the tokenizers (needs --data), nothing else")
    parser.add_argument("--batch-size", type=int, default=64, help="language-model rows")
    parser.add_argument("--bptt", type=int, default=70)
    parser.add_argument("--clf-batch", type=int, default=32, help="documents per classifier batch")
    parser.add_argument("--max-len", type=int, default=1400)
    parser.add_argument("--infer-docs", type=int, default=1024, help="short documents; long ones: a sixteenth")
    parser.add_argument("--infer-batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="training steps per timed block")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks per variant")
    parser.add_argument("--fit-repeats", type=int, default=1, help="TREC-6 fits, each in a fresh process")
    parser.add_argument("--skip-fit", action="store_true")
    parser.add_argument("--skip-memory", action="store_true", help="no child processes for peak memory")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "speed.json"))
    for name, choices in (("--case", CASES + ("fit",)), ("--side", SIDES), ("--config", list(CONFIGS)),
                          ("--precision", ["fp32", "bf16"])):
        parser.add_argument(name, choices=choices, help=argparse.SUPPRESS)  # child-process mode
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if args.case:
        return child(args, device)
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.2f} at start; the timings are not reliable", file=sys.stderr)
    precisions = ["fp32"] + ([] if resolve_precision("auto", device) == "fp32" else ["bf16"])  # as skulmfit picks
    configs = args.configs or (list(CONFIGS) if device.type == "cuda" else ["bundled", "16k"])
    results = {"machine": machine_description(), "versions": versions(), "settings": vars(args),
               "device": str(device), "load_average_1min_at_start": load, "precisions": precisions,
               "models": {}, "memory": {}}
    if args.data and not args.cases:  # --cases re-times some model cases only
        results["tokenizer"] = bench_tokenizer(args)
        print(f"tokenizer: skulmfit/fastai {results['tokenizer']['ratio']:.2f}", flush=True)
    if args.tokenizer_only:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({k: results[k] for k in ("machine", "versions", "settings",
                                                                         "load_average_1min_at_start", "tokenizer")},
                                             indent=2) + "\n")
        print(json.dumps(results["tokenizer"], indent=2))
        return
    cases = [case for case in args.cases or CASES if args.data or not case.startswith("text")]  # text needs --data
    results["ceiling_gflops_per_s"] = bench_ceiling(configs, precisions, device)
    for config in configs:
        for case in cases:
            entry = results["models"].setdefault(config, {})[case] = bench_case(
                case, CONFIGS[config], precisions, device, args)
            print(f"{config} {case}: skulmfit/fastai " + ", ".join(f"{k} {v:.2f}" for k, v in entry["ratio"].items()),
                  flush=True)
    common = ["--device", device.type, "--threads", str(args.threads)] + [
        f"--{k.replace('_', '-')}={getattr(args, k)}" for k in ("batch_size", "bptt", "clf_batch", "max_len",
                                                                "infer_docs", "infer_batch")] + (
        ["--data", args.data] if args.data else [])
    for config, case, side, p in [] if args.skip_memory else itertools.product(configs, cases, SIDES, precisions):
        results["memory"][f"{config} {case} {side} {p}"] = run_child(
            ["--case", case, "--side", side, "--config", config, "--precision", p] + common)
    if args.trec and not args.skip_fit:
        # the defaults, then fp32 for comparison where the default fast path is bf16
        fit_precisions = [[]] + ([["--precision", "fp32"]] if "bf16" in precisions else [])
        results["fit"] = [run_child(["--case", "fit", "--side", "skulmfit", "--trec", args.trec] + extra + common)
                          for extra in fit_precisions for _ in range(args.fit_repeats)]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
