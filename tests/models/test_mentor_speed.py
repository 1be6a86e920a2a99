"""MENTOR's shared-computation and memory-saving forward against the per-view computation it replaces, on a tiny
seeded case: the same views, losses and gradients."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from modalrec.data import Dataset
from modalrec.data.sampling import BPRSampler
from modalrec.models.mentor import MENTOR, csr_rows_mm, normalized_concat, predicted_cosine_mean


def test_shared_inputs_and_tiled_views_match_the_per_view_forward(tiny: Dataset) -> None:
    torch.manual_seed(0)
    model = MENTOR(tiny, MENTOR.Config())
    model.train()
    torch.manual_seed(5)
    emb = model.forward()
    extras = emb.extras or {}
    # reference: every view through the encoders' own forward, the perturbed ones drawing the same noise
    torch.manual_seed(5)
    channels = model._channels()
    noisy = [model._fuse(model._channels(model.cfg.noise_eps, view)) for view in range(2)]
    torch.testing.assert_close(extras["fused"], model._fuse(channels), rtol=0, atol=0)
    for got, expected in zip(extras["noisy"], noisy, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    m = model.n_modalities
    h_id = model.id_encoder(model.adj, model.id_feat)
    torch.testing.assert_close(
        torch.cat(extras["guide"]).repeat(1, m), model._fuse([h_id] * m, weighted=False)
    )
    for got, c in zip(extras["modal"], channels, strict=True):
        torch.testing.assert_close(torch.cat(got).repeat(1, m), model._fuse([c] * m, weighted=False))


@pytest.mark.parametrize("copies", [1, 2, 3])
def test_tiled_stats_are_those_of_the_tiled_table(copies: int) -> None:
    torch.manual_seed(0)
    users = torch.randn(37, 5, dtype=torch.float64, requires_grad=True)
    items = torch.randn(11, 5, dtype=torch.float64, requires_grad=True)
    var, mean = MENTOR.tiled_stats((users, items), copies)
    tiled = torch.cat([users, items]).repeat(1, copies)
    torch.testing.assert_close(var, tiled.var(), rtol=1e-12, atol=0)
    torch.testing.assert_close(mean, tiled.mean(), rtol=1e-12, atol=1e-15)
    got = torch.autograd.grad(2.0 * var - 3.0 * mean, [users, items])
    expected = torch.autograd.grad(2.0 * tiled.var() - 3.0 * tiled.mean(), [users, items])
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_normalized_concat_matches_normalize_of_the_concatenation() -> None:
    torch.manual_seed(0)
    a = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 4, dtype=torch.float64)
    b[2] = 0.0  # a zero row: the clamp holds
    b.requires_grad_(True)
    weights = torch.randn(11, 4, dtype=torch.float64)
    got = normalized_concat(a, b)
    expected = F.normalize(torch.cat([a, b]), dim=1)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    grads = torch.autograd.grad((got * weights).sum(), [a, b])
    ref = torch.autograd.grad((expected * weights).sum(), [a, b])
    for x, y in zip(grads, ref, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_csr_rows_product_matches_the_dense_rows() -> None:
    torch.manual_seed(0)
    dense = torch.rand(9, 7) * (torch.rand(9, 7) < 0.4)
    dense[4] = 0.0  # an empty row
    x = torch.randn(7, 3, requires_grad=True)
    rows = torch.tensor([4, 0, 8, 0])
    got = csr_rows_mm(dense.to_sparse_csr(), rows, x)
    expected = (dense @ x)[rows]
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    (g_got,) = torch.autograd.grad(got.square().sum(), x)
    (g_exp,) = torch.autograd.grad(expected.square().sum(), x)
    torch.testing.assert_close(g_got, g_exp, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("item_layers", [1, 2])
def test_batch_rows_forward_gives_the_whole_view_losses_and_gradients(
    tiny: Dataset, tied: bool, item_layers: int
) -> None:
    """batch_loss forms only the batch's rows of the perturbed views; loss(batch, forward()) indexes the whole
    [N, M·d] views (the computation it replaces). Same noise draws, same terms and gradients."""
    torch.manual_seed(0)
    model = MENTOR(tiny, replace(MENTOR.Config(), tied_noise_views=tied, n_item_layers=item_layers))
    model.train()
    batch = next(iter(BPRSampler(tiny.train, 128, seed=0).epoch(0)))

    def run(rows: bool) -> tuple[dict[str, float], list[torch.Tensor]]:
        torch.manual_seed(7)
        model.zero_grad(set_to_none=True)
        terms = model.batch_loss(batch) if rows else model.loss(batch, model.forward())
        torch.stack(list(terms.values())).sum().backward()
        grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
        return {k: float(v.detach()) for k, v in terms.items()}, grads

    with_rows, grads_rows = run(True)
    whole, grads_whole = run(False)
    assert set(with_rows) == set(whole) == {"bpr", "reg", "align", "mask_f", "mask_g"}
    for k in whole:
        assert abs(with_rows[k] - whole[k]) <= 1e-6 * max(1.0, abs(whole[k])), k
    for a, b in zip(grads_rows, grads_whole, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in grads_rows)


@pytest.mark.parametrize("rows", [3, 64])
def test_predicted_cosine_matches_the_composite_functions(rows: int) -> None:
    """L_mask_f's blockwise cosine with gradients formed in the forward pass against
    F.cosine_similarity(target, predictor(x)).mean() with autograd: values and gradients of x, W and b."""
    torch.manual_seed(0)
    predictor = torch.nn.Linear(6, 6)
    x = torch.randn(20, 6, requires_grad=True)
    target = F.dropout(torch.randn(20, 6), 0.5, training=True)
    target[3] = 0.0  # a row the dropout emptied
    got = predicted_cosine_mean(x, predictor, target, rows=rows)
    grads = torch.autograd.grad(3.0 * got, [x, predictor.weight, predictor.bias])
    expected = F.cosine_similarity(target, predictor(x), dim=1).mean()
    ref = torch.autograd.grad(3.0 * expected, [x, predictor.weight, predictor.bias])
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    for a, b in zip(grads, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
