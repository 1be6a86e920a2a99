"""The diffusion parts of DiffMM (Jiang et al., MM 2024): noise schedule, denoiser, generated user-item graphs.

A user's interaction row x_0 ∈ {0,1}^{|I|} is the diffused object (paper Sec. 3.2). Everything here works on a
block of rows [B, I] at a time; no function ever holds all users' rows at once.

* Forward process  q(x_t | x_{t-1}) = N(√(1-β_t) x_{t-1}, β_t I), hence the closed form
  q(x_t | x_0) = N(√ᾱ_t x_0, (1-ᾱ_t) I) with ᾱ_t = Π_{s<=t} (1-β_s)        (:meth:`DiffusionSchedule.q_sample`).
* Reverse step  p_θ(x_{t-1} | x_t) = N(μ_θ(x_t, t), σ_t² I) with the posterior-mean form
  μ_θ = c1_t x̂_θ(x_t, t) + c2_t x_t, where x̂_θ predicts x_0                (:meth:`DiffusionSchedule.p_mean`).
* ELBO term  L_elbo = (SNR(t-1) - SNR(t)) · mean_i (x̂_θ(x_t, t) - x_0)², weight 1 at t = 0
  (SNR(t) = ᾱ_t / (1-ᾱ_t); the official code's weighting, without the paper's constant ½).
* Modality-aware signal injection  L_msi = mean_d (x̂_θ(x_t,t) F^m - x_0 E)², F^m the item features of modality m
  mapped to d dimensions, E the item ID embeddings (both held fixed for this loss, as in the official code).

The noise schedule follows the official code (HKUDS/DiffMM): variances linearly spaced in
[scale·min, scale·max] over T steps, β_0 fixed to 1e-4.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from modalrec.graph import scipy_to_torch


class DiffusionSchedule(nn.Module):
    """The Gaussian schedule β_t, ᾱ_t and the posterior coefficients as float32 buffers of shape [T]."""

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    posterior_c1: torch.Tensor
    posterior_c2: torch.Tensor

    def __init__(
        self, steps: int, noise_scale: float, noise_min: float, noise_max: float, beta_first: float = 1e-4
    ) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError(f"diffusion steps must be >= 1, got {steps}")
        self.steps = steps
        betas = self.make_betas(steps, noise_scale, noise_min, noise_max, beta_first)
        alphas_cumprod = np.cumprod(1.0 - betas)
        prev = np.concatenate([[1.0], alphas_cumprod[:-1]])
        # q(x_{t-1} | x_t, x_0) mean = c1 x_0 + c2 x_t (standard DDPM posterior)
        c1 = betas * np.sqrt(prev) / (1.0 - alphas_cumprod)
        c2 = (1.0 - prev) * np.sqrt(1.0 - betas) / (1.0 - alphas_cumprod)
        for name, arr in (
            ("betas", betas),
            ("alphas_cumprod", alphas_cumprod),
            ("posterior_c1", c1),
            ("posterior_c2", c2),
        ):
            self.register_buffer(name, torch.tensor(arr, dtype=torch.float32), persistent=False)

    @staticmethod
    def make_betas(
        steps: int, noise_scale: float, noise_min: float, noise_max: float, beta_first: float
    ) -> np.ndarray:
        """β_t (float64 [T]): 1 - ᾱ'_t/ᾱ'_{t-1} for ᾱ'_t = 1 - linspace(scale·min, scale·max), capped at 0.999."""
        variance = np.linspace(noise_scale * noise_min, noise_scale * noise_max, steps, dtype=np.float64)
        alpha_bar = 1.0 - variance
        betas = np.empty(steps, dtype=np.float64)
        betas[0] = 1.0 - alpha_bar[0]
        betas[1:] = np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], 0.999)
        if beta_first > 0:
            betas[0] = beta_first
        return betas

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Closed-form forward process: x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε.  x0 [B, I], t [B] -> [B, I]."""
        if noise is None:
            noise = torch.randn_like(x0)
        a = self.alphas_cumprod[t].unsqueeze(1)
        return a.sqrt() * x0 + (1.0 - a).sqrt() * noise

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """SNR(t) = ᾱ_t / (1-ᾱ_t): [B]."""
        a = self.alphas_cumprod[t]
        return a / (1.0 - a)

    def elbo_weight(self, t: torch.Tensor) -> torch.Tensor:
        """SNR(t-1) - SNR(t) for t > 0 and 1 at t = 0: [B]."""
        prev = self.snr((t - 1).clamp_min(0))
        return torch.where(t == 0, torch.ones_like(prev), prev - self.snr(t))

    def p_mean(self, x_t: torch.Tensor, x0_hat: torch.Tensor, t: int) -> torch.Tensor:
        """Posterior mean of x_{t-1} given x_t and the predicted x̂_0 (the reverse step without noise)."""
        return self.posterior_c1[t] * x0_hat + self.posterior_c2[t] * x_t


class Denoiser(nn.Module):
    """x̂_θ(x_t, t): an MLP over an interaction row with a sinusoidal step embedding (official-code shape).

    in: [x_t ; W_e τ(t)] (|I| + e) -> hidden ... (tanh) -> |I| (linear). ``norm`` L2-normalises x_t first;
    dropout on x_t applies in training only.
    """

    def __init__(
        self, n_items: int, hidden: tuple[int, ...], time_dim: int, dropout: float, norm: bool = False
    ) -> None:
        super().__init__()
        self.time_dim = time_dim
        self.norm = norm
        self.time_proj = nn.Linear(time_dim, time_dim)
        dims_in = [n_items + time_dim, *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims_in))
        self.out = nn.Linear(dims_in[-1], n_items)
        self.drop = nn.Dropout(dropout)
        for lin in [self.time_proj, *self.hidden, self.out]:
            # Xavier-normal weights and near-zero biases, as in the official code
            std = math.sqrt(2.0 / (lin.weight.shape[0] + lin.weight.shape[1]))
            nn.init.normal_(lin.weight, 0.0, std)
            nn.init.normal_(lin.bias, 0.0, 1e-3)

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """Sinusoidal embedding τ(t): [B, time_dim]."""
        half = self.time_dim // 2
        freqs = torch.exp(
            -math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half
        )
        arg = t.float().unsqueeze(1) * freqs.unsqueeze(0)
        emb = torch.cat([torch.cos(arg), torch.sin(arg)], dim=1)
        if self.time_dim % 2:
            emb = torch.cat([emb, emb.new_zeros(len(t), 1)], dim=1)
        return emb

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x [B, I], t [B] -> x̂_0 [B, I]."""
        if self.norm:
            x = nn.functional.normalize(x, dim=1)
        h = torch.cat([self.drop(x), self.time_proj(self.time_embedding(t))], dim=1)
        for lin in self.hidden:
            h = torch.tanh(lin(h))
        return self.out(h)


