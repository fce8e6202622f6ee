#!/usr/bin/env bash
# Evaluate one pretraining arm of the language-model comparison: intrinsic figures (bits per character,
# per-word perplexity, unknown-token rates) and the downstream recipe at 500 labels, 3 label samples, on
# validation splits only (SST-2 dev, 1,000 held-out TREC-6 and 2,000 held-out IMDb training texts).
#     bash benchmarks/pretraining/lm_arms.sh TAG WEIGHTS DATA_DIR
# e.g. bash benchmarks/pretraining/lm_arms.sh b-sub8k cache/arms/b-sub8k/arm-b-sub8k.fwd.pt ../shared/data
# Results: benchmarks/pretraining/results/lm_arms_eval_TAG.json and lines tagged TAG in
# benchmarks/pretraining/results/lm_arms.jsonl; benchmarks/pretraining/lm_arms_table.py turns them into the table.
set -euo pipefail
tag=${1:?tag} weights=$(realpath "${2:?weights file}") data=$(realpath "${3:?data folder}")
cd "$(dirname "$0")/../.."  # the repository root: the benchmarks run as modules from there
results=benchmarks/pretraining/results
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
python -m benchmarks.pretraining.lm_eval "$weights" --valid "$data/lm-corpus/wikipedia-en/valid.txt.gz" \
  --wikitext "$data/lm-corpus/wikitext-2/wiki.test.tokens" --classification "$data" \
  --out "$results/lm_arms_eval_$tag.json"
python -m benchmarks.accuracy.tune_defaults --data "$data" --datasets sst2 trec imdb --labels 500 --seeds 0 1 2 \
  --pretrained "$weights" --tag "$tag" --out "$results/lm_arms.jsonl"
