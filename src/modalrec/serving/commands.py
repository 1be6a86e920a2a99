"""CLI commands ``modalrec export`` and ``modalrec serve`` (registered through ``cli.EXTENSION_MODULES``)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modalrec.config_ranges import arg_int
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
    p.add_argument("--port", type=arg_int(0, 65535), default=8000, help="TCP port (0 = any free port)")
    p.add_argument("--ann", default="none", choices=["none", "faiss"], help="exact or faiss HNSW top-K")
    p.add_argument("--data", default=None, help="dataset folder if it moved since training")
    p.add_argument("--threads", type=arg_int(1, 4096), default=1, help="torch threads for scoring")
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

    torch.set_num_threads(args.threads)
    if not _is_loopback(args.host):
        log.warning("binding %s: the service has no authentication; expose it only behind a proxy", args.host)
    sock = bind_socket(args.host, args.port)  # a busy port fails here, in one line, before the model loads
    try:
        rec = Recommender.from_run(args.run, args.data)
        app = create_app(rec, ann=args.ann)
        port = sock.getsockname()[1]
        log.info("serving %s on http://%s:%d (docs at /docs)", args.run, args.host, port)
        server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=port, log_level="warning"))
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); an address in use or not available is a one-line error."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise ModalrecError(f"--host {host!r}: cannot resolve it ({exc})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ModalrecError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock
