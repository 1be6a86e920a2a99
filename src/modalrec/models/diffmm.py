"""DiffMM: Multi-Modal Diffusion Model for Recommendation (Jiang, Xia, Wei, Luo, Lin & Huang, ACM MM 2024).

Per modality m a denoiser learns to restore users' interaction rows (modality-aware graph diffusion, paper
Sec. 3.2; the schedule, denoiser and losses are in ``diffmm_parts.py``):

* forward process q(x_t | x_0) = N(√ᾱ_t x_0, (1-ᾱ_t) I) on a user's row x_0 ∈ {0,1}^{|I|};
* L_elbo = (SNR(t-1) - SNR(t)) ||x̂_θ(x_t, t) - x_0||² / |I|, and modality-aware signal injection (MSI)
  L_msi = ||x̂_θ(x_t, t) F^m - x_0 E||² / d, so the denoised row aggregates modality features like the true row
  aggregates ID embeddings; L_gd = L_elbo + λ_msi L_msi;
* inference: T reverse steps from x_0 (no noise by default), the top-k items of each user form the generated
  modality-aware user-item graph G^m (sparse, k entries per user), normalised with self-loops.

Multi-modal graph aggregation and the recommender (paper Sec. 3.3, written as in the official code's
``forward_MM``), with Â the normalised user-item graph with self-loops and F̄^m = normalize(f_m(X^m)):

* z^m = Â [E_u; F̄^m] + Â [(Â [E_u; F̄^m])_users; E_i] + λ_adj · G^m [E_u; E_i];
* Z = Σ_m softmax(w)_m z^m (learned modality weights w);
* H = Σ_{l=0..L} Â^l Z + λ_ris · normalize(Z);  score ŷ_ui = h_u · h_i.

Cross-modal contrastive augmentation (Sec. 3.4): per modality the view c^m = Σ_{l=0..L} Â^l G^m [E_u; F̄^m];
InfoNCE over the batch's users (and positive items), all users (items) as negatives, between every view and the
main embeddings H ("main", the official Tiktok setting) or between every pair of views ("pairwise").
Objective: L = L_BPR + λ_reg (||E_u||² + ||E_i||²) + λ_cl L_cl, and each denoiser minimises its own L_gd.

Training order per epoch (official code): one pass of denoiser updates over all users in blocks of
``diffusion_batch`` rows, regeneration of every G^m, then the recommender's batches. All |I|-wide work is done in
[block, I] pieces; no [U, I] matrix exists. The generated graphs are persistent buffers (top-k items per user and
the seed of their edge dropout), so a restored checkpoint scores exactly like the trained model.

Where this follows the official code (HKUDS/DiffMM) rather than a paper formula: the aggregation above
(two-hop feature propagation plus λ_adj times one hop over G^m), the ELBO weight without ½, the one-off edge
dropout of G^m (``keep_rate``), the whole-table L2, and the noise schedule. Ablations (paper Sec. 4.3):
``w/o-CL`` (no contrastive term), ``w/o-MSI`` (λ_msi = 0), ``w/o-DM`` (no diffusion: G^m is the observed
graph itself), ``m2m-CL`` (view-to-view contrast instead of view-to-main).

Items lacking a modality: f_m(X^m) is a learned vector of that modality (``missing_content.MissingEmbedding``),
used wherever the features are (aggregation, contrastive views, L_msi).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch
from modalrec.errors import ConfigError
from modalrec.graph import normalized_adjacency, sparse_mm
from modalrec.losses import bpr_loss
from modalrec.models.base import Embeddings, Model, TrainSettings
from modalrec.models.diffmm_contrast import contrast
from modalrec.models.diffmm_parts import (
    Denoiser,
    DiffusionSchedule,
    ReverseChain,
    gd_backward,
    generated_adjacency,
)
from modalrec.models.missing_content import MissingEmbedding, content_rows, warn_contentless
from modalrec.models.mmssl_parts import interaction_block
from modalrec.optim import Adam
from modalrec.runtime import fit_chunk

# A diffusion block of ``diffusion_batch`` users is taken in pieces of rows whose [rows, I] float32 tensors hold at
# most PIECE_ELEMENTS values (32 MiB); one piece's training activations are about PIECE_TENSORS such tensors
# (x_0, ε, x_t and its parts, the dropout mask and output, x̂_0, the residual and its square). Tiktok's blocks of
# 1,024 x 6,710 fit in one piece; at 50,000 items a block is seven pieces.
PIECE_ELEMENTS = 1 << 23
PIECE_TENSORS = 10


class DiffMM(Model):
    """Diffusion-generated modality-aware user-item graphs + cross-modal contrastive GCN recommender."""

    name = "diffmm"
    modalities = "any"
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "w/o-CL": {"cl_weight": 0.0},
        "w/o-MSI": {"msi_weight": 0.0},
        "w/o-DM": {"diffusion": False},
        "m2m-CL": {"cl_mode": "pairwise"},
    }

    @dataclass
    class Config:
        embed_dim: int = 64  # latent size d (official latdim)
        n_layers: int = 1  # GCN layers L over Â after the modality fusion (official gnn_layer)
        feature_transform: str = (
            "linear"  # f_m: "linear" (official --trans 1, Tiktok) or "leaky" (LeakyReLU(XW))
        )
        reg_weight: float = 1e-4  # λ_reg on the whole ID tables (official Tiktok --reg 1e-4)
        cl_weight: float = 1e-2  # λ_cl, weight of each InfoNCE term (official ssl_reg)
        cl_temperature: float = 0.5  # τ of the InfoNCE (official temp)
        cl_mode: str = (
            "main"  # "main": each view vs H (official Tiktok --cl_method 1); "pairwise": view vs view
        )
        ris_lambda: float = 0.5  # λ_ris, weight of normalize(Z) added to the GCN output
        ris_adj_lambda: float = 0.2  # λ_adj, weight of the generated-graph hop in z^m
        diffusion: bool = True  # False: G^m is the observed graph (ablation w/o-DM)
        steps: int = 5  # diffusion steps T
        noise_scale: float = 0.1  # scale of the variance schedule
        noise_min: float = 1e-4  # lowest variance (times noise_scale)
        noise_max: float = 0.02  # highest variance (times noise_scale)
        sampling_steps: int = 0  # forward noising steps before generation (0 = start from x_0)
        denoiser_hidden: tuple[int, ...] = (1000,)  # hidden sizes of the denoiser MLP (official dims)
        time_dim: int = 10  # step-embedding size (official d_emb_size)
        denoiser_dropout: float = 0.5  # dropout on the denoiser's input row during training
        denoiser_norm: bool = False  # L2-normalise the denoiser's input row
        denoiser_lr: float | None = None  # Adam learning rate of the denoisers; None = train.lr (official)
        msi_weight: float = 0.1  # λ_msi of L_gd (official e_loss)
        rebuild_k: int = 1  # generated edges per user, top-k of the denoised row (official rebuild_k)
        keep_rate: float = 0.5  # edge keep-probability applied to each regenerated G^m (official keepRate)
        diffusion_batch: int = 1024  # users per denoiser block (rows of [block, I]), one update per block
        # rows per piece of a block (0 = from a memory budget, see PIECE_ELEMENTS): a block's gradient is summed
        # over its pieces before the update, so this bounds memory without changing the step
        diffusion_piece: int = 0
        rebuild_every: int = 1  # train the denoisers and regenerate G^m every this many epochs
        # denoiser updates per pass: 0 = one per block of all users (official); n > 0 = the first n blocks of the
        # pass's random order, a cheaper pass for very large data (regeneration still covers every user)
        diffusion_blocks: int = 0

    user_top: torch.Tensor
    graph_seed: torch.Tensor
    indptr: torch.Tensor
    indices: torch.Tensor
    adj: torch.Tensor

    def __init__(self, data: Dataset, cfg: Config) -> None:
        super().__init__(data, cfg)
        self._check(cfg)
        d = cfg.embed_dim
        self.modality_names = list(data.modalities)
        self.n_modalities = len(self.modality_names)
        for m, name in enumerate(self.modality_names):
            self.register_buffer(f"feat_{m}", torch.from_numpy(content_rows(data, name)), persistent=False)
        bias = cfg.feature_transform == "linear"
        self.transforms = nn.ModuleList(
            nn.Linear(data.features[n].shape[1], d, bias=bias) for n in self.modality_names
        )
        for lin in self.transforms:
            nn.init.xavier_uniform_(lin.weight)  # type: ignore[arg-type]
        self.missing = MissingEmbedding(data, self.modality_names, d)
        warn_contentless(data, self.modality_names, self.name)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_users, d)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_items, d)))
        self.modal_weight = nn.Parameter(torch.full((self.n_modalities,), 1.0 / self.n_modalities))
        self.register_buffer("adj", normalized_adjacency(data.train, add_self_loops=True), persistent=False)
        train = sp.csr_matrix(data.train, dtype=np.float32)
        train.sort_indices()
        self._train = train
        self.register_buffer("indptr", torch.from_numpy(train.indptr.astype(np.int64)), persistent=False)
        self.register_buffer("indices", torch.from_numpy(train.indices.astype(np.int64)), persistent=False)
        self.schedule = DiffusionSchedule(cfg.steps, cfg.noise_scale, cfg.noise_min, cfg.noise_max)
        self.denoisers = nn.ModuleList(
            Denoiser(
                data.n_items,
                tuple(cfg.denoiser_hidden),
                cfg.time_dim,
                cfg.denoiser_dropout,
                cfg.denoiser_norm,
            )
            for _ in range(self.n_modalities if cfg.diffusion else 0)
        )
        self.rebuild_k = min(cfg.rebuild_k, data.n_items)
        # Generated graphs: each user's top-k items per modality and the seed of each graph's edge dropout.
        # Until the first regeneration, G^m links each user to its own observed items (the denoiser's target).
        self.register_buffer("user_top", self._observed_topk().repeat(self.n_modalities, 1, 1))
        self.register_buffer("graph_seed", torch.arange(self.n_modalities, dtype=torch.long))
        self._graphs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._graph_key: tuple[object, ...] | None = None
        self._pending_diffusion = False
        self._last_gd: dict[str, float] = {}

    @staticmethod
    def _check(cfg: Config) -> None:
        if cfg.feature_transform not in ("linear", "leaky"):
            raise ConfigError(
                f"diffmm feature_transform must be 'linear' or 'leaky', not {cfg.feature_transform!r}"
            )
        if cfg.cl_mode not in ("main", "pairwise"):
            raise ConfigError(f"diffmm cl_mode must be 'main' or 'pairwise', not {cfg.cl_mode!r}")
        if cfg.diffusion_blocks < 0:
            raise ConfigError(f"diffmm diffusion_blocks must be >= 0, got {cfg.diffusion_blocks}")
        if cfg.diffusion_piece < 0:
            raise ConfigError(f"diffmm diffusion_piece must be >= 0, got {cfg.diffusion_piece}")
        if cfg.rebuild_k < 1 or cfg.steps < 1 or cfg.rebuild_every < 1:
            raise ConfigError("diffmm rebuild_k, steps and rebuild_every must be >= 1")
        if not 0.0 < cfg.keep_rate <= 1.0:
            raise ConfigError(f"diffmm keep_rate must be in (0, 1], got {cfg.keep_rate}")
        if not 0 <= cfg.sampling_steps <= cfg.steps:
            raise ConfigError(f"diffmm sampling_steps must be in [0, steps], got {cfg.sampling_steps}")

    def _observed_topk(self) -> torch.Tensor:
        """[U, k]: the first k observed items of each user, padded with its last one (the item 0 if none)."""
        k = self.rebuild_k
        out = np.zeros((self.n_users, k), dtype=np.int64)
        for u in range(self.n_users):
            row = self._train.indices[self._train.indptr[u] : self._train.indptr[u + 1]]
            if len(row):
                out[u] = np.resize(row[:k], k) if len(row) < k else row[:k]
        return torch.from_numpy(out)

    # ---- representations ----------------------------------------------------------------------------------
    def features(self) -> list[torch.Tensor]:
        """f_m(X^m) per modality: [I, d]."""
        out = []
        for m, lin in enumerate(self.transforms):
            f = self.missing(m, lin(getattr(self, f"feat_{m}")))
            out.append(F.leaky_relu(f, 0.2) if self.cfg.feature_transform == "leaky" else f)
        return out

    def generated_graphs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """G^m per modality as (sparse CSR [N, N], transpose); cached on the buffers' version."""
        key = (
            self.user_top._version,
            self.graph_seed._version,
            self.user_top.data_ptr(),
            self.user_top.device,
        )
        if self._graph_key == key:
            return self._graphs
        graphs = []
        seeds = self.graph_seed.cpu().numpy()
        if self.cfg.diffusion:
            tops = self.user_top.cpu().numpy()
        for m in range(self.n_modalities):
            if self.cfg.diffusion:
                users = np.repeat(np.arange(self.n_users), self.rebuild_k)
                items = tops[m].reshape(-1)
            else:
                coo = self._train.tocoo()
                users, items = coo.row, coo.col
            g, g_t = generated_adjacency(
                users, items, self.n_users, self.n_items, self.cfg.keep_rate, int(seeds[m])
            )
            graphs.append((g.to(self.user_top.device), g_t.to(self.user_top.device)))
        self._graphs, self._graph_key = graphs, key
        return graphs

    def _layer_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Σ_{l=0..L} Â^l x over the [N, d] stacked user+item embeddings."""
        total, h = x, x
        for _ in range(self.cfg.n_layers):
            h = sparse_mm(self.adj, h)
            total = total + h
        return total

    def forward(self) -> Embeddings:
        """H (Sec. 3.3) for users [U, d] and items [I, d]; extras hold the contrastive views c^m [N, d]."""
        cfg = self.cfg
        n_u = self.n_users
        ids = torch.cat([self.user_emb, self.item_emb])
        feats = [F.normalize(f, dim=1) for f in self.features()]
        graphs = self.generated_graphs()
        weights = torch.softmax(self.modal_weight, dim=0)
        fused = ids.new_zeros(ids.shape)
        views = []
        for m, (f, (g, g_t)) in enumerate(zip(feats, graphs, strict=True)):
            x = torch.cat([self.user_emb, f])
            hop1 = sparse_mm(self.adj, x)
            hop2 = sparse_mm(self.adj, torch.cat([hop1[:n_u], self.item_emb]))
            z = hop1 + hop2 + cfg.ris_adj_lambda * sparse_mm(g, ids, g_t)
            fused = fused + weights[m] * z
            if cfg.cl_weight > 0 and self.training:
                views.append(self._layer_sum(sparse_mm(g, x, g_t)))
        h = self._layer_sum(fused) + cfg.ris_lambda * F.normalize(fused, dim=1)
        return Embeddings(h[:n_u], h[n_u:], {"views": views, "main": h})

    # ---- objective -----------------------------------------------------------------------------------------
    def loss(self, batch: Batch, emb: Embeddings) -> dict[str, torch.Tensor]:
        """bpr, reg (λ_reg over the whole ID tables) and cl (λ_cl Σ InfoNCE) of one batch."""
        cfg = self.cfg
        users, pos, neg = batch.users, batch.pos, batch.neg
        u = emb.users.index_select(0, users)
        p, n = emb.items.index_select(0, pos), emb.items.index_select(0, neg)
        terms = {
            "bpr": bpr_loss((u * p).sum(1), (u * n).sum(1)),
            "reg": cfg.reg_weight * (self.user_emb.pow(2).sum() + self.item_emb.pow(2).sum()),
        }
        views = (emb.extras or {}).get("views", [])
        if cfg.cl_weight > 0 and views:
            n_u = self.n_users
            if cfg.cl_mode == "main":
                pairs = [(emb.extras["main"], v) for v in views]  # type: ignore[index]
            else:
                pairs = [(views[a], views[b]) for a in range(len(views)) for b in range(a + 1, len(views))]
            cl = users.new_zeros((), dtype=torch.float32)
            for a, b in pairs:
                cl = cl + contrast(a[:n_u], b[:n_u], users, cfg.cl_temperature)
                cl = cl + contrast(a[n_u:], b[n_u:], pos, cfg.cl_temperature)
            terms["cl"] = cfg.cl_weight * cl
        return terms

    # ---- diffusion -----------------------------------------------------------------------------------------
    def _denoisers(self) -> list[Denoiser]:
        return [d for d in self.denoisers if isinstance(d, Denoiser)]

    def _user_blocks(self, shuffle: bool) -> list[torch.Tensor]:
        dev = self.indptr.device
        order = (
            torch.randperm(self.n_users, device=dev) if shuffle else torch.arange(self.n_users, device=dev)
        )
        return list(order.split(max(1, self.cfg.diffusion_batch)))

    def _rows(self, users: torch.Tensor) -> torch.Tensor:
        """The users' interaction rows x_0: [B, I] (one block, never all users)."""
        return interaction_block(self.indptr, self.indices, users, None, self.n_items)

    def _rows_and_target(self, users: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_0 [B, I] and L_msi's target x_0 E [B, d] for the users' rows."""
        x0 = self._rows(users)
        return x0, x0 @ ids

    def _piece_rows(self) -> int:
        """Rows per piece of a diffusion block: ``diffusion_piece`` if set, else as many as keep one [rows, I]
        float32 tensor within ``PIECE_ELEMENTS`` and the training activations of a piece (about
        ``PIECE_TENSORS`` such tensors) within $MODALREC_MEMORY_BUDGET; at most ``diffusion_batch``."""
        cfg = self.cfg
        block = max(1, cfg.diffusion_batch)
        if cfg.diffusion_piece > 0:
            return min(block, cfg.diffusion_piece)
        wanted = max(1, min(block, PIECE_ELEMENTS // max(1, self.n_items)))
        return fit_chunk(
            PIECE_TENSORS * 4 * self.n_items, wanted, "DiffMM's diffusion block", "model.diffusion_piece"
        )

    def diffusion_epoch(self, opt: Adam | None) -> dict[str, float]:
        """One pass of denoiser updates over all users in blocks (L_gd per modality), then regenerate G^m.

        F^m and E enter L_msi detached, so these steps change only the denoisers. Returns the mean L_gd.
        """
        cfg = self.cfg
        if not cfg.diffusion:
            return {}
        total, n_blocks = 0.0, 0
        if opt is not None:
            with torch.no_grad():
                feats = [f.detach() for f in self.features()]
            ids = self.item_emb.detach()
            blocks = self._user_blocks(shuffle=True)
            if cfg.diffusion_blocks > 0:
                blocks = blocks[: cfg.diffusion_blocks]
            rows = self._piece_rows()
            for block in blocks:
                parts = block.tensor_split(-(-len(block) // rows))  # pieces of equal size (within one row)
                # one piece: its rows and L_msi's target x_0 E are shared by the modalities; several: each
                # denoiser builds them again, so that only one piece's [rows, I] tensors exist at a time
                shared = [self._rows_and_target(parts[0], ids)] if len(parts) == 1 else None
                for den, f in zip(self._denoisers(), feats, strict=True):
                    # Each denoiser's gradient comes from its own L_gd only, and Adam updates each parameter on
                    # its own, so stepping one denoiser at a time is the joint step; it frees that denoiser's
                    # activations and gradients ([block, I] and |I|-sized) before the next one's are made.
                    pieces = shared or (self._rows_and_target(part, ids) for part in parts)
                    opt.zero_grad(set_to_none=True)
                    total += gd_backward(self.schedule, den, pieces, len(block), f, cfg.msi_weight)
                    opt.step()
                    # drop this denoiser's gradients ([|I|, h]-sized) now rather than at the next zero_grad: after
                    # the last block they would otherwise stay alive through all the recommender's batches
                    opt.zero_grad(set_to_none=True)
                n_blocks += 1
        self.regenerate()
        return {"diffusion": total / max(1, n_blocks)}

    @torch.no_grad()
    def regenerate(self) -> None:
        """G^m from the current denoisers: each user's top-k items of the generated row (Sec. 3.2 inference)."""
        rows = self._piece_rows()
        for m, den in enumerate(self._denoisers()):
            chain = ReverseChain(self.schedule, den)  # prepared once per denoiser, reused by every block
            for block in self._user_blocks(shuffle=False):
                # rows are generated independently: pieces change nothing (with sampling_steps > 0 the start
                # noise is drawn piece by piece, the same distribution)
                for part in block.tensor_split(-(-len(block) // rows)):
                    self.user_top[m, part] = chain.topk(
                        self._rows(part), self.rebuild_k, self.cfg.sampling_steps
                    )
        # a fresh edge-dropout draw for each regenerated graph, reproducible from the stored seed
        self.graph_seed.add_(self.n_modalities)

    def on_epoch_start(self, epoch: int) -> None:
        self._pending_diffusion = self.cfg.diffusion and epoch % self.cfg.rebuild_every == 0

    def configure_optimizers(self, train: TrainSettings) -> list[Adam]:
        """[Adam over the recommender, Adam over the denoisers] (official code: two Adams, no weight decay)."""
        den = set(self.denoisers.parameters())
        main = [p for p in self.parameters() if p.requires_grad and p not in den]
        opts = [Adam(main, lr=train.lr, weight_decay=train.weight_decay)]
        if den:
            lr = self.cfg.denoiser_lr if self.cfg.denoiser_lr is not None else train.lr
            opts.append(Adam(list(self.denoisers.parameters()), lr=lr))
        return opts

    def train_step(
        self, batch: Batch, optimizers: list[Adam], grad_clip: float | None = None
    ) -> dict[str, float]:
        """The epoch's diffusion phase on its first batch (official order), then one recommender update."""
        out: dict[str, float] = {}
        if self._pending_diffusion:
            self._pending_diffusion = False
            self._last_gd = self.diffusion_epoch(optimizers[1] if len(optimizers) > 1 else None)
        out.update(
            self._last_gd
        )  # repeated on every batch, so the epoch average is the diffusion pass's mean
        terms = self.loss(batch, self.forward())
        total = torch.stack(list(terms.values())).sum()
        main = optimizers[0]
        main.zero_grad(set_to_none=True)
        total.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_([p for g in main.param_groups for p in g["params"]], grad_clip)
        main.step()
        # the same updates; the [N, d] gradients do not sit through the next forward pass
        main.zero_grad(set_to_none=True)
        out.update({k: float(v.detach()) for k, v in terms.items()})
        return out
