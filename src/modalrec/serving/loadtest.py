"""A bounded loopback load test of ``modalrec serve``: N requests at a fixed concurrency, then it stops.

``python -m modalrec.serving.loadtest --url http://127.0.0.1:8000 --run RUN --requests 5000 --concurrency 32``

Sends ``GET /recommend?user=<random known user>&k=K`` (or ``/similar`` with ``--endpoint similar``) and prints
the request count, errors (non-200 or transport errors), throughput and p50/p90/p99/max latency. Only loopback
URLs are accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _ids(run: Path, side: str) -> list[str]:
    from modalrec.checkpoint import load_checkpoint

    return [str(x) for x in load_checkpoint(run / "checkpoint.pt")[f"{side}_ids"]]


async def _run(url: str, paths: list[str], concurrency: int, timeout: float) -> tuple[list[float], int]:
    import httpx

    latencies: list[float] = []
    errors = 0
    queue = iter(paths)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors
            for path in queue:
                tic = time.perf_counter()
                try:
                    r = await client.get(path)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - tic)
                errors += 0 if ok else 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    s = sorted(values)
    return s[min(len(s), max(1, math.ceil(q / 100 * len(s)))) - 1]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m modalrec.serving.loadtest", description=__doc__)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--run", required=True, help="the served run folder (to draw known user/item ids)")
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--endpoint", default="recommend", choices=["recommend", "similar"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=30.0)
    args = p.parse_args(argv)
    host = urlparse(args.url).hostname
    if host not in LOOPBACK:
        print(f"error: the load test only targets loopback addresses, not {host!r}", file=sys.stderr)
        return 2
    if not 1 <= args.requests <= 100_000 or not 1 <= args.concurrency <= 256:
        print("error: --requests must be 1..100000 and --concurrency 1..256", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    key = "user" if args.endpoint == "recommend" else "item"
    ids = _ids(Path(args.run), key)
    paths = [f"/{args.endpoint}?{key}={rng.choice(ids)}&k={args.k}" for _ in range(args.requests)]
    tic = time.perf_counter()
    lat, errors = asyncio.run(_run(args.url, paths, args.concurrency, args.timeout))
    wall = time.perf_counter() - tic
    ms = [x * 1000 for x in lat]
    report = {
        "endpoint": f"GET /{args.endpoint} k={args.k}",
        "requests": len(lat),
        "concurrency": args.concurrency,
        "errors": errors,
        "seconds": round(wall, 2),
        "requests_per_second": round(len(lat) / wall, 1),
        "latency_ms": {
            "p50": round(percentile(ms, 50), 2),
            "p90": round(percentile(ms, 90), 2),
            "p99": round(percentile(ms, 99), 2),
            "max": round(max(ms), 2),
            "mean": round(statistics.fmean(ms), 2),
        },
    }
    print(json.dumps(report, indent=2))
    return 0 if errors == 0 else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
