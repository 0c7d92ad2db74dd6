#!/bin/sh
# Q-LoRA with DeepSpeed ZeRO-2: NF4 base through bitsandbytes, or a GPTQ checkpoint (Int4) as is.
#   MODEL=Qwen/Qwen-VL-Chat-Int4 DATA=data/train.json sh finetune/finetune_qlora_ds.sh [extra options]
# The recipe is finetune/qlora_zero2.yaml (mode, DeepSpeed/FSDP config, batch sizes); finetune/launch.sh documents
# the environment (MODEL, DATA, OUTPUT, GPUS_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT, DRY_RUN).
exec sh "$(dirname "$0")/launch.sh" qlora_zero2.yaml "$@"
