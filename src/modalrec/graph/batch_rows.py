"""LightGCN's layer mean restricted to one training batch: the same numbers, less work per step.

A BPR step reads the final embeddings of the batch's users S and items T only (on amazon-baby about 1,900 of
19,445 users and 2,900 of 7,050 items), plus their layer-0 rows for the L2 term. So:

* the last propagation layer of the users, R̂ Â^{K-1} x, is computed for S only (a CSR row block holding 15% of
  amazon-baby's edges), and in the backward pass the first hop of the user gradient, R̂ᵀ G_u, is a scatter over
  those same edges;
* no full-size layer sums are kept: each layer contributes only its S and T rows to the outputs;
* the function also returns the layer-0 rows (the L2 term's inputs), so the whole gradient of the two tables
  comes out of one backward pass, with no [U, d] zero tables and accumulations for the row gathers.

The outputs and every gradient equal those of :func:`modalrec.graph.bipartite_layer_mean` followed by row
selections (tests/test_batch_rows.py); only the summation order differs. That composition is also the reference
path, taken off the CPU (see :mod:`modalrec.dispatch`).

Why this is exact: with Â symmetric, the layer mean M = (1/(K+1)) Σ_k Â^k is self-adjoint, and restricting its
output to rows S is S·M, whose adjoint M·Sᵀ is the layer mean applied to the zero-padded gradient.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from modalrec.data.sampling import Batch
from modalrec.dispatch import use_fast_path
from modalrec.graph.propagation import bipartite_hop, layer_mean_reference, spmm_into


class BatchRows(NamedTuple):
    """Outputs of :func:`layer_mean_batch_rows`: final (layer-mean) and layer-0 rows of the batch."""

    users: torch.Tensor  # [S, d] layer mean of the selected users
    items: torch.Tensor  # [T, d] layer mean of the selected items
    user_ego: torch.Tensor  # [S, d] their layer-0 rows
    item_ego: torch.Tensor  # [T, d]


def batch_local_indices(batch: Batch) -> tuple[Batch, torch.Tensor, torch.Tensor]:
    """The batch's distinct users [S] and items [T] (positives and negatives), and the batch re-indexed into them."""
    user_rows, at_user = torch.unique(batch.users, return_inverse=True)
    item_rows, at_item = torch.unique(torch.cat([batch.pos, batch.neg]), return_inverse=True)
    at_pos, at_neg = at_item.split([len(batch.pos), len(batch.neg)])
    return Batch(at_user, at_pos, at_neg), user_rows, item_rows


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
    # int64 targets: index_add_ has a fast (scatter) path for them, int32 CSR indices take a slow loop
    return g.new_zeros(n_cols, g.shape[1]).index_add_(0, sub.col_indices().long(), messages)


def _forward(
    r: torch.Tensor,
    r_t: torch.Tensor,
    sub: torch.Tensor,
    users: torch.Tensor,
    items: torch.Tensor,
    n_layers: int,
    user_rows: torch.Tensor,
    item_rows: torch.Tensor,
) -> BatchRows:
    """Layers 1..K-1 in full, layer K of the users for ``user_rows`` only; outputs keep only the batch rows."""
    ego_u, ego_i = users.index_select(0, user_rows), items.index_select(0, item_rows)
    out_u, out_i = ego_u.clone(), ego_i.clone()
    cur_u, cur_i = users, items
    # two ping-pong buffer pairs: layer k+1 is written while layer k is read
    bufs = [(torch.empty_like(users), torch.empty_like(items)) for _ in range(min(n_layers, 2))]
    for layer in range(n_layers - 1):
        cur_u, cur_i = bipartite_hop(r, r_t, cur_u, cur_i, *bufs[layer % 2])
        out_u.add_(cur_u.index_select(0, user_rows))
        out_i.add_(cur_i.index_select(0, item_rows))
    if n_layers > 0:
        out_u.add_(spmm_into(sub, cur_i, out_u.new_empty(out_u.shape)))
        last_i = bufs[(n_layers - 1) % 2][1]
        out_i.add_(spmm_into(r_t, cur_u, last_i).index_select(0, item_rows))
    scale = 1.0 / (n_layers + 1)
    return BatchRows(out_u.mul_(scale), out_i.mul_(scale), ego_u, ego_i)


