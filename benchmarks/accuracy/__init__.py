"""Accuracy: test and validation scores of skulmfit against baselines, the tuning of its defaults,
regression and multi-label targets; records in ``results/``."""
