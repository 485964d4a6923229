#!/usr/bin/env bash
# Every figure that needs a GPU, in one command that ends within 8 minutes on one H100/H200
# (no network: the models have random weights in the real shapes; calm is read from ./src).
#
#   bash benchmarks/gpu_check.sh             # run it; paste what it prints into docs/benchmarks.md
#   bash benchmarks/gpu_check.sh --dry-run   # print the steps without running them (any machine)
#
# On the lent GPU machine (../shared/gpu/README.md): carry the wheels folder .whl (made once with
# `bash ../shared/gpu/wheels.sh .whl`); this script installs them into /tmp/site first, and copies
# what it prints to $OUT/gpu_check.txt when $OUT is set. The device run is then just
#   bash benchmarks/gpu_check.sh      (carry: [".whl"], timeout_s 540)
#
# 1. Qwen2-Audio-7B shape (bf16, SDPA, batch 64): plain path vs exact fast path vs fast path with
#    every layer compiled, 5 s and 10 s clips, min per-head cosine with the plain path's features
#    (benchmarks/extract_throughput.py). Targets: >= 200 clips/s at 5 s, >= 2.5x plain at 5 s,
#    >= 1.8x at 10 s.
# 2. Whole calm.extract from 44.1 kHz stereo FLAC files (decode, resample, build inputs, forward)
#    on the same model, fast path compiled, 5 s clips, batch 64: loading inline against the default
#    number of loader processes (one per core but one), next to the compiled forward rate of the
#    same batches (benchmarks/loaders.py --parts 3; its loader processes import only what loading
#    needs). Target: >= 0.9x that forward rate (>= 210 clips/s on an H200).
# 3. The Ray multi-GPU extraction (benchmarks/ray_extract.py --gpus: 1 actor vs one per GPU;
#    RAY_BENCH and RAY_ARGS override), where calm.extract_ray and ray import.
# Each step has its own time limit out of the total (BUDGET_S, default 470 s), so a slow step
# cannot push the whole past 8 minutes; a step that fails or times out says so and the rest run.
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-470}  # step 1 gets at most 260 s of it, step 2 150 s, Ray the rest
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
if [ -n "${OUT:-}" ] && [ "$DRY" = 0 ]; then exec > >(tee "$OUT/gpu_check.txt") 2>&1; fi
SITE=""
if [ -d .whl ] && [ "$DRY" = 0 ]; then  # the recipe of ../shared/gpu/README.md: transformers 5.25, soundfile, soxr
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && SITE=/tmp/site: || echo "gpu_check: installing the wheels of .whl failed; going on without them"
fi
export PYTHONPATH="$SITE$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
START=$(date +%s)

left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }

step() {  # step NAME SECONDS COMMAND...: run COMMAND with a limit of min(SECONDS, what is left)
    local name=$1 limit=$2; shift 2
    local remaining; remaining=$(left)
    [ "$limit" -gt "$remaining" ] && limit=$remaining
    echo
    echo "=== $name (limit ${limit} s): $*"
    if [ "$DRY" = 1 ]; then return 0; fi
    if [ "$limit" -le 10 ]; then echo "--- $name: skipped, no time left"; return 0; fi
    local t0; t0=$(date +%s)
    timeout --signal=INT --kill-after=10 "$limit" "$@"
    local rc=$?
    echo "--- $name: exit $rc after $(( $(date +%s) - t0 )) s$([ $rc = 124 ] && echo ' (timed out)')"
}

if [ "$DRY" = 0 ]; then
    "$PYTHON" - <<'EOF' || { echo "gpu_check: the environment cannot run calm (see above)"; exit 1; }
import importlib, torch, transformers
missing = [m for m in ("calm", "numpy", "soundfile", "soxr", "safetensors") if importlib.util.find_spec(m) is None]
print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
      f"GPUs: {[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] or 'none'}")
if missing:
    raise SystemExit(f"missing modules: {missing}")
if not torch.cuda.is_available():
    raise SystemExit("no GPU visible")
EOF
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null || true
fi

step "Qwen2-Audio-7B shape: plain vs fast vs fast+compile, 5 s and 10 s" 260 \
    "$PYTHON" benchmarks/extract_throughput.py --device cuda --seconds 5 10 --batches 3 --warmup 1 --compile

LOADERS=$(( $(nproc) - 1 ))  # calm.clips.default_loaders() on this machine (at most 32)
[ "$LOADERS" -gt 32 ] && LOADERS=32
step "Whole extract from 44.1 kHz FLAC, compiled: inline vs $LOADERS loader processes, 5 s" 150 \
    "$PYTHON" benchmarks/loaders.py --parts 3 --device cuda --clips 640 --batch-size 64 --loaders "$LOADERS" --compile

RAY_BENCH=${RAY_BENCH:-benchmarks/ray_extract.py}
GPUS=$( (nvidia-smi -L 2>/dev/null || true) | grep -c "^GPU" || true)
[ "${GPUS:-0}" -gt 0 ] || GPUS=1
RAY_ARGS=${RAY_ARGS:---gpus --actors 1 $GPUS}  # 1 GPU actor vs one per GPU of this machine
if [ "$DRY" = 1 ] || "$PYTHON" -c "from calm import extract_ray; import ray" 2>/dev/null; then
    if [ -f "$RAY_BENCH" ]; then
        # shellcheck disable=SC2086
        step "Ray multi-GPU extraction" 120 "$PYTHON" "$RAY_BENCH" ${RAY_ARGS:-}
    else
        echo; echo "=== Ray multi-GPU extraction: skipped (no $RAY_BENCH on this branch)"
    fi
else
    echo; echo "=== Ray multi-GPU extraction: skipped (calm.extract_ray or ray not importable)"
fi
echo
echo "gpu_check: done in $(( $(date +%s) - START )) s"
