"""The regression and multi-label benchmark's table: one row per method, model and direction count."""
import json

from benchmarks.accuracy import targets


def test_table_keeps_forward_and_bidirectional_runs_apart(tmp_path):
    def record(method, rmse, **extra):
        return {"task": "ratings", "method": method, "budget": "500", "seed": 0, "rmse": rmse, "spearman": 0.5,
                "test": "5000/25000", **extra}
    records = [record("skulmfit", 2.5, pretrained="wiki-en-sub"),  # recorded before directions were
               record("skulmfit", 2.0, pretrained="wiki-en-sub", directions=2),
               record("skulmfit", 2.2, pretrained="wiki-en-sub", directions=2),
               record("tfidf", 2.7)]
    path = tmp_path / "targets.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    lines = targets.table(path).splitlines()
    assert "| ratings | skulmfit (wiki-en-sub) | 500 | 5000/25000 | rmse 2.500, spearman 0.500 | 1 |" in lines
    assert ("| ratings | skulmfit (wiki-en-sub, both directions) | 500 | 5000/25000 | "
            "rmse 2.100 ± 0.141, spearman 0.500 ± 0.000 | 2 |") in lines
    assert "| ratings | tfidf | 500 | 5000/25000 | rmse 2.700, spearman 0.500 | 1 |" in lines
