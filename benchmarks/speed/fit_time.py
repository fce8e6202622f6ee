"""How long a default fit takes with each candidate language model: the issue's practical limits are
all 5,452 TREC-6 questions in at most 120 s and 500 short texts (SST-2 sentences) in at most 60 s
on this 2-core CPU.

Each fit runs in a fresh process (loading the model counts, as it does for a user) with every
default but ``pretrained``; the settings alternate so that drift on the machine hits them alike; the
median of ``--repeats`` counts. Run it on a quiet machine.

    python -m benchmarks.speed.fit_time --data ../shared/data \\
        --pretrained wiki-en-small skulmfit/weights/wiki-en-sub.fwd.pt

``--engine`` compares settings of the engine that are not parameters, alternating with the others:
each arm is ``default`` or comma-separated ``NAME=VALUE`` values of ``skulmfit.engine``'s constants
(as ``benchmarks.accuracy.tune_defaults --engine`` takes them), e.g. ``--engine default LM_SAMPLED_SOFTMAX=0``.
``--params`` does the same for parameters of ``ULMFiTClassifier``, e.g.
``--params bidirectional=true bidirectional=true,n_jobs=2``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.common import engine_settings, git_commit
from skulmfit.cli import parse_params
from skulmfit.environment import machine_description

TASKS = {"trec-all": ("trec", None), "sst2-500": ("sst2", 500)}

# Run with ``python -c`` in the parent's working directory and environment, which import ``benchmarks``
# as the parent does (``python -m`` from the repository root).
CHILD = """
import json, time
import numpy as np
from benchmarks.common import engine_classifier, read_csv
texts, labels = read_csv(__import__("pathlib").Path({csv!r}))
if {n} is not None:
    keep = np.random.default_rng(0).choice(len(texts), {n}, replace=False)
    texts, labels = [texts[i] for i in keep], labels[keep]
start = time.perf_counter()
engine_classifier({engine!r})(pretrained={pretrained!r}, random_state=0, **{params!r}).fit(texts, labels)
print(json.dumps({{"seconds": time.perf_counter() - start}}))
"""


def engine_arm(text: str) -> dict:
    """``default`` -> {}; ``A=1,B=2`` -> {"A": 1, "B": 2} (values as JSON, names checked)."""
    return {} if text == "default" else engine_settings(text.split(","))


def params_arm(text: str) -> dict:
    """``default`` -> {}; ``bidirectional=true,n_jobs=2`` -> ULMFiTClassifier parameters (checked names)."""
    return {} if text == "default" else parse_params(text.split(","))


def fit_seconds(pretrained: str, csv: Path, n: int | None, engine: dict, params: dict | None = None) -> float:
    code = CHILD.format(csv=str(csv), n=n, pretrained=pretrained, engine=engine, params=params or {})
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with trec/ and sst2/")
    parser.add_argument("--pretrained", nargs="+", required=True, help="bundled names or weight files")
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--engine", nargs="+", default=["default"], help="engine arms (see above)")
    parser.add_argument("--params", nargs="+", default=["default"], help="parameter arms (see above)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "fit_time.json")
    args = parser.parse_args()
    arms = [(p, e, a) for p in args.pretrained for e in args.engine for a in args.params]
    seconds = {(*arm, t): [] for arm in arms for t in args.tasks}
    for _ in range(args.repeats):
        for task in args.tasks:
            folder, n = TASKS[task]
            for pretrained, engine, params in arms:
                runs = seconds[(pretrained, engine, params, task)]
                runs.append(fit_seconds(pretrained, args.data / folder / "train.csv", n, engine_arm(engine),
                                        params_arm(params)))
                print(json.dumps({"pretrained": pretrained, "engine": engine, "params": params, "task": task,
                                  "seconds": round(runs[-1], 1)}), flush=True)
    rows = [{"pretrained": p, **({"engine": e} if e != "default" else {}), **({"params": a} if a != "default" else {}),
             "task": t, "median_seconds": round(statistics.median(s), 1), "runs": [round(x, 1) for x in s]}
            for (p, e, a, t), s in seconds.items()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "skulmfit_commit": git_commit(), "machine": machine_description()},
                                   indent=2))
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
