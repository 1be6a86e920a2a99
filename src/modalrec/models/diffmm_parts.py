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
from collections.abc import Iterable

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
        dtype = self.time_proj.weight.dtype  # float32 unless the denoiser was converted
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=dtype) / half)
        arg = t.to(dtype).unsqueeze(1) * freqs.unsqueeze(0)
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
    x0_ids: torch.Tensor,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L_elbo and L_msi (means over the block) for interaction rows x0 [B, I].

    item_feats [I, d] (modality features F^m) enters L_msi as a constant, and so does its target x0_ids = x_0 E
    [B, d] (E the item ID embeddings): the same for every modality, so the caller forms it once per block.
    The steps t [B] and the noise ε [B, I] are drawn here unless given.
    """
    if t is None:
        t = torch.randint(0, schedule.steps, (x0.shape[0],), device=x0.device)
    x_t = schedule.q_sample(x0, t, noise)
    x0_hat = denoiser(x_t, t)
    elbo = (schedule.elbo_weight(t) * (x0_hat - x0).pow(2).mean(1)).mean()
    msi = (x0_hat @ item_feats - x0_ids).pow(2).mean(1).mean()
    return elbo, msi


def gd_backward(
    schedule: DiffusionSchedule,
    denoiser: Denoiser,
    pieces: Iterable[tuple[torch.Tensor, torch.Tensor]],
    n_rows: int,
    item_feats: torch.Tensor,
    msi_weight: float,
    draws: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> float:
    """Backward pass of one block's L_gd = L_elbo + λ_msi L_msi (means over the block's ``n_rows`` rows), taken
    in row pieces; returns L_gd.

    ``pieces`` yields (x0 [b, I], x0_ids [b, d]) for consecutive pieces of the block's rows. A mean over the block
    is the sum over its pieces of each piece's mean times b / n_rows, so the gradients that accumulate are the
    block's, while only one piece's [b, I] activations exist at a time. ``draws`` gives each piece's (t [b],
    ε [b, I]) instead of drawing them (a check that the pieces do not change the result).
    """
    total = 0.0
    draw_iter = iter(draws) if draws is not None else None
    for x0, x0_ids in pieces:
        t, noise = next(draw_iter) if draw_iter is not None else (None, None)
        elbo, msi = diffusion_losses(schedule, denoiser, x0, item_feats, x0_ids, t, noise)
        loss = (elbo + msi_weight * msi) * (x0.shape[0] / n_rows)
        loss.backward()
        total += float(loss.detach())
    return total


def _start_rows(schedule: DiffusionSchedule, x0: torch.Tensor, noise_steps: int) -> torch.Tensor:
    """Where generation starts: x_0 itself, or x_0 noised for ``noise_steps`` steps (closed form)."""
    if noise_steps <= 0:
        return x0
    t = torch.full((x0.shape[0],), noise_steps - 1, dtype=torch.long, device=x0.device)
    return schedule.q_sample(x0, t)


@torch.no_grad()
def reverse_rows_direct(
    schedule: DiffusionSchedule, denoiser: Denoiser, x0: torch.Tensor, noise_steps: int
) -> torch.Tensor:
    """The generated rows [B, I] step by step: x_{t-1} = μ_θ(x_t, t) for t = T-1..0, dropout off.

    The reference for :class:`ReverseChain`, and its path when the denoiser is not linear in x_t at its input
    (``norm``) or has no hidden layer.
    """
    was_training = denoiser.training
    denoiser.eval()  # no input dropout while generating (official code: mess_dropout=False)
    try:
        x = _start_rows(schedule, x0, noise_steps)
        for step in reversed(range(schedule.steps)):
            t = torch.full((x.shape[0],), step, dtype=torch.long, device=x.device)
            x = schedule.p_mean(x, denoiser(x, t), step)
        return x
    finally:
        denoiser.train(was_training)


class ReverseChain:
    """Inference's T reverse steps (paper Sec. 3.2) of one denoiser, carried in its first hidden layer's space.

    With W_x the input weights acting on the row (W_1 = [W_x | W_τ]) and the output layer x̂_0 = W_o h + b_o, every
    reverse step is affine in x_t up to the hidden non-linearities:

        s_t = W_x x_t                                  [B, h_1]  (the only use of x_t inside the denoiser)
        h_t = MLP(tanh(s_t + W_τ τ'(t) + b_1))         [B, h_L]
        x_{t-1} = c1_t (W_o h_t + b_o) + c2_t x_t   ⇒   s_{t-1} = c1_t (M h_t + W_x b_o) + c2_t s_t,  M = W_x W_o,

    and the final row is x = α x_start + W_o (Σ_t γ_t h_t) + β b_o with scalar α, β, γ_t accumulated from c1, c2.
    So one regeneration costs one [h_1, I] x [I, h_L] product for M per denoiser, and per block of users one
    sparse W_x x_0 (the observed rows are 0/1 with a few ones) and one |I|-wide output product, instead of two
    |I|-wide products per step. Same mathematics as :func:`reverse_rows_direct`, float32 rounding aside
    (tests/models/test_diffmm_speed.py compares them).
    """

    def __init__(self, schedule: DiffusionSchedule, denoiser: Denoiser) -> None:
        self.schedule, self.denoiser = schedule, denoiser
        self.direct = denoiser.norm or len(denoiser.hidden) == 0
        if self.direct:
            return
        first = denoiser.hidden[0]
        assert isinstance(first, nn.Linear)
        n_items = denoiser.out.out_features
        with torch.no_grad():
            self.w_x = first.weight[:, :n_items]  # [h_1, I] view
            w_t = first.weight[:, n_items:]  # [h_1, e]
            steps = torch.arange(schedule.steps, device=w_t.device)
            temb = denoiser.time_proj(denoiser.time_embedding(steps))  # [T, e]
            self.step_bias = temb @ w_t.T + first.bias  # [T, h_1]: W_τ τ'(t) + b_1
            self.m = self.w_x @ denoiser.out.weight  # [h_1, h_L]
            self.m_bias = self.w_x @ denoiser.out.bias  # [h_1]
        self.c1 = schedule.posterior_c1.tolist()
        self.c2 = schedule.posterior_c2.tolist()

    def _input_product(self, x: torch.Tensor, sparse: bool) -> torch.Tensor:
        """W_x x for rows x [B, I] -> [B, h_1]; for mostly-zero rows only the nonzero columns are read."""
        if not sparse:
            return x @ self.w_x.T
        rows, cols = x.nonzero(as_tuple=True)
        picked = self.w_x.index_select(1, cols) * x[rows, cols]  # [h_1, nnz]
        out = x.new_zeros(self.w_x.shape[0], x.shape[0]).index_add_(1, rows, picked)
        return out.T

    @torch.no_grad()
    def rows(self, x0: torch.Tensor, noise_steps: int) -> torch.Tensor:
        """The generated rows [B, I] for observed rows x0 [B, I] (no sampling noise in the reverse steps)."""
        if self.direct:
            return reverse_rows_direct(self.schedule, self.denoiser, x0, noise_steps)
        x = _start_rows(self.schedule, x0, noise_steps)
        s = self._input_product(x, sparse=noise_steps <= 0)
        acc = x.new_zeros(x.shape[0], self.m.shape[1])  # Σ_t γ_t h_t
        alpha, beta = 1.0, 0.0
        for step in reversed(range(self.schedule.steps)):
            h = torch.tanh(s + self.step_bias[step])
            for lin in self.denoiser.hidden[1:]:
                h = torch.tanh(lin(h))
            c1, c2 = self.c1[step], self.c2[step]
            if step > 0:
                s = torch.addmm(self.m_bias, h, self.m.T).mul_(c1).add_(s, alpha=c2)
            acc.mul_(c2).add_(h, alpha=c1)
            alpha, beta = alpha * c2, beta * c2 + c1
        out = self.denoiser.out
        return torch.addmm(out.bias, acc, out.weight.T, beta=beta).add_(x, alpha=alpha)

    def topk(self, x0: torch.Tensor, k: int, noise_steps: int) -> torch.Tensor:
        """Each row's top-k items of the generated row: [B, k]."""
        return torch.topk(self.rows(x0, noise_steps), k, dim=1).indices


@torch.no_grad()
def generate_topk(
    schedule: DiffusionSchedule, denoiser: Denoiser, x0: torch.Tensor, k: int, noise_steps: int
) -> torch.Tensor:
    """Inference (paper Sec. 3.2): noise x_0 for ``noise_steps`` steps (0 = start from x_0 itself), run the T
    reverse steps with their means (no sampling noise), keep each row's top-k items.  x0 [B, I] -> [B, k].
    (One call prepares a :class:`ReverseChain`; a loop over blocks should prepare it once and reuse it.)
    """
    return ReverseChain(schedule, denoiser).topk(x0, k, noise_steps)


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
