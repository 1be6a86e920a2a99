"""CLI commands ``modalrec export`` and ``modalrec serve`` (registered through ``cli.EXTENSION_MODULES``)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modalrec.errors import ModalrecError

log = logging.getLogger("modalrec.serving")


def add_commands(sub: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Add ``export`` and ``serve`` to the ``modalrec`` subparsers."""
    p = sub.add_parser("export", help="write a run's user/item embeddings with raw ids (npz or parquet)")
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument("--format", default="npz", choices=["npz", "parquet"])
    p.add_argument(
        "--out", default=None, help="output (default RUN/embeddings.npz, or RUN/embeddings/ for parquet)"
    )
    p.add_argument("--data", default=None, help="dataset folder if it moved since training")

    p = sub.add_parser("serve", help="HTTP recommendation service for a run (needs the 'serve' extra)")
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--ann", default="none", choices=["none", "faiss"], help="exact or faiss HNSW top-K")
    p.add_argument("--data", default=None, help="dataset folder if it moved since training")
    p.add_argument("--threads", type=int, default=1, help="torch threads for scoring")
    return {"export": cmd_export, "serve": cmd_serve}


def cmd_export(args: argparse.Namespace) -> int:
    from modalrec.recommend import Recommender
    from modalrec.serving.export import export_embeddings

    rec = Recommender.from_run(args.run, args.data)
    out = args.out or str(Path(args.run) / ("embeddings.npz" if args.format == "npz" else "embeddings"))
    for path in export_embeddings(rec, out, args.format):
        print(f"wrote {path}")
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from modalrec.serving.app import create_app
    except ImportError as exc:
        raise ModalrecError(
            f"modalrec serve needs the 'serve' extra (pip install fastapi uvicorn): {exc}"
        ) from None
    import torch

    from modalrec.recommend import Recommender

    torch.set_num_threads(max(1, args.threads))
    if not _is_loopback(args.host):
        log.warning("binding %s: the service has no authentication; expose it only behind a proxy", args.host)
    rec = Recommender.from_run(args.run, args.data)
    app = create_app(rec, ann=args.ann)
    log.info("serving %s on http://%s:%d (docs at /docs)", args.run, args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
