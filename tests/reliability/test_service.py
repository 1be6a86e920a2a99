"""The HTTP service rejects bad requests cleanly, binds loopback by default, and survives a bounded load test.

The server is the real ``python -m modalrec serve --run DIR --port P`` subprocess (default host) over a run
trained here; the load test sends $MODALREC_LOAD_REQUESTS (default 2,000; 10,000 in docs/reliability.md)
GET /recommend requests at concurrency 32 over 127.0.0.1 only and reports p50/p99 latency (``pytest -s``;
$MODALREC_LOAD_REPORT gets JSON).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")
import httpx

from modalrec.cli import main

N_REQUESTS = int(os.environ.get("MODALREC_LOAD_REQUESTS", "2000"))
CONCURRENCY = 32
# Known gap (serving owner): bodies that are not UTF-8 or nest too deeply get FastAPI's 400 "error parsing the
# body" (a clean JSON error, no traceback) instead of 422.


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening_addresses(port: int) -> set[str]:
    """Local addresses of LISTEN sockets on ``port`` from /proc/net/tcp{,6} (hex, e.g. 0100007F = 127.0.0.1)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(addr)
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, int, list[str]]]:
    run = tmp_path_factory.mktemp("svc") / "run"
    argv = [
        "-q",
        "train",
        "--model",
        "lightgcn",
        "--data",
        "synthetic",
        "--set",
        "data.synthetic.n_users=200",
    ]
    argv += ["--set", "data.synthetic.n_items=150", "--set", "data.synthetic.n_interactions=3000"]
    argv += ["--set", "train.epochs=2", "--set", "train.threads=1", "--out", str(run)]
    assert main(argv) == 0
    from modalrec.recommend import load_run

    _, data, _ = load_run(run)
    users = [str(u) for u in data.user_ids]
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "modalrec", "-q", "serve", "--run", str(run), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    deadline = time.monotonic() + 120
    while True:
        try:
            if client.get("/health").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"server did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
        time.sleep(0.1)
    try:
        yield client, port, users
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_binds_loopback_by_default(server: tuple[httpx.Client, int, list[str]]) -> None:
    _, port, _ = server
    addrs = listening_addresses(port)
    assert addrs == {"0100007F"}, f"listening on {addrs}, expected only 127.0.0.1"


def test_unknown_ids_are_404_with_message(server: tuple[httpx.Client, int, list[str]]) -> None:
    client, _, users = server
    for path, params in (
        ("/recommend", {"user": "no-such-user"}),
        ("/recommend", {"user": "../../etc/passwd"}),  # ids are ids, never file paths
        ("/similar", {"item": "no-such-item"}),
        ("/similar", {"item": "/etc/passwd"}),
    ):
        r = client.get(path, params=params)
        assert r.status_code == 404, (path, params, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, str) and "unknown" in detail and params.popitem()[1] in detail
    r = client.post("/recommend", json={"users": [users[0], "ghost"], "k": 5})
    assert r.status_code == 404 and "ghost" in r.json()["detail"]


@pytest.mark.parametrize("k", ["0", "-1", "abc", "1.5", "100000", ""])
def test_bad_k_is_422(k: str, server: tuple[httpx.Client, int, list[str]]) -> None:
    client, _, users = server
    for path, key, value in (("/recommend", "user", users[0]), ("/similar", "item", "0")):
        r = client.get(path, params={key: value, "k": k})
        assert r.status_code == 422, (path, k, r.text)
        assert "detail" in r.json()


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"not json",
        b"[]",
        b'{"users": "u0"}',
        b'{"users": []}',
        b'{"users": ["0"], "k": 0}',
        b'{"users": ["0"], "k": "many"}',
        b'{"k": 5}',
        b'{"items": [{"id": "x", "features": {"visual": "nope"}}]}',
        b"\xff\xfe\x00",
        b"[" * 5000 + b"]" * 5000,
    ],
)
def test_malformed_json_is_422(body: bytes, server: tuple[httpx.Client, int, list[str]]) -> None:
    client, _, _ = server
    path = "/items" if b"items" in body else "/recommend"
    r = client.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, (body[:40], r.status_code, r.text[:200])


def test_load_loopback(server: tuple[httpx.Client, int, list[str]]) -> None:
    """N_REQUESTS GET /recommend at concurrency 32 on 127.0.0.1: zero errors; p50/p99 latency reported."""
    _, port, users = server
    latencies: list[float] = []
    errors: list[str] = []

    async def run() -> float:
        # The client drops idle connections (1 s) before uvicorn does (5 s): otherwise a request sent on a
        # connection the server is closing races with the close (seen once in 10,000 under heavy load).
        limits = httpx.Limits(
            max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY, keepalive_expiry=1.0
        )
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=60, limits=limits
        ) as client:
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(N_REQUESTS):
                queue.put_nowait(i)

            async def worker() -> None:
                while not queue.empty():
                    i = queue.get_nowait()
                    tic = time.perf_counter()
                    try:
                        r = await client.get("/recommend", params={"user": users[i % len(users)], "k": 20})
                        ok = r.status_code == 200 and len(r.json()["items"]) == 20
                        if not ok:
                            errors.append(f"{r.status_code} {r.text[:100]}")
                    except httpx.HTTPError as exc:
                        errors.append(repr(exc))
                    latencies.append(time.perf_counter() - tic)

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
            return time.perf_counter() - start

    wall = asyncio.run(run())
    qs = statistics.quantiles(latencies, n=100)
    report = {
        "requests": N_REQUESTS,
        "concurrency": CONCURRENCY,
        "errors": len(errors),
        "seconds": round(wall, 2),
        "requests_per_second": round(N_REQUESTS / wall, 1),
        "p50_ms": round(qs[49] * 1000, 2),
        "p99_ms": round(qs[98] * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2),
    }
    print("\nload test:", json.dumps(report))
    if os.environ.get("MODALREC_LOAD_REPORT"):
        Path(os.environ["MODALREC_LOAD_REPORT"]).write_text(json.dumps(report, indent=2))
    assert len(latencies) == N_REQUESTS
    assert not errors, errors[:5]
