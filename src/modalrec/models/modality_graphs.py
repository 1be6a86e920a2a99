"""Frozen modality kNN item graphs and degree-sensitive edge pruning (FREEDOM, MGCN, LGMRec).

* :func:`frozen_knn_graph` — S^m = D^{-1/2} Ŝ^m D^{-1/2} with Ŝ^m the top-k cosine neighbours of each item in
  modality m (binary as in FREEDOM, or weighted by the cosine as in MGCN/LATTICE), optionally summed over
  modalities with fixed weights, S = Σ_m α_m S^m. Built once in row chunks (``graph.knn_edges``), never as a
  dense [I, I] matrix, and returned as a pair of fixed sparse CSR matrices (S, Sᵀ) for ``graph.sparse_mm``.
* :func:`pruned_keep_mask` — FREEDOM's degree-sensitive edge pruning: keep m = ⌊(1-ρ)|E|⌋ interactions drawn
  without replacement with probability proportional to p_e = 1/√(d_u d_i) (or uniformly, the random-dropout
  baseline), using the Gumbel-top-k trick, which has exactly the distribution of successive weighted draws
  without replacement (``torch.multinomial(..., replacement=False)``) in O(|E| log |E|).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from modalrec.errors import ConfigError
from modalrec.graph import BipartitePattern, inv_sqrt_degree, normalize_edges, to_csr
from modalrec.models.missing_content import masked_knn_edges, row_renormalised_edges


def edges_to_csr(
    rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed sparse [n, n] matrix and its transpose as torch sparse CSR (duplicate edges add up)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        a = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n)).coalesce()
        a_t = torch.sparse_coo_tensor(torch.stack([cols, rows]), vals, (n, n)).coalesce()
    return to_csr(a), to_csr(a_t)


def modality_knn_edges(
    feats: np.ndarray, k: int, weighted: bool, chunk_size: int = 1024, present: np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """S^m of one modality as an edge list (rows, cols, vals), each [E] with E <= I·k.

    Ŝ^m keeps, for every item, its k most cosine-similar items (itself included, as in the official codes).
    ``weighted=False`` (FREEDOM): Ŝ_ij = 1 for the kept pairs, whatever the sign of the cosine.
    ``weighted=True`` (MGCN): Ŝ_ij = cos(i, j) for the kept pairs, non-positive ones dropped (they would make the
    degree non-positive). Then S^m = D^{-1/2} Ŝ^m D^{-1/2} with D the row sums of Ŝ^m. With ``present`` (bool
    [I]) the graph spans the items that have the modality: the others have no row and no column in it.
    """
    x = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
    mask = None if present is None else torch.from_numpy(np.asarray(present, dtype=bool))
    with torch.no_grad():
        rows, cols, vals = masked_knn_edges(x, mask, k, chunk_size=chunk_size, drop_negative=weighted)
        if not weighted:
            vals = torch.ones_like(vals)
        vals = normalize_edges(rows, cols, vals, x.shape[0], mode="sym")
    return rows, cols, vals


def frozen_knn_graph(
    features: list[np.ndarray],
    weights: list[float],
    k: int,
    weighted: bool,
    chunk_size: int = 1024,
    present: list[np.ndarray | None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """S = Σ_m α_m S^m over the given modalities: fixed sparse CSR (S [I, I], Sᵀ [I, I]).

    ``present`` (per modality bool [I] or None = all items have it): each S^m spans the items that have m, and
    row i of S takes α renormalised over the modalities item i has (``missing_content.row_renormalised_edges``).
    """
    if k < 1:
        raise ConfigError(f"the kNN item graph needs k >= 1 neighbours, got {k}")
    masks = present if present is not None else [None] * len(features)
    if all(m is None for m in masks):
        parts = [modality_knn_edges(f, k, weighted, chunk_size) for f in features]
        rows = torch.cat([p[0] for p in parts])
        cols = torch.cat([p[1] for p in parts])
        vals = torch.cat([p[2] * w for p, w in zip(parts, weights, strict=True)])
        return edges_to_csr(rows, cols, vals, features[0].shape[0])
    parts = [modality_knn_edges(f, k, weighted, chunk_size, m) for f, m in zip(features, masks, strict=True)]
    n = features[0].shape[0]
    matrix = torch.from_numpy(
        np.stack([np.ones(n, dtype=bool) if m is None else np.asarray(m, dtype=bool) for m in masks], axis=1)
    )
    rows, cols, vals = row_renormalised_edges(parts, torch.tensor(weights, dtype=torch.float32), matrix)
    return edges_to_csr(rows, cols, vals, n)


def edge_weights(pattern: BipartitePattern) -> torch.Tensor:
    """p_e = 1/√(d_u d_i) for every interaction of the pattern (user-major order): [|E|]."""
    n_users, n_items = pattern.shape
    ones = torch.ones(len(pattern))
    deg_u = torch.zeros(n_users).index_add_(0, pattern.users, ones)
    deg_i = torch.zeros(n_items).index_add_(0, pattern.items, ones)
    return inv_sqrt_degree(deg_u)[pattern.users] * inv_sqrt_degree(deg_i)[pattern.items]


def pruned_keep_mask(
    weights: torch.Tensor, ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Keep ⌊(1-ρ)|E|⌋ edges drawn without replacement with probability ∝ ``weights`` [|E|]: bool [|E|].

    Gumbel-top-k: the m largest log w_e + G_e (G_e iid standard Gumbel) are a weighted sample without
    replacement, identical in law to m successive draws of ``torch.multinomial(w, m, replacement=False)``.
    Uniform weights give plain random edge dropout with exactly m edges kept.
    """
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"the edge pruning ratio ρ must lie in [0, 1), got {ratio}")
    n = weights.shape[0]
    n_keep = int(n * (1.0 - ratio))
    keep = torch.zeros(n, dtype=torch.bool)
    if n_keep >= n:
        return keep.fill_(True)
    u = torch.rand(n, generator=generator, dtype=torch.float64).clamp_min_(1e-300)
    keys = weights.to(torch.float64).log() - (-u.log()).log()
    keep[torch.topk(keys, n_keep).indices] = True
    return keep
