"""LightGCN on amazon-baby (its shipped split): epoch seconds, evaluation seconds, peak memory, test metrics.

Usage:
    python benchmarks/lightgcn_baby.py [--epochs 5] [--threads 2] [--full]

Without --full it trains a fixed number of epochs (timing only; the printed test metrics are for that budget).
With --full it trains with validation early stopping (patience 20) and reports test R@20/N@20 under
--protocol paper at the best epoch. The "roofline" is the bare [users x d] @ [d x items] matmul + top-50 for the
same shapes, so the evaluation overhead shows as a ratio. Needs the Amazon-Baby folder (the data root or --data).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from modalrec.config import load_config
from modalrec.data import load_dataset
from modalrec.evaluate import evaluate
from modalrec.runtime import tune_allocator
from modalrec.train import Trainer


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def roofline_seconds(
    n_users: int, n_items: int, dim: int, k: int = 50, chunk: int = 4096, reps: int = 3
) -> float:
    """Median time of the bare all-user score matmul + top-k for the given shapes."""
    users, items = torch.randn(n_users, dim), torch.randn(n_items, dim)
    times = []
    for _ in range(reps):
        tic = time.perf_counter()
        for start in range(0, n_users, chunk):
            torch.topk(users[start : start + chunk] @ items.T, k, dim=1)
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_data = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "amazon-baby"
    parser.add_argument("--data", default=str(default_data))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--full", action="store_true", help="train to early stopping and report test metrics")
    parser.add_argument("--model", default="lightgcn")
    parser.add_argument("--out", default=None, help="run folder to write (optional)")
    args = parser.parse_args(argv)
    if not Path(args.data).is_dir():
        print(f"skipped: {args.data} not found", file=sys.stderr)
        return 0
    tune_allocator()  # as the command line does: this script owns its process
    data = load_dataset(args.data)
    epochs = 1000 if args.full else args.epochs
    cfg = load_config(
        None,
        [
            f"train.epochs={epochs}",
            "train.patience=20",
            f"train.threads={args.threads}",
            "train.progress=false",
        ],
        model_name=args.model,
        protocol="paper",
    )
    trainer = Trainer(cfg, data=data, out=Path(args.out) if args.out else None)
    result = trainer.fit()
    epoch_times = [h["seconds"] for h in result.history]
    tic = time.perf_counter()
    evaluate(result.model, data, "test", cfg.eval)
    eval_s = time.perf_counter() - tic
    peak = peak_rss_mib()  # before the roofline, whose random score blocks are not part of the model's run
    users_evaluated = int((data.test.getnnz(axis=1) > 0).sum())
    roof = roofline_seconds(users_evaluated, data.n_items, 64)
    report = {
        "model": args.model,
        "dataset": data.name,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "epochs_run": result.metrics["epochs_run"],
        "best_epoch": result.metrics["best_epoch"],
        "epoch_seconds_median": round(statistics.median(epoch_times), 3),
        "eval_seconds_test": round(eval_s, 3),
        "roofline_seconds": round(roof, 3),
        "eval_over_roofline": round(eval_s / roof, 2),
        "peak_rss_mib": round(peak, 1),
        "test_recall@20": round(result.metrics["test"]["recall@20"], 4),
        "test_ndcg@20_ngcf": round(result.metrics["test"]["ndcg@20"], 4),
        "test_precision@20": round(result.metrics["test"]["precision@20"], 4),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
