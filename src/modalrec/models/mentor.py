"""MENTOR: Multi-level Self-supervised Learning for Multimodal Recommendation (Xu et al., AAAI 2025).

Encoders (paper Sec. "Graph convolution"), one per channel c ∈ {modality 1..M, ID}:
  x^c = normalize([P^c ; MLP^c(X^c)]) over the N = U + I nodes (P^c [U, d] user preferences, X^c the item
  features of modality c, or a learned ID table for the ID channel; MLP^c: Linear(d_c, 4d) -> LeakyReLU ->
  Linear(4d, d)); two hops over the symmetric-normalised user-item graph A: h^c = x^c + A x^c + A² x^c.
Fusion: user r_u = [w_u1 h_u^1 ‖ ... ‖ w_uM h_u^M] (learned per-user modality weights w_u), item
  r_i = [h_i^1 ‖ ... ‖ h_i^M] + S^L [h_i^1 ‖ ... ‖ h_i^M], S = Σ_m β_m S^m the fixed kNN item-item graphs of the
  raw features (k per item, D^{-1/2} S D^{-1/2}, built in row chunks). The ID ("guide") view and each
  modality's own view use the same layout with M copies of h^ID (h^m). Score ŷ_ui = r_u · r_i.
Multi-level self-supervision:
  * ID-guided alignment  L_align = Σ over pairs (a, b) of {fused, ID, modality 1..M}
    |σ²_a - σ²_b| + |μ_a - μ_b|, the mean and variance of each view's whole embedding table;
  * feature masking  L_mask_f = Σ_{u,i} 1 - cos(sg(Dropout_p(r)), f(r)), f a Linear(Md, Md) predictor;
  * graph perturbation  L_mask_g = InfoNCE(r', r'') between two views whose every hop adds
    sign(h) ⊙ 0.1·normalize(U(0,1) noise) (SimGCL-style), for the batch's users and items;
  L = L_BPR + λ_reg (Σ_m mean(P^m[u]²) + mean(w²)) + λ_align L_align + λ_f L_mask_f + λ_g L_mask_g.

Deviations from the official code (Jinfeng-Xu/MENTOR), each stated: the code computes L_mask_f entirely under
``torch.no_grad`` (it has no gradient, hence no effect); here f receives it (``mask_f_grad=False`` restores the
code's no-op). The code uses two extra untied encoders for the perturbed views; here the perturbed views reuse
the clean encoders (as SimGCL does; ``tied_noise_views``). The code's InfoNCE of L_mask_g runs over all users and
all items ([U, U] logits); here over the batch's unique users and items (``cl_scope="batch"``), with
``"all"`` computing the code's form in chunks. BPR uses the natural log (the code log2, a constant factor).
kNN item graphs drop negative similarities (the code keeps the top-k whatever their sign). The image/text mix
β (code 0.1/0.9 for two named modalities) is ``graph_weights``, equal by default for any modalities.
Ablations (paper Sec. 4.3): ``w/o-align``, ``w/o-mask_f``, ``w/o-mask_g``, ``w/o-SSL`` (all three off).

Items lacking a modality: MLP^m(X^m) is a learned vector of that modality (``missing_content.MissingEmbedding``);
S^m spans the items that have m and each row of S takes β renormalised over its item's modalities.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch
from modalrec.dispatch import use_fast_path
from modalrec.errors import ConfigError
from modalrec.graph import normalize_edges, normalized_adjacency, scipy_to_torch, sparse_mm
from modalrec.losses import bpr_loss, info_nce
from modalrec.models.base import Embeddings, Model
from modalrec.models.missing_content import (
    MissingEmbedding,
    content_rows,
    masked_knn_edges,
    row_renormalised_edges,
    warn_contentless,
)
from modalrec.optim import Adam


def knn_item_graph(
    feats: list[np.ndarray],
    weights: list[float],
    k: int,
    chunk: int = 1024,
    present: torch.Tensor | None = None,
) -> torch.Tensor:
    """S = Σ_m β_m D^{-1/2} S^m D^{-1/2}, S^m the binary top-k cosine graph of modality m: sparse CSR [I, I].

    ``present`` (bool [I, M]): S^m spans the items that have m, and row i's β renormalised over item i's
    modalities (``missing_content.row_renormalised_edges``).
    """
    n = feats[0].shape[0]
    parts = []
    for m, x in enumerate(feats):
        mask = None if present is None else present[:, m]
        rows, cols, vals = masked_knn_edges(
            torch.from_numpy(x), mask, k, chunk_size=chunk, drop_negative=True
        )
        keep = vals > 0
        rows, cols = rows[keep], cols[keep]
        parts.append((rows, cols, normalize_edges(rows, cols, torch.ones(len(rows)), n, mode="sym")))
    if present is not None:
        rows, cols, vals = row_renormalised_edges(parts, torch.tensor(weights, dtype=torch.float32), present)
        return scipy_to_torch(sp.csr_matrix((vals.numpy(), (rows.numpy(), cols.numpy())), shape=(n, n)))
    total = sp.csr_matrix((n, n), dtype=np.float32)
    for (rows, cols, norm), w in zip(parts, weights, strict=True):
        total = total + w * sp.csr_matrix((norm.numpy(), (rows.numpy(), cols.numpy())), shape=(n, n))
    return scipy_to_torch(total)


def csr_rows_mm(a: torch.Tensor, rows: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(A x)[rows] for a sparse CSR A [R, C] and dense x [C, D]: [len(rows), D], differentiable in x.

    The rows' stored entries form a CSR A[rows] [len(rows), C] (and its transpose for the backward pass), so
    autograd keeps no dense tensor at all.
    """
    crow, col, val = a.crow_indices(), a.col_indices(), a.values()
    starts = crow.index_select(0, rows)
    counts = crow.index_select(0, rows + 1) - starts
    # entry j of picked row r is entry starts[r] + j of A; first[r] is where row r begins among the picked ones
    first = torch.cumsum(counts, 0) - counts
    at = torch.arange(int(counts.sum()), device=x.device) + torch.repeat_interleave(starts - first, counts)
    picked = torch.sparse_csr_tensor(
        torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)]),
        col.index_select(0, at),
        val.index_select(0, at),
        (len(rows), a.shape[1]),
        check_invariants=False,  # built from a valid CSR's own rows
    )
    return sparse_mm(picked, x, picked.t().to_sparse_csr())


