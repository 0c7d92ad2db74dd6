#!/bin/sh
# LoRA fine-tuning on one GPU (no DeepSpeed).
#   MODEL=Qwen/Qwen-VL-Chat DATA=data/train.json sh finetune/finetune_lora_single_gpu.sh [extra options]
# The recipe is finetune/lora.yaml (mode, DeepSpeed/FSDP config, batch sizes); finetune/launch.sh documents
# the environment (MODEL, DATA, OUTPUT, GPUS_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT, DRY_RUN).
export GPUS_PER_NODE="${GPUS_PER_NODE:-1}"
exec sh "$(dirname "$0")/launch.sh" lora.yaml "$@"
