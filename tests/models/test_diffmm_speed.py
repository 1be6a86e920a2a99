"""DiffMM's fast and memory-saving paths against the direct computations they replace, on tiny seeded cases: the
reverse chain carried in the denoiser's hidden space, the InfoNCE over a batch's distinct nodes, and diffusion
blocks taken in row pieces."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from modalrec.data import Dataset
from modalrec.errors import ConfigError
from modalrec.losses import nce_block
from modalrec.models import diffmm, diffmm_contrast
from modalrec.models.base import TrainSettings
from modalrec.models.diffmm import DiffMM
from modalrec.models.diffmm_contrast import contrast
from modalrec.models.diffmm_parts import (
    Denoiser,
    DiffusionSchedule,
    ReverseChain,
    diffusion_losses,
    gd_backward,
    reverse_rows_direct,
)


def _rows(n_rows: int, n_items: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n_rows, n_items, generator=gen) < 0.15).float()


@pytest.mark.parametrize("hidden", [(16,), (16, 12)])
@pytest.mark.parametrize("noise_steps", [0, 2])
def test_reverse_chain_matches_the_step_by_step_rows(hidden: tuple[int, ...], noise_steps: int) -> None:
    torch.manual_seed(0)
    n_items = 40
    schedule = DiffusionSchedule(steps=5, noise_scale=1.0, noise_min=0.01, noise_max=0.2)
    den = Denoiser(n_items, hidden, time_dim=6, dropout=0.5)
    for p in den.parameters():  # weights far from the near-zero init, so the rows are not dominated by x_0
        torch.nn.init.normal_(p, 0.0, 0.5)
    x0 = _rows(9, n_items, 1)
    torch.manual_seed(3)  # the same start noise for both paths when noise_steps > 0
    expected = reverse_rows_direct(schedule, den, x0, noise_steps)
    torch.manual_seed(3)
    chain = ReverseChain(schedule, den)
    assert not chain.direct
    got = chain.rows(x0, noise_steps)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(chain.topk(x0, 3, 0), torch.topk(reverse_rows_direct(schedule, den, x0, 0), 3).indices)
    assert den.training  # generation leaves the training flag as it was


def test_reverse_chain_direct_where_the_input_is_not_linear() -> None:
    torch.manual_seed(0)
    schedule = DiffusionSchedule(steps=3, noise_scale=1.0, noise_min=0.01, noise_max=0.2)
    x0 = _rows(5, 20, 2)
    for den in (Denoiser(20, (8,), 4, 0.5, norm=True), Denoiser(20, (), 4, 0.5)):
        chain = ReverseChain(schedule, den)
        assert chain.direct
        assert torch.equal(chain.rows(x0, 0), reverse_rows_direct(schedule, den, x0, 0))


@pytest.mark.parametrize("block", [1 << 24, 60])  # 60 elements over 30 candidates: two anchors per block
@pytest.mark.parametrize("temperature", [0.5, 0.02])  # 0.02: 1/τ = 50, the shifted general path
def test_contrast_over_distinct_nodes_matches_every_row(
    temperature: float, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(diffmm_contrast, "BLOCK_ELEMENTS", block)
    torch.manual_seed(0)
    a = torch.randn(30, 8, requires_grad=True)
    b = torch.randn(30, 8, requires_grad=True)
    nodes = torch.tensor([3, 7, 3, 3, 0, 29, 7, 12])  # repeats, as in a batch of interactions

    def reference() -> torch.Tensor:
        a_n, b_n = F.normalize(a, dim=1), F.normalize(b, dim=1)
        return nce_block(a_n[nodes], b_n[nodes], b_n, temperature, True) / len(nodes)

    expected = reference()
    grads = torch.autograd.grad(expected, (a, b))
    got = contrast(a, b, nodes, temperature)
    got_grads = torch.autograd.grad(got, (a, b))
    torch.testing.assert_close(got, expected)
    for g, e in zip(got_grads, grads, strict=True):
        torch.testing.assert_close(g, e)
    # hand check of one term: a single node is -log softmax of its own column
    one = torch.tensor([5])
    a_n, b_n = F.normalize(a, dim=1), F.normalize(b, dim=1)
    logits = (a_n[5] @ b_n.T) / temperature
    torch.testing.assert_close(contrast(a, b, one, temperature), -torch.log_softmax(logits, 0)[5])


def test_diffusion_blocks_caps_the_denoiser_updates(tiny: Dataset) -> None:
    """300 users in blocks of 128: a full pass steps each denoiser 3 times, ``diffusion_blocks=1`` once; both
    regenerate every user's graph."""
    for cap, steps in ((0, 3), (1, 1)):
        torch.manual_seed(0)
        model = DiffMM(
            tiny, replace(DiffMM.Config(), denoiser_hidden=(16,), diffusion_batch=128, diffusion_blocks=cap)
        )
        opts = model.configure_optimizers(TrainSettings(lr=1e-3))
        top_before = model.user_top.clone()
        model.diffusion_epoch(opts[1])
        assert {int(s["step"]) for s in opts[1].state.values()} == {steps}
        assert len(opts[1].state) == len(list(model.denoisers.parameters()))
        assert (model.user_top != top_before).any(dim=2).any(dim=0).float().mean() > 0.5
    with pytest.raises(ConfigError):
        DiffMM(tiny, replace(DiffMM.Config(), diffusion_blocks=-1))


