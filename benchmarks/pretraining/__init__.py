"""Pretraining: how the bundled language models were made and chosen (sizes, tokenizers, equal-compute
arms, intrinsic figures, distillation); records in ``results/``, benchmark-made weights in ``models/``."""
