"""The speed benchmark's own parts that need neither fastai nor data: FLOP counts, the ceiling, the table."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def speed():
    sys.path.insert(0, str(BENCHMARKS))  # speed.py imports its sibling scripts
    spec = importlib.util.spec_from_file_location("speed_benchmark", BENCHMARKS / "speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(BENCHMARKS))


def test_forward_flops_count_every_lstm_gate_and_the_decoder(speed):
    # layer 1: 4 gates x 384 x (128 + 384) multiply-adds; layer 2: 4 x 128 x (384 + 128); 2 FLOPs each
    lstm = 2 * (4 * 384 * 512 + 4 * 128 * 512)
    assert speed.forward_flops_per_token((8000, 128, 384, 2), decoder=False) == lstm
    assert speed.forward_flops_per_token((8000, 128, 384, 2), decoder=True) == lstm + 2 * 8000 * 128


def test_training_counts_three_forwards_and_inference_the_mean_document(speed):
    args = speed.parse_args(["--infer-docs", "32"])
    sizes = (8000, 128, 384, 2)
    assert speed.case_flops_per_unit("classifier", sizes, args) == 3 * speed.forward_flops_per_token(sizes, False)
    docs = speed.infer_docs("infer-short", 8000, args)
    per_doc = speed.case_flops_per_unit("infer-short", sizes, args)
    assert per_doc == pytest.approx(speed.forward_flops_per_token(sizes, False) * sum(map(len, docs)) / len(docs))
    assert speed.case_flops_per_unit("text-short", sizes, args) is None


def test_matmul_gflops_is_a_positive_rate(speed):
    assert speed.matmul_gflops(8, 16, 32, torch.float32, torch.device("cpu"), seconds=0.01) > 0


def test_table_lists_the_ceiling_after_the_cases(speed):
    entry = {f"{side} fp32": {"tokens_per_s": 100.0, "model_gflops_per_s": 5.0} for side in speed.SIDES}
    entry["ratio"] = {"fp32": 1.0}
    results = {"precisions": ["fp32"], "models": {"bundled": {"lm": entry}}, "memory": {},
               "ceiling_gflops_per_s": {"square 2048": {"fp32": 190.0}}}
    lines = speed.table(results).splitlines()
    assert "| bundled | lm (tokens/s) | fp32 | 100.0 | 100.0 | 1.00 | 5 / 5 | - / - |" in lines
    assert "| square 2048 | 190 |" in lines
