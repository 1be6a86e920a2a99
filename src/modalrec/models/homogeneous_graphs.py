"""Fixed homogeneous graphs of the DRAGON / FREEDOM / PGL family, built sparse and in row blocks.

* :func:`cooccurrence_topk` — the user-user co-interaction graph of DRAGON (Zhou et al., ECAI 2023): for every
  user, the ``k`` other users sharing the most training items, with the shared-item counts c_uv = (R Rᵀ)_uv. The
  product is taken over blocks of ``chunk_size`` users ([chunk, U] at a time, sparse × sparse), never as a dense
  [U, U] matrix.
* :func:`binary_knn_graph` — the frozen item-item kNN graph of FREEDOM / DRAGON / PGL: s_ij = 1 if j is among the
  k most cosine-similar items of i (i itself included), then D^{-1/2} S D^{-1/2} with row-sum degrees.
* :func:`weighted_sum_graph` — Σ_m w_m S^m over modalities as one edge list (duplicates add up).
* :func:`max_pool_graph` — the element-wise maximum of several graphs over the union of their edges (SMORE).
* :func:`edges_to_csr` — a fixed edge list as sparse CSR (and its transpose) for fast products.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from modalrec.errors import ConfigError
from modalrec.graph import normalize_edges, to_csr
from modalrec.models.item_graphs import Edges, concat_edges
from modalrec.models.missing_content import masked_knn_edges, row_renormalised_edges


def cooccurrence_topk(
    train: sp.spmatrix, k: int, chunk_size: int = 1024, similarity: str = "count"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``k`` co-interaction neighbours of every user: c_uv = |items(u) ∩ items(v)|, v ≠ u, c_uv > 0.

    Args:
        train: [U, I] binary interactions (sparse).
        k: neighbours kept per user (fewer when a user shares items with fewer others).
        chunk_size: users per block of R_block Rᵀ.
        similarity: what ranks (and is returned for) the neighbours: ``"count"`` the shared-item count c_uv
            (DRAGON), ``"cosine"`` c_uv / sqrt(|items(u)| |items(v)|), which does not grow with v's activity.

    Returns:
        rows [E], cols [E], values [E] (float32: counts or cosines), rows ascending, E <= U·k. Which of several
        equally ranked users is kept at the k-th place is unspecified.
    """
    if k < 1:
        raise ConfigError(f"the user-user graph needs k >= 1 neighbours, got {k}")
    if similarity not in ("count", "cosine"):
        raise ConfigError(f"the user-user similarity must be 'count' or 'cosine', not {similarity!r}")
    r = sp.csr_matrix(train, dtype=np.float32)
    r.data[:] = 1.0  # counts of shared items, whatever the stored interaction values
    rt = sp.csr_matrix(r.T)
    n = r.shape[0]
    deg = np.asarray(r.sum(axis=1), dtype=np.float64).ravel()
    kk = min(k, max(n - 1, 0))
    all_rows, all_cols, all_vals = [], [], []
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        block = (r[start:stop] @ rt).tocoo()  # sparse [chunk, U]: only co-interacting pairs are stored
        if kk == 0:
            continue
        keep = block.row + start != block.col  # a user is not its own neighbour
        b_rows, b_cols, b_vals = block.row[keep], block.col[keep], block.data[keep]
        if similarity == "cosine":  # both users interacted with the shared items, so both degrees are > 0
            b_vals = (b_vals / np.sqrt(deg[b_rows + start] * deg[b_cols])).astype(np.float32)
        dense = torch.zeros(stop - start, n)  # one [chunk, U] block for the top-k, never [U, U]
        dense[torch.from_numpy(b_rows).long(), torch.from_numpy(b_cols).long()] = torch.from_numpy(b_vals)
        vals, cols = torch.topk(dense, kk, dim=1)
        rows = torch.arange(start, stop).repeat_interleave(kk)
        all_rows.append(rows)
        all_cols.append(cols.reshape(-1))
        all_vals.append(vals.reshape(-1))
    if not all_rows:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty.clone(), torch.zeros(0)
    rows, cols, vals = torch.cat(all_rows), torch.cat(all_cols), torch.cat(all_vals)
    positive = vals > 0
    return rows[positive], cols[positive], vals[positive]


