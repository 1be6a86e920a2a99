"""One measurement in a fresh process: train a model for a fixed number of epochs and report timings and memory.

Usage:
    python -m benchmarks.measure --model lightgcn --data PATH|syn:INTERACTIONS [--epochs 3] [--threads 2]

Prints one JSON object: epoch wall/CPU seconds (median), one validation evaluation's seconds, the bare
matmul + top-k "roofline" for the same shapes, peak RSS, and validation R@20 after the budget.
Running each measurement in its own process makes peak RSS meaningful.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from typing import Any

import torch

from modalrec.config import load_config
from modalrec.data import Dataset, SyntheticConfig, load_dataset, make_synthetic
from modalrec.data.sampling import BPRSampler
from modalrec.evaluate import evaluate
from modalrec.runtime import tune_allocator
from modalrec.train import Trainer


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_of_size(interactions: int, seed: int = 0) -> Dataset:
    """A planted dataset with about ``interactions`` pairs, users = n/10 and items = n/20 (1M -> 100k x 50k)."""
    cfg = SyntheticConfig(
        n_users=max(100, interactions // 10),
        n_items=max(100, interactions // 20),
        n_interactions=interactions,
        candidates=2000,
        seed=seed,
    )
    return make_synthetic(cfg, name=f"syn-{interactions}")


def load(spec: str) -> Dataset:
    """A dataset folder, or ``syn:N`` for a synthetic one with N interactions."""
    if spec.startswith("syn:"):
        return synthetic_of_size(int(float(spec[4:])))
    return load_dataset(spec)


def roofline_seconds(n_users: int, n_items: int, dim: int, k: int, chunk: int) -> float:
    """Median time of the bare chunked [users, d] @ [d, items] + top-k for the same shapes (three repeats, or
    one when a pass takes over 10 s, e.g. the 1M-interaction synthetic set: its median is not worth 80 s)."""
    users, items = torch.randn(n_users, dim), torch.randn(n_items, dim)
    times: list[float] = []
    while len(times) < 3 and not (times and times[0] > 10.0):
        tic = time.perf_counter()
        for start in range(0, n_users, chunk):
            torch.topk(users[start : start + chunk] @ items.T, k, dim=1)
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def measure(
    model: str, spec: str, epochs: int, threads: int, overrides: list[str], max_batches: int = 0
) -> dict[str, Any]:
    """One benchmark row. With ``max_batches`` each epoch stops after that many batches; the epoch time is then
    scaled linearly to the full epoch (per-epoch hooks included in the scaling, so slightly pessimistic) and the
    row records ``batches_run`` / ``batches_per_epoch``."""
    tic = time.perf_counter()
    data = load(spec)
    load_s = time.perf_counter() - tic
    phases = {"data": peak_rss_mib()}  # peak RSS after each phase, to tell where a high peak comes from
    cfg = load_config(
        None,
        [
            f"train.epochs={epochs}",
            f"train.eval_every={max(1, epochs)}",
            "train.patience=1000",
            f"train.threads={threads}",
            "train.progress=false",
            f"train.max_batches={max_batches}",
            *overrides,
        ],
        model_name=model,
        protocol="paper",
    )
    trainer = Trainer(cfg, data=data)
    phases["model"] = peak_rss_mib()
    result = trainer.fit()
    phases["fit"] = peak_rss_mib()
    wall = [h["seconds"] for h in result.history]
    cpu = [h["cpu_seconds"] for h in result.history]
    per_epoch = len(BPRSampler(data.train, cfg.train.batch_size, cfg.seed, cfg.train.sampler))
    ran = [h.get("batches", per_epoch) for h in result.history]
    capped = bool(ran) and max(ran) < per_epoch
    if capped:  # scale the measured partial epochs up to whole ones
        wall = [w * per_epoch / b for w, b in zip(wall, ran, strict=True)]
        cpu = [c * per_epoch / b for c, b in zip(cpu, ran, strict=True)]
    tic = time.perf_counter()
    evaluate(result.model, data, "val", cfg.eval)
    eval_s = time.perf_counter() - tic
    phases["eval"] = peak_rss_mib()
    from modalrec.evaluate import auto_chunk

    n_eval = int((data.val.getnnz(axis=1) > 0).sum())
    roof = roofline_seconds(n_eval, data.n_items, 64, max(cfg.eval.ks), auto_chunk(data.n_items))
    return {
        "model": model,
        "dataset": data.name,
        "users": data.n_users,
        "items": data.n_items,
        "train_interactions": int(data.train.nnz),
        "epochs": len(wall),
        "threads": torch.get_num_threads(),
        "epoch_seconds_median": round(statistics.median(wall), 3) if wall else None,
        "epoch_cpu_seconds_median": round(statistics.median(cpu), 3) if cpu else None,
        "eval_seconds": round(eval_s, 3),
        "roofline_seconds": round(roof, 3),
        "eval_over_roofline": round(eval_s / roof, 2) if roof > 0 else None,
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "peak_rss_mib_after": {k: round(v, 1) for k, v in phases.items()},
        "val_recall@20": round(float(result.metrics["valid"]["recall@20"]), 4),
        "data_seconds": round(load_s, 2),
        "batches_per_epoch": per_epoch,
        **({"batches_run": max(ran)} if capped else {}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="dataset folder or syn:N")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--max-batches", type=int, default=0, help="cap each epoch (0 = whole epochs)")
    args = parser.parse_args(argv)
    tune_allocator()  # as the command line does: this script owns its process
    print(
        json.dumps(
            measure(args.model, args.data, args.epochs, args.threads, args.overrides, args.max_batches)
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
