"""Benchmark evaluation as the original Qwen-VL ``eval_mm/`` scripts do it: prompts, decoding and metrics."""
