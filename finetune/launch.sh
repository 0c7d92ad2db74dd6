#!/bin/sh
# The body every finetune/*.sh launcher runs: `sh finetune/launch.sh RECIPE.yaml [extra options]`.
#
# Runs `torchrun ... -m qwenvl_train train --config finetune/RECIPE.yaml` on this node; the recipe holds the mode,
# DeepSpeed/FSDP config, batch sizes and schedule, so a recipe is changed in one place (its YAML file).
# Environment (defaults in brackets):
#   MODEL          checkpoint folder or hub id [the recipe's model_name_or_path]
#   DATA           training data, JSON/JSONL, image paths relative to it [data/demo.json]
#   OUTPUT         output folder [the recipe's output_dir]
#   GPUS_PER_NODE  processes on this node [every GPU; the launcher may set 1]
#   NNODES [1], NODE_RANK [0], MASTER_ADDR [localhost], MASTER_PORT [6001]   torchrun's rendezvous
#   DRY_RUN=1      print the torchrun command (shell-quoted, one line) instead of running it
# Extra options go to `qwenvl-train train` and win over the recipe (`qwenvl-train train --help` lists them), e.g.
# `--num_train_epochs 1`, or `--use_cpu --ddp_backend gloo --bf16 false` on a machine without GPU.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RECIPE=$ROOT/finetune/$1
shift
[ -f "$RECIPE" ] || { echo "launch.sh: no recipe $RECIPE" >&2; exit 1; }
DATA=${DATA:-$ROOT/data/demo.json}
GPUS_PER_NODE=${GPUS_PER_NODE:-$(python -c "import torch; print(max(torch.cuda.device_count(), 1))")}

# Built from the end: optional overrides of the recipe first, then the extra options (later options win).
if [ -n "${OUTPUT:-}" ]; then set -- --output_dir "$OUTPUT" "$@"; fi
set -- --data_path "$DATA" "$@"
if [ -n "${MODEL:-}" ]; then set -- --model_name_or_path "$MODEL" "$@"; fi
# Once on this node, before torchrun: a GPU-only option on a machine without CUDA (the recipes ask for bf16) or a
# bad recipe is one line and exit status 1 here, instead of a line followed by torchrun's failure report.
if [ "${DRY_RUN:-0}" != 1 ]; then
    python -m qwenvl_train train --config "$RECIPE" "$@" --check_devices_only
fi
set -- torchrun --nproc_per_node "$GPUS_PER_NODE" --nnodes "${NNODES:-1}" --node_rank "${NODE_RANK:-0}" \
    --master_addr "${MASTER_ADDR:-localhost}" --master_port "${MASTER_PORT:-6001}" \
    -m qwenvl_train train --config "$RECIPE" "$@"

if [ "${DRY_RUN:-0}" = 1 ]; then
    for arg in "$@"; do
        printf "'%s' " "$(printf '%s' "$arg" | sed "s/'/'\\\\''/g")"
    done
    echo
    exit 0
fi
exec "$@"
