"""edge_pattern.EdgePattern: CSR SpMM and SDDMM over a fixed pattern, against dense oracles and gradcheck."""

from __future__ import annotations

import pytest
import torch

from modalrec.graph.edge_pattern import EdgePattern

N_ROWS, N_COLS = 7, 5


def _edges(n_edges: int, seed: int, unique: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if unique:
        keys = torch.randperm(N_ROWS * N_COLS, generator=g)[:n_edges]
        rows, cols = keys // N_COLS, keys % N_COLS
    else:  # repeated (row, col) pairs included: their values add up
        rows = torch.randint(0, N_ROWS, (n_edges,), generator=g)
        cols = torch.randint(0, N_COLS, (n_edges,), generator=g)
    return rows, cols, torch.randn(n_edges, generator=g, dtype=torch.float64)


def _dense(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
    return torch.zeros(N_ROWS, N_COLS, dtype=vals.dtype).index_put((rows, cols), vals, accumulate=True)


@pytest.mark.parametrize("unique", [True, False])
@pytest.mark.parametrize("transpose", [False, True])
def test_spmm_and_its_gradients_match_the_dense_product(unique: bool, transpose: bool) -> None:
    rows, cols, vals = _edges(20, seed=0, unique=unique)
    pattern = EdgePattern(rows, cols, N_ROWS, N_COLS)
    assert pattern.duplicates == (not unique)
    x = torch.randn(N_ROWS if transpose else N_COLS, 3, dtype=torch.float64)
    v = vals.clone().requires_grad_(True)
    xx = x.clone().requires_grad_(True)
    out = pattern.spmm(v, xx, transpose=transpose)
    ref_v, ref_x = vals.clone().requires_grad_(True), x.clone().requires_grad_(True)
    dense = _dense(rows, cols, ref_v)
    ref = (dense.T if transpose else dense) @ ref_x
    torch.testing.assert_close(out, ref)
    w = torch.randn_like(ref)
    (out * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(xx.grad, ref_x.grad)
    torch.testing.assert_close(v.grad, ref_v.grad)
    assert torch.autograd.gradcheck(
        lambda a, b: pattern.spmm(a, b, transpose=transpose),
        (vals.clone().requires_grad_(), x.requires_grad_()),
    )


@pytest.mark.parametrize("unique", [True, False])
def test_dot_is_the_per_edge_inner_product_with_gradients(unique: bool) -> None:
    rows, cols, _ = _edges(20, seed=1, unique=unique)
    pattern = EdgePattern(rows, cols, N_ROWS, N_COLS)
    a = torch.randn(N_ROWS, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(N_COLS, 4, dtype=torch.float64, requires_grad=True)
    out = pattern.dot(a, b)
    ref = (a[rows] * b[cols]).sum(1)  # the gather oracle this replaces
    torch.testing.assert_close(out, ref)
    w = torch.randn(len(rows), dtype=torch.float64)
    ga, gb = torch.autograd.grad((out * w).sum(), (a, b))
    ra, rb = torch.autograd.grad((ref * w).sum(), (a, b))
    torch.testing.assert_close(ga, ra)
    torch.testing.assert_close(gb, rb)
    assert torch.autograd.gradcheck(pattern.dot, (a, b))


def test_rows_and_columns_without_edges_give_zeros() -> None:
    rows, cols = torch.tensor([0, 0, 3]), torch.tensor([4, 1, 1])
    pattern = EdgePattern(rows, cols, N_ROWS, N_COLS)
    out = pattern.spmm(torch.ones(3), torch.ones(N_COLS, 2))
    assert out[[1, 2, 4, 5, 6]].abs().sum() == 0
    torch.testing.assert_close(out[0], torch.full((2,), 2.0))
    out_t = pattern.spmm(torch.ones(3), torch.ones(N_ROWS, 2), transpose=True)
    torch.testing.assert_close(out_t[:, 0], torch.tensor([0.0, 2.0, 0.0, 0.0, 1.0]))


def test_mismatched_edge_lists_are_rejected() -> None:
    with pytest.raises(ValueError, match="same length"):
        EdgePattern(torch.tensor([0, 1]), torch.tensor([0]), 2, 2)
