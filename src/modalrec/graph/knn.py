"""Chunked top-k similarity graphs between items (LATTICE/MICRO Eqs. 1-2, ItemKNN).

Similarities are computed in row chunks whose block is [chunk, N]; no dense [N, N] matrix is ever built. The
chunk size is bounded by the process's memory budget (:func:`modalrec.runtime.fit_chunk`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from modalrec.graph.adjacency import inv_sqrt_degree, to_csr
from modalrec.runtime import fit_chunk


def knn_edges(
    emb: torch.Tensor, k: int, chunk_size: int = 1024, drop_negative: bool = True, exclude_self: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k cosine neighbours of every row, computed in [chunk, N] blocks (LATTICE/MICRO Eqs. 1-2).

    Args:
        emb: [N, d] row features; gradients flow to the kept similarity values.
        k: neighbours kept per row (clipped to N).
        chunk_size: rows per similarity block.
        drop_negative: zero out negative similarities (MICRO Eq. 1 keeps only non-negative ones).
        exclude_self: do not count a row as its own neighbour.

    Returns:
        rows [N*k], cols [N*k], values [N*k] (negative entries removed when drop_negative).
    """
    n = emb.shape[0]
    k = min(k, n - 1 if exclude_self else n)
    # one block row: the [n] similarity row, its self-masked copy and the top-k workspace (float32 + int64)
    chunk_size = fit_chunk(
        n * emb.element_size() * 3 + k * 12, chunk_size, f"the kNN graph over {n} items", ""
    )
    unit = torch.nn.functional.normalize(emb, dim=1)
    all_cols, all_vals = [], []
    for start in range(0, n, chunk_size):
        block = unit[start : start + chunk_size] @ unit.T
        if exclude_self:
            idx = torch.arange(start, start + block.shape[0], device=emb.device)
            block = block.index_put((idx - start, idx), torch.tensor(-2.0, device=emb.device))
        vals, cols = torch.topk(block, k, dim=1)
        all_cols.append(cols)
        all_vals.append(vals)
    cols = torch.cat(all_cols).reshape(-1)
    vals = torch.cat(all_vals).reshape(-1)
    rows = torch.arange(n, device=emb.device).repeat_interleave(k)
    if drop_negative:
        keep = vals > 0
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
    return rows, cols, vals


def normalize_edges(
    rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int, mode: str = "sym"
) -> torch.Tensor:
    """Normalised edge weights: "sym" D^{-1/2} S D^{-1/2} (row-sum degrees), "row" D^{-1} S. Returns [E]."""
    deg = torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, rows, values)
    if mode == "row":
        inv = torch.where(deg > 0, 1.0 / deg.clamp_min(1e-12), torch.zeros_like(deg))
        return values * inv[rows]
    inv_sqrt = inv_sqrt_degree(deg)
    return inv_sqrt[rows] * values * inv_sqrt[cols]


def knn_graph(emb: torch.Tensor, k: int, chunk_size: int = 1024, mode: str = "sym") -> torch.Tensor:
    """A normalised, non-differentiable top-k cosine graph [N, N] as torch sparse CSR."""
    with torch.no_grad():
        rows, cols, vals = knn_edges(emb, k, chunk_size)
        vals = normalize_edges(rows, cols, vals, emb.shape[0], mode)
    n = emb.shape[0]
    return to_csr(torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n)).coalesce())


def sparse_cosine_knn_edges(
    mat: sp.spmatrix, k: int, chunk_size: int = 1024, shrink: float = 0.0, exclude_self: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k cosine neighbours of every row of a sparse matrix, in [chunk, N] blocks (no dense [N, N]).

    sim(a, b) = <x_a, x_b> / (||x_a|| ||x_b|| + shrink), e.g. rows = items, columns = users gives item-item
    co-occurrence cosine (ItemKNN). Only positive similarities are kept.

    Args:
        mat: [N, D] sparse rows (never densified as a whole).
        k: neighbours kept per row (clipped to N - 1 with exclude_self).
        chunk_size: rows per similarity block.
        shrink: the shrink term of the denominator (0 = plain cosine).
        exclude_self: do not count a row as its own neighbour.

    Returns:
        rows [E], cols [E], values [E] as torch int64/int64/float32, rows sorted, E <= N*k.
    """
    x = sp.csr_matrix(mat, dtype=np.float32)
    n = x.shape[0]
    k = max(0, min(k, n - 1 if exclude_self else n))
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel()).astype(np.float32)
    xt = sp.csr_matrix(x.T)
    all_rows, all_cols, all_vals = [], [], []
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        block = torch.from_numpy(np.asarray((x[start:stop] @ xt).todense(), dtype=np.float32))
        # In place, float32: one [chunk, N] temporary besides the block (a zero-norm row or column has a zero
        # dot product, so clamping its zero denominator leaves 0, as the definition wants).
        denom = torch.outer(torch.from_numpy(norms[start:stop]), torch.from_numpy(norms))
        block.div_(denom.add_(shrink).clamp_min_(1e-12))
        del denom
        if exclude_self:
            idx = torch.arange(stop - start)
            block[idx, idx + start] = 0.0
        vals, cols = torch.topk(block, k, dim=1)
        rows = torch.arange(start, stop).repeat_interleave(k)
        all_rows.append(rows)
        all_cols.append(cols.reshape(-1))
        all_vals.append(vals.reshape(-1))
    rows = torch.cat(all_rows) if all_rows else torch.zeros(0, dtype=torch.long)
    cols = torch.cat(all_cols) if all_cols else torch.zeros(0, dtype=torch.long)
    vals = torch.cat(all_vals) if all_vals else torch.zeros(0)
    keep = vals > 0
    return rows[keep], cols[keep], vals[keep]
