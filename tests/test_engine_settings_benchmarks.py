"""Engine and parameter arms of the diagnostic benchmarks: tune_defaults.py --engine (its helpers in
benchmarks/common.py), fit_time.py --engine and --params."""
import pytest
from sklearn.base import clone

import skulmfit.engine
from benchmarks import common
from benchmarks.speed import fit_time
from skulmfit import ULMFiTClassifier


def test_tune_defaults_builds_a_classifier_of_other_engine_settings_and_refuses_other_names():
    engine = common.engine_settings(["LM_SAMPLED_SOFTMAX=0", "LM_DROP_SCALE=0.6"])
    assert engine == {"LM_SAMPLED_SOFTMAX": 0, "LM_DROP_SCALE": 0.6}  # as the records keep them
    arm = common.engine_classifier(engine)
    assert issubclass(arm, ULMFiTClassifier)
    assert arm.lm_engine_choices == {"sampled_softmax": 0, "drop_scale": 0.6}  # fields of LMFineTuning
    model = arm(lm_epochs=3)
    assert clone(model).lm_engine_choices == arm.lm_engine_choices and model.get_params()["lm_epochs"] == 3
    # nothing is patched: the engine's defaults and the public estimator are as they were
    assert skulmfit.engine.LM_SAMPLED_SOFTMAX == 1024 and skulmfit.engine.LM_DROP_SCALE == 2.0
    assert ULMFiTClassifier.lm_engine_choices == {}
    assert common.engine_classifier({}) is ULMFiTClassifier
    head = common.engine_classifier(common.engine_settings(["HEAD_WARMUP_EPOCHS=20"]))
    assert head.head_engine_choices == {"warmup_epochs": 20} and head.lm_engine_choices == {}
    assert skulmfit.engine.HEAD_WARMUP_EPOCHS == 0 and ULMFiTClassifier.head_engine_choices == {}
    for wrong in ["NOT_A_CONSTANT=1", "lm_epochs=3", "np=1", "RANDOM_INIT_SIZES={}", "HEAD_EPOCHS=3"]:
        with pytest.raises(SystemExit, match="not an engine constant"):
            common.engine_settings([wrong])


def test_fit_time_engine_arms():
    assert fit_time.engine_arm("default") == {}
    assert fit_time.engine_arm("LM_SAMPLED_SOFTMAX=0,LM_DROP_SCALE=0.6") == {"LM_SAMPLED_SOFTMAX": 0,
                                                                            "LM_DROP_SCALE": 0.6}
    with pytest.raises(SystemExit, match="not an engine constant"):
        fit_time.engine_arm("LM_SAMPLED_SOFTMAXX=0")


def test_fit_time_parameter_arms():
    assert fit_time.params_arm("default") == {}
    assert fit_time.params_arm("bidirectional=true,n_jobs=2") == {"bidirectional": True, "n_jobs": 2}
    with pytest.raises(Exception, match="no such parameter"):
        fit_time.params_arm("n_job=2")