class _NormalizedConcat(torch.autograd.Function):
    """F.normalize(torch.cat([a, b]), dim=1) for a [U, d] and b [I, d], keeping a, b and the row norms for the
    backward pass instead of the concatenation (a is a parameter here, kept anyway). With y = x / max(|x|, eps):
    ∂/∂x = (g - y (y·g)) / |x| where |x| > eps, g / eps where the clamp holds."""

    @staticmethod
    def forward(ctx, a, b, eps):
        x = torch.cat([a, b])
        denom = torch.linalg.vector_norm(x, 2, dim=1, keepdim=True).clamp_min(eps)
        ctx.save_for_backward(a, b, denom)
        ctx.eps = eps
        return x.div_(denom)  # the same operations as F.normalize, on the concatenation made here

    @staticmethod
    def backward(ctx, grad):
        a, b, denom = ctx.saved_tensors
        grads: list[torch.Tensor | None] = []
        start = 0
        for part, need in ((a, ctx.needs_input_grad[0]), (b, ctx.needs_input_grad[1])):
            rows = slice(start, start + part.shape[0])
            start += part.shape[0]
            if not need:
                grads.append(None)
                continue
            g, n = grad[rows], denom[rows]
            y = part / n
            full = g - y * (y * g).sum(dim=1, keepdim=True)
            grads.append(torch.where(n > ctx.eps, full, g) / n)
        return grads[0], grads[1], None


