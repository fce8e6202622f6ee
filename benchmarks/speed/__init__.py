"""Speed: tokenizer and training throughput, fit time, memory, against fastai; records in ``results/``."""