@pytest.mark.parametrize("piece", [1, 3, 4])
def test_block_in_pieces_gives_the_whole_block_loss_and_gradients(piece: int) -> None:
    """L_gd of a block of 10 rows and its gradients: one backward over the whole block against pieces of ``piece``
    rows (each weighted by its share of the block), with the same steps t and noise ε and no dropout. In float64,
    so that only the summation order differs."""
    torch.manual_seed(0)
    n_items, d = 30, 4
    schedule = DiffusionSchedule(5, 0.1, 1e-4, 0.02).double()
    den = Denoiser(n_items, (16,), 6, dropout=0.0).double()
    x0 = _rows(10, n_items, 1).double()
    feats, ids = torch.randn(n_items, d, dtype=torch.float64), torch.randn(n_items, d, dtype=torch.float64)
    t = torch.randint(0, 5, (10,))
    noise = torch.randn(10, n_items, dtype=torch.float64)
    elbo, msi = diffusion_losses(schedule, den, x0, feats, x0 @ ids, t, noise)
    whole = elbo + 0.1 * msi
    expected = torch.autograd.grad(whole, list(den.parameters()))
    den.zero_grad(set_to_none=True)
    parts = [slice(a, a + piece) for a in range(0, 10, piece)]
    got = gd_backward(
        schedule,
        den,
        ((x0[p], x0[p] @ ids) for p in parts),
        10,
        feats,
        0.1,
        draws=((t[p], noise[p]) for p in parts),
    )
    value = float(whole.detach())
    assert abs(got - value) <= 1e-12 * max(1.0, abs(value))
    for p, g in zip(den.parameters(), expected, strict=True):
        assert p.grad is not None
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12)


def test_pieces_leave_regeneration_unchanged_and_bound_the_piece_size(tiny: Dataset) -> None:
    """Generated graphs are formed row by row: pieces of 7 rows give the same top-k items as whole blocks; the
    default piece keeps a [rows, I] tensor within PIECE_ELEMENTS."""
    tops = []
    for piece in (0, 7):
        torch.manual_seed(0)
        model = DiffMM(tiny, replace(DiffMM.Config(), denoiser_hidden=(16,), diffusion_piece=piece))
        model.regenerate()
        tops.append(model.user_top.clone())
    torch.testing.assert_close(tops[0], tops[1], rtol=0, atol=0)
    assert model._piece_rows() == 7
    default = DiffMM(tiny, replace(DiffMM.Config(), denoiser_hidden=(16,)))
    assert default._piece_rows() == min(default.cfg.diffusion_batch, diffmm.PIECE_ELEMENTS // tiny.n_items)
    with pytest.raises(ConfigError):
        DiffMM(tiny, replace(DiffMM.Config(), diffusion_piece=-1))
