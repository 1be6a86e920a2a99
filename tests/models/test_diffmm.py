"""DiffMM: the diffusion schedule against its closed form, the denoiser on a planted case, the generated graphs,
the blockwise diffusion pass, planted-signal recovery and the ablation variants."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from tests.models.model_helpers import popularity_recall, recall_at, train

from modalrec.data import Dataset
from modalrec.errors import ConfigError
from modalrec.models.base import TrainSettings
from modalrec.models.diffmm import DiffMM
from modalrec.models.diffmm_parts import (
    Denoiser,
    DiffusionSchedule,
    diffusion_losses,
    generate_topk,
    generated_adjacency,
)


def _schedule() -> DiffusionSchedule:
    return DiffusionSchedule(steps=4, noise_scale=1.0, noise_min=0.05, noise_max=0.4)


def test_schedule_values_by_hand() -> None:
    s = _schedule()
    # variances 0.05, 0.1667, 0.2833, 0.4; β_0 fixed to 1e-4; β_t = 1 - (1-v_t)/(1-v_{t-1})
    v = np.linspace(0.05, 0.4, 4)
    expected = [1e-4] + [1 - (1 - v[t]) / (1 - v[t - 1]) for t in (1, 2, 3)]
    torch.testing.assert_close(s.betas, torch.tensor(expected, dtype=torch.float32))
    torch.testing.assert_close(s.alphas_cumprod, torch.cumprod(1 - s.betas, 0))


def test_forward_process_matches_its_closed_form() -> None:
    """Composing q(x_t | x_{t-1}) step by step gives N(√ᾱ_t x_0, (1-ᾱ_t) I), and q_sample draws from it."""
    s = _schedule()
    x0 = torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.0]])
    mean_coef, var = 1.0, 0.0
    for t in range(s.steps):
        beta = float(s.betas[t])
        mean_coef *= math.sqrt(1 - beta)  # x_t = √(1-β_t) x_{t-1} + √β_t ε_t
        var = (1 - beta) * var + beta
        assert math.isclose(mean_coef, math.sqrt(float(s.alphas_cumprod[t])), rel_tol=1e-5)
        assert math.isclose(var, 1 - float(s.alphas_cumprod[t]), rel_tol=1e-5, abs_tol=1e-6)
        # Monte Carlo: 20k draws of the closed form have that mean and variance
        gen = torch.Generator().manual_seed(t)
        noise = torch.randn(20000, 5, generator=gen)
        xt = s.q_sample(x0.expand(20000, 5), torch.full((20000,), t), noise)
        torch.testing.assert_close(xt.mean(0), mean_coef * x0[0], atol=0.03, rtol=0)
        torch.testing.assert_close(xt.var(0), torch.full((5,), var), atol=0.03, rtol=0.05)
    # with zero noise the sample is exactly √ᾱ_t x_0
    t = torch.tensor([2])
    torch.testing.assert_close(s.q_sample(x0, t, torch.zeros_like(x0)), s.alphas_cumprod[2].sqrt() * x0)


def test_posterior_mean_inverts_a_perfect_prediction() -> None:
    """With x̂_0 = x_0 and x_t = √ᾱ_t x_0 (no noise), the posterior mean is √ᾱ_{t-1} x_0."""
    s = _schedule()
    x0 = torch.rand(3, 7)
    for t in range(1, s.steps):
        xt = s.alphas_cumprod[t].sqrt() * x0
        torch.testing.assert_close(s.p_mean(xt, x0, t), s.alphas_cumprod[t - 1].sqrt() * x0)
    torch.testing.assert_close(s.p_mean(s.alphas_cumprod[0].sqrt() * x0, x0, 0), x0)


def test_elbo_weight() -> None:
    s = _schedule()
    t = torch.tensor([0, 1, 3])
    w = s.elbo_weight(t)
    assert w[0] == 1.0
    torch.testing.assert_close(w[1:], s.snr(t[1:] - 1) - s.snr(t[1:]))


def test_denoiser_loss_decreases_and_it_restores_planted_rows() -> None:
    """Rows drawn from 4 planted item groups: after training, generation puts a row's group on top."""
    torch.manual_seed(0)
    n_items, groups = 40, 4
    rng = np.random.default_rng(0)
    member = np.arange(n_items) % groups
    rows = np.zeros((256, n_items), dtype=np.float32)
    user_group = rng.integers(0, groups, 256)
    for r, g in enumerate(user_group):
        items = np.flatnonzero(member == g)
        rows[r, rng.choice(items, 5, replace=False)] = 1.0  # half of the group's 10 items observed
    x0 = torch.from_numpy(rows)
    s = DiffusionSchedule(steps=5, noise_scale=0.1, noise_min=1e-4, noise_max=0.02)
    den = Denoiser(n_items, (64,), 10, dropout=0.5)
    feats, ids = torch.randn(n_items, 8), torch.randn(n_items, 8)
    noise = torch.randn(s.steps, *x0.shape, generator=torch.Generator().manual_seed(1))

    def held_out() -> float:
        """Unweighted reconstruction error over every step with fixed noise, dropout off."""
        den.eval()
        with torch.no_grad():
            err = [
                float(
                    (den(s.q_sample(x0, torch.full((256,), t), noise[t]), torch.full((256,), t)) - x0)
                    .pow(2)
                    .mean()
                )
                for t in range(s.steps)
            ]
        den.train()
        return float(np.mean(err))

    start = held_out()
    opt = torch.optim.Adam(den.parameters(), lr=3e-3)
    for _ in range(300):
        elbo, msi = diffusion_losses(s, den, x0, feats, x0 @ ids)
        opt.zero_grad()
        (elbo + 0.1 * msi).backward()
        opt.step()
    assert held_out() < 0.3 * start
    # generation: the top items of a row belong to its group, including unobserved members
    top = generate_topk(s, den, x0, k=8, noise_steps=0).numpy()
    in_group = member[top] == user_group[:, None]
    assert in_group.mean() > 0.95
    assert den.training  # generation restores the training flag


