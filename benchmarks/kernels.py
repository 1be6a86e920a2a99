"""Kernel timings behind the training-epoch figures: block products, the LightGCN layer mean, InfoNCE blocks,
per-edge products over the interaction list (GRCN).

    python -m benchmarks.kernels [--data DATA/amazon-baby | syn:100000] [--threads 1] [--repeats 20]

Prints one line per kernel with the median milliseconds over ``--repeats`` calls, and the LightGCN "training
floor": the bare propagation an epoch cannot avoid (batches x (forward + backward) layer means), to compare with
the measured epoch time of ``python -m benchmarks.measure --model lightgcn``. Use it before and after a change.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from benchmarks.measure import load
from modalrec.data.sampling import BPRSampler
from modalrec.graph import bipartite_layer_mean, normalized_interactions, spmm_edges, spmm_into
from modalrec.graph.batch_rows import batch_local_indices, layer_mean_batch_rows
from modalrec.graph.edge_pattern import EdgePattern
from modalrec.graph.propagation import _layer_mean
from modalrec.losses import info_nce, info_nce_all
from modalrec.runtime import set_threads, tune_allocator


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: allocator, caches
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return 1e3 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="syn:100000", help="dataset folder or syn:N")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2048, help="BPR pairs per batch (LightGCN default)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    tune_allocator()
    data = load(args.data)
    r, r_t = normalized_interactions(data.train)
    n_users, n_items, d = data.n_users, data.n_items, args.dim
    gen = torch.Generator().manual_seed(0)
    users, items = torch.randn(n_users, d, generator=gen), torch.randn(n_items, d, generator=gen)
    out_u, out_i = torch.empty_like(users), torch.empty_like(items)
    print(
        f"{data.name}: {n_users} users x {n_items} items, {data.train.nnz} training pairs, d = {d}, "
        f"{torch.get_num_threads()} thread(s)"
    )
    rows = {
        "block product R̂ @ items [U, d]": lambda: spmm_into(r, items, out_u),
        "block product R̂ᵀ @ users [I, d]": lambda: spmm_into(r_t, users, out_i),
        "LightGCN layer mean, 3 layers": lambda: _layer_mean(r, r_t, users, items, 3),
    }
    # one BPR step's propagation, forward + backward: the full layer mean vs the batch-rows-only form
    batch = next(iter(BPRSampler(data.train, args.batch, seed=0).epoch(0)))
    local, batch_users, batch_items = batch_local_indices(batch)
    leaf_u, leaf_i = users.clone().requires_grad_(), items.clone().requires_grad_()

    def step_full() -> None:
        u, i = bipartite_layer_mean(r, r_t, leaf_u, leaf_i, 3)
        (u[batch.users] * i[batch.pos]).sum().backward()
        leaf_u.grad = leaf_i.grad = None

    def step_rows() -> None:
        out = layer_mean_batch_rows(r, r_t, leaf_u, leaf_i, 3, batch_users, batch_items)
        (out.users[local.users] * out.items[local.pos]).sum().backward()
        leaf_u.grad = leaf_i.grad = None

    rows["LightGCN step fwd+bwd, full layer mean"] = step_full
    rows[f"LightGCN step fwd+bwd, batch rows ({len(batch_users)} users, {len(batch_items)} items)"] = (
        step_rows
    )
    # per-edge kernels over the training interactions (GRCN's routing and refined-graph propagation)
    coo = data.train.tocoo()
    e_rows, e_cols = torch.from_numpy(coo.row.astype(np.int64)), torch.from_numpy(coo.col.astype(np.int64))
    pattern = EdgePattern(e_rows, e_cols, n_users, n_items)
    e_vals = torch.rand(len(e_rows), generator=gen)
    rows.update(
        {
            "per-edge dot, gathers (a[rows] * b[cols]).sum(1)": lambda: (users[e_rows] * items[e_cols]).sum(
                1
            ),
            "per-edge dot, EdgePattern.dot (CSR SDDMM)": lambda: pattern.dot(users, items),
            "edge-list product, spmm_edges (blocked gathers)": lambda: spmm_edges(
                e_rows, e_cols, e_vals, items, n_users
            ),
            "edge-list product, EdgePattern.spmm (CSR)": lambda: pattern.spmm(e_vals, items),
        }
    )
    timings = {name: median_ms(fn, args.repeats) for name, fn in rows.items()}
    # contrastive blocks at the sizes of a batch: distinct users of a batch vs each other, and vs all nodes
    n_anchor = min(n_users, int(0.93 * args.batch))
    a = torch.randn(n_anchor, d, generator=gen, requires_grad=True)
    b = torch.randn(n_anchor, d, generator=gen, requires_grad=True)
    view_a = torch.randn(n_users + n_items, d, generator=gen, requires_grad=True)
    view_b = torch.randn(n_users + n_items, d, generator=gen, requires_grad=True)
    index = torch.randperm(n_users, generator=gen)[:n_anchor]
    timings[f"InfoNCE fwd+bwd, in-batch {n_anchor} x {n_anchor}"] = median_ms(
        lambda: info_nce(a, b, 0.2).backward(), args.repeats
    )
    timings[f"InfoNCE fwd+bwd, {n_anchor} anchors x all {n_users + n_items} nodes"] = median_ms(
        lambda: info_nce_all(view_a, view_b, index, 0.1).backward(), max(3, args.repeats // 5)
    )
    for name, ms in timings.items():
        print(f"{ms:10.2f} ms  {name}")
    batches = math.ceil(data.train.nnz / args.batch)
    floor = batches * 2 * timings["LightGCN layer mean, 3 layers"] / 1e3
    print(
        f"LightGCN training floor: {batches} batches x 2 layer means = {floor:.2f} s per epoch of bare propagation"
    )
    step_rows_ms = next(ms for name, ms in timings.items() if name.startswith("LightGCN step fwd+bwd, last"))
    print(
        f"  with the batch-rows step (what LightGCN trains with): {batches * step_rows_ms / 1e3:.2f} s per epoch"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
