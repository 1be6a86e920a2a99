"""Dropout on the stored entries of a sparse matrix (edge dropout of NGCF/HCCF-style message passing)."""

from __future__ import annotations

import torch


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
