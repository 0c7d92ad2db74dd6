#!/usr/bin/env bash
# The GPU check kit (issue #21): one command that, on a lent H200, verifies and times the full-size path.
#
#   bash benchmarks/gpu/check.sh [--dry-run] [--out DIR] [--budget SECONDS] [--steps "parity lora ..."] [--keep-work]
#
# On the device machine (one call; carry the folder wheels.sh fills):
#   run(command="bash benchmarks/gpu/check.sh", carry=["benchmarks/gpu/wheels"], timeout_s=600)
#
# 1. installs the carried wheels (benchmarks/gpu/wheels/*.whl) into a temporary site folder, ahead of the machine's
#    packages (skipped when there are none, and in a dry run), and the carried vocabulary into a temporary cache;
# 2. runs each step of check.py in its own process under its own time limit (`timeout`), so that one failure or
#    hang does not eat the call: setup (versions, device, the random checkpoints), parity, lora, qlora, lora-base,
#    cli, generate, eval (questions/s of `eval --benchmark textvqa_val`), serve (`qwenvl-train serve` under 1 and
#    8 streaming clients). A step that ends early leaves its unused seconds to the next ones; --budget (counted from
#    the start, the install included) caps them all. The tenth step, hires (LoRA at --image_size 448, 672 and 896
#    px), does not fit the first call: it is the second one,
#      run(command='bash benchmarks/gpu/check.sh --steps hires', carry=["benchmarks/gpu/wheels"], timeout_s=600)
#    (setup runs first in every call: the machine keeps nothing between calls). The dry run runs all ten;
# 3. writes check.json, check.md and check.log under $OUT (the device tool's folder), else --out, else
#    runs/gpu-check, and prints check.md.
#
# --dry-run: the same steps on the CPU with the tiny model, in about a minute and a half (the test suite runs it).
# GPUKIT_LOSS=chunked: the optimized training rows without cut-cross-entropy (a rerun after its kernels failed).
# Exit status: 0 when every step's status is ok.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
GPU_DIR="$ROOT/benchmarks/gpu"
WHEELS="${GPUKIT_WHEELS:-$GPU_DIR/wheels}"
PY="${PYTHON:-python3}"
DRY=0
KEEP=0
DEST="${OUT:-}"
BUDGET=""
ONLY=""

usage() { sed -n "2,/^set -uo/p" "${BASH_SOURCE[0]}" | sed "/^set -uo/d; s/^# \{0,1\}//"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --out) DEST="$2"; shift ;;
        --budget) BUDGET="$2"; shift ;;
        --steps) ONLY="$2"; shift ;;
        --keep-work) KEEP=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "check.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
DEST="${DEST:-$ROOT/runs/gpu-check}"
mkdir -p "$DEST"
DEST="$(cd "$DEST" && pwd)"

# Seconds each step may take. Real: one H200, the full 9.66B shape; they add up to 580 s and --budget caps the
# whole run at 575 s from the start, which leaves a 600 s device call (the tool's most) 25 s for the report and
# slack; the serve step loads the model into the server, warms up and runs two 12 s rows. These limits are
# estimates (no GPU has run the kit yet): if a real run runs out, run the last steps in a second call with
# --steps. Dry: CPU, tiny model (generous: a shared two-core machine can be several times slower than a quiet one).
declare -A LIMIT
if [ "$DRY" = 1 ]; then
    LIMIT=([setup]=60 [parity]=60 [lora]=90 [qlora]=60 [lora-base]=60 [cli]=120 [generate]=40 [eval]=60 [serve]=60
           [hires]=90)
    BUDGET="${BUDGET:-630}"
else
    LIMIT=([setup]=65 [parity]=55 [lora]=100 [qlora]=70 [lora-base]=55 [cli]=90 [generate]=35 [eval]=45 [serve]=65
           [hires]=240)
    BUDGET="${BUDGET:-575}"
fi
STEPS=(setup parity lora qlora lora-base cli generate eval serve hires)
# A real run's first call runs the first nine; `--steps hires` the tenth (see the top).
[ "$DRY" = 0 ] && [ -z "$ONLY" ] && ONLY="parity lora qlora lora-base cli generate eval serve"

# The work folder holds the checkpoints (about 40 GB in a real run: the full model and its merged copy): memory
# (/dev/shm) when it has room, else /tmp.
pick_work() {
    if [ "$DRY" = 1 ]; then mktemp -d "${TMPDIR:-/tmp}/gpukit.XXXXXX"; return; fi
    for base in /dev/shm "${TMPDIR:-/tmp}"; do
        free_kb=$(df -Pk "$base" 2>/dev/null | awk 'NR == 2 { print $4 }')
        if [ -n "$free_kb" ] && [ "$free_kb" -gt $((45 * 1024 * 1024)) ]; then
            mktemp -d "$base/gpukit.XXXXXX"; return
        fi
    done
    mktemp -d "${TMPDIR:-/tmp}/gpukit.XXXXXX"
}
WORK="$(pick_work)"
cleanup() { if [ "$KEEP" = 0 ]; then rm -rf "$WORK"; else echo "check.sh: work folder kept: $WORK"; fi; }
trap cleanup EXIT
mkdir -p "$WORK/logs" "$WORK/parts"
: > "$WORK/status.tsv"
now() { date +%s.%N; }
T0=$(now)
LOG="$DEST/check.log"
: > "$LOG"
echo "check.sh: $([ "$DRY" = 1 ] && echo 'dry run, ' )budget ${BUDGET} s, work $WORK, out $DEST" | tee -a "$LOG"

