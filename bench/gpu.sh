#!/usr/bin/env bash
# The one device check, for sessions lent a GPU machine (device tool). Run from the repository root:
#   1. here, once:  bash bench/gpu_wheels.sh        (wheels the GPU image lacks, into .whl/, git-ignored)
#   2. device run:  command "bash bench/gpu.sh", carry [".whl"], timeout_s 540
#   3. if device time is left (or first, when the steps are already recorded):
#                   command "bash bench/gpu.sh train", carry [".whl"], timeout_s 600
#   or both in one call (one machine start):  command "bash bench/gpu.sh all --n 120", timeout_s 600
# Arguments after the mode go to bench/gpu_train.py.
# It installs the carried wheels, runs the test suite (CUDA tests included), then times training and
# inference steps per model variant on the card; "train" instead trains magnet3 on virtual slides for a few
# minutes (bench/gpu_train.py: AUROCs, slides/s, peak memory). Results go to $OUT/gpu.log; copy them, with
# the card name, into docs/BENCHMARKS.md.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || exit 1
else
  export PYTHONPATH=$PWD
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
  mode=${1:-steps}; shift || true
  case $mode in  # limits: steps 480 s, train 560 s, all 570 s
    steps) timeout 240 python3 -m pytest -q -x tests/gpu tests/models tests/layers -p no:cacheprovider
           timeout 240 python3 bench/gpu_step.py --steps 5 ;;
    train) timeout 90 python3 -m pytest -q -x tests/gpu -p no:cacheprovider
           timeout 470 python3 bench/gpu_train.py --out /tmp/gpu_train "$@" ;;  # checkpoints stay there
    all)   timeout 150 python3 -m pytest -q -x tests/gpu tests/models tests/layers -p no:cacheprovider
           timeout 120 python3 bench/gpu_step.py --steps 3
           timeout 300 python3 bench/gpu_train.py --out /tmp/gpu_train "$@" ;;
    *) echo "bench/gpu.sh: unknown mode '$mode' (steps, train or all)" >&2; exit 2 ;;
  esac
} 2>&1 | tee "$OUT/gpu.log"
