"""Sparse products over a fixed edge pattern whose edge values are learned (GRCN's refined user-item graph).

A model such as GRCN recomputes, at every step, one weight per training interaction and then (a) propagates
over the weighted graph and (b) needs per-edge dot products <a_u, b_i>. Written with gathers, both build
[|E|, d] tensors (0.2 GB each at 1M interactions, d = 64) that autograd keeps for the backward pass. Here the
pattern (rows, cols) is compressed once into CSR slots and both operations run as sparse kernels:

* :meth:`EdgePattern.spmm` — out = A(values) @ x, the sparse-dense product (SpMM), and its transpose;
* :meth:`EdgePattern.dot` — <a[rows[e]], b[cols[e]]> for every edge, the sampled dense-dense product (SDDMM).

They are each other's adjoints, so the backward pass of each is the other one: no [|E|, d] tensor is ever
built or saved, and the CSR kernels are 4-12x faster on CPU than the gathers (1M edges, d = 64, one thread:
dot 1.39 s -> 0.12 s, SpMM 0.55 s -> 0.11 s). Duplicate (row, col) pairs are allowed: their values add up in
the product, and each duplicate gets the same dot product.

Both also have a plain-PyTorch reference path (gathers and a scatter, differentiated by autograd), taken off the
CPU or when forced (:mod:`modalrec.dispatch`).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from modalrec.dispatch import use_fast_path


def _compress(sorted_rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """CSR row pointer [n_rows + 1] of row indices sorted ascending."""
    counts = torch.bincount(sorted_rows, minlength=n_rows)
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # torch flags sparse CSR as "beta"; it is the fast CPU path
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size=shape, check_invariants=False)


class EdgePattern:
    """The sparsity pattern of an [n_rows, n_cols] matrix given as an edge list (rows, cols), each [E].

    Distinct (row, col) pairs become CSR "slots" in row-major order; ``slot[e]`` is edge e's slot. The
    transposed matrix reuses the same slots in column-major order (``t_order``).
    """

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int) -> None:
        if rows.shape != cols.shape or rows.dim() != 1:
            raise ValueError("rows and cols must be 1-D tensors of the same length")
        self.n_rows, self.n_cols = int(n_rows), int(n_cols)
        keys, slot = torch.unique(rows * n_cols + cols, sorted=True, return_inverse=True)
        self.slot = slot  # [E] -> slot index
        self.n_slots = int(keys.numel())
        self.duplicates = self.n_slots != rows.numel()
        slot_rows, slot_cols = keys // n_cols, keys % n_cols
        self.slot_rows, self.slot_cols = slot_rows, slot_cols
        self.crow, self.col = _compress(slot_rows, self.n_rows), slot_cols
        self.t_order = torch.argsort(slot_cols * n_rows + slot_rows)  # slots in column-major order
        self.crow_t, self.col_t = _compress(slot_cols[self.t_order], self.n_cols), slot_rows[self.t_order]

    # ---- building blocks on slot values ([n_slots]) --------------------------------------------------------
    def slot_values(self, values: torch.Tensor) -> torch.Tensor:
        """Per-edge values [E] -> per-slot values [n_slots] (duplicates summed); differentiable."""
        if not self.duplicates:
            return values.new_empty(self.n_slots).index_copy(0, self.slot, values)
        return values.new_zeros(self.n_slots).index_add(0, self.slot, values)

    def matrix(self, slot_values: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """The sparse CSR matrix with these slot values: [n_rows, n_cols], or its transpose."""
        if transpose:
            return _csr(self.crow_t, self.col_t, slot_values[self.t_order], (self.n_cols, self.n_rows))
        return _csr(self.crow, self.col, slot_values, (self.n_rows, self.n_cols))

    def sampled(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """SDDMM: <a[r], b[c]> for every slot (r, c): a [n_rows, d], b [n_cols, d] -> [n_slots]. No autograd."""
        pattern = self.matrix(a.new_zeros(self.n_slots))
        return torch.sparse.sampled_addmm(pattern, a, b.T, beta=0.0).values()

    # ---- the differentiable operations ---------------------------------------------------------------------
    def spmm(self, values: torch.Tensor, x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """A @ x with A[rows[e], cols[e]] += values[e]: values [E], x [n_cols, d] -> [n_rows, d].

        With ``transpose`` the product is Aᵀ @ x: x [n_rows, d] -> [n_cols, d]. Differentiable in both.
        """
        slot_values = self.slot_values(values)
        if not use_fast_path(slot_values, x, self.crow):
            into, source = (self.slot_cols, self.slot_rows) if transpose else (self.slot_rows, self.slot_cols)
            n_out = self.n_cols if transpose else self.n_rows
            messages = x.index_select(0, source) * slot_values.unsqueeze(1)
            return x.new_zeros(n_out, x.shape[1]).index_add(0, into, messages)
        result: torch.Tensor = _PatternSpmm.apply(self, slot_values, x, transpose)
        return result

    def dot(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """<a[rows[e]], b[cols[e]]> for every edge: a [n_rows, d], b [n_cols, d] -> [E]. Differentiable."""
        if not use_fast_path(a, b, self.crow):
            return (a.index_select(0, self.slot_rows) * b.index_select(0, self.slot_cols)).sum(1)[self.slot]
        slot_dots: torch.Tensor = _PatternDot.apply(self, a, b)
        return slot_dots[self.slot]


def _product(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    out = torch.empty(matrix.shape[0], x.shape[1], dtype=x.dtype, device=x.device)
    return torch.addmm(out, matrix, x, beta=0.0, out=out)  # into a fresh buffer: no zero fill + copy


class _PatternSpmm(torch.autograd.Function):
    """out = A(v) x. Backward: ∂L/∂x = A(v)ᵀ g (a SpMM); ∂L/∂v_s = <g[r_s], x[c_s]> (an SDDMM)."""

    @staticmethod
    def forward(ctx: Any, pattern: EdgePattern, slot_values: torch.Tensor, x: torch.Tensor, transpose: bool):
        ctx.pattern, ctx.transpose = pattern, transpose
        ctx.save_for_backward(slot_values, x)
        return _product(pattern.matrix(slot_values, transpose), x.contiguous())

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        pattern: EdgePattern = ctx.pattern
        slot_values, x = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_values = grad_x = None
        if ctx.needs_input_grad[1]:  # slot (r, c) of A: out[r] += v x[c]  (transposed: out[c] += v x[r])
            grad_values = pattern.sampled(x, grad_out) if ctx.transpose else pattern.sampled(grad_out, x)
        if ctx.needs_input_grad[2]:
            grad_x = _product(pattern.matrix(slot_values, not ctx.transpose), grad_out)
        return None, grad_values, grad_x, None


class _PatternDot(torch.autograd.Function):
    """s_slot = <a[r], b[c]>. Backward: ∂L/∂a = A(g) b and ∂L/∂b = A(g)ᵀ a, two SpMMs with the slot gradients."""

    @staticmethod
    def forward(ctx: Any, pattern: EdgePattern, a: torch.Tensor, b: torch.Tensor):
        ctx.pattern = pattern
        ctx.save_for_backward(a, b)
        return pattern.sampled(a.contiguous(), b.contiguous())

    @staticmethod
    def backward(ctx: Any, grad_slots: torch.Tensor) -> tuple[Any, ...]:
        pattern: EdgePattern = ctx.pattern
        a, b = ctx.saved_tensors
        grad_slots = grad_slots.contiguous()
        grad_a = _product(pattern.matrix(grad_slots), b.contiguous()) if ctx.needs_input_grad[1] else None
        grad_b = (
            _product(pattern.matrix(grad_slots, transpose=True), a.contiguous())
            if ctx.needs_input_grad[2]
            else None
        )
        return None, grad_a, grad_b