def row_softmax(rows: torch.Tensor, vals: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Softmax of ``vals`` within each row's edges ([E] -> [E]); every non-empty row sums to one."""
    if vals.numel() == 0:
        return vals
    row_max = torch.full((n_rows,), -torch.inf, dtype=vals.dtype, device=vals.device).scatter_reduce(
        0, rows, vals, reduce="amax", include_self=True
    )
    e = torch.exp(vals - row_max[rows])
    total = torch.zeros(n_rows, dtype=vals.dtype, device=vals.device).index_add(0, rows, e)
    return e / total[rows]


def binary_knn_graph(
    feats: torch.Tensor, k: int, chunk_size: int = 1024, present: torch.Tensor | None = None
) -> Edges:
    """FREEDOM-style frozen kNN graph of one modality: binary top-k cosine (self included), sym-normalised.

    Args:
        feats: raw item features [I, d_m].
        present: bool [I], the items that have this modality (None: all); the others get no row or column.
    Returns:
        Edges of D^{-1/2} S D^{-1/2} with S_ij ∈ {0, 1}, I·k edges (fewer with ``present``).
    """
    if k < 1:
        raise ConfigError(f"the item kNN graph needs k >= 1 neighbours, got {k}")
    with torch.no_grad():
        rows, cols, _ = masked_knn_edges(feats, present, k, chunk_size=chunk_size, drop_negative=False)
        ones = torch.ones(rows.shape[0], dtype=feats.dtype, device=feats.device)
        return Edges(rows, cols, normalize_edges(rows, cols, ones, feats.shape[0], mode="sym"))


def modality_weights(weights: list[float] | None, n_modalities: int) -> list[float]:
    """The per-modality weights w_m of a weighted item graph: equal when ``None``, else validated (sum 1)."""
    if weights is None:
        return [1.0 / n_modalities] * n_modalities
    if len(weights) != n_modalities or any(w < 0 for w in weights) or abs(sum(weights) - 1.0) > 1e-6:
        raise ConfigError(
            f"modality weights must be {n_modalities} non-negative numbers summing to 1, got {weights}"
        )
    return [float(w) for w in weights]


def weighted_sum_graph(
    graphs: list[Edges], weights: list[float], present: torch.Tensor | None = None
) -> Edges:
    """Σ_m w_m S^m as one edge list; with ``present`` (bool [I, M]) each row's w renormalised over the
    modalities its item has (``missing_content.row_renormalised_edges``)."""
    if present is None:
        return concat_edges([g.scaled(w) for g, w in zip(graphs, weights, strict=True)])
    return Edges(*row_renormalised_edges(graphs, torch.tensor(weights, dtype=torch.float32), present))


def max_pool_graph(graphs: list[Edges], n: int) -> Edges:
    """Element-wise maximum of several [n, n] graphs over the union of their edges (SMORE's fused item graph).

    An edge present in one graph only keeps that graph's weight; duplicate (row, col) pairs inside one graph
    are first summed, as they would be in a product with it.
    """
    summed = []
    for g in graphs:
        key = g.rows * n + g.cols
        uniq, inverse = torch.unique(key, return_inverse=True)
        vals = torch.zeros(uniq.shape[0], dtype=g.vals.dtype, device=g.vals.device).index_add(
            0, inverse, g.vals
        )
        summed.append((uniq, vals))
    keys = torch.cat([k for k, _ in summed])
    vals = torch.cat([v for _, v in summed])
    uniq, inverse = torch.unique(keys, return_inverse=True)
    pooled = torch.full((uniq.shape[0],), -torch.inf, dtype=vals.dtype, device=vals.device).scatter_reduce(
        0, inverse, vals, reduce="amax", include_self=True
    )
    return Edges(uniq // n, uniq % n, pooled)


def edges_to_csr(graph: Edges, n_rows: int, n_cols: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed edge list as torch sparse CSR and its transpose ([n_rows, n_cols], [n_cols, n_rows]).

    For graphs whose weights need no gradient: ``graph.sparse_mm`` over CSR is several times faster than the
    per-edge ``spmm_edges`` (0.015 s against 0.16 s for a forward and backward over 317k edges at d = 128, one thread).
    Duplicate (row, col) pairs add up.
    """
    n_cols = n_rows if n_cols is None else n_cols
    vals = graph.vals.detach()
    a = torch.sparse_coo_tensor(
        torch.stack([graph.rows, graph.cols]), vals, (n_rows, n_cols), check_invariants=False
    ).coalesce()
    a_t = torch.sparse_coo_tensor(
        torch.stack([graph.cols, graph.rows]), vals, (n_cols, n_rows), check_invariants=False
    ).coalesce()
    return to_csr(a), to_csr(a_t)
