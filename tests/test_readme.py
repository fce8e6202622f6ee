"""Every Python block of README.md and of the documentation's pages (docs/**/*.md) runs.

The blocks are run as written, in order, one namespace per document (as a reader would run them
in one session), in a temporary working directory. What they leave to the reader is defined
beforehand on tiny data: ``texts`` / ``labels`` (32 short reviews, two classes), ``new_texts``,
``more_texts`` (unlabelled), ``reviews`` / ``stars`` (regression), ``articles`` / ``topic_sets`` /
``new_articles`` (multi-label), ``X`` / ``y``, a fitted ``clf``, the weight files a
``skulmfit pretrain`` command would have written (``my-lm/``) and a Parquet file of texts
(``big.parquet``).

The bundled language models are replaced by a tiny one under the default's name (``DEFAULT_MODEL``, both
directions, an 8-dimensional embedding; ``skulmfit.pretrained._weights_dir`` points at it), so the
blocks run with every default, including the default ``pretrained`` and ``bidirectional="auto"``. Blocks that use Dask get an in-process
cluster (one worker thread): ``distributed.Client(...)`` returns it, whatever address a block
names.

Shell blocks (```bash) are not run. A Python block that cannot run on tiny data must be listed in
``NOT_RUN`` with the reason; today every block runs.

The module also checks what the documentation promises about itself: CI runs the README's exact
test command, and no user-facing page names issue numbers, sessions, commits or paths outside the
repository.
"""
from __future__ import annotations

import copy
import importlib.util
import re
from pathlib import Path

import pytest
import torch

import skulmfit.pretrained
from skulmfit import ULMFiTClassifier
from skulmfit.pretrained import DEFAULT_MODEL

from conftest import NEG, NEU, POS, tiny_model_pair

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DOCUMENTS = [ROOT / "README.md"] + sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```\s*$", re.M | re.S)

# dask's Parquet writer calls a pandas API that pandas deprecates: not the documentation's concern.
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword:Warning")

# (document relative to the repository root, a line of the block) -> why it cannot run here.
NOT_RUN: dict[tuple[str, str], str] = {}


def _blocks(document: Path) -> list[tuple[int, str]]:
    """``(line number, code)`` of every ```python block of a Markdown file."""
    text = document.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in PYTHON_BLOCK.finditer(text)]


def _not_run_reason(document: Path, code: str) -> str | None:
    name = document.relative_to(ROOT).as_posix()
    for (where, line), reason in NOT_RUN.items():
        if where == name and line in code:
            return reason
    return None


# ----------------------------------------------------------------------------- tiny stand-ins

@pytest.fixture(scope="module")
def bundled(tmp_path_factory, tiny_itos):
    """A folder holding a tiny model under the default's name (both directions), to stand in for the bundled models."""
    return tiny_model_pair(tmp_path_factory.mktemp("bundled"), DEFAULT_MODEL, tiny_itos)


@pytest.fixture(autouse=True)
def tiny_bundled_models(monkeypatch, bundled):
    monkeypatch.setattr(skulmfit.pretrained, "_weights_dir", lambda: bundled)


@pytest.fixture(scope="module")
def data() -> dict:
    texts = POS + NEG + POS[::-1] + NEG[::-1]
    labels = ["pos"] * 8 + ["neg"] * 8 + ["pos"] * 8 + ["neg"] * 8
    reviews = POS + NEG + NEU
    topic_sets = [{"earn"} if i % 3 == 0 else {"grain", "trade"} if i % 3 == 1 else {"trade"}
                  for i in range(len(reviews))]
    return dict(
        texts=texts, labels=labels, X=texts, y=labels,
        new_texts=["a wonderful story", "so boring", "an okay cast"],
        more_texts=NEU + [t.upper() for t in POS],
        reviews=reviews, stars=[9.0] * 8 + [2.0] * 8 + [5.5] * 8,
        articles=reviews, topic_sets=topic_sets, new_articles=["great music", "awful film"],
    )


