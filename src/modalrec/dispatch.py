"""Which implementation a custom kernel runs: the verified fast path or the plain-PyTorch reference.

Every custom autograd Function of the package (the sparse kernels of :mod:`modalrec.graph` with their
hand-written backward passes, CSR products written into preallocated buffers and int32 CSR indices; the InfoNCE
blocks of :mod:`modalrec.losses` and :mod:`modalrec.models.item_graphs`) has been verified on CPU only. Each one
therefore comes with a reference path written with ordinary differentiable PyTorch operations (autograd derives
its backward pass), and the fast path is taken only when every tensor involved lives on the CPU. On any other
device the reference path runs, so a model moved with ``.to(device)`` never reaches CPU-only code.

The reference path can also be forced on CPU, to compare both paths (values and gradients) on the same inputs:
set ``MODALREC_REFERENCE_KERNELS=1`` for a whole process, or use :func:`reference_kernels` as a context manager.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

REFERENCE_ENV = "MODALREC_REFERENCE_KERNELS"
_forced: ContextVar[bool] = ContextVar("modalrec_reference_kernels", default=False)


def reference_forced() -> bool:
    """True when the reference path was asked for (environment variable or :func:`reference_kernels`)."""
    return _forced.get() or os.environ.get(REFERENCE_ENV, "0") not in ("", "0")


def use_fast_path(*tensors: torch.Tensor) -> bool:
    """True when the verified fast kernels may run: every tensor on the CPU and the reference not forced."""
    return not reference_forced() and all(t.device.type == "cpu" for t in tensors)


@contextmanager
def reference_kernels(enabled: bool = True) -> Iterator[None]:
    """Within the block every custom kernel takes its reference path (when ``enabled``)."""
    token = _forced.set(enabled)
    try:
        yield
    finally:
        _forced.reset(token)
