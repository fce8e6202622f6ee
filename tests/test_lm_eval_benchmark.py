"""benchmarks/lm_eval.py: the open-vocabulary charge that makes word and subword models comparable."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
lm_eval = pytest.importorskip("lm_eval")


def test_spelling_a_familiar_word_costs_less_than_an_odd_one():
    words = ["the", "then", "there", "cat", "cats", "hat"] * 20
    assert lm_eval.spelling_bits([], words) == 0
    familiar, odd = lm_eval.spelling_bits(["thet"], words), lm_eval.spelling_bits(["xqz"], words)
    assert 0 < familiar < odd
    assert lm_eval.spelling_bits(["cat", "cat"], words) == pytest.approx(2 * lm_eval.spelling_bits(["cat"], words))
