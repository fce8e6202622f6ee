"""Every example runs its default code path, offline, on tiny stand-ins.

The bundled TREC-6 is replaced by 32 short reviews of two classes (16 to score on) and the bundled
language models by a tiny one under the same name (both directions, as tests/test_readme.py
does), so each example runs as a reader runs it, with its own default arguments. The Dask
example's local cluster of two worker processes becomes two worker threads in this process, so
that the workers see the tiny model too. ``--full`` changes only sizes: its parsing is checked,
not run. The first test checks the real bundled TREC-6.
"""
import importlib
import socket
import sys
from pathlib import Path

import pytest
from sklearn.model_selection import ParameterGrid

import skulmfit.datasets
import skulmfit.pretrained
from skulmfit.datasets import load_trec6
from skulmfit.pretrained import DEFAULT_MODEL

from conftest import NEG, POS, tiny_model_pair

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NAMES = sorted(path.stem for path in EXAMPLES.glob("*.py") if path.stem != "data")


def test_bundled_trec6_is_the_official_split():
    train, test = load_trec6(), load_trec6(subset="test")
    assert len(train.data) == 5452 and len(test.data) == 500
    assert train.target_names == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    assert [train.target_names[i] for i in train.target[:3]] == list(load_trec6(return_X_y=True)[1][:3])
    assert "Li and" in train.DESCR and "Terms" in train.DESCR
    with pytest.raises(ValueError, match="subset"):
        load_trec6(subset="dev")


def tiny_trec6(subset="train", return_X_y=False):
    """What the examples ask of ``load_trec6``, on 32 training and 16 test texts."""
    assert return_X_y
    if subset == "train":
        return POS + NEG + POS[::-1] + NEG[::-1], ["pos"] * 8 + ["neg"] * 8 + ["pos"] * 8 + ["neg"] * 8
    return NEG + POS, ["neg"] * 8 + ["pos"] * 8


@pytest.fixture(scope="module")
def bundled(tmp_path_factory, tiny_itos):
    return tiny_model_pair(tmp_path_factory.mktemp("bundled"), DEFAULT_MODEL, tiny_itos)


@pytest.fixture
def example(monkeypatch, tmp_path, bundled):
    """``example(name)``: the freshly imported module of ``examples/name.py``, which runs in an
    empty working directory with the tiny stand-ins."""
    monkeypatch.setattr(skulmfit.pretrained, "_weights_dir", lambda: bundled)
    monkeypatch.setattr(skulmfit.datasets, "load_trec6", tiny_trec6)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(EXAMPLES))
    for name in ["data", *NAMES]:
        monkeypatch.delitem(sys.modules, name, raising=False)
    return importlib.import_module


@pytest.fixture
def offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("the examples must not use the network on the bundled data")
    monkeypatch.setattr(socket.socket, "connect", no_network)


def test_quickstart(example, offline, capsys):
    scores = example("quickstart").main([])
    out = capsys.readouterr().out
    assert "32 training texts, 16 test texts" in out and "TF-IDF + logistic regression" in out
    assert 0 <= scores["skulmfit"] <= 1 and 0 <= scores["tfidf-lr"] <= 1


def test_grid_search(example, offline, capsys):
    search = example("grid_search").main([])
    assert len(search.cv_results_["params"]) == 2 and search.n_splits_ == 2
    out = capsys.readouterr().out
    assert "totalling 4 fits" in out and "best parameters" in out and "32 training texts" in out


def test_low_shot(example, offline, capsys):
    scores = example("low_shot").main(["--labels", "8"])
    assert "8 labels + 24 unlabelled texts" in capsys.readouterr().out
    assert all(0 <= score <= 1 for score in scores.values())


def test_persistence(example, offline, capsys):
    assert 0 <= example("persistence").main([]) <= 1
    assert "identical probabilities" in capsys.readouterr().out


def test_dask_grid_search(example, monkeypatch, tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    pd = pytest.importorskip("pandas")
    in_process = distributed.LocalCluster

    def local_cluster(**kwargs):
        return in_process(**{**kwargs, "processes": False, "dashboard_address": None, "silence_logs": 50})

    monkeypatch.setattr(distributed, "LocalCluster", local_cluster)
    search = example("dask_grid_search").main([])
    assert len(search.cv_results_["params"]) == 2 and search.n_splits_ == 2
    assert "totalling 4 fits" in capsys.readouterr().out
    files = sorted(tmp_path.glob("predictions-*.csv"), key=lambda path: int(path.stem.split("-")[1]))
    predictions = pd.concat(pd.read_csv(path, index_col=0) for path in files)
    assert list(predictions.index) == list(range(16)) and list(predictions.columns) == ["proba_neg", "proba_pos"]


@pytest.mark.parametrize("name, argv, max_train, fits", [
    ("grid_search", [], 400, 2 * 2),
    ("grid_search", ["--full"], 600, 4 * 3),
    ("grid_search", ["--full", "--max-train", "50"], 50, 4 * 3),
    ("dask_grid_search", [], 300, 2 * 2),
    ("dask_grid_search", ["--full"], 500, 4 * 3),
])
def test_full_runs_differ_only_in_size(example, name, argv, max_train, fits):
    module = example(name)
    args = module.parse_args(argv)
    assert args.max_train == max_train and len(ParameterGrid(args.grid)) * args.cv == fits
    assert set(module.DEFAULT_RUN["grid"]) <= set(module.FULL_RUN["grid"])
    for run in (module.DEFAULT_RUN, module.FULL_RUN):  # --help and the docstring say the same
        assert run["time"] in module.__doc__


@pytest.mark.parametrize("name", NAMES)
def test_help_says_how_long_it_takes(example, name, capsys):
    module = example(name)
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "about" in out and "minute" in out and "2-core CPU" in out
    if "--full" in out:
        assert "python examples/{}.py --full".format(name) in out
