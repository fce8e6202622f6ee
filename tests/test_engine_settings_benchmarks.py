"""Engine and parameter arms of the diagnostic benchmarks: tune_defaults.py --engine, fit_time.py
--engine and --params."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
tune_defaults = pytest.importorskip("tune_defaults")
fit_time = pytest.importorskip("fit_time")

import skulmfit.estimator  # noqa: E402


def test_tune_defaults_sets_engine_constants_and_refuses_other_names(monkeypatch):
    monkeypatch.setattr(skulmfit.estimator, "LM_SAMPLED_SOFTMAX", skulmfit.estimator.LM_SAMPLED_SOFTMAX)
    monkeypatch.setattr(skulmfit.estimator, "LM_DROP_SCALE", skulmfit.estimator.LM_DROP_SCALE)
    assert tune_defaults.set_engine_constants(["LM_SAMPLED_SOFTMAX=0", "LM_DROP_SCALE=0.6"]) == {
        "LM_SAMPLED_SOFTMAX": 0, "LM_DROP_SCALE": 0.6}
    assert skulmfit.estimator.LM_SAMPLED_SOFTMAX == 0 and skulmfit.estimator.LM_DROP_SCALE == 0.6
    for wrong in ["NOT_A_CONSTANT=1", "lm_epochs=3", "np=1"]:
        with pytest.raises(SystemExit, match="not an engine constant"):
            tune_defaults.set_engine_constants([wrong])


def test_fit_time_engine_arms():
    assert fit_time.engine_arm("default") == {}
    assert fit_time.engine_arm("LM_SAMPLED_SOFTMAX=0,LM_DROP_SCALE=0.6") == {"LM_SAMPLED_SOFTMAX": 0,
                                                                            "LM_DROP_SCALE": 0.6}


def test_fit_time_parameter_arms():
    assert fit_time.params_arm("default") == {}
    assert fit_time.params_arm("bidirectional=true,n_jobs=2") == {"bidirectional": True, "n_jobs": 2}
    with pytest.raises(Exception, match="no such parameter"):
        fit_time.params_arm("n_job=2")
