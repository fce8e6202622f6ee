"""Save a fitted classifier with joblib and load it back (also on a machine without a GPU).

    python examples/persistence.py [--csv my.csv]
"""
import argparse
import tempfile
from pathlib import Path

import joblib
import numpy as np

from data import add_data_arguments, load
from skulmfit import ULMFiTClassifier

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
add_data_arguments(parser)
parser.set_defaults(max_train=500)
args = parser.parse_args()
X_train, y_train, X_test, y_test = load(args)

clf = ULMFiTClassifier(random_state=0).fit(X_train, y_train)
with tempfile.TemporaryDirectory() as folder:
    path = Path(folder) / "ulmfit.joblib"
    joblib.dump(clf, path)
    print(f"saved {path.stat().st_size / 1e6:.1f} MB")
    loaded = joblib.load(path)  # tensors are restored on the CPU; predict uses a GPU if device allows
assert np.allclose(clf.predict_proba(X_test[:50]), loaded.predict_proba(X_test[:50]))
print(f"loaded model accuracy {loaded.score(X_test, y_test):.3f}, identical probabilities")
