#!/usr/bin/env bash
# IMDb accuracy runs that take hours on this CPU, in one device command of under 10 minutes: the
# default (both directions of the bundled default model) on all 25,000 labels, the semi-supervised
# label budgets (both directions of the IMDb-fine-tuned model), then the default and its forward
# model alone at 100 / 500 / 1,000 labels. Every fit is scored on the 2,000- and 5,000-review test
# samples and on all 25,000 reviews (one record each).
#
# Here, once (IMDb's training and test reviews, recompressed with xz so that the working tree and
# they fit the 64 MiB the device tool carries; .gpu/ is ignored by git):
#     bash benchmarks/accuracy/gpu_accuracy.sh --fetch ../shared/data
# Then, with the device tool, from the repository root:
#     run(command="bash benchmarks/accuracy/gpu_accuracy.sh", carry=[".gpu/imdb-xz"], timeout_s=590)
# The records come back as $OUT/accuracy_gpu.jsonl (each names the GPU in "machine"): append the
# 2,000-review ones to benchmarks/accuracy/results/accuracy.jsonl and the others to
# benchmarks/semi_supervised/results/semi_supervised_imdb.jsonl. MINUTES (default 9) bounds the whole
# command; a run that would pass it is stopped and leaves no record.
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root

if [ "${1:-}" = "--fetch" ]; then
  data=${2:?"give the data folder that holds imdb/"}
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
  mkdir -p .gpu/imdb-xz
  for split in train test; do zcat "$data/imdb/$split.csv.gz" | xz -6 > ".gpu/imdb-xz/$split.csv.xz"; done
  du -sh .gpu/imdb-xz
  exit 0
fi

[ -d .gpu/imdb-xz ] || { echo "no .gpu/imdb-xz: run 'bash benchmarks/accuracy/gpu_accuracy.sh --fetch DATA' first" >&2; exit 2; }
stop=$(( $(date +%s) + ${MINUTES:-9} * 60 ))
out=${OUT:-cache/gpu-out}
data=/tmp/skulmfit-data
mkdir -p "$out" "$data/imdb"
for split in train test; do xz -dc ".gpu/imdb-xz/$split.csv.xz" | gzip -1 > "$data/imdb/$split.csv.gz"; done
python3 -m pip install -q --no-deps --no-build-isolation -e .  # accuracy.py records the package's version
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

run() {
  local left=$(( stop - $(date +%s) ))
  if [ "$left" -lt 30 ]; then echo "no time left for: $*"; return 0; fi
  timeout "$left" python3 -m benchmarks.accuracy.accuracy --data "$data" --datasets imdb --max-test 2000 5000 0 \
    --out "$out/accuracy_gpu.jsonl" "$@" || echo "stopped: $*"
}
run --methods bidirectional --budgets all   # the default on all 25,000 labels: hours on a 2-core CPU
run --methods bidirectional --set pretrained=benchmarks/semi_supervised/models/imdb-lm-bs32 lm_epochs=0 --tag imdb-lm-bs32 \
    --budgets 100 500 1000 --seeds 0 1 2
run --methods bidirectional --budgets 100 500 1000 --seeds 0 1 2
run --methods skulmfit --budgets 100 500 1000 --seeds 0 1 2
