"""Chunked contrastive losses recompute their blocks in the backward pass: values and gradients must not change."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modalrec.losses import info_nce, info_nce_all
from modalrec.models.item_graphs import fusion_contrastive_loss


def _grads(loss: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, tensors))


def _naive_info_nce(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    logits = a @ b.T / tau
    return (torch.logsumexp(logits, dim=1) - logits.diagonal()).mean()


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
