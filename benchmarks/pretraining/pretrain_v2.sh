#!/usr/bin/env bash
# Pretrain the v2 language model on CPU, both directions side by side (one core each), in the
# background, resumable across sessions and machines.
#
#     bash benchmarks/pretraining/pretrain_v2.sh NAME EMB HIDDEN PLANNED_TOKENS HOURS WIKIPEDIA_DIR
# e.g. bash benchmarks/pretraining/pretrain_v2.sh wiki-en-sub 128 384 300e6 2.5 ../shared/data/lm-corpus/wikipedia-en
#
# Each direction resumes from, in this order: its full checkpoint in cache/v2-NAME (same machine);
# its committed weights skulmfit/weights/NAME.DIR.pt (--init: a fresh optimizer, the card's token
# count and corpus position); for a backward model not started yet, nothing but the forward model's
# tokenizer and vocabulary (--vocab-from), so that both directions share one text pipeline. The
# recipe is arm (c)'s: 16k subword pieces, sampled softmax of 1,024, bf16, learning rate decaying
# linearly over PLANNED_TOKENS. Weights and cards are written to cache/v2-NAME/out at every
# checkpoint; before a session ends, copy them over skulmfit/weights/ (promote_model.py) and commit.
# Logs: cache/v2-NAME/{fwd,bwd}.log.
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root
name=${1:?name} emb=${2:?emb size} hidden=${3:?hidden size} planned=${4:?planned tokens} hours=${5:?hours}
corpus=$(realpath "${6:?Wikipedia corpus folder}")
work=cache/v2-$name
mkdir -p "$work/out"
export OMP_WAIT_POLICY=PASSIVE
common=(--name "$name" --cache "$work" --tokenizer subword --vocab-size 16000 --sampled-softmax 1024
        --emb-size "$emb" --hidden-size "$hidden" --layers 2 --planned-tokens "$planned" --max-tokens "$planned"
        --hours "$hours" --threads 1 --bf16 --checkpoint-minutes 10 --jobs 2)
start_from() {  # $1 = fwd or bwd: the flags that tell pretraining where this direction starts
  local committed=skulmfit/weights/$name.$1.pt
  # A checkpoint resumes itself, but the cache it reads was built from the committed tokenizer and
  # vocabulary, so name them again for pretraining to check the cache against.
  if [ -f "$work/checkpoint.$1.pt" ]; then
    if [ -f "$committed" ]; then echo "--vocab-from $committed"; fi; return
  fi
  if [ -f "$committed" ]; then echo "--init $committed"; return; fi
  if [ "$1" = bwd ]; then echo "--vocab-from skulmfit/weights/$name.fwd.pt"; fi
}
# The forward direction first builds the token cache (or finds it); the backward one then reads it.
python -m skulmfit.pretrain "$corpus" "$work/out" "${common[@]}" $(start_from fwd) > "$work/fwd.log" 2>&1 &
until [ -f "$work/vocab_settings.json" ]; do sleep 10; done  # written last when the cache is built
python -m skulmfit.pretrain "$corpus" "$work/out" "${common[@]}" --backwards $(start_from bwd) > "$work/bwd.log" 2>&1 &
echo "started: $work/fwd.log $work/bwd.log"
wait
