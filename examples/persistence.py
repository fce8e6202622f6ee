"""Save a fitted classifier and load it back, in the safe format and with joblib.

``clf.save`` / ``skulmfit.load`` store tensors plus plain values and never run code from the
file: use them for models you send or receive. ``joblib``/``pickle`` work too (scikit-learn's
convention) but unpickling runs whatever code a file names: only for files you made yourself.
Both load on a machine without a GPU.

    python examples/persistence.py [--csv my.csv]

Takes about 1.5 minutes on a 2-core CPU without bf16: one fit on 500 TREC-6 questions (an
estimate from measured fit times, on an otherwise idle machine). Accuracy is not the point here,
so there is no larger run; --max-train changes the size.
"""
import argparse
import tempfile
from pathlib import Path

import joblib
import numpy as np

import skulmfit
from data import add_data_arguments, load
from skulmfit import ULMFiTClassifier


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.set_defaults(max_train=500)
    args = parser.parse_args(argv)
    X_train, y_train, X_test, y_test = load(args)

    clf = ULMFiTClassifier(random_state=0).fit(X_train, y_train)
    with tempfile.TemporaryDirectory() as folder:
        safe, pickled = Path(folder) / "ulmfit.skulmfit", Path(folder) / "ulmfit.joblib"
        clf.save(safe)
        joblib.dump(clf, pickled)
        print(f"saved {safe.stat().st_size / 1e6:.1f} MB (safe format), {pickled.stat().st_size / 1e6:.1f} MB (joblib)")
        from_safe, from_pickle = skulmfit.load(safe), joblib.load(pickled)
    expected = clf.predict_proba(X_test)
    assert np.array_equal(from_safe.predict_proba(X_test), expected)
    assert np.allclose(from_pickle.predict_proba(X_test), expected)
    accuracy = from_safe.score(X_test, y_test)
    print(f"loaded model accuracy {accuracy:.3f}, identical probabilities")
    return accuracy


if __name__ == "__main__":
    main()
