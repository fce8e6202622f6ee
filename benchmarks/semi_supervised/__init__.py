"""Semi-supervised ULMFiT at IMDb scale: a language model fine-tuned once on the unlabelled reviews;
records in ``results/``, the fine-tuned weights in ``models/``."""
