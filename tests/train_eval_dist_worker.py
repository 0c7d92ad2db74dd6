"""Run ``qwenvl_train.train`` under torchrun with ``--eval_data``, the model's answers scripted.

Used by tests/test_train_generation_eval.py as ``torchrun ... tests/train_eval_dist_worker.py [train options]``.
Every ``generate`` call really runs (under ZeRO-3 each forward gathers weights from all ranks, so a rank that
skipped a call would hang the others); its output is then replaced by ``ANSWERS[question]`` so that the logged
metrics are known exactly: a sample lost or counted twice when the ranks' results are gathered changes them.
"""

from __future__ import annotations

import sys

import torch
from transformers import AutoTokenizer

import qwenvl_train.training.run as run
from inference_fixtures import last_question, scripted_generate
from qwenvl_train.model.modeling import QwenVLForCausalLM

#: By question: the "model"'s answer.
ANSWERS = {
    "Where is the red square?": "<ref>the red square</ref><box>(100,200),(400,500)</box>",
    "Say hello.": "Goodbye!",
    "Say yes.": "Yes.",
    "Say no.": "No.",
}


def main() -> int:
    argv = sys.argv[1:]
    tokenizer = AutoTokenizer.from_pretrained(argv[argv.index("--model_name_or_path") + 1])
    scripted = scripted_generate(tokenizer, lambda prompt: ANSWERS[last_question(prompt).split("\n")[-1]])
    real_generate = QwenVLForCausalLM.generate

    def generate(self, **kwargs):  # noqa: ANN001, ANN003, ANN202
        real_generate(self, **kwargs)
        return scripted(**{k: v for k, v in kwargs.items() if k in ("input_ids", "attention_mask")})

    QwenVLForCausalLM.generate = generate
    torch.manual_seed(0)
    return run.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