def normalized_concat(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``F.normalize(torch.cat([a, b]), dim=1)``: [U + I, d] for a [U, d], b [I, d], holding no concatenation for
    the backward pass (the plain form off the CPU or with the reference kernels forced)."""
    if not use_fast_path(a, b):
        return F.normalize(torch.cat([a, b]), dim=1, eps=eps)
    out: torch.Tensor = _NormalizedConcat.apply(a, b, eps)
    return out


class _ConcatStats(torch.autograd.Function):
    """(unbiased variance, mean) of all values of torch.cat(parts), keeping the parts (not their concatenation)
    for the backward pass: ∂var/∂x = 2 (x - μ) / (n - 1), ∂mean/∂x = 1 / n."""

    @staticmethod
    def forward(ctx, *parts):
        x = torch.cat([p.reshape(-1) for p in parts]) if len(parts) > 1 else parts[0]
        var, mean = x.var(), x.mean()
        ctx.save_for_backward(mean, *parts)
        ctx.n = x.numel()
        return var, mean

    @staticmethod
    def backward(ctx, grad_var, grad_mean):
        mean, *parts = ctx.saved_tensors
        scale = 2.0 * grad_var / (ctx.n - 1)
        return tuple(
            (p - mean) * scale + grad_mean / ctx.n if need else None
            for p, need in zip(parts, ctx.needs_input_grad, strict=True)
        )


class _PredictedCosine(torch.autograd.Function):
    """Σ_r cos(t_r, f(x_r)) over the rows of x [R, D] with f(x) = x Wᵀ + b and a constant target t [R, D], cos
    as ``F.cosine_similarity`` (each side divided by max(norm, eps)).

    Rows are taken in blocks and the gradients are formed in the forward pass (with o = f(x_r), |o| > eps:
    ∂cos/∂o = (t̂ - cos ô)/|o|; |o| <= eps: t̂/eps), so autograd keeps ∂/∂x [R, D] and ∂/∂W, ∂/∂b, not the
    predictions, norms and normalised copies that the composite functions would keep for the backward pass.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, target, eps, rows):
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = torch.empty_like(x) if need_x else None
        grad_w = torch.zeros_like(weight) if need_w else None
        grad_b = torch.zeros_like(bias) if need_b else None
        total = x.new_zeros(())
        for start in range(0, x.shape[0], rows):
            x_blk = x[start : start + rows]
            t = target[start : start + rows]
            t_hat = t / t.norm(dim=1, keepdim=True).clamp_min(eps)
            o = torch.addmm(bias, x_blk, weight.T)
            norm = o.norm(dim=1, keepdim=True).clamp_min(eps)
            o_hat = o / norm
            cos = (t_hat * o_hat).sum(dim=1, keepdim=True)
            total += cos.sum()
            if need_x or need_w or need_b:
                # (t̂ - cos ô) / |o| in place of the block's own temporaries; rows with |o| <= eps are redone below
                grad_o = t_hat.sub_(o_hat.mul_(cos)).div_(norm)
                small = (norm <= eps).squeeze(1)
                if bool(small.any()):  # the clamp is active: the norm is a constant there, ∂cos/∂o = t̂/eps
                    grad_o[small] = t[small] / t[small].norm(dim=1, keepdim=True).clamp_min(eps) / eps
                if grad_x is not None:
                    grad_x[start : start + rows] = grad_o @ weight
                if grad_w is not None:
                    grad_w.addmm_(grad_o.T, x_blk)
                if grad_b is not None:
                    grad_b += grad_o.sum(dim=0)
        ctx.save_for_backward(grad_x, grad_w, grad_b)
        return total

    @staticmethod
    def backward(ctx, grad):
        grad_x, grad_w, grad_b = ctx.saved_tensors
        return (
            None if grad_x is None else grad_x * grad,
            None if grad_w is None else grad_w * grad,
            None if grad_b is None else grad_b * grad,
            None,
            None,
            None,
        )


def predicted_cosine_mean(
    x: torch.Tensor, predictor: nn.Linear, target: torch.Tensor, rows: int = 8192, eps: float = 1e-8
) -> torch.Tensor:
    """mean_r cos(target_r, predictor(x)_r) for x, target [R, D]: ``F.cosine_similarity(target, predictor(x))
    .mean()`` in blocks of ``rows``, holding no [R, D] prediction for the backward pass (the plain form off the
    CPU or with the reference kernels forced)."""
    if not use_fast_path(x, target):
        return F.cosine_similarity(target, predictor(x), dim=1, eps=eps).mean()
    bias = predictor.bias if predictor.bias is not None else x.new_zeros(predictor.out_features)
    total: torch.Tensor = _PredictedCosine.apply(x, predictor.weight, bias, target, eps, rows)
    return total / x.shape[0]


