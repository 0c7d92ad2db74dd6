#!/usr/bin/env bash
# Download, on a machine that reaches the package registry, what the GPU machine lacks for the check kit, into
# benchmarks/gpu/wheels/ (ignored by git; name it in the device call's `carry`):
#
#   bash benchmarks/gpu/wheels.sh            # then: check.sh installs them into a temporary site folder there
#
# The GPU machine (Python 3.12, torch 2.11 + CUDA 13, no registry) has transformers 5.17, an older peft and no
# bitsandbytes; the project is pinned to and tested with the versions of requirements.lock, so those travel:
#   transformers   (activation_checkpointing_* and the rest of the API the product uses arrived after 5.17)
#   peft           (LoRA / Q-LoRA adapters)
#   bitsandbytes   (Q-LoRA NF4; its one wheel holds the CUDA 13.0 library)
#   regex          (transformers 5.24 checks regex >= 2025.10.22 at import; the machine's may be older)
#   cut-cross-entropy (the CCE loss backend --loss_backend auto picks on CUDA; pure Python + Triton)
# plus the genuine vocabulary qwen.tiktoken (the machine cannot fetch it), copied from this machine's cache.
# DeepSpeed is not carried: it is a source distribution that builds its ops at install time.
#
# Everything sent to the machine (working tree + carried paths) must stay under 64 MiB: the total is printed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="${DEST:-$ROOT/benchmarks/gpu/wheels}"
PY="${PYTHON:-python3}"

pin() {  # the version requirements.lock pins for $1 (exact name match)
    sed -n "s/^$1==\([^ ]*\).*/\1/p" "$ROOT/requirements.lock" | head -1
}

PACKAGES=(
    "transformers==$(pin transformers)"
    "peft==$(pin peft)"
    "bitsandbytes==$(pin bitsandbytes)"
    "regex==${REGEX_VERSION:-2026.11.19}"
    "cut-cross-entropy==${CCE_VERSION:-25.1.1}"
)

mkdir -p "$DEST"
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    --platform any -d "$DEST" "${PACKAGES[@]}"

# One version of each package only: two would stop the install there.
for name in transformers peft bitsandbytes regex cut_cross_entropy; do
    count=$(find "$DEST" -maxdepth 1 -name "${name}-*.whl" | wc -l)
    if [ "$count" -ne 1 ]; then
        echo "wheels.sh: $count wheels of $name in $DEST (want exactly 1): remove the stale ones" >&2
        exit 1
    fi
done

# The genuine vocabulary, through the product's own command (fetched once and sha256-checked, then cached).
PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m qwenvl_train vocab --dest "$DEST" >/dev/null

ls -l "$DEST"
carried=$(du -cb "$DEST"/* | tail -1 | cut -f1)
tree=$(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null \
    | tail -1 | cut -f1)
total=$((carried + tree))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
echo "wheels.sh: carried $(mib "$carried") MiB + working tree $(mib "$tree") MiB = $(mib "$total") MiB" \
    "of the 64 MiB a device call takes"
if [ "$total" -gt $((64 * 1048576)) ]; then
    echo "wheels.sh: over 64 MiB: carry bitsandbytes in a second call (move it aside and skip the qlora step)" >&2
    exit 1
fi
