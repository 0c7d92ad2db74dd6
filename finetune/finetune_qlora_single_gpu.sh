#!/bin/sh
# Q-LoRA on one GPU, no DeepSpeed: NF4 base through bitsandbytes, or a GPTQ checkpoint as is.
#   MODEL=Qwen/Qwen-VL-Chat-Int4 DATA=data/train.json sh finetune/finetune_qlora_single_gpu.sh [extra options]
# The recipe is finetune/qlora.yaml (mode, DeepSpeed/FSDP config, batch sizes); finetune/launch.sh documents
# the environment (MODEL, DATA, OUTPUT, GPUS_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT, DRY_RUN).
export GPUS_PER_NODE="${GPUS_PER_NODE:-1}"
exec sh "$(dirname "$0")/launch.sh" qlora.yaml "$@"