def diffusion_losses(
    schedule: DiffusionSchedule,
    denoiser: Denoiser,
    x0: torch.Tensor,
    item_feats: torch.Tensor,
    item_ids: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L_elbo and L_msi (means over the block) for interaction rows x0 [B, I].

    item_feats [I, d] (modality features F^m) and item_ids [I, d] (ID embeddings E) enter L_msi as constants.
    """
    t = torch.randint(0, schedule.steps, (x0.shape[0],), device=x0.device)
    x_t = schedule.q_sample(x0, t)
    x0_hat = denoiser(x_t, t)
    elbo = (schedule.elbo_weight(t) * (x0_hat - x0).pow(2).mean(1)).mean()
    msi = (x0_hat @ item_feats - x0 @ item_ids).pow(2).mean(1).mean()
    return elbo, msi


@torch.no_grad()
def generate_topk(
    schedule: DiffusionSchedule, denoiser: Denoiser, x0: torch.Tensor, k: int, noise_steps: int
) -> torch.Tensor:
    """Inference (paper Sec. 3.2): noise x_0 for ``noise_steps`` steps (0 = start from x_0 itself), run the T
    reverse steps with their means (no sampling noise), keep each row's top-k items.  x0 [B, I] -> [B, k].
    """
    was_training = denoiser.training
    denoiser.eval()  # no input dropout while generating (official code: mess_dropout=False)
    try:
        if noise_steps > 0:
            t = torch.full((x0.shape[0],), noise_steps - 1, dtype=torch.long, device=x0.device)
            x = schedule.q_sample(x0, t)
        else:
            x = x0
        for step in reversed(range(schedule.steps)):
            t = torch.full((x.shape[0],), step, dtype=torch.long, device=x.device)
            x = schedule.p_mean(x, denoiser(x, t), step)
        return torch.topk(x, k, dim=1).indices
    finally:
        denoiser.train(was_training)


def generated_adjacency(
    users: np.ndarray, items: np.ndarray, n_users: int, n_items: int, keep_rate: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised bipartite graph of generated edges, with edge dropout: ([N, N] CSR, its transpose).

    Â = D^{-1/2} (A + I) D^{-1/2} over N = U + I nodes, then each stored entry kept with probability
    ``keep_rate`` and rescaled by 1/keep_rate (official code: dropped once per rebuild, used until the next).
    The drop mask is drawn from ``seed``, so the same buffers always give the same graph.
    """
    n = n_users + n_items
    r = sp.csr_matrix(
        (np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n_items), dtype=np.float32
    )
    r.data[:] = 1.0  # duplicate (user, item) pairs count once
    adj = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32) + sp.eye(n, dtype=np.float32)
    deg = np.asarray(adj.sum(axis=1)).ravel()
    d = sp.diags(np.power(deg, -0.5, where=deg > 0, out=np.zeros_like(deg)).astype(np.float32))
    adj = sp.coo_matrix(d @ adj @ d)
    if keep_rate < 1.0:
        keep = np.random.default_rng(seed).random(adj.nnz) < keep_rate
        adj = sp.coo_matrix(
            (adj.data[keep] / keep_rate, (adj.row[keep], adj.col[keep])), shape=adj.shape, dtype=np.float32
        )
    adj = sp.csr_matrix(adj)
    return scipy_to_torch(adj), scipy_to_torch(sp.csr_matrix(adj.T))