@pytest.fixture(scope="module")
def fitted(bundled, data):
    """A fitted default classifier, for pages that start from one (``clf``)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(skulmfit.pretrained, "_weights_dir", lambda: bundled)
        return ULMFiTClassifier(random_state=0).fit(data["texts"], data["labels"])


@pytest.fixture
def workdir(tmp_path, monkeypatch, tiny_itos, data):
    """The reader's working directory: what earlier shell commands would have left there."""
    monkeypatch.chdir(tmp_path)
    folder = tiny_model_pair(tmp_path / "my-lm", "my-lm", tiny_itos)
    assert (folder / "my-lm.fwd.pt").exists()
    pd = pytest.importorskip("pandas")
    pd.DataFrame({"text": data["texts"]}).to_parquet(tmp_path / "big.parquet")
    return tmp_path


@pytest.fixture
def dask_client(monkeypatch):
    """An in-process Dask cluster; ``distributed.Client(anything)`` returns its client."""
    distributed = pytest.importorskip("distributed")
    client = distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None)

    class Client(distributed.Client):  # keeps Client.current() & co. for dask's own lookups
        def __new__(cls, *args, **kwargs):
            return client

    monkeypatch.setattr(distributed, "Client", Client)
    try:
        yield client
    finally:
        client.close()


# ----------------------------------------------------------------------------- the blocks


@pytest.mark.parametrize("document", [d for d in DOCUMENTS if _blocks(d)],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_python_blocks_run(document, data, fitted, workdir, request):
    blocks = _blocks(document)
    if any("dask" in code or "distributed" in code for _, code in blocks):
        request.getfixturevalue("dask_client")
    namespace = {"__name__": "__docs__", **copy.deepcopy(data), "clf": copy.deepcopy(fitted)}
    name = document.relative_to(ROOT).as_posix()
    previous_threads = torch.get_num_threads()
    try:
        for line, code in blocks:
            if _not_run_reason(document, code):
                continue
            exec(compile(code, f"{name}:{line}", "exec"), namespace)
    finally:
        torch.set_num_threads(previous_threads)


def test_the_readme_and_the_user_guide_have_python_blocks():
    assert len(_blocks(ROOT / "README.md")) >= 6
    guide = [p for p in DOCUMENTS if "user_guide" in p.parts]
    assert sum(len(_blocks(p)) for p in guide) >= 20


def test_every_not_run_mark_names_an_existing_block():
    for (where, line), reason in NOT_RUN.items():
        assert reason
        assert any(line in code for _, code in _blocks(ROOT / where)), (where, line)


# ----------------------------------------------------------------------------- promises about the docs

def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    development = readme.split("## Development", 1)[1]
    first_bash = re.search(r"```bash\n(.*?)```", development, re.S).group(1)
    command = first_bash.splitlines()[0].split("#")[0].strip()
    assert command == "python -m pytest -q"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command in [line.strip() for line in ci]


FORBIDDEN = {
    "an issue number": re.compile(r"\bissue #?\d+", re.I),
    "a session": re.compile(r"\bsessions?\b", re.I),
    "a commit": re.compile(r"\bcommit [0-9a-f]{7,40}\b|\bgit show\b", re.I),
    "a path outside the repository": re.compile(r"\.\./shared|/work/|\.\./\.\./\.\./"),
}


def _user_facing_texts():
    yield "README.md", (ROOT / "README.md").read_text(encoding="utf-8")
    for path in sorted(DOCS.rglob("*")):
        if path.suffix in {".md", ".rst"} and "_build" not in path.parts and "generated" not in path.parts:
            yield path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8")
    spec = importlib.util.spec_from_file_location("skulmfit_docs", DOCS / "_ext" / "skulmfit_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield "the model cards page", "\n".join(module.model_cards_rst())


@pytest.mark.parametrize("what", sorted(FORBIDDEN))
def test_user_facing_text_is_no_lab_notebook(what):
    found = [(name, m.group(0)) for name, text in _user_facing_texts() for m in FORBIDDEN[what].finditer(text)]
    assert not found, f"{what} in user-facing text: {found}"


def test_readme_links_and_images_point_into_the_repository():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)", readme)
    local = [t for t in targets if not t.startswith(("http://", "https://"))]
    assert local
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, missing
