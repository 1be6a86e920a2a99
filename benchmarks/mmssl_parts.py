"""What an MMSSL ranking rests on: validation Recall@20 of each additive part of the final embedding.

MMSSL's final embedding is h = mean_l A^l E + mean_l A^l (η·Ẽ/‖Ẽ‖) + ω·Σ_m f^m/‖f^m‖ (Eqs. 10 and 12; the
first two terms are Eq. 10 split by linearity). This script loads a trained run and scores the validation users
with each part alone, with pairs of parts and with the whole, and prints their mean row norms:

    python -m benchmarks.mmssl_parts --run RUN_FOLDER [--data DATASET_FOLDER] [--split val]

A part that scores near popularity on its own while another scores as high as the whole tells which component
the trained model relies on.
"""

from __future__ import annotations

import argparse
from itertools import combinations

import torch

import modalrec
from modalrec.evaluate import evaluate
from modalrec.models.base import Embeddings
from modalrec.models.mmssl import MMSSL


def part_scores(run: str, data: str | None, split: str) -> list[tuple[str, float, float, float]]:
    """(parts, Recall@20 on ``split``, mean user row norm, mean item row norm) for every non-empty sum of parts."""
    est = modalrec.load(run, data)
    model, dataset = est.model_, est.data_
    if not isinstance(model, MMSSL) or dataset is None:
        raise SystemExit(f"error: {run}: not an MMSSL run (model {type(model).__name__})")
    model.eval()
    parts = model.embedding_parts()
    rows = []
    for n in range(1, len(parts) + 1):
        for names in combinations(parts, n):
            users = sum(parts[k][0] for k in names)
            items = sum(parts[k][1] for k in names)
            metrics = evaluate(model, dataset, split, est.config_.eval, Embeddings(users, items, {}))
            rows.append(
                (
                    " + ".join(names),
                    float(metrics["recall@20"]),  # type: ignore[arg-type]
                    float(users.norm(dim=1).mean()),  # type: ignore[union-attr]
                    float(items.norm(dim=1).mean()),  # type: ignore[union-attr]
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a finished MMSSL run folder")
    parser.add_argument("--data", default=None, help="the dataset folder (default: the one the run recorded)")
    parser.add_argument("--split", default="val", choices=["val", "test"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"| parts of h | {args.split} R@20 | mean ‖h_u‖ | mean ‖h_i‖ |")
    print("|---|---:|---:|---:|")
    for names, recall, nu, ni in part_scores(args.run, args.data, args.split):
        print(f"| {names} | {recall:.4f} | {nu:.3f} | {ni:.3f} |")


if __name__ == "__main__":
    main()
