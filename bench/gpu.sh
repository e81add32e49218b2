#!/usr/bin/env bash
# The one device check, for sessions lent a GPU machine (device tool). Run from the repository root:
#   1. here, once:  bash bench/gpu_wheels.sh        (wheels the GPU image lacks, into .whl/, git-ignored;
#                   20 MiB, so that the repository and they stay under the device tool's 64 MiB)
#   2. device run:  command "bash bench/gpu.sh", carry [".whl"], timeout_s 540
#   3. if device time is left (or first, when the steps are already recorded):
#                   command "bash bench/gpu.sh train", carry [".whl"], timeout_s 600
#   or both in one call (one machine start):  command "bash bench/gpu.sh all --n 120", timeout_s 600
#   tiling points too dear for 2 CPU cores: command "bash bench/gpu.sh tiling tiling@1", carry [".whl"],
#   timeout_s 540: bench/accuracy_vs_pixels.py's 8-mm version-3 sets, features read by 16 processes and
#   encoded on the card, attention MIL for seeds 1-3, its report in gpu.log; the summaries, predictions and
#   the feature costs come back in $OUT/tiling.tar.gz (unpack it into the sets' folder here to pair the rows
#   with bench/paired_auroc.py and draw the figure). tiling@1 took 6.7 min of the call on an H200.
#   a learned zoom against its fixed layout in one call: command "bash bench/gpu.sh pair --n 120 ...",
#   carry [".whl"], timeout_s 590: tests/gpu, then two trainings side by side on the card (8 reader threads
#   each), the second with model.zoom=fixed; each test predictions CSV comes back ($OUT/learned.csv,
#   $OUT/fixed.csv) for bench/paired_auroc.py, and each log.
# Arguments after the mode go to bench/gpu_train.py (tiling: the methods).
# It installs the carried wheels, runs the test suite (CUDA tests included), then times training and
# inference steps per model variant on the card; "train" instead trains magnet3 on virtual slides for a few
# minutes (bench/gpu_train.py: AUROCs, slides/s, peak memory). Results go to $OUT/gpu.log; copy them, with
# the card name, into docs/BENCHMARKS.md.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then  # .whl-tiff too where it was carried (gpu_wheels.sh --tiff)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl $(ls .whl-tiff/*.whl 2>/dev/null) && export PYTHONPATH=/tmp/site:$PWD || exit 1
else
  export PYTHONPATH=$PWD
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
  mode=${1:-steps}; shift || true
  case $mode in  # limits: steps 480 s, train 560 s, all 570 s, tiling 540 s, pair 560 s
    steps) timeout 240 python3 -m pytest -q -x tests/gpu tests/models tests/layers -p no:cacheprovider
           timeout 240 python3 bench/gpu_step.py --steps 5 ;;
    train) timeout 90 python3 -m pytest -q -x tests/gpu -p no:cacheprovider
           timeout 470 python3 bench/gpu_train.py --out /tmp/gpu_train "$@"  # checkpoints stay there
           cp /tmp/gpu_train/eval-test/predictions.csv "$OUT/" ;;  # to pair two runs with bench/paired_auroc.py
    all)   timeout 150 python3 -m pytest -q -x tests/gpu tests/models tests/layers -p no:cacheprovider
           timeout 120 python3 bench/gpu_step.py --steps 3
           timeout 300 python3 bench/gpu_train.py --out /tmp/gpu_train "$@" ;;
    pair)  timeout 60 python3 -m pytest -q -x tests/gpu -p no:cacheprovider
           for zoom in learned fixed; do
             extra=(); [ $zoom = fixed ] && extra=(--set model.zoom=fixed)
             (timeout 480 python3 bench/gpu_train.py --out /tmp/pair-$zoom "$@" --set data.reader_threads=8 \
               "${extra[@]}" > "$OUT/$zoom.log" 2>&1
              cp /tmp/pair-$zoom/eval-test/predictions.csv "$OUT/$zoom.csv") &
           done
           wait; tail -n 4 "$OUT"/learned.log "$OUT"/fixed.log ;;
    tiling) B=bench/accuracy_vs_pixels.py; D=/tmp/avp3; methods=("${@:-tiling@1}")
           python3 $B --out $D --stage sets
           for i in $(seq 1 16); do
             OMP_NUM_THREADS=1 timeout 360 python3 $B --out $D --stage features --methods "${methods[@]}" \
               --part "$i/16" --device cuda > "/tmp/features-$i.log" 2>&1 &
           done
           wait; tail -qn 1 /tmp/features-*.log
           for seed in 1 2 3; do
             timeout 60 python3 $B --out $D --stage run --seed $seed --methods "${methods[@]}" --device cuda
           done
           python3 $B --out $D --stage report
           (cd $D && tar czf "$OUT/tiling.tar.gz" tiling@*/summary.json tiling@*/cost-*.jsonl tiling@*/run/predictions.csv) ;;
    *) echo "bench/gpu.sh: unknown mode '$mode' (steps, train, all, pair or tiling)" >&2; exit 2 ;;
  esac
} 2>&1 | tee "$OUT/gpu.log"