# 1. The carried wheels, into a site folder ahead of the machine's packages.
SITE="$WORK/site"
export GPUKIT_INSTALL="skipped" GPUKIT_INSTALL_SECONDS=0 GPUKIT_INSTALL_NOTE=""
wheels=("$WHEELS"/*.whl)
if [ "$DRY" = 1 ]; then
    GPUKIT_INSTALL_NOTE="dry run: the environment's packages"
elif [ ! -e "${wheels[0]}" ]; then
    GPUKIT_INSTALL_NOTE="no wheels in $WHEELS (run wheels.sh and carry the folder)"
else
    start=$(date +%s.%N)
    if "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$SITE" "${wheels[@]}" >>"$LOG" 2>&1; then
        GPUKIT_INSTALL="ok"
        GPUKIT_INSTALL_NOTE="$(cd "$WHEELS" && ls *.whl | tr '\n' ' ')"
    else
        GPUKIT_INSTALL="failed"
        GPUKIT_INSTALL_NOTE="pip install of the carried wheels failed (see check.log); the machine's packages"
    fi
    GPUKIT_INSTALL_SECONDS=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
fi
PYPATH="$ROOT/src"
[ "$GPUKIT_INSTALL" = ok ] && PYPATH="$PYPATH:$SITE"
export PYTHONPATH="$PYPATH${PYTHONPATH:+:$PYTHONPATH}"
# The product's cache (vocabulary, data scans) in the work folder: the carried vocabulary, else this machine's.
mkdir -p "$WORK/cache"
if [ -f "$WHEELS/qwen.tiktoken" ] && [ "$DRY" = 0 ]; then
    cp "$WHEELS/qwen.tiktoken" "$WORK/cache/" && export QWENVL_TRAIN_CACHE="$WORK/cache"
elif "$PY" -m qwenvl_train vocab --dest "$WORK/cache" >>"$LOG" 2>&1; then
    export QWENVL_TRAIN_CACHE="$WORK/cache"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled
[ "$DRY" = 1 ] && export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" CUDA_VISIBLE_DEVICES=""
echo "check.sh: install $GPUKIT_INSTALL ($GPUKIT_INSTALL_SECONDS s) $GPUKIT_INSTALL_NOTE" | tee -a "$LOG"

# 2. The steps, each under its own limit.
slack=0
failed=0
DRYFLAG=()
[ "$DRY" = 1 ] && DRYFLAG=(--dry-run)
for step in "${STEPS[@]}"; do
    if [ -n "$ONLY" ] && [[ " setup $ONLY " != *" $step "* ]]; then continue; fi
    spent=$(awk -v s="$T0" -v e="$(now)" 'BEGIN { printf "%d", e - s }')
    left=$((BUDGET - spent))
    limit=$((LIMIT[$step] + slack))
    [ "$limit" -gt "$left" ] && limit=$left
    if [ "$limit" -lt 5 ]; then
        printf '%s\t%s\t%s\t%s\n' "$step" 124 0 "$limit" >>"$WORK/status.tsv"
        echo "check.sh: $step: no time left" | tee -a "$LOG"
        failed=1
        continue
    fi
    start=$(now)
    timeout --kill-after=10 "$limit" "$PY" "$GPU_DIR/check.py" "$step" --work "$WORK" "${DRYFLAG[@]}" \
        >"$WORK/logs/$step.log" 2>&1
    code=$?
    seconds=$(awk -v s="$start" -v e="$(now)" 'BEGIN { printf "%.1f", e - s }')
    printf '%s\t%s\t%s\t%s\n' "$step" "$code" "$seconds" "$limit" >>"$WORK/status.tsv"
    { echo "===== $step: exit $code, $seconds s (limit $limit s)"; cat "$WORK/logs/$step.log"; } >>"$LOG"
    echo "check.sh: $step: exit $code, $seconds s (limit $limit s)"
    [ "$code" = 0 ] || failed=1
    slack=$(awk -v l="$limit" -v s="$seconds" 'BEGIN { d = l - s; printf "%d", (d > 0 ? d : 0) }')
done

# 3. The report.
"$PY" "$GPU_DIR/check.py" report --work "$WORK" --out "$DEST" "${DRYFLAG[@]}" 2>>"$LOG" || failed=1
echo "check.sh: $(awk -v s="$T0" -v e="$(now)" 'BEGIN { printf "%.0f", e - s }') s; $DEST/check.json, check.md, check.log"
exit "$failed"
