"""skulmfit: ULMFiT text classification as a scikit-learn estimator."""
import os

# A busy neighbour process slows torch's spinning OpenMP threads up to 7x on small machines;
# passive waiting costs nothing measurable when the machine is quiet (measured on a 2-core EPYC).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

from .estimator import ULMFiTClassifier, ULMFiTRegressor, load  # noqa: E402
from .pretrained import available_models  # noqa: E402

__all__ = ["ULMFiTClassifier", "ULMFiTRegressor", "available_models", "load", "__version__"]
