#!/usr/bin/env bash
# speed.py's GPU figures in one command on a lent device machine (no network there).
#
# Here, once (fetches fastai's pure-Python wheels and copies TREC-6 into .gpu/, which git ignores):
#     bash benchmarks/speed/gpu_speed.sh --fetch DATA_DIR/trec
# Then, with the device tool, from the repository root:
#     run(command="bash benchmarks/speed/gpu_speed.sh", carry=[".gpu"], timeout_s=540)
# Results come back as $OUT/speed_gpu.json and $OUT/speed_gpu.log (copy them to benchmarks/speed/results/).
# The model cases need fastai but not spaCy, so the tokenizer and text cases (CPU work in both
# libraries) are left to the CPU run. Not run on a GPU yet: no device has been lent to this project.
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root

if [ "${1:-}" = "--fetch" ]; then
  trec=${2:?"give the folder of TREC-6 train.csv and test.csv"}
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
  mkdir -p .gpu/wheels .gpu/trec
  cp "$trec/train.csv" "$trec/test.csv" .gpu/trec/
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d .gpu/wheels \
    fastai==2.8.12 fastcore==2.2.41 fasttransform==0.0.5 fastprogress==1.0.5 fastdownload==0.0.8 \
    plum-dispatch==2.9.0 beartype==0.23.1
  du -sh .gpu
  exit 0
fi

[ -d .gpu/wheels ] || { echo "no .gpu/wheels: run 'bash benchmarks/speed/gpu_speed.sh --fetch DATA_DIR/trec' first" >&2; exit 2; }
out=${OUT:-benchmarks/speed/results}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/wheels/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
# The bundled and the paper-size model (the 16k size adds little on a GPU and would cost a third more
# time); every case also runs once more in a fresh process for its peak GPU memory.
python3 -m benchmarks.speed.speed --device cuda --configs bundled paper --cases lm classifier infer-short infer-long \
  --trec .gpu/trec --out "$out/speed_gpu.json" 2>&1 | tee "$out/speed_gpu.log"
