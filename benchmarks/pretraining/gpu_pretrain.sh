#!/usr/bin/env bash
# Continue pretraining a bundled model on a lent GPU machine, in one device command of under 10 minutes.
#
# Here, once (copies Wikipedia shards -- and optionally a reviews shard -- into .gpu/corpus, which git
# ignores; the device tool carries at most 64 MiB, so 4 of the 8 training shards go):
#     bash benchmarks/pretraining/gpu_pretrain.sh --fetch ../shared/data/lm-corpus/wikipedia-en [CORPUS_WITH_REVIEWS_DIR]
# Then, with the device tool, from the repository root (NAME is the model under skulmfit/weights):
#     run(command="bash benchmarks/pretraining/gpu_pretrain.sh NAME 3.5", carry=[".gpu"], timeout_s=560)
# Each direction trains for the given minutes from the committed weights (--init: same tokenizer and
# vocabulary, the learning-rate schedule continues from the tokens the card records) with a batch
# four times the CPU's. The new weights and cards come back under $OUT: copy them over
# skulmfit/weights/, then run python -m benchmarks.pretraining.lm_eval --update-cards before committing.
# Sizes and options follow the committed card's "training" entry. Not run yet: no device has been
# lent to this project.
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root

if [ "${1:-}" = "--fetch" ]; then
  wiki=${2:?"give the Wikipedia corpus folder"}
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
  mkdir -p .gpu/corpus
  cp "$wiki"/valid.txt.gz "$wiki"/train.0[0-3].txt.gz .gpu/corpus/
  if [ -n "${3:-}" ]; then cp -L "$3"/train.*reviews*.txt.gz .gpu/corpus/; fi
  du -sh .gpu
  exit 0
fi

name=${1:?"give the model name, e.g. wiki-en-small"}
minutes=${2:-3.5}
[ -d .gpu/corpus ] || { echo "no .gpu/corpus: run 'bash benchmarks/pretraining/gpu_pretrain.sh --fetch ...' first" >&2; exit 2; }
out=${OUT:-cache/gpu-out}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
for direction in fwd bwd; do
  weights=skulmfit/weights/$name.$direction.pt
  [ -f "$weights" ] || { echo "skipping $direction: no $weights"; continue; }
  # The committed card's training options (sizes, dropout, lr, planned tokens, sampled softmax), as flags.
  options=$(python3 - "$weights" <<'PY'
import json, sys
card = json.load(open(sys.argv[1].removesuffix(".pt") + ".json"))
t = card["training"]
flags = {"--emb-size": t["emb_size"], "--hidden-size": t["hidden_size"], "--layers": t["layers"],
         "--drop-mult": t["drop_mult"], "--lr": t["lr"], "--planned-tokens": t["planned_tokens"],
         "--bptt": t["bptt"], "--sampled-softmax": t.get("sampled_softmax", 0)}
print(" ".join(f"{k} {v}" for k, v in flags.items()) + (" --backwards" if t["backwards"] else ""))
PY
)
  python3 -m skulmfit.pretrain .gpu/corpus "$out" --name "$name" --cache /tmp/cache-$direction \
    --init "$weights" $options --batch-size 256 --bf16 --jobs 8 --hours "$(python3 -c "print($minutes / 60)")" \
    --checkpoint-minutes 1 2>&1 | tee "$out/$name.$direction.log"
done
ls -la "$out"
