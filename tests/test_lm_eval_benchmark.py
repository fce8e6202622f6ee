"""benchmarks/pretraining/lm_eval.py: the open-vocabulary charge that makes word and subword models comparable."""
import pytest

from benchmarks.common import spelling_bits


def test_spelling_a_familiar_word_costs_less_than_an_odd_one():
    words = ["the", "then", "there", "cat", "cats", "hat"] * 20
    assert spelling_bits([], words) == 0
    familiar, odd = spelling_bits(["thet"], words), spelling_bits(["xqz"], words)
    assert 0 < familiar < odd
    assert spelling_bits(["cat", "cat"], words) == pytest.approx(2 * spelling_bits(["cat"], words))
