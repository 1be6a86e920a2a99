"""graph.spmm_edges: blocked edge-list product, its hand-written backward against autograd and gradcheck."""

from __future__ import annotations

import pytest
import torch

import modalrec.graph.propagation as propagation
from modalrec.graph import spmm_edges


def _edges(n_rows: int = 7, n_cols: int = 5, n_edges: int = 23, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, n_rows, (n_edges,), generator=g)
    cols = torch.randint(0, n_cols, (n_edges,), generator=g)  # duplicates (r, c) pairs included: they add up
    return rows, cols, torch.randn(n_edges, generator=g, dtype=torch.float64)


def _reference(
    rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, x: torch.Tensor, n: int
) -> torch.Tensor:
    dense = torch.zeros(n, x.shape[0], dtype=x.dtype).index_put_((rows, cols), vals, accumulate=True)
    return dense @ x


@pytest.mark.parametrize("block", [4, 1 << 18])  # several blocks, and one
def test_forward_and_gradients_match_the_dense_product(block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(propagation, "EDGE_BLOCK", block)
    rows, cols, vals = _edges()
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    v = vals.clone().requires_grad_(True)
    out = spmm_edges(rows, cols, v, x, 7)
    ref_x = x.detach().clone().requires_grad_(True)
    ref_v = vals.clone().requires_grad_(True)
    ref = _reference(rows, cols, ref_v, ref_x, 7)
    torch.testing.assert_close(out, ref)
    w = torch.randn(7, 3, dtype=torch.float64)
    (out * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(x.grad, ref_x.grad)
    torch.testing.assert_close(v.grad, ref_v.grad)
    assert torch.autograd.gradcheck(
        lambda a, b: spmm_edges(rows, cols, a, b, 7), (v.detach().requires_grad_(), x)
    )


def test_without_gradients_is_the_same_product() -> None:
    rows, cols, vals = _edges(seed=1)
    x = torch.randn(5, 2, dtype=torch.float64)
    torch.testing.assert_close(spmm_edges(rows, cols, vals, x, 7), _reference(rows, cols, vals, x, 7))
