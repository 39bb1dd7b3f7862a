#!/usr/bin/env bash
# Every GPU measurement of issue 14 in ONE run of under 9 minutes on one H200/H100, from the repo root:
#
#   bash benchmarks/gpu_all.sh            # GPU: installs .whl (carry: [".whl"]), real sizes
#   bash benchmarks/gpu_all.sh --smoke    # CPU: tiny models, same parts, 4-9 minutes on 2 busy cores
#
# Parts, cheapest and surest first, each under its own `timeout` and a shared deadline
# (A4G_BUDGET_S, default 540 s from the start), so one slow part cannot eat the rest:
#   clips             synthetic 320x240 clips, 24 x 128 frames (OpenCV mp4v there: PyAV is not carried)
#   extract_eager     encoders-only vs end-to-end frames/s + per-stage profile (benchmarks/extract.py)
#   train             VDiT-XL 5 x 16: plain, cached, online s/step and their ratios (benchmarks/train.py)
#   sample_eager      VDiT-XL 16 x 256 px, DDPM 250 + CFG: s/video at the largest batch (benchmarks/sample.py)
#   extract_compiled  the same as extract_eager with --compile
#   compare           eager vs compiled store: cosine of targets, max |d| of latents
#   int8_*            --target-dtype int8 extraction, its agreement and the loader on it (skipped if absent)
#   sample_compiled   the sampler compiled, at the batch eager found (last: the least needed figure)
# Every part writes JSON under $A4G_WORK/json; after each part they are merged into $OUT/results.json
# and the full log is $OUT/log.txt (2 files: the device tool returns at most 8). A summary table ends
# the output. See docs/benchmarks-gpu.md.

set -u -o pipefail
cd "$(dirname "$0")/.." || exit 2

SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1
OUT=${OUT:-/tmp/a4g_gpu_out}  # the device tool sets OUT; outside the repo so nothing extra travels
WORK=${A4G_WORK:-$(mktemp -d /tmp/a4g_gpu.XXXXXX)}
# The CPU smoke compiles with Inductor on 2 shared cores: the cold compile of the three tiny models
# (VAE 95 s, SAM 74 s, DINOv2 19 s at load 9) left extract_compiled 1 s under its 240 s, so smoke
# parts get twice the GPU limits and budget. The GPU's limits stay as planned.
SCALE=$((1 + SMOKE))
BUDGET=${A4G_BUDGET_S:-$((540 * SCALE))}
START=$(date +%s)
DEADLINE=$((START + BUDGET))
mkdir -p "$WORK/json" "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1

echo "=== gpu_all $([ $SMOKE = 1 ] && echo --smoke) $(date -u +%FT%TZ), budget ${BUDGET}s, work $WORK"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
fi
echo "cpus: $(nproc)"

if [ $SMOKE = 1 ] && [ -x .venv/bin/python ]; then
    PY=${A4G_PY:-.venv/bin/python}
else
    PY=${A4G_PY:-python3}
fi
export A4G_PY=$PY HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
# A compile cache of this run only: a compile killed by a part's timeout can leave a truncated .so
# in the shared cache (seen here: "file too short"), which breaks every later compile of that graph.
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$WORK/inductor}
# On a small shared CPU, torch's spinning OpenMP threads make step times swing 10x; one is steady.
[ $SMOKE = 1 ] && export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ "${A4G_SETUP:-$((1 - SMOKE))}" = 1 ]; then
    echo "=== part setup $(date -u +%T)"
    t0=$(date +%s)
    # shellcheck source=benchmarks/gpu_setup.sh
    . benchmarks/gpu_setup.sh || echo "setup FAILED: the parts below will fail on missing imports"
    echo "--- setup: $(($(date +%s) - t0))s"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

report() { "$PY" benchmarks/gpu_report.py "$WORK" "$OUT" "$@"; }

# part NAME LIMIT_S CMD...: run CMD under min(LIMIT_S, time left before the deadline).
part() {
    local name=$1 limit=$(($2 * SCALE))
    shift 2
    local left=$((DEADLINE - $(date +%s) - 5))
    [ "$limit" -gt "$left" ] && limit=$left
    echo
    echo "=== part $name (limit ${limit}s) $(date -u +%T)"
    if [ "$limit" -lt "$MIN_PART_S" ]; then
        echo "--- $name: SKIPPED, only ${left}s left"
        echo "$name 125 0" >>"$WORK/parts.txt"
        return
    fi
    local t0 rc
    t0=$(date +%s)
    timeout -k 10 "$limit" "$@"
    rc=$?
    [ $rc = 124 ] && echo "--- $name: TIMED OUT after ${limit}s (partial JSON kept)"
    echo "--- $name: rc=$rc in $(($(date +%s) - t0))s"
    echo "$name $rc $(($(date +%s) - t0))" >>"$WORK/parts.txt"
    report >/dev/null || echo "(merge of results failed)"
}

J=$WORK/json
if [ $SMOKE = 1 ]; then
    X=(--smoke)
    CLIPS=()
    TRAIN=(--smoke)
    MIN_PART_S=10
else
    X=()
    CLIPS=(--videos 24 --frames 128)
    TRAIN=(--steps 10 --warmup 3)
    MIN_PART_S=25
fi

part env 60 "$PY" benchmarks/gpu_report.py "$WORK" "$OUT" --env
part clips 60 "$PY" benchmarks/extract.py "${X[@]}" --make-clips "$WORK/clips" "${CLIPS[@]}"
part extract_eager 150 "$PY" benchmarks/extract.py "${X[@]}" --data "$WORK/clips" --profile \
    --keep-store "$WORK/store_eager" --json "$J/extract_eager.json"
part train 120 "$PY" benchmarks/train.py "${TRAIN[@]}" --store "$WORK/store_eager" --json "$J/train.json"
part sample_eager 100 "$PY" benchmarks/sample.py "${X[@]}" --json "$J/sample_eager.json"
part extract_compiled 240 "$PY" benchmarks/extract.py "${X[@]}" --data "$WORK/clips" --compile --profile \
    --keep-store "$WORK/store_compiled" --json "$J/extract_compiled.json"
part compare 60 "$PY" benchmarks/extract.py --compare "$WORK/store_eager" "$WORK/store_compiled" \
    --json "$J/compare_eager_compiled.json"
part int8_extract 90 "$PY" benchmarks/extract.py "${X[@]}" --data "$WORK/clips" --target-dtype int8 \
    --skip-encoders-only --keep-store "$WORK/store_int8" --json "$J/extract_int8.json"
if [ -d "$WORK/store_int8" ]; then
    part int8_compare 40 "$PY" benchmarks/extract.py --compare "$WORK/store_eager" "$WORK/store_int8" \
        --json "$J/compare_eager_int8.json"
    part int8_loader 40 "$PY" benchmarks/train.py "${TRAIN[@]}" --modes "" --store "$WORK/store_int8" \
        --json "$J/train_loader_int8.json"
fi

BATCH=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['result']['batch'])" \
    "$J/sample_eager.json" 2>/dev/null)
part sample_compiled 150 "$PY" benchmarks/sample.py "${X[@]}" --compile ${BATCH:+--batch "$BATCH"} \
    --json "$J/sample_compiled.json"
echo
echo "=== done $(date -u +%T) in $(($(date +%s) - START))s; results: $OUT/results.json, log: $OUT/log.txt"
report --summary
