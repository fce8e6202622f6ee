"""The speed benchmark's own parts that need neither fastai nor data: FLOP counts, the ceiling, the table."""
import pytest
import torch

from benchmarks.speed import speed as speed_benchmark


@pytest.fixture(scope="module")
def speed():
    return speed_benchmark


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


def test_the_stage_profile_accounts_for_each_stage_of_each_direction(tmp_path, keyword_task):
    """Fresh processes fit the tiny model pair on an SST-2-shaped folder: every stage is timed and the
    table has a row per configuration."""
    import csv
    import json

    from benchmarks.speed import stage_profile
    from conftest import tiny_model_pair
    from skulmfit.tokenizer import tokenize_many
    from skulmfit.vocab import Vocab

    texts, labels = keyword_task(60, seed=0)
    (tmp_path / "data" / "sst2").mkdir(parents=True)
    for name, rows in (("train", slice(0, 40)), ("dev", slice(40, 60))):
        with open(tmp_path / "data" / "sst2" / f"{name}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(zip(texts[rows], labels[rows]))
    itos = Vocab.build(tokenize_many(texts), min_freq=1).itos
    weights = tiny_model_pair(tmp_path / "models", "tiny", itos)  # a folder: both directions
    tiny = json.dumps({"lm_epochs": 1, "epochs": 1, "batch_size": 8, "bptt": 10, "max_len": 50})
    out = tmp_path / "profile.json"
    stage_profile.main(["--data", str(tmp_path / "data"), "--dataset", "sst2", "--labels", "24", "--predict", "12",
                        "--configs", "forward:1", "both:2", "--settings", tiny, "--pretrained", str(weights),
                        "--tfidf", "--out", str(out)])
    records = json.loads(out.read_text())
    assert [r["config"] for r in records] == ["forward:1", "both:2", "tfidf-lr"]
    baseline = records.pop()
    assert baseline["seconds"]["fit"] > 0 and baseline["predicted"] == 12 and 0 <= baseline["accuracy"] <= 1
    for record in records:
        assert [d["direction"] for d in record["directions"]] == (["forward"] if record["config"] == "forward:1"
                                                                   else ["forward", "backward"])
        for direction in record["directions"]:
            assert direction["lm_fine_tuning"] > 0 and direction["classifier_epochs"] == 4
            stages = direction["classifier_stages"]  # each value and the total rounded to 0.01 s
            assert direction["classifier"] == pytest.approx(sum(stages.values()), abs=0.005 * (len(stages) + 1) + 1e-9)
        assert record["seconds"]["fit"] > record["seconds"]["rest_of_fit"] >= 0
        assert record["predicted"] == 12 and 0 <= record["accuracy"] <= 1
    table = out.with_suffix(".md").read_text().splitlines()
    assert len(table) == 5 and "forward:1" in table[2] and "both:2" in table[3]
    assert table[4].startswith("| sst2 | 24 | tfidf-lr | - | - | 1 |")
