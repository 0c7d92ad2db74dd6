"""Build training's datasets under torchrun and print a digest of the items each rank got.

Used by tests/test_data_engine_cache.py as ``torchrun ... tests/train_scan_worker.py [train options]``: each rank runs
``build_datasets`` (the scan, or the cache) exactly as ``train()`` does, then prints
``ITEMS {"rank": r, "samples": n, "digest": sha256 of every item's id, ids, labels and images}``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import torch.distributed as dist

import qwenvl_train.training.run as run
from qwenvl_train.training.arguments import parse_args
from qwenvl_train.training.distributed import setup_distributed
from qwenvl_train.training.prepare import load_tokenizer


def main() -> None:
    args = parse_args(sys.argv[1:])
    setup_distributed(args.training)
    train_set, _ = run.build_datasets(args, load_tokenizer(args))
    digest = hashlib.sha256()
    for item in train_set.items:
        digest.update(
            json.dumps([item.id, item.input_ids.tolist(), item.labels.tolist(), item.images]).encode()
        )
    facts = {"rank": int(os.environ["RANK"]), "samples": len(train_set), "digest": digest.hexdigest()}
    sys.stdout.flush()
    # One write of the whole line: both ranks share the pipe, and a print's text and its newline can reach it as
    # two writes, letting the other rank's line in between (seen in CI).
    os.write(sys.stdout.fileno(), ("ITEMS " + json.dumps(facts) + "\n").encode())
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
