"""MMSSL speed and memory on Tiktok: seconds per epoch (median), evaluation seconds, peak RSS.

Usage (from the repository root; needs the Tiktok folder):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mmssl_tiktok.py --epochs 3 --threads 1
    .venv/bin/python benchmarks/mmssl_tiktok.py --set d_columns=0 --epochs 1   # the full |I|-wide D

Epochs follow the MMSSL code: batches of 1,024 random users with one positive and one negative each
(``nnz // 1024 + 1`` = 59 batches on Tiktok). Both wall-clock and process CPU seconds are reported: on a
shared machine the wall clock includes time the process spent waiting for a core, the CPU time does not.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

from modalrec.data import load_dataset
from modalrec.data.sampling import BPRSampler
from modalrec.evaluate import EvalConfig, evaluate
from modalrec.models.base import TrainSettings
from modalrec.models.mmssl import MMSSL


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "tiktok")
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="model config override, e.g. d_columns=0")
    args = parser.parse_args(argv)
    if not Path(args.data).is_dir():
        print(f"no dataset at {args.data}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    data = load_dataset(args.data)
    tic = time.perf_counter()
    model = MMSSL(data, MMSSL.Config(**overrides))
    build_s = time.perf_counter() - tic
    opts = model.configure_optimizers(TrainSettings())
    sampler = BPRSampler(data.train, args.batch_size, args.seed, mode="users")
    wall, cpu = [], []
    for epoch in range(args.epochs):
        torch.manual_seed(args.seed * 1000 + epoch)
        w0, c0 = time.perf_counter(), time.process_time()
        model.train()
        model.on_epoch_start(epoch)  # rebuilds the Eq. 8 graphs from epoch 1 on, as in training
        for batch in sampler.epoch(epoch):
            model.train_step(batch, opts)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    w0, c0 = time.perf_counter(), time.process_time()
    val = evaluate(model, data, "val", EvalConfig(protocol="paper"))
    eval_wall, eval_cpu = time.perf_counter() - w0, time.process_time() - c0
    d_params = (
        sum(p.numel() for p in model.discriminator.parameters()) if model.discriminator is not None else 0
    )
    report = {
        "dataset": data.name,
        "users": data.n_users,
        "items": data.n_items,
        "batches_per_epoch": len(sampler),
        "batch_size": args.batch_size,
        "threads": args.threads,
        "overrides": overrides,
        "discriminator_inputs": model.n_cols,
        "discriminator_params": d_params,
        "build_seconds": round(build_s, 2),
        "epoch_wall_seconds": [round(x, 2) for x in wall],
        "epoch_cpu_seconds": [round(x, 2) for x in cpu],
        "epoch_wall_seconds_median": round(statistics.median(wall), 2),
        "epoch_cpu_seconds_median": round(statistics.median(cpu), 2),
        "eval_val_wall_seconds": round(eval_wall, 2),
        "eval_val_cpu_seconds": round(eval_cpu, 2),
        "val_recall@20_after_epochs": round(float(val["recall@20"]), 4),  # type: ignore[arg-type]
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
