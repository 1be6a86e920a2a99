"""Adjacency building: the normalised user-item graph as torch sparse tensors, and its fixed sparsity pattern.

Everything here is sparse: no function builds a dense [U, I] or [U+I, U+I] matrix.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch


def scipy_to_torch(mat: sp.spmatrix, layout: str = "csr") -> torch.Tensor:
    """Convert a scipy sparse matrix to a float32 torch sparse tensor (``layout`` = "csr" or "coo")."""
    coo = sp.coo_matrix(mat, dtype=np.float32)
    indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    values = torch.from_numpy(coo.data.astype(np.float32))
    tensor = torch.sparse_coo_tensor(indices, values, coo.shape, check_invariants=False).coalesce()
    return to_csr(tensor) if layout == "csr" else tensor


def to_csr(tensor: torch.Tensor) -> torch.Tensor:
    """COO -> CSR without torch's 'beta' warning (CSR matmul is the fast path on CPU).

    The indices are stored as int32 when they fit: the CPU sparse-dense product (MKL) works on int32 indices and
    converts int64 ones at every call, which cost ~0.3 ms of a 2 ms amazon-baby block product (docs/performance.md).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        csr = tensor.to_sparse_csr()
        if csr.values().numel() < 2**31 - 1 and max(csr.shape) < 2**31 - 1:
            csr = torch.sparse_csr_tensor(
                csr.crow_indices().to(torch.int32),
                csr.col_indices().to(torch.int32),
                csr.values(),
                csr.shape,
                check_invariants=False,
            )
        return csr


def bipartite_adjacency(train: sp.spmatrix) -> sp.csr_matrix:
    """Symmetric [(U+I), (U+I)] adjacency [[0, R], [R^T, 0]] of the user-item graph R ([U, I])."""
    r = sp.csr_matrix(train, dtype=np.float32)
    return sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)


def sym_normalize(adj: sp.spmatrix, add_self_loops: bool = False) -> sp.csr_matrix:
    """D^{-1/2} A D^{-1/2}; rows with zero degree stay zero (no division by zero)."""
    a = sp.csr_matrix(adj, dtype=np.float32)
    if add_self_loops:
        a = a + sp.eye(a.shape[0], dtype=np.float32, format="csr")
    deg = np.asarray(a.sum(axis=1)).ravel()
    with np.errstate(divide="ignore"):
        inv_sqrt = np.where(deg > 0, deg**-0.5, 0.0).astype(np.float32)
    d = sp.diags(inv_sqrt)
    return sp.csr_matrix(d @ a @ d, dtype=np.float32)


def normalized_adjacency(train: sp.spmatrix, add_self_loops: bool = False) -> torch.Tensor:
    """The LightGCN propagation matrix Â = D^{-1/2} A D^{-1/2} of the bipartite graph, as torch sparse CSR."""
    return scipy_to_torch(sym_normalize(bipartite_adjacency(train), add_self_loops))


def normalized_interactions(train: sp.spmatrix) -> tuple[torch.Tensor, torch.Tensor]:
    """The user-item block of Â and its transpose: R̂ = D_u^{-1/2} R D_i^{-1/2} ([U, I]) and R̂^T ([I, U])."""
    r = sp.csr_matrix(train, dtype=np.float32)
    du = np.asarray(r.sum(axis=1)).ravel()
    di = np.asarray(r.sum(axis=0)).ravel()
    with np.errstate(divide="ignore"):
        su = np.where(du > 0, du**-0.5, 0.0).astype(np.float32)
        si = np.where(di > 0, di**-0.5, 0.0).astype(np.float32)
    rn = sp.diags(su) @ r @ sp.diags(si)
    return scipy_to_torch(rn), scipy_to_torch(sp.csr_matrix(rn.T))


def inv_sqrt_degree(deg: torch.Tensor) -> torch.Tensor:
    """deg^{-1/2} elementwise, 0 where the degree is 0 (isolated nodes stay zero rows of D^{-1/2} A D^{-1/2})."""
    return torch.where(deg > 0, deg.clamp_min(1e-12).rsqrt(), torch.zeros_like(deg))


class BipartitePattern:
    """The interactions' fixed sparsity pattern in both block layouts, for edge-dropped views without rebuilding.

    ``blocks(keep)`` returns R̂ = D_u^{-1/2} R' D_i^{-1/2} ([U, I]) and R̂ᵀ ([I, U]) as torch sparse CSR for the
    subgraph R' of the kept interactions, degrees recomputed on R'. Dropped interactions stay in the pattern as
    explicit zeros, so only the values are recomputed (O(nnz) vector work, no sorting); the products and
    :func:`bipartite_layer_mean` give exactly what the rebuilt subgraph would.
    """

    def __init__(self, train: sp.spmatrix) -> None:
        r = sp.csr_matrix(train, dtype=np.float32)
        r.sum_duplicates()
        r.sort_indices()
        self.shape = r.shape
        users = np.repeat(np.arange(r.shape[0]), np.diff(r.indptr))
        self.users = torch.from_numpy(users.astype(np.int64))
        self.items = torch.from_numpy(r.indices.astype(np.int64))
        self.crow = torch.from_numpy(r.indptr.astype(np.int64))
        # entry order of R̂ᵀ: by item, then user (lexsort sorts by its last key first)
        self.by_item = torch.from_numpy(np.lexsort((users, r.indices)).astype(np.int64))
        self.crow_t = torch.from_numpy(
            np.concatenate([[0], np.cumsum(np.bincount(r.indices, minlength=r.shape[1]))]).astype(np.int64)
        )
        self.users_t = self.users[self.by_item]

    def __len__(self) -> int:
        return len(self.items)

    def blocks(self, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(R̂, R̂ᵀ) of the interactions where ``keep`` ([nnz] bool, user-major order) is true (all if None)."""
        n_users, n_items = self.shape
        w = torch.ones(len(self)) if keep is None else keep.to(torch.float32)
        deg_u = torch.zeros(n_users).index_add_(0, self.users, w)
        deg_i = torch.zeros(n_items).index_add_(0, self.items, w)
        vals = w * inv_sqrt_degree(deg_u)[self.users] * inv_sqrt_degree(deg_i)[self.items]
        with warnings.catch_warnings():  # torch's "CSR is beta" notice
            warnings.simplefilter("ignore", UserWarning)
            r = torch.sparse_csr_tensor(
                self.crow, self.items, vals, (n_users, n_items), check_invariants=False
            )
            r_t = torch.sparse_csr_tensor(
                self.crow_t, self.users_t, vals[self.by_item], (n_items, n_users), check_invariants=False
            )
        return r, r_t


def mean_interactions(train: sp.spmatrix, by: str = "sqrt") -> torch.Tensor:
    """Row-normalised [U, I] interaction matrix: by="sqrt" divides by sqrt(deg) (MMSSL Eq. 2), "mean" by deg."""
    r = sp.csr_matrix(train, dtype=np.float32)
    deg = np.asarray(r.sum(axis=1)).ravel()
    power = 0.5 if by == "sqrt" else 1.0
    with np.errstate(divide="ignore"):
        scale = np.where(deg > 0, deg**-power, 0.0).astype(np.float32)
    return scipy_to_torch(sp.diags(scale) @ r)
