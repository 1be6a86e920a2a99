"""LightGCN's layer mean restricted to one training batch's users: the same numbers, less sparse work per step.

A BPR step reads the final embeddings of the batch's users only (about 2,000 of amazon-baby's 19,445), so the last
propagation layer R̂ Â^{K-1} x needs computing for those rows only, and in the backward pass the incoming
user gradient is zero outside them, so its first hop R̂ᵀ G_u reads only their edges. Both products then touch the
batch users' edges (15% of amazon-baby's) instead of all of them; every other product is the full one. The output
rows and all gradients equal those of :func:`modalrec.graph.bipartite_layer_mean` followed by a row selection
(tests/test_batch_rows.py); only the summation order of the scattered first backward hop differs.

Why this is exact: with Â symmetric, the layer mean M = (1/(K+1)) Σ_k Â^k is self-adjoint, and restricting its
output to rows S is S·M, whose adjoint M·Sᵀ is the layer mean applied to the zero-padded gradient.
"""

from __future__ import annotations

from typing import Any

import torch

from modalrec.graph import _layer_mean, spmm_into


def csr_rows(a: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``rows`` ([R], int64, any order) of a CSR matrix a [N, M]: (sub-matrix [R, M] in CSR, entry positions).

    The positions ([nnz of the rows]) index a's values/columns, in the sub-matrix's entry order. O(R + nnz) work.
    """
    crow, col, val = a.crow_indices(), a.col_indices(), a.values()
    starts = crow[rows]
    counts = crow[rows + 1] - starts
    sub_crow = torch.zeros(len(rows) + 1, dtype=crow.dtype, device=crow.device)
    torch.cumsum(counts, 0, out=sub_crow[1:])
    total = int(sub_crow[-1])
    # entry j of row r sits at starts[r] + j in a and at sub_crow[r] + j in the sub-matrix
    offsets = torch.repeat_interleave(starts - sub_crow[:-1], counts, output_size=total)
    positions = offsets + torch.arange(total, dtype=crow.dtype, device=crow.device)
    sub = torch.sparse_csr_tensor(
        sub_crow, col[positions], val[positions], (len(rows), a.shape[1]), check_invariants=False
    )
    return sub, positions


def _transposed_product(sub: torch.Tensor, g: torch.Tensor, n_cols: int) -> torch.Tensor:
    """subᵀ @ g for sub [R, M] CSR and g [R, d]: [M, d], as a scatter over sub's entries (no transpose built)."""
    crow = sub.crow_indices()
    row_of_entry = torch.repeat_interleave(
        torch.arange(len(crow) - 1, device=crow.device), crow[1:] - crow[:-1]
    )
    messages = g.index_select(0, row_of_entry).mul_(sub.values().unsqueeze(1))
    return g.new_zeros(n_cols, g.shape[1]).index_add_(0, sub.col_indices(), messages)


class _UserRowsLayerMean(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        r: torch.Tensor,
        r_t: torch.Tensor,
        users: torch.Tensor,
        items: torch.Tensor,
        n_layers: int,
        user_rows: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sub, _ = csr_rows(r, user_rows)
        ctx.r, ctx.r_t, ctx.sub, ctx.n_layers, ctx.user_rows = r, r_t, sub, n_layers, user_rows
        ctx.n_users = users.shape[0]
        with torch.no_grad():
            return _user_rows_forward(r, r_t, sub, users, items, n_layers, user_rows)

    @staticmethod
    def backward(ctx: Any, grad_rows: torch.Tensor, grad_items: torch.Tensor) -> tuple[Any, ...]:
        grad_rows = grad_rows.contiguous()
        grad_users = grad_rows.new_zeros(ctx.n_users, grad_rows.shape[1]).index_copy_(
            0, ctx.user_rows, grad_rows
        )
        # first hop of the user gradient: only the batch users' edges carry it
        first = _transposed_product(ctx.sub, grad_rows, grad_items.shape[0])
        gu, gi = _layer_mean(
            ctx.r, ctx.r_t, grad_users, grad_items.contiguous(), ctx.n_layers, first_items=first
        )
        return None, None, gu, gi, None, None


def _user_rows_forward(
    r: torch.Tensor,
    r_t: torch.Tensor,
    sub: torch.Tensor,
    users: torch.Tensor,
    items: torch.Tensor,
    n_layers: int,
    user_rows: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Layers 0..K-1 in full, layer K of the users only for ``user_rows`` (its item side in full)."""
    acc_u, acc_i = users.clone(), items.clone()
    cur_u, cur_i = users, items
    for _ in range(n_layers - 1):
        nxt_u = spmm_into(r, cur_i, torch.empty_like(users))
        nxt_i = spmm_into(r_t, cur_u, torch.empty_like(items))
        acc_u.add_(nxt_u)
        acc_i.add_(nxt_i)
        cur_u, cur_i = nxt_u, nxt_i
    out_u = acc_u.index_select(0, user_rows)
    if n_layers > 0:
        out_u.add_(spmm_into(sub, cur_i, users.new_empty(len(user_rows), users.shape[1])))
        acc_i.add_(spmm_into(r_t, cur_u, torch.empty_like(items)))
    scale = 1.0 / (n_layers + 1)
    return out_u.mul_(scale), acc_i.mul_(scale)


def layer_mean_user_rows(
    r: torch.Tensor,
    r_t: torch.Tensor,
    users: torch.Tensor,
    items: torch.Tensor,
    n_layers: int,
    user_rows: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LightGCN Eqs. 3-4 for a training step: (layer mean of ``user_rows`` [R, d], of every item [I, d]).

    r = R̂ [U, I] and r_t = R̂ᵀ [I, U] (sparse CSR, :func:`modalrec.graph.normalized_interactions`); users [U, d],
    items [I, d]; user_rows [R] distinct int64 user indices. Equal to
    ``bipartite_layer_mean(...)[0][user_rows], bipartite_layer_mean(...)[1]`` with the same gradients.
    """
    if not (users.requires_grad or items.requires_grad):
        sub, _ = csr_rows(r, user_rows)
        return _user_rows_forward(r, r_t, sub, users, items, n_layers, user_rows)
    return _UserRowsLayerMean.apply(r, r_t, users, items, n_layers, user_rows)