def _backward(
    r: torch.Tensor,
    r_t: torch.Tensor,
    sub: torch.Tensor,
    n_layers: int,
    user_rows: torch.Tensor,
    item_rows: torch.Tensor,
    shapes: tuple[int, int],
    grads: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of the two tables: the layer mean of the zero-padded row gradients, plus the layer-0 rows'."""
    g_u, g_i, g_ego_u, g_ego_i = (g.contiguous() for g in grads)
    n_users, n_items = shapes
    scale = 1.0 / (n_layers + 1)
    g_u, g_i = g_u * scale, g_i * scale
    acc_u = g_u.new_zeros(n_users, g_u.shape[1]).index_copy_(0, user_rows, g_u + g_ego_u)
    pad_i = g_i.new_zeros(n_items, g_i.shape[1]).index_copy_(0, item_rows, g_i)
    if n_layers == 0:
        return acc_u, pad_i.index_add_(0, item_rows, g_ego_i)
    bufs = [(torch.empty_like(acc_u), torch.empty_like(pad_i)) for _ in range(2)]
    # layer 1: R̂ G_i in full; R̂ᵀ G_u only over the batch users' edges
    cur_u = spmm_into(r, pad_i, bufs[0][0])
    cur_i = _transposed_product(sub, g_u, n_items)
    acc_i = pad_i.index_add_(0, item_rows, g_ego_i)  # pad_i is no longer read as G_i below
    acc_u.add_(cur_u)
    acc_i.add_(cur_i)
    for layer in range(1, n_layers):
        if layer == n_layers - 1:  # the last layer adds straight into the sums
            acc_u.addmm_(r, cur_i)
            acc_i.addmm_(r_t, cur_u)
            break
        cur_u, cur_i = bipartite_hop(r, r_t, cur_u, cur_i, *bufs[layer % 2])
        acc_u.add_(cur_u)
        acc_i.add_(cur_i)
    return acc_u, acc_i


class _BatchRowsLayerMean(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        r: torch.Tensor,
        r_t: torch.Tensor,
        users: torch.Tensor,
        items: torch.Tensor,
        n_layers: int,
        user_rows: torch.Tensor,
        item_rows: torch.Tensor,
    ) -> BatchRows:
        sub, _ = csr_rows(r, user_rows)
        ctx.r, ctx.r_t, ctx.sub, ctx.n_layers = r, r_t, sub, n_layers
        ctx.user_rows, ctx.item_rows = user_rows, item_rows
        ctx.shapes = (users.shape[0], items.shape[0])
        with torch.no_grad():
            return _forward(r, r_t, sub, users, items, n_layers, user_rows, item_rows)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:
        gu, gi = _backward(
            ctx.r,
            ctx.r_t,
            ctx.sub,
            ctx.n_layers,
            ctx.user_rows,
            ctx.item_rows,
            ctx.shapes,
            grads,  # type: ignore[arg-type]
        )
        return None, None, gu, gi, None, None, None


def layer_mean_batch_rows(
    r: torch.Tensor,
    r_t: torch.Tensor,
    users: torch.Tensor,
    items: torch.Tensor,
    n_layers: int,
    user_rows: torch.Tensor,
    item_rows: torch.Tensor,
) -> BatchRows:
    """LightGCN Eqs. 3-4 for a training step, on the batch's rows only.

    r = R̂ [U, I] and r_t = R̂ᵀ [I, U] (sparse CSR, :func:`modalrec.graph.normalized_interactions`); users [U, d],
    items [I, d] (layer 0); user_rows [S], item_rows [T] distinct int64 indices. Returns the layer means of the
    selected users [S, d] and items [T, d] and their layer-0 rows, equal to
    ``bipartite_layer_mean(...)[0][user_rows]``, ``[1][item_rows]``, ``users[user_rows]``, ``items[item_rows]``,
    with the same gradients.
    """
    if not use_fast_path(r, r_t, users, items, user_rows, item_rows):
        out_u, out_i = layer_mean_reference(r, r_t, users, items, n_layers)
        return BatchRows(
            out_u.index_select(0, user_rows),
            out_i.index_select(0, item_rows),
            users.index_select(0, user_rows),
            items.index_select(0, item_rows),
        )
    if not (users.requires_grad or items.requires_grad):
        sub, _ = csr_rows(r, user_rows)
        return _forward(r, r_t, sub, users, items, n_layers, user_rows, item_rows)
    return BatchRows(*_BatchRowsLayerMean.apply(r, r_t, users, items, n_layers, user_rows, item_rows))
