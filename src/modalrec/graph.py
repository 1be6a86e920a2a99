"""The one home of graph construction: normalised user-item adjacency, propagation, chunked kNN item graphs.

Everything here is sparse: no function builds a dense [U, I], [U+I, U+I] or [I, I] matrix. kNN graphs are built
in row chunks whose similarity block is [chunk, I].
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from modalrec.errors import ModalrecError


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


class _FixedSparseMatmul(torch.autograd.Function):
    """y = A x for a constant sparse A, with the backward pass A^T g done by a precomputed CSR transpose.

    torch's own backward for sparse @ dense transposes A on every call; precomputing A^T makes LightGCN-style
    propagation about 3x faster on CPU (measured on amazon-baby: 1.28 s -> 0.41 s for 3 layers forward+backward).
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, a_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.a_t = a_t
        return fixed_spmm(a, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, None, torch.Tensor]:
        return None, None, fixed_spmm(ctx.a_t, grad.contiguous())


def fixed_spmm(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A @ x for sparse A [N, M] and dense x [M, d], without autograd; bit-identical to ``torch.sparse.mm``.

    For CSR on CPU the product is written into a fresh uninitialised result (see :func:`spmm_into`), which skips
    the zero fill and copy of ``torch.sparse.mm``: on Tiktok's [9,308 x 6,710] block, 1 thread, 6.2 ms -> 1.4 ms;
    on the stacked [16,018 x 16,018] adjacency about 10% faster.
    """
    if a.layout != torch.sparse_csr or a.device.type != "cpu":
        return torch.sparse.mm(a, x)
    return spmm_into(a, x, torch.empty(a.shape[0], x.shape[1], dtype=x.dtype, device=x.device))


def sparse_mm(a: torch.Tensor, x: torch.Tensor, a_t: torch.Tensor | None = None) -> torch.Tensor:
    """A @ x for a fixed (non-learned) sparse A; pass ``a_t`` = A^T unless A is symmetric.

    Shapes: a [N, M] sparse, x [M, d] dense -> [N, d]. No gradient flows to A's values.
    """
    if not x.requires_grad:
        return fixed_spmm(a, x)
    return _FixedSparseMatmul.apply(a, a if a_t is None else a_t, x)


def propagate(adj: torch.Tensor, x: torch.Tensor, n_layers: int) -> list[torch.Tensor]:
    """Layer outputs [x, Âx, Â²x, ...] (n_layers + 1 tensors of shape [N, d]) for a symmetric fixed Â."""
    layers = [x]
    for _ in range(n_layers):
        layers.append(sparse_mm(adj, layers[-1]))
    return layers


def lightgcn_readout(adj: torch.Tensor, x: torch.Tensor, n_layers: int) -> torch.Tensor:
    """LightGCN's layer-mean readout (He et al. 2020, Eq. 4 with α_k = 1/(K+1)) of shape [N, d]."""
    return torch.stack(propagate(adj, x, n_layers), dim=0).mean(dim=0)


class _BipartiteLayerMean(torch.autograd.Function):
    """LightGCN's layer mean over the bipartite graph, without storing any layer output for the backward pass.

    With Â = [[0, R̂], [R̂^T, 0]] symmetric and fixed, out = (1/(K+1)) Σ_k Â^k x is a linear map that is its own
    adjoint, so the backward pass is the same computation applied to the incoming gradients. Working on the two
    blocks R̂ [U, I] and R̂^T [I, U] instead of the stacked [(U+I), (U+I)] matrix avoids the concatenation and the
    [K+1, U+I, d] stack, and each sparse product reads a smaller dense operand (better cache use on CPU).
    """

    @staticmethod
    def forward(
        ctx, r: torch.Tensor, r_t: torch.Tensor, users: torch.Tensor, items: torch.Tensor, n_layers: int
    ):
        ctx.r, ctx.r_t, ctx.n_layers = r, r_t, n_layers
        return _layer_mean(r, r_t, users, items, n_layers)

    @staticmethod
    def backward(ctx, grad_users: torch.Tensor, grad_items: torch.Tensor):
        gu, gi = _layer_mean(ctx.r, ctx.r_t, grad_users.contiguous(), grad_items.contiguous(), ctx.n_layers)
        return None, None, gu, gi, None


def spmm_into(a: torch.Tensor, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out = A @ x written into a preallocated ``out`` ([N, d]); A sparse CSR [N, M], x dense [M, d].

    On CPU ``torch.sparse.mm`` zero-fills a fresh result and copies it through ``addmm``; writing into a reused
    buffer with beta = 0 skips both and is about 3x faster for LightGCN-sized graphs (amazon-baby, d = 64,
    1 thread: 8.1 ms -> 2.1 ms per [U, I] block product). Not differentiable: used inside custom autograd code.
    """
    return torch.addmm(out, a, x, beta=0.0, alpha=1.0, out=out)


def bipartite_hop(
    r: torch.Tensor,
    r_t: torch.Tensor,
    users: torch.Tensor,
    items: torch.Tensor,
    out_users: torch.Tensor,
    out_items: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One propagation layer of Â = [[0, R̂], [R̂ᵀ, 0]] into preallocated buffers: (R̂ items, R̂ᵀ users)."""
    return spmm_into(r, items, out_users), spmm_into(r_t, users, out_items)


def _layer_mean(
    r: torch.Tensor,
    r_t: torch.Tensor,
    users: torch.Tensor,
    items: torch.Tensor,
    n_layers: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer means (Σ_k Â^k x / (K+1)) of the two blocks."""
    acc_u, acc_i = users.clone(), items.clone()
    cur_u, cur_i = users, items
    # two ping-pong buffer pairs: layer k+1 is written while layer k is read
    bufs = [(torch.empty_like(users), torch.empty_like(items)) for _ in range(min(n_layers, 2))]
    for layer in range(n_layers):
        cur_u, cur_i = bipartite_hop(r, r_t, cur_u, cur_i, *bufs[layer % 2])
        acc_u.add_(cur_u)
        acc_i.add_(cur_i)
    scale = 1.0 / (n_layers + 1)
    return acc_u.mul_(scale), acc_i.mul_(scale)


def bipartite_layer_mean(
    r: torch.Tensor, r_t: torch.Tensor, users: torch.Tensor, items: torch.Tensor, n_layers: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """LightGCN Eqs. 3-4 on the two blocks of Â: returns the layer means ([U, d], [I, d]) of users and items.

    ``r`` is R̂ = D_u^{-1/2} R D_i^{-1/2} ([U, I], sparse CSR) and ``r_t`` its transpose ([I, U]), as returned by
    :func:`normalized_interactions`. Equal to splitting ``lightgcn_readout(Â, [users; items], n_layers)``, about
    1.2-1.5x faster on CPU and with O((U+I)·d) instead of O(K·(U+I)·d) activation memory.
    """
    if not (users.requires_grad or items.requires_grad):
        return _layer_mean(r, r_t, users, items, n_layers)
    return _BipartiteLayerMean.apply(r, r_t, users, items, n_layers)


# Edges per block in spmm_edges: a [block, d] gather of 2^14 rows is 4 MiB at d = 64, below the allocator's
# mmap threshold (runtime.py), so blocks reuse warm heap memory instead of fresh zero-filled pages; 2^18-edge
# blocks (64 MiB) made the 1M-edge product 2.4x slower (0.55 s vs 0.23 s, one thread).
EDGE_BLOCK = 1 << 14


def _edge_products(
    rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, x: torch.Tensor, n_rows: int
) -> torch.Tensor:
    out = x.new_zeros(n_rows, x.shape[1])
    for start in range(0, len(rows), EDGE_BLOCK):
        sl = slice(start, start + EDGE_BLOCK)
        out.index_add_(0, rows[sl], x.index_select(0, cols[sl]).mul_(values[sl].unsqueeze(1)))
    return out


class _EdgeSpmm(torch.autograd.Function):
    """out = Σ_e values[e] · x[cols[e]] into row rows[e], with a backward that keeps no [|E|, d] tensor.

    Autograd through ``index_add(rows, values ⊙ x[cols])`` saves the gathered [|E|, d] messages (twice, for
    values and for x): on the 1M-interaction synthetic set that was 0.4 GB per product and GRCN's epoch peaked at
    9.3 GB. Here forward and backward gather in blocks of ``EDGE_BLOCK`` edges and only (rows, cols, values, x)
    are saved.
    """

    @staticmethod
    def forward(
        ctx: Any, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, x: torch.Tensor, n_rows: int
    ) -> torch.Tensor:
        ctx.save_for_backward(rows, cols, values, x)
        return _edge_products(rows, cols, values, x, n_rows)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        rows, cols, values, x = ctx.saved_tensors
        want_values, want_x = ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        grad_values = torch.empty_like(values) if want_values else None
        grad_x = torch.zeros_like(x) if want_x else None
        for start in range(0, len(rows), EDGE_BLOCK):
            sl = slice(start, start + EDGE_BLOCK)
            g = grad_out.index_select(0, rows[sl])  # [block, d]: ∂L/∂out at each edge's target row
            if grad_values is not None:  # ∂L/∂values[e] = <∂L/∂out[rows[e]], x[cols[e]]>
                grad_values[sl] = (g * x.index_select(0, cols[sl])).sum(1)
            if grad_x is not None:  # ∂L/∂x[c] = Σ_{e: cols[e] = c} values[e] ∂L/∂out[rows[e]]
                grad_x.index_add_(0, cols[sl], g.mul_(values[sl].unsqueeze(1)))
        return None, None, grad_values, grad_x, None


def spmm_edges(
    rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, x: torch.Tensor, n_rows: int
) -> torch.Tensor:
    """out[r] = Σ_e values[e] · x[cols[e]] over edges with rows[e] = r; differentiable in values and x.

    Shapes: rows, cols, values [E]; x [N, d]; result [n_rows, d]. Works in blocks of ``EDGE_BLOCK`` edges, so
    memory is O(N·d + E) rather than O(E·d), in the backward pass too.
    """
    if not (values.requires_grad or x.requires_grad):
        return _edge_products(rows, cols, values, x, n_rows)
    result: torch.Tensor = _EdgeSpmm.apply(rows, cols, values, x, n_rows)
    return result


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


def sparse_dropout(adj: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Drop each stored entry of a sparse matrix with probability ``p`` and rescale the rest by 1/(1-p).

    Works on sparse CSR or COO tensors; the sparsity pattern is kept (dropped entries become 0), so the result
    is a drop-in replacement in ``torch.sparse.mm``. Identity when ``p == 0`` or not ``training``.
    """
    if not training or p <= 0:
        return adj
    if adj.layout == torch.sparse_csr:
        vals = adj.values()
        keep = (torch.rand_like(vals) >= p).to(vals.dtype) / (1.0 - p)
        return torch.sparse_csr_tensor(
            adj.crow_indices(), adj.col_indices(), vals * keep, adj.shape, check_invariants=False
        )
    coo = adj.coalesce()
    vals = coo.values()
    keep = (torch.rand_like(vals) >= p).to(vals.dtype) / (1.0 - p)
    return torch.sparse_coo_tensor(
        coo.indices(), vals * keep, coo.shape, is_coalesced=True, check_invariants=False
    )


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


# ---- memory budget for chunked blocks ---------------------------------------------------------------------------

MEMORY_ENV = "MODALREC_MEMORY_BUDGET"


def memory_budget() -> int:
    """Bytes one chunked block may use: $MODALREC_MEMORY_BUDGET (e.g. "512M", "2G", "1500000"), else half of
    the memory the OS reports available (2 GiB when unknown)."""
    raw = os.environ.get(MEMORY_ENV, "").strip()
    if raw:
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
        text = raw.upper().removesuffix("B").removesuffix("I")
        try:
            if text and text[-1] in units:
                return max(1, int(float(text[:-1]) * units[text[-1]]))
            return max(1, int(float(text)))
        except ValueError:
            raise ModalrecError(f"{MEMORY_ENV}={raw!r} is not a size such as 512M or 2G") from None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    return 2 << 30


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def fit_chunk(row_bytes: int, wanted: int, what: str, setting: str) -> int:
    """Rows per block so that ``rows * row_bytes`` fits the memory budget, at most ``wanted``.

    Fails early (before allocating) when not even one row fits, naming the setting to change.

    Args:
        row_bytes: estimated bytes one row of the block needs (including temporaries).
        wanted: the requested or default number of rows per block.
        what: what is being computed, for the message.
        setting: the configuration field that sets the chunk size, for the message.
    """
    budget = memory_budget()
    if row_bytes > budget:
        raise ModalrecError(
            f"{what} needs about {_size(row_bytes)} per row but the memory budget is "
            f"{_size(budget)}; raise {MEMORY_ENV} (e.g. {MEMORY_ENV}=4G) or use a smaller catalogue"
        )
    fitted = max(1, min(int(wanted), budget // max(1, row_bytes)))
    if setting and fitted < wanted:
        import logging

        logging.getLogger(__name__).debug(
            "%s: %s=%d does not fit %s=%d bytes; using %d", what, setting, wanted, MEMORY_ENV, budget, fitted
        )
    return fitted
