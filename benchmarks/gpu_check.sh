#!/usr/bin/env bash
# One prepared check for a machine with a GPU, under 8 minutes in all:
#   1. build the native extension glad._C (C++ and CUDA kernels),
#   2. run the CUDA and Triton tests (Triton compiled for the GPU, not interpreted),
#   3. glad bench ops   --device cuda,
#   4. glad bench train --device cuda (glad-tiny, then ViT-B-16 at batch 32, 50 classes),
#   5. glad bench eval  --device cuda (ViT-B-16, 1000 classes),
# writing every JSON result, the logs and summary.json (status and seconds of each part)
# to OUTDIR. Each part has its own time limit and the whole run a deadline, so a hung
# part cannot eat the others' time.
#
#   bash benchmarks/gpu_check.sh OUTDIR [--cpu-only]
#
# --cpu-only skips what needs a GPU (the CUDA build, CUDA tests) and runs the rest
# small on the CPU, to check the script itself. Python: $PYTHON, else .venv/bin/python,
# else python3. Exit status: 0 when every part that ran passed.
#
# A GPU machine whose Python has torch but not open_clip: put the missing wheels in .whl/
# first (bash benchmarks/gpu_wheels.sh, on a machine with a package index); they are
# installed into a private folder on PYTHONPATH, nothing else is touched.
set -u -o pipefail

usage() { echo "usage: bash benchmarks/gpu_check.sh OUTDIR [--cpu-only]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
OUT=$1
CPU_ONLY=0
if [[ $# -eq 2 ]]; then
    [[ $2 == --cpu-only ]] || usage
    CPU_ONLY=1
fi
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [[ -n ${PYTHON:-} ]]; then PY=$PYTHON
elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python
else PY=python3
fi
export HF_HUB_OFFLINE=1  # nothing is downloaded: every model is randomly initialised
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    SITE=$(mktemp -d)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl \
        || { echo "gpu_check: installing the wheels in .whl/ failed" >&2; exit 1; }
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi

TOTAL_BUDGET=${GLAD_CHECK_BUDGET:-470}  # seconds, for everything below
START=$(date +%s)
SUMMARY=()
FAILED=0

# run NAME LIMIT CMD...: at most LIMIT seconds (less if the deadline is nearer); log to OUT/NAME.log
run() {
    local name=$1 limit=$2
    shift 2
    local left=$(( TOTAL_BUDGET - ($(date +%s) - START) ))
    (( limit > left )) && limit=$left
    if (( limit < 5 )); then
        echo "== $name: skipped, the ${TOTAL_BUDGET} s budget is spent" >&2
        SUMMARY+=("\"$name\": {\"status\": \"no time left\", \"seconds\": 0}")
        FAILED=1
        return
    fi
    echo "== $name (limit ${limit} s): $*" >&2
    local t0 rc status
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    case $rc in
        0) status=ok ;;
        5) status="no tests selected" ;;  # pytest: nothing matched the markers
        124|137) status=timeout; FAILED=1 ;;
        *) status="failed (exit $rc)"; FAILED=1 ;;
    esac
    local secs=$(( $(date +%s) - t0 ))
    echo "   $status after ${secs} s (log: $OUT/$name.log)" >&2
    [[ $status == ok ]] || tail -n 5 "$OUT/$name.log" >&2
    SUMMARY+=("\"$name\": {\"status\": \"$status\", \"seconds\": $secs, \"exit\": $rc}")
}

skip() {
    echo "== $1: skipped ($2)" >&2
    SUMMARY+=("\"$1\": {\"status\": \"skipped\", \"reason\": \"$2\"}")
}

GLAD=("$PY" -m glad)

