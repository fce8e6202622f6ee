"""Batch prediction throughput on a local Dask cluster: documents per second for a large collection of
short texts, with 1 and 2 worker processes (one torch thread each), against one local process.

The model is the default ``ULMFiTClassifier`` fitted on 500 TREC-6 questions; the collection is
SST-2's training sentences and TREC-6's questions, repeated in order up to ``--documents``. Each
cluster run goes through :func:`skulmfit.distributed.predict_partitions` and writes the class
probabilities to Parquet partition by partition (``--partitions``), the way a user streams a large
job to disk; the clock covers scattering the model, predicting and writing (not starting the
cluster). Every setting runs ``--repeats`` times in turn; the median counts. Run it on a quiet
machine: it uses every core it is given.

    python -m benchmarks.speed.dask_throughput --data ../shared/data --documents 100000
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import git_commit, read_csv  # noqa: E402
from skulmfit import ULMFiTClassifier  # noqa: E402
from skulmfit.environment import machine_description  # noqa: E402


def collection(data: Path, n_documents: int) -> list[str]:
    texts = read_csv(data / "sst2" / "train.csv")[0] + read_csv(data / "trec" / "train.csv")[0]
    return [texts[i % len(texts)] for i in range(n_documents)]


def fitted_model(data: Path) -> ULMFiTClassifier:
    texts, labels = read_csv(data / "trec" / "train.csv")
    subset = np.random.default_rng(0).choice(len(texts), 500, replace=False)
    return ULMFiTClassifier(random_state=0).fit([texts[i] for i in subset], labels[subset])


def local_seconds(model, texts: list[str], threads: int) -> float:
    torch.set_num_threads(threads)
    start = time.perf_counter()
    model.predict_proba(texts)
    return time.perf_counter() - start


def cluster_seconds(client, model, texts: list[str], partitions: int, out: Path) -> float:
    import dask.dataframe as dd
    from skulmfit.distributed import predict_partitions
    series = dd.from_pandas(pd.Series(texts, name="text"), npartitions=partitions)
    start = time.perf_counter()
    with client.as_current():  # two clients are open: compute on the one that holds the scattered model
        predict_partitions(model, series, proba=True, client=client).to_parquet(str(out))
    seconds = time.perf_counter() - start
    assert len(pd.read_parquet(out)) == len(texts)
    client.run(lambda: __import__("gc").collect())
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with sst2/ and trec/")
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dask_throughput.json")
    args = parser.parse_args()
    from distributed import Client, LocalCluster

    model = fitted_model(args.data)
    texts = collection(args.data, args.documents)
    words = sum(len(t.split()) for t in texts) / len(texts)
    seconds: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        clusters = {workers: LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                          host="127.0.0.1", dashboard_address=None, silence_logs=50)
                    for workers in (1, 2)}
        clients = {workers: Client(cluster) for workers, cluster in clusters.items()}
        try:
            for repeat in range(args.repeats):
                for threads in (1, 2):
                    seconds.setdefault(f"local, {threads} torch thread(s)", []).append(
                        local_seconds(model, texts, threads))
                for workers, client in clients.items():
                    out = Path(tmp) / f"w{workers}-r{repeat}"
                    seconds.setdefault(f"dask, {workers} worker(s) x 1 thread", []).append(
                        cluster_seconds(client, model, texts, args.partitions, out))
                print(json.dumps({k: v[-1] for k, v in seconds.items()}), flush=True)
        finally:
            for client in clients.values():
                client.close()
            for cluster in clusters.values():
                cluster.close()
    rows = [{"setting": setting, "median_seconds": round(statistics.median(runs), 2),
             "documents_per_s": round(args.documents / statistics.median(runs)),
             "runs_seconds": [round(s, 2) for s in runs]} for setting, runs in seconds.items()]
    for row in rows:
        print(json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items() if k != "out"},
                                    "mean_words_per_document": round(words, 1), "rows": rows,
                                    "skulmfit_commit": git_commit(), "machine": machine_description()},
                                   indent=2))


if __name__ == "__main__":
    main()
