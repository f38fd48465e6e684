#!/usr/bin/env bash
# Every GPU check in one run, in this order: the tests marked gpu, per-kernel figures, the
# benchmark against the peers installed there, and the tuner. Logs go to $OUT (default gpu-out).
#   bash benchmarks/gpu_check.sh            # from the repository root, on a machine with a GPU
# STAGES picks stages (default "tests kernels bench tune"); BENCH_DATASETS, KERNEL_DATASETS and
# TUNE_DATASETS pick graphs, BENCH_SYSTEMS the peers (names without spaces, such as PyTorch).
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
STAGES=${STAGES:-"tests kernels bench tune"}
export PYTHONUNBUFFERED=1 PIGEON_CACHE_DIR=${PIGEON_CACHE_DIR:-/tmp/pigeon-gpu-cache}
nvidia-smi -L
python3 -c "import torch, cupy; print('torch', torch.__version__, 'cupy', cupy.__version__, torch.cuda.get_device_name())"
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 \
    || { cat "$OUT/install.log"; exit 1; }
stage() { [[ " $STAGES " == *" $1 "* ]]; }
if stage tests; then
    echo "== pytest -m gpu"
    timeout "${TEST_TIMEOUT:-200}" python3 -m pytest -q -m gpu -p no:cacheprovider -x 2>&1 | tail -40 | tee "$OUT/tests.log"
fi
if stage kernels; then
    echo "== per-kernel figures"
    timeout "${KERNEL_TIMEOUT:-150}" python3 -m pigeon.benchmarks.gpu_kernels --datasets ${KERNEL_DATASETS:-aifb biokg} \
        2>&1 | tee "$OUT/kernels.log"
fi
if stage bench; then
    echo "== pigeon bench --device cuda"
    timeout "${BENCH_TIMEOUT:-200}" pigeon bench --device cuda --datasets ${BENCH_DATASETS:-aifb} --scale 1.0 \
        --feats 64 --repeat 10 --timeout 60 ${BENCH_SYSTEMS:+--systems $BENCH_SYSTEMS} \
        --out "$OUT/bench" >"$OUT/bench.log" 2>&1
    tail -50 "$OUT/bench.log"
fi
if stage tune; then
    echo "== pigeon tune --device cuda"
    for d in ${TUNE_DATASETS:-aifb}; do
        for m in rgcn rgat hgt; do
            timeout 60 pigeon tune "$m" --dataset "$d" --device cuda --budget 20 2>&1 | tail -4
        done
    done | tee "$OUT/tune.log"
fi
