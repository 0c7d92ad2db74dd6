#!/bin/sh
# LoRA fine-tuning with DeepSpeed ZeRO-2, on every GPU of every node.
#   MODEL=Qwen/Qwen-VL-Chat DATA=data/train.json sh finetune/finetune_lora_ds.sh [extra options]
# The recipe is finetune/lora_zero2.yaml (mode, DeepSpeed/FSDP config, batch sizes); finetune/launch.sh documents
# the environment (MODEL, DATA, OUTPUT, GPUS_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT, DRY_RUN).
exec sh "$(dirname "$0")/launch.sh" lora_zero2.yaml "$@"
