"""One training epoch of a shipped configuration, timed: wall and CPU seconds, batches, optional cProfile.

    python -m benchmarks.epoch_time --config configs/tiktok/diffmm.yaml --data DATA/tiktok [--max-batches N]
                                    [--threads 1] [--profile]

Prints the epoch's row of the training history (``seconds``, ``cpu_seconds``, ``batches``) and the number of
batches in a whole epoch; with ``--profile`` the 25 functions with the most own time first.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys

import torch

from modalrec.config import load_config
from modalrec.data import load_dataset
from modalrec.data.sampling import BPRSampler
from modalrec.train import Trainer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--protocol", default="paper")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-batches", type=int, default=0, help="stop the epoch after N batches (0 = all)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_dataset(args.data)
    cfg = load_config(
        args.config,
        [
            f"train.max_batches={args.max_batches}",
            "train.epochs=1",
            f"train.threads={args.threads}",
            "train.progress=false",
            "train.eval_every=1000",
            *args.overrides,
        ],
        protocol=args.protocol,
    )
    trainer = Trainer(cfg, data=data)
    prof = cProfile.Profile() if args.profile else None
    if prof:
        prof.enable()
    result = trainer.fit()
    if prof:
        prof.disable()
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    row = {k: v for k, v in result.history[0].items() if k in ("seconds", "cpu_seconds", "batches")}
    row["batches_per_epoch"] = len(BPRSampler(data.train, cfg.train.batch_size, cfg.seed, cfg.train.sampler))
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