def test_generated_adjacency_normalised_and_dropped_reproducibly() -> None:
    users, items = np.array([0, 0, 1]), np.array([1, 2, 2])
    g, g_t = generated_adjacency(users, items, 2, 3, keep_rate=1.0, seed=0)
    dense = g.to_dense()
    # degrees with self-loops: u0 3, u1 2, i0 1, i1 2, i2 3
    deg = torch.tensor([3.0, 2.0, 1.0, 2.0, 3.0])
    a = torch.eye(5)
    for u, i in zip(users, items, strict=True):
        a[u, 2 + i] = a[2 + i, u] = 1.0
    torch.testing.assert_close(dense, a / deg.sqrt()[:, None] / deg.sqrt()[None, :])
    torch.testing.assert_close(g_t.to_dense(), dense.T)
    d1, _ = generated_adjacency(users, items, 2, 3, keep_rate=0.5, seed=7)
    d2, _ = generated_adjacency(users, items, 2, 3, keep_rate=0.5, seed=7)
    torch.testing.assert_close(d1.to_dense(), d2.to_dense())
    kept = d1.to_dense()[d1.to_dense() != 0]
    full = dense[d1.to_dense() != 0]
    torch.testing.assert_close(kept, full / 0.5)  # kept entries are rescaled by 1/keep_rate


def _model(data: Dataset, **over: object) -> DiffMM:
    cfg = replace(DiffMM.Config(), denoiser_hidden=(64,), diffusion_batch=128, **over)  # type: ignore[arg-type]
    return DiffMM(data, cfg)


def test_diffusion_pass_trains_only_denoisers_and_regenerates(tiny: Dataset) -> None:
    model = _model(tiny)
    opts = model.configure_optimizers(TrainSettings(lr=1e-3))
    assert len(opts) == 2
    before_ids = model.item_emb.detach().clone()
    before_den = [p.detach().clone() for p in model.denoisers.parameters()]
    seed = model.graph_seed.clone()
    out = model.diffusion_epoch(opts[1])
    assert math.isfinite(out["diffusion"])
    torch.testing.assert_close(model.item_emb, before_ids)
    assert any(not torch.equal(a, b) for a, b in zip(before_den, model.denoisers.parameters(), strict=True))
    assert not torch.equal(seed, model.graph_seed)
    assert model.user_top.shape == (len(tiny.modalities), tiny.n_users, 1)
    graphs = model.generated_graphs()
    assert len(graphs) == len(tiny.modalities)
    # k = 1: at most U edges each way plus N self-loops, kept with p = 0.5
    assert graphs[0][0]._nnz() <= 2 * tiny.n_users + tiny.n_users + tiny.n_items


def test_forward_gradients_reach_every_part(tiny: Dataset) -> None:
    model = _model(tiny)
    model.train()
    from modalrec.data.sampling import BPRSampler

    batch = next(iter(BPRSampler(tiny.train, 64, seed=0).epoch(0)))
    terms = model.loss(batch, model.forward())
    assert set(terms) == {"bpr", "reg", "cl"}
    torch.stack(list(terms.values())).sum().backward()
    for name in ("user_emb", "item_emb", "modal_weight"):
        assert getattr(model, name).grad.abs().sum() > 0, name
    for lin in model.transforms:
        assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.denoisers.parameters())


def test_planted_signal_recovery(tiny: Dataset) -> None:
    torch.manual_seed(0)
    model = _model(tiny)
    train(model, tiny, epochs=8, lr=0.01, batch_size=512)
    assert recall_at(model, tiny) > popularity_recall(tiny) + 0.02


@pytest.mark.parametrize("variant", sorted(DiffMM.variants))
def test_variants_run(tiny: Dataset, variant: str) -> None:
    model = _model(tiny, **DiffMM.variants[variant])
    history = train(model, tiny, epochs=2, lr=0.01, batch_size=1024)
    assert all(math.isfinite(v) for row in history for v in row.values())
    if variant == "w/o-CL":
        assert "cl" not in history[0]
    if variant == "w/o-DM":
        assert len(model.denoisers) == 0 and "diffusion" not in history[0]


def test_single_modality_and_bad_config(tiny: Dataset) -> None:
    one = tiny.select_modalities([tiny.modalities[0]])
    model = _model(one)
    train(model, one, epochs=1, lr=0.01)
    with pytest.raises(ConfigError):
        _model(tiny, cl_mode="nope")