class ChannelEncoder(nn.Module):
    """h^c = x + A x + A² x with x = normalize([P^c ; MLP(X^c)]), optionally with SimGCL noise per hop."""

    def __init__(self, n_users: int, in_dim: int, dim: int) -> None:
        super().__init__()
        self.preference = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users, dim)))
        self.mlp_in = nn.Linear(in_dim, 4 * dim)
        self.mlp_out = nn.Linear(4 * dim, dim)

    def forward(
        self,
        adj: torch.Tensor,
        items: torch.Tensor,
        noise: float = 0.0,
        substitute: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """adj [N, N] sparse, items [I, in_dim] -> [N, dim]; ``substitute`` puts the missing-content vector
        into the MLP's output rows [I, dim]."""
        x = self.inputs(items, substitute)
        return self.hops(adj, x, sparse_mm(adj, x), noise)

    def inputs(
        self, items: torch.Tensor, substitute: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> torch.Tensor:
        """x = normalize([P ; MLP(X)]): [N, dim]."""
        # in place: Linear's backward needs its input, not its output, so the activation can overwrite it and
        # autograd keeps one [I, 4d] tensor per channel instead of two (LeakyReLU's backward reads the sign of
        # its output, the same as its input's for a positive slope)
        content = self.mlp_out(F.leaky_relu(self.mlp_in(items), inplace=True))
        if substitute is not None:
            content = substitute(content)
        return normalized_concat(self.preference, content)

    @staticmethod
    def hops(adj: torch.Tensor, x: torch.Tensor, first: torch.Tensor, noise: float = 0.0) -> torch.Tensor:
        """x + h_1 + h_2 with h_1 = A x (given as ``first``, shared by the clean and perturbed views of one
        encoder) and h_2 = A h_1, each hop perturbed by sign(h) ⊙ noise·normalize(U(0,1)) when noise > 0."""
        out, h = x, first
        for hop in range(2):
            if hop:
                h = sparse_mm(adj, h)
            if noise > 0:
                # sign() has zero derivative, so the perturbation is a constant for autograd: formed without a
                # graph it leaves the gradient unchanged and keeps none of its [N, d] temporaries alive; in place,
                # the same values as sign(h) * normalize(U) * noise with one [N, d] temporary instead of four
                with torch.no_grad():
                    delta = torch.rand_like(h)
                    delta.div_(delta.norm(dim=1, keepdim=True).clamp_min(1e-12))
                    delta.mul_(torch.sign(h)).mul_(noise)
                h = h + delta
            # the running sum is this function's own tensor after the first hop (x is the caller's): add in place
            out = out + h if out is x else out.add_(h)
        return out


class MENTOR(Model):
    """Per-modality + ID graph encoders, kNN item graphs, ID-guided multi-level self-supervision."""

    name = "mentor"
    modalities = "any"
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "w/o-align": {"align_weight": 0.0},
        "w/o-mask_f": {"mask_f_weight": 0.0},
        "w/o-mask_g": {"mask_g_weight": 0.0},
        "w/o-SSL": {"align_weight": 0.0, "mask_f_weight": 0.0, "mask_g_weight": 0.0},
    }

    @dataclass
    class Config:
        embed_dim: int = 64  # d of every channel (fused width M·d)
        knn_k: int = 10  # neighbours per item in the kNN item graphs
        n_item_layers: int = 1  # L hops over the item graph S (official n_mm_layers)
        graph_weights: tuple[float, ...] | None = (
            None  # β_m per modality; None = equal (code: image 0.1, text 0.9)
        )
        reg_weight: float = 1e-3  # λ_reg (official)
        align_weight: float = 0.1  # λ_align (official)
        mask_f_weight: float = 1.5  # λ_f (official mask_weight_f)
        mask_g_weight: float = 1e-3  # λ_g (official search {1e-4, 1e-3})
        dropout: float = 0.5  # p of the feature-masking dropout (official)
        temperature: float = 0.2  # τ of L_mask_g (official search {0.2, 0.4, 0.6})
        noise_eps: float = 0.1  # magnitude of the per-hop perturbation (official 0.1)
        mask_f_grad: bool = True  # L_mask_f trains the predictor f (False: the code's gradient-free form)
        tied_noise_views: bool = True  # perturbed views reuse the clean encoders (official: untied copies)
        cl_scope: str = "batch"  # L_mask_g over the batch's users/items, or "all" users and items (code)
        cl_chunk: int = 4096  # rows per InfoNCE block

    adj: torch.Tensor
    item_graph: torch.Tensor
    item_graph_t: torch.Tensor

    def __init__(self, data: Dataset, cfg: Config) -> None:
        super().__init__(data, cfg)
        if cfg.cl_scope not in ("batch", "all"):
            raise ConfigError(f"mentor cl_scope must be 'batch' or 'all', not {cfg.cl_scope!r}")
        d = cfg.embed_dim
        names = list(data.modalities)
        self.n_modalities = len(names)
        weights = list(cfg.graph_weights) if cfg.graph_weights else [1.0 / len(names)] * len(names)
        if len(weights) != len(names):
            raise ConfigError(f"mentor graph_weights needs {len(names)} values (one per modality)")
        for m, n in enumerate(names):
            self.register_buffer(f"feat_{m}", torch.from_numpy(content_rows(data, n)), persistent=False)
        self.encoders = nn.ModuleList(
            ChannelEncoder(data.n_users, data.features[n].shape[1], d) for n in names
        )
        self.noise_encoders = (
            None
            if cfg.tied_noise_views
            else nn.ModuleList(
                ChannelEncoder(data.n_users, data.features[n].shape[1], d) for n in names for _ in range(2)
            )
        )
        self.id_feat = nn.Parameter(nn.init.xavier_normal_(torch.empty(data.n_items, d)))
        self.id_encoder = ChannelEncoder(data.n_users, d, d)
        self.user_weight = nn.Parameter(torch.softmax(torch.randn(data.n_users, self.n_modalities), dim=1))
        self.predictor = nn.Linear(self.n_modalities * d, self.n_modalities * d)
        self.register_buffer("adj", normalized_adjacency(data.train), persistent=False)
        self.missing = MissingEmbedding(data, names, d)
        warn_contentless(data, names, self.name)
        feats = [data.features[n] for n in names]
        graph = knn_item_graph(feats, weights, cfg.knn_k, present=self.missing.matrix())
        self.register_buffer("item_graph", graph, persistent=False)
        # a top-k graph is not symmetric: the backward pass of S·x needs Sᵀ
        self.register_buffer("item_graph_t", graph.t().to_sparse_csr(), persistent=False)

    # ---- representations ----------------------------------------------------------------------------------
    def _item_side(self, items: torch.Tensor) -> torch.Tensor:
        """r_i = x + S^L x for the concatenated item channels x [I, M·d]."""
        h = items
        for _ in range(self.cfg.n_item_layers):
            h = sparse_mm(self.item_graph, h, self.item_graph_t)
        return items + h

    def _fuse(self, channels: list[torch.Tensor], weighted: bool = True) -> torch.Tensor:
        """[N, M·d] from M channel outputs [N, d]: users weighted by w_u (fused view), items + item graph."""
        n_u = self.n_users
        users = [
            (self.user_weight[:, m : m + 1] * c[:n_u]) if weighted else c[:n_u]
            for m, c in enumerate(channels)
        ]
        items = self._item_side(torch.cat([c[n_u:] for c in channels], dim=1))
        return torch.cat([torch.cat(users, dim=1), items])

    def _untiled(self, channel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One column block of ``_fuse([c] * M, weighted=False)`` for one channel c [N, d], as its user rows [U, d]
        and item rows [I, d]: the M blocks of that view are equal, so the view is this block tiled M times; L_align
        needs only its mean and variance (:meth:`tiled_stats`), so neither the tiling nor the block is formed."""
        n_u = self.n_users
        return channel[:n_u], self._item_side(channel[n_u:])

    @staticmethod
    def tiled_stats(parts: tuple[torch.Tensor, ...], copies: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(unbiased variance, mean) of ``torch.cat(parts).repeat(1, copies)``, from the parts alone.

        The tiled table holds every value ``copies`` times: the same mean, and ``copies`` times the sum of squared
        deviations over ``copies·n`` values, so var_tiled = var · copies (n - 1) / (copies·n - 1), n the number
        of values of the parts. Autograd keeps the parts (views of tensors kept anyway), not their concatenation.
        """
        n = sum(p.numel() for p in parts)
        if use_fast_path(*parts):
            var, mean = _ConcatStats.apply(*parts)
        else:  # the plain form: off the CPU or with the reference kernels forced
            x = torch.cat([p.reshape(-1) for p in parts])
            var, mean = x.var(), x.mean()
        return var * (copies * (n - 1) / (copies * n - 1)), mean

    def _fuse_rows(
        self, channels: list[torch.Tensor], users: torch.Tensor, items: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``users`` [B_u] and items ``items`` [B_i] (item indices) of ``_fuse(channels)``: [B_u, M·d] and
        [B_i, M·d]. The [N, M·d] view is never formed, so autograd keeps only these rows (and the rows of their
        item-graph neighbours), not the channels [N, d]."""
        n_u = self.n_users
        user_rows = torch.cat(
            [self.user_weight[users, m : m + 1] * c.index_select(0, users) for m, c in enumerate(channels)],
            dim=1,
        )
        x = torch.cat([c[n_u:] for c in channels], dim=1)  # [I, M·d]
        h = x
        for _ in range(self.cfg.n_item_layers - 1):
            h = sparse_mm(self.item_graph, h, self.item_graph_t)
        last = (
            csr_rows_mm(self.item_graph, items, h) if self.cfg.n_item_layers > 0 else h.index_select(0, items)
        )
        return user_rows, x.index_select(0, items) + last

    def _channels(self, noise: float = 0.0, view: int = 0) -> list[torch.Tensor]:
        encoders = self.encoders
        if noise > 0 and self.noise_encoders is not None:
            encoders = nn.ModuleList(self.noise_encoders[2 * m + view] for m in range(self.n_modalities))
        return [
            enc(self.adj, getattr(self, f"feat_{m}"), noise, self._substitute(m))
            for m, enc in enumerate(encoders)
        ]

    def _substitute(self, idx: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
        return partial(self.missing, idx) if self.missing.present(idx) is not None else None

    def forward(self, rows: tuple[torch.Tensor, torch.Tensor] | None = None) -> Embeddings:
        """r_u [U, M·d], r_i [I, M·d]; in training, extras hold the ID and per-modality views (one column block
        each, as user and item rows, see :meth:`_untiled`) and the two perturbed views: whole ([N, M·d], key
        "noisy"), or with ``rows`` = (users [B_u], items [B_i]) only those rows (key "noisy_rows": per view
        ([B_u, M·d], [B_i, M·d]))."""
        cfg = self.cfg
        encoders = [enc for enc in self.encoders if isinstance(enc, ChannelEncoder)]
        # x^c and its first hop A x^c are the same for the clean view and, with tied encoders, for both
        # perturbed views (the noise enters after each hop): computed once per channel
        xs = [enc.inputs(getattr(self, f"feat_{m}"), self._substitute(m)) for m, enc in enumerate(encoders)]
        firsts = [sparse_mm(self.adj, x) for x in xs]
        channels = [ChannelEncoder.hops(self.adj, x, h) for x, h in zip(xs, firsts, strict=True)]
        fused = self._fuse(channels)
        n_u = self.n_users
        extras: dict[str, Any] = {"fused": fused}
        if self.training:
            if cfg.align_weight > 0:
                h_id = self.id_encoder(self.adj, self.id_feat)
                extras["guide"] = self._untiled(h_id)
                extras["modal"] = [self._untiled(c) for c in channels]
            if cfg.mask_g_weight > 0:
                # view by view, so that only one view's perturbed channels [N, d] exist at a time (the noise is
                # drawn in the same order as building all four channels first)
                views: list[Any] = []
                for view in range(2):
                    if self.noise_encoders is None:
                        noisy = [
                            ChannelEncoder.hops(self.adj, x, h, cfg.noise_eps)
                            for x, h in zip(xs, firsts, strict=True)
                        ]
                    else:
                        noisy = self._channels(cfg.noise_eps, view)
                    views.append(self._fuse(noisy) if rows is None else self._fuse_rows(noisy, *rows))
                    del noisy
                extras["noisy" if rows is None else "noisy_rows"] = views
        return Embeddings(fused[:n_u], fused[n_u:], extras)

    # ---- objective -----------------------------------------------------------------------------------------
    def train_step(
        self, batch: Batch, optimizers: list[Adam], grad_clip: float | None = None
    ) -> dict[str, float]:
        """The usual step, then the gradients are dropped rather than kept until the next step's backward pass:
        the same updates, and the [U, d] / [I, d] gradient tables no longer sit in memory (and between the
        allocator's free blocks) through the next forward pass."""
        out = super().train_step(batch, optimizers, grad_clip)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        return out

    def batch_loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``loss(batch, forward(rows))``: with ``cl_scope="batch"`` L_mask_g reads the perturbed views at the
        batch's distinct users and positive items only, so only those rows of them are formed."""
        if self.training and self.cfg.cl_scope == "batch" and self.cfg.mask_g_weight > 0:
            return self.loss(batch, self.forward((torch.unique(batch.users), torch.unique(batch.pos))))
        return self.loss(batch, self.forward())

    def loss(self, batch: Batch, emb: Embeddings) -> dict[str, torch.Tensor]:
        """bpr, reg, align, mask_f, mask_g (each already weighted)."""
        cfg = self.cfg
        extras = emb.extras or {}
        users, pos, neg = batch.users, batch.pos, batch.neg
        u = emb.users.index_select(0, users)
        p, n = emb.items.index_select(0, pos), emb.items.index_select(0, neg)
        reg = sum(
            enc.preference.index_select(0, users).pow(2).mean()
            for enc in self.encoders
            if isinstance(enc, ChannelEncoder)
        )
        terms = {
            "bpr": bpr_loss((u * p).sum(1), (u * n).sum(1)),
            "reg": cfg.reg_weight * (torch.as_tensor(reg) + self.user_weight.pow(2).mean()),
        }
        if "guide" in extras:
            m = self.n_modalities
            stats = [self.tiled_stats((extras["fused"],))]
            stats += [self.tiled_stats(v, m) for v in (extras["guide"], *extras["modal"])]
            align = emb.users.new_zeros(())
            for a in range(len(stats)):
                for b in range(a + 1, len(stats)):
                    align = align + (stats[a][0] - stats[b][0]).abs() + (stats[a][1] - stats[b][1]).abs()
            terms["align"] = cfg.align_weight * align
        if cfg.mask_f_weight > 0 and self.training:
            mask = emb.users.new_zeros(())
            for rep in (emb.users, emb.items):
                target = F.dropout(rep.detach(), cfg.dropout, training=True)
                online = rep if cfg.mask_f_grad else rep.detach()
                cos = predicted_cosine_mean(online, self.predictor, target)
                if not cfg.mask_f_grad:
                    cos = cos.detach()
                mask = mask + 1.0 - cos
            terms["mask_f"] = cfg.mask_f_weight * mask
        if "noisy_rows" in extras:  # formed by batch_loss at torch.unique(users) and torch.unique(pos)
            (u_one, i_one), (u_two, i_two) = extras["noisy_rows"]
            g = info_nce(u_one, u_two, cfg.temperature, cfg.cl_chunk) + info_nce(
                i_one, i_two, cfg.temperature, cfg.cl_chunk
            )
            terms["mask_g"] = cfg.mask_g_weight * g
        elif "noisy" in extras:
            one, two = extras["noisy"]
            n_u = self.n_users
            if cfg.cl_scope == "batch":
                uu, ii = torch.unique(users), torch.unique(pos) + n_u
                g = info_nce(one[uu], two[uu], cfg.temperature, cfg.cl_chunk) + info_nce(
                    one[ii], two[ii], cfg.temperature, cfg.cl_chunk
                )
            else:
                g = info_nce(one[:n_u], two[:n_u], cfg.temperature, cfg.cl_chunk) + info_nce(
                    one[n_u:], two[n_u:], cfg.temperature, cfg.cl_chunk
                )
            terms["mask_g"] = cfg.mask_g_weight * g
        return terms