if (( CPU_ONLY )); then
    skip build "--cpu-only: the CUDA build needs nvcc and a GPU; the installed extension is used"
    run info 60 "${GLAD[@]}" info --json
    # Triton runs here only through its interpreter; CUDA tests skip themselves.
    run tests 120 env TRITON_INTERPRET=1 "$PY" -m pytest -q -p no:cacheprovider \
        tests/test_ops_cuda.py tests/test_ops_triton.py --junitxml="$OUT/pytest.xml"
    run bench_ops 60 "${GLAD[@]}" bench ops --device cpu --sizes adapter --repeat 3 --json \
        --output "$OUT/ops_cpu.json"
    run bench_train_glad-tiny 90 "${GLAD[@]}" bench train --device cpu --threads 1 --model glad-tiny \
        --batch-size 8 --num-classes 10 --rounds 3 --warmup 1 --split-rounds 1 --json --quiet \
        --output "$OUT/train_cpu_glad-tiny.json"
    run bench_eval_glad-tiny 60 "${GLAD[@]}" bench eval --device cpu --threads 1 --model glad-tiny \
        --batch-size 16 --num-classes 1000 --rounds 3 --warmup 1 --text-classes 4 --json --quiet \
        --output "$OUT/eval_cpu_glad-tiny.json"
else
    # --no-build-isolation: compile against the torch already installed (no download);
    # GLAD_BUILD_EXT=1 makes a failed build fail this part instead of falling back.
    # (setup.py build_ext --inplace when pip cannot install, e.g. without network for wheel)
    # Only this GPU's architecture: a third of the compile time of the default list.
    ARCH=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>/dev/null || echo 9.0)
    run build 200 env GLAD_BUILD_EXT=1 GLAD_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" PY="$PY" bash -c \
        '"$PY" -m pip install --no-build-isolation --no-deps -e . || "$PY" setup.py build_ext --inplace'
    run built 30 "$PY" -c "import glad._C, glad.ops as o; i = o.backend_info()['cuda']; print(i); assert i['available'], i"
    run info 30 "${GLAD[@]}" info --json
    # The GPU test files by name: collecting the whole suite would import modules that need
    # what a bare GPU image may lack.
    run tests 100 env TRITON_INTERPRET=0 "$PY" -m pytest -q -p no:cacheprovider \
        tests/test_ops_cuda.py tests/test_ops_triton.py --junitxml="$OUT/pytest.xml"
    for DT in float32 float16 bfloat16; do  # sizes beyond the L2 cache; 20 calls per timing
        run "bench_ops_$DT" 50 "${GLAD[@]}" bench ops --device cuda --dtype "$DT" --sizes adapter,64M,256M \
            --json --output "$OUT/ops_cuda_$DT.json"
    done
    run bench_train_glad-tiny 30 "${GLAD[@]}" bench train --device cuda --model glad-tiny --batch-size 32 \
        --num-classes 10 --rounds 20 --warmup 3 --json --quiet --output "$OUT/train_cuda_glad-tiny.json"
    run bench_train_vit-b-16 60 "${GLAD[@]}" bench train --device cuda --model ViT-B-16 --batch-size 32 \
        --num-classes 50 --rounds 10 --warmup 2 --json --quiet --output "$OUT/train_cuda_vit-b-16.json"
    run bench_eval_vit-b-16 50 "${GLAD[@]}" bench eval --device cuda --model ViT-B-16 --batch-size 128 \
        --num-classes 1000 --rounds 10 --warmup 2 --json --quiet --output "$OUT/eval_cuda_vit-b-16.json"
fi

{
    printf '{\n  "cpu_only": %s,\n  "budget_s": %s,\n  "total_s": %s,\n  "parts": {\n' \
        "$([[ $CPU_ONLY == 1 ]] && echo true || echo false)" "$TOTAL_BUDGET" "$(( $(date +%s) - START ))"
    for i in "${!SUMMARY[@]}"; do
        sep=","; (( i == ${#SUMMARY[@]} - 1 )) && sep=""
        printf '    %s%s\n' "${SUMMARY[$i]}" "$sep"
    done
    printf '  }\n}\n'
} >"$OUT/summary.json"
echo "== done in $(( $(date +%s) - START )) s; results in $OUT (summary.json)" >&2
exit $FAILED
