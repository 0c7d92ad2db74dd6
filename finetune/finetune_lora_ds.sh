#!/bin/sh
# LoRA fine-tuning with DeepSpeed ZeRO-2, on every GPU of every node.
#
#   MODEL=Qwen/Qwen-VL-Chat DATA=data/train.json OUTPUT=output_qwen_lora sh finetune/finetune_lora_ds.sh [extra options]
#
# Environment (defaults in brackets): MODEL, DATA [data/demo.json] (JSON/JSONL; image paths relative to it),
# OUTPUT,
# GPUS_PER_NODE [all GPUs], NNODES [1], NODE_RANK [0], MASTER_ADDR [localhost], MASTER_PORT [6001].
# Extra options go to qwenvl_train.train and win over the ones below (see `python -m qwenvl_train.train --help`),
# e.g. `--num_train_epochs 1`, or `--use_cpu --ddp_backend gloo --bf16 false` on a machine without GPU.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODEL=${MODEL:-Qwen/Qwen-VL-Chat}
DATA=${DATA:-$ROOT/data/demo.json}
OUTPUT=${OUTPUT:-output_qwen_lora}
GPUS_PER_NODE=${GPUS_PER_NODE:-$(python -c "import torch; print(max(torch.cuda.device_count(), 1))")}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-localhost}
MASTER_PORT=${MASTER_PORT:-6001}

exec torchrun --nproc_per_node "$GPUS_PER_NODE" --nnodes "$NNODES" --node_rank "$NODE_RANK" \
    --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
    -m qwenvl_train.train \
    --model_name_or_path "$MODEL" --data_path "$DATA" --output_dir "$OUTPUT" \
    --tune lora --bf16 true --deepspeed "$ROOT/ds_configs/zero2.json" \
    --num_train_epochs 5 --per_device_train_batch_size 2 --gradient_accumulation_steps 8 \
    --save_strategy steps --save_steps 1000 --save_total_limit 10 --logging_steps 1 \
    --model_max_length 2048 --activation_checkpointing true \
    "$@"
