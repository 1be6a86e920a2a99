"""Chunked contrastive losses recompute their blocks in the backward pass: values and gradients must not change.

The InfoNCE blocks have a hand-written backward (losses._NceBlock); it is checked against autograd through the
plain logsumexp formula and by finite differences (gradcheck, float64).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modalrec.losses import info_nce, info_nce_all
from modalrec.models.item_graphs import fusion_contrastive_loss


def _grads(loss: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, tensors))


def _naive_info_nce(a: torch.Tensor, b: torch.Tensor, tau: float, normalize: bool = True) -> torch.Tensor:
    if normalize:
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    logits = a @ b.T / tau
    return (torch.logsumexp(logits, dim=1) - logits.diagonal()).mean()


@pytest.mark.parametrize(
    ("tau", "normalize"),
    [(0.2, True), (0.02, True), (1.0, False), (0.05, False)],  # bounded fast path, and both logsumexp paths
)
def test_hand_written_nce_gradient_matches_autograd(tau: float, normalize: bool) -> None:
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(30, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(30, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    got = info_nce(a, b, tau, chunk_size=8, normalize=normalize)
    ref = _naive_info_nce(a, b, tau, normalize)
    torch.testing.assert_close(got, ref)
    for g, r in zip(_grads(got, a, b), _grads(_naive_info_nce(a, b, tau, normalize), a, b), strict=True):
        torch.testing.assert_close(g, r)
    torch.autograd.gradcheck(lambda x, y: info_nce(x, y, tau, chunk_size=8, normalize=normalize), (a, b))


def test_info_nce_all_matches_a_dense_oracle() -> None:
    gen = torch.Generator().manual_seed(4)
    a = torch.randn(25, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(25, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([0, 4, 4, 13, 24])
    got = info_nce_all(a, b, index, 0.1, chunk_size=2)
    an, bn = F.normalize(a, dim=1), F.normalize(b, dim=1)
    logits = an[index] @ bn.T / 0.1
    ref = (torch.logsumexp(logits, dim=1) - logits[torch.arange(5), index]).mean()
    torch.testing.assert_close(got, ref)
    for g, r in zip(_grads(got, a, b), _grads(ref, a, b), strict=True):
        torch.testing.assert_close(g, r)


@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_info_nce_chunks_match_the_naive_loss_and_gradients(chunk: int) -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(50, 8, generator=gen, requires_grad=True)
    b = torch.randn(50, 8, generator=gen, requires_grad=True)
    ref = _naive_info_nce(a, b, 0.2)
    got = info_nce(a, b, 0.2, chunk_size=chunk)
    torch.testing.assert_close(got, ref)
    for g, r in zip(_grads(got, a, b), _grads(_naive_info_nce(a, b, 0.2), a, b), strict=True):
        torch.testing.assert_close(g, r)


def test_info_nce_all_gradients_equal_across_chunk_sizes() -> None:
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(40, 8, generator=gen, requires_grad=True)
    b = torch.randn(40, 8, generator=gen, requires_grad=True)
    index = torch.tensor([3, 9, 17, 25, 31])
    small, big = info_nce_all(a, b, index, 0.5, chunk_size=2), info_nce_all(a, b, index, 0.5, chunk_size=100)
    torch.testing.assert_close(small, big)
    for g, r in zip(
        _grads(small, a, b), _grads(info_nce_all(a, b, index, 0.5, chunk_size=100), a, b), strict=True
    ):
        torch.testing.assert_close(g, r)


def test_micro_fusion_loss_gradients_equal_across_chunk_sizes() -> None:
    gen = torch.Generator().manual_seed(2)
    views = [torch.randn(30, 8, generator=gen, requires_grad=True) for _ in range(2)]
    fused = torch.randn(30, 8, generator=gen, requires_grad=True)
    small = fusion_contrastive_loss(views, fused, 0.5, chunk_size=4)
    big = fusion_contrastive_loss(views, fused, 0.5, chunk_size=1000)
    torch.testing.assert_close(small, big)
    for g, r in zip(_grads(small, *views, fused), _grads(big, *views, fused), strict=True):
        torch.testing.assert_close(g, r)
