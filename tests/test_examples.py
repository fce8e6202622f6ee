"""The README's first command: the quickstart runs offline on the bundled TREC-6."""
import socket
import sys
from pathlib import Path

import pytest

from skulmfit.datasets import load_trec6

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_bundled_trec6_is_the_official_split():
    train, test = load_trec6(), load_trec6(subset="test")
    assert len(train.data) == 5452 and len(test.data) == 500
    assert train.target_names == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    assert [train.target_names[i] for i in train.target[:3]] == list(load_trec6(return_X_y=True)[1][:3])
    assert "Li and" in train.DESCR and "Terms" in train.DESCR
    with pytest.raises(ValueError, match="subset"):
        load_trec6(subset="dev")


def test_quickstart_runs_offline_on_the_bundled_data(monkeypatch, capsys):
    def no_network(*args, **kwargs):
        raise OSError("the quickstart must not use the network")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.syspath_prepend(str(EXAMPLES))
    sys.modules.pop("data", None)
    import quickstart
    scores = quickstart.main(["--max-train", "120", "--max-test", "60", "--param", "lm_epochs=1",
                              "--param", "epochs=1", "--param", "verbose=0"])
    out = capsys.readouterr().out
    assert "120 training texts, 60 test texts" in out and "TF-IDF + logistic regression" in out
    assert 0 <= scores["skulmfit"] <= 1 and 0 <= scores["tfidf-lr"] <= 1
