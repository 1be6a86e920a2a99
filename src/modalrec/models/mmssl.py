"""MMSSL: Multi-Modal Self-Supervised Learning for Recommendation (Wei, Huang, Xia & Zhang, WWW 2023).

Equations implemented (numbers from the paper):

* Sec. 3.1.1 modality transforms f̃_i^m = Drop(W^m f̄_i^m + b^m), one Linear + dropout per modality (d_m -> d).
* Eq. 2   f_u^m = Σ_{i∈N_u} f̃_i^m / √|N_u|,  f_i^m = Σ_{u∈N_i} f_u^m / √|N_i|.
* Eq. 3   generator G: Â^m[u, i] = cos(f_u^m, f_i^m), evaluated per batch of users in blocks, never as [U, I].
* Eq. 4   discriminator D(a) = δ(Γ²(a)) over a user's relation row (see ``mmssl_parts.Discriminator``).
* Eq. 5   Ã[u, :] = GumbelSoftmax(A[u, :]; τ) + ζ · cos(h_u, h_:).
* Eqs. 6-7 WGAN-GP: L_G = -E D(Â^m), L_D = -E D(Ã) + E D(Â^m) + λ1 · GP.
* Eq. 8   modality-aware views e_u^m = Σ_{i∈N_u^m} e_i / √|N_u^m|, e_i^m = Σ_{u∈N_i^m} e_u / √|N_i^m|,
          where N_u^m are user u's top-k items under Â^m (k >= 1; rebuilt every epoch or every T steps)
          and N_i^m the users whose top-k contains i.
* Eq. 9   multi-head self-attention across modalities (separate Q, K, V), then mean pooling over modalities.
* Eq. 10  Ê^0 = E + η · Ẽ / ||Ẽ||, Ê^{l+1} = A Ê^l (A[u, i] = 1/√|N_u|), readout = mean over layers 0..L.
* Eq. 11  cross-modal InfoNCE between e_u^m and h_u (other users of the batch as negatives), chunked.
* Eq. 12  h = ê + ω · Σ_m f^m / ||f^m||;  score ŷ_ui = h_u · h_i.
* Eqs. 13-14  L = L_BPR + λ2 L_CL + λ3 L_G + λ4 ||Θ||², λ4 as a coupled penalty on the whole ID tables
  (``param_l2``) plus AdamW's decoupled weight decay on every parameter.
* Algorithm 1: each training batch runs ``d_steps`` discriminator updates (Adam, betas 0.5/0.9) and then one
  update of everything else (AdamW).

Scale: D's input is a relation row over every item (Eq. 4), so D's weight j always belongs to item j and the
critic can learn which items real rows favour. D has ≈ 0.28·|I|² parameters (|I| = 6,710: 12.7 M, ≈ 0.2 GB
with gradient and Adam state); its cost per step is bounded by feeding it the rows of ``d_rows`` of the batch's
users. Where a full-width D does not fit $MODALREC_MEMORY_BUDGET (|I| = 100k: ≈ 45 GB), D sees ``d_columns``
random item columns per step instead (512 by default then). See ``docs/mmssl.md`` for the arithmetic.

Proof that the adversarial part acts: :meth:`MMSSL.epoch_diagnostics` (critic gap, Wasserstein estimate,
L_G/BPR gradient ratio on the modality transforms, the Gumbel term's share of a real row, new Eq. 8 edges),
logged per epoch as ``diag_*`` columns of history.csv.

Paired ablations: D's initial weights, its dropout masks, the Gumbel noise, the row/column subsets and the GP
interpolation draw from a stream of their own, so variants with the same seed see the same BPR batches,
initial weights and feature-dropout masks.

Deviations from the official code (HKUDS/MMSSL), each offered as an option where it matters:
real LeakyReLU slope (``d_leaky_slope``; code 1.0 = linear), Gumbel precedence (``gumbel_form``), one
BatchNorm call over real and fake rows (``d_norm``; code: two calls, which centres each batch on its own and
erases most of the critic's signal), a Gumbel temperature and noise that keep the first Eq. 5 term a visible
share of the row (``gumbel_tau``, ``gumbel_noise_scale``, ``zeta``; the code's τ = 0.005 with noise 1e-5 and
ζ = 100 leaves it under 0.1%), proper
attention (``attn_value_proj``), a fixed k >= 1 neighbour rule for all users (the code's k = int(|I| * 1e-4)
is 0 on the shipped datasets and its graphs hold only one batch's users), simultaneous bipartite propagation
without the code's softmax on the last GNN layer, standard InfoNCE with τ' = 0.085 (paper Sec. 4.4; code: 0.5,
GRACE-style).

Items lacking a modality: their transformed features W^m f̄_i^m + b^m are a learned vector of that modality
(``missing_content.MissingEmbedding``, before the dropout), so Eqs. 2-3 and 12 never read a made-up feature row.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch
from modalrec.errors import ConfigError, ModalrecError
from modalrec.graph import normalized_interactions, scipy_to_torch, sparse_mm
from modalrec.losses import bpr_loss, gradient_penalty, info_nce, l2_reg, recompute_in_backward
from modalrec.models.base import Embeddings, Model, TrainSettings
from modalrec.models.missing_content import MissingEmbedding, content_rows, warn_contentless
from modalrec.models.mmssl_parts import (
    D_NORMS,
    Discriminator,
    ModalityAttention,
    gumbel_transform,
    interaction_block,
    topk_relations,
)
from modalrec.optim import Adam, AdamW
from modalrec.runtime import MEMORY_ENV, memory_budget

VARIANTS = ("full", "wo_asl", "wo_cl", "wo_gt", "rp_gae")


def _csr(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A sparse CSR tensor from already-valid arrays (rows sorted by construction)."""
    return torch.sparse_csr_tensor(crow, col, val, shape, check_invariants=False)


def _inv_sqrt_degree(mat: sp.csr_matrix) -> np.ndarray:
    """1/√(row degree) of a sparse matrix, 0 for empty rows: [rows]."""
    deg = np.asarray(mat.sum(axis=1)).ravel()
    with np.errstate(divide="ignore"):
        return np.where(deg > 0, deg**-0.5, 0.0).astype(np.float32)


class MMSSL(Model):
    """Adversarial modality-aware self-augmentation + cross-modal contrastive learning, any modalities."""

    name = "mmssl"
    modalities = "any"
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "w/o-ASL": {"variant": "wo_asl"},
        "w/o-CL": {"variant": "wo_cl"},
        "w/o-GT": {"variant": "wo_gt"},
        "r/p-GAE": {"variant": "rp_gae"},
    }

    @dataclass
    class Config:
        embed_dim: int = 64  # latent size d (paper Sec. 4.1.4)
        n_layers: int = 2  # GNN depth L of Eq. 10 (paper: best 2-3; official code: 2)
        gnn_norm: str = "row"  # Eq. 10 propagation weights: "row" A[u,i]=1/√|N_u| (paper) or "sym" (LightGCN)
        feat_dropout: float = 0.2  # dropout after the modality transforms (Sec. 3.1.1; code drop_rate)
        eta: float = 0.36  # η of Eq. 10, weight of the normalised attention output added to layer 0
        omega: float = 0.2  # ω of Eq. 12 (paper: no value; code model_cat_rate 0.55; 0.2 best on Tiktok val)
        n_heads: int = 4  # attention heads H of Eq. 9
        attn_value_proj: bool = True  # learned value/output projections in Eq. 9 (False: raw views as values)
        view_topk: int = 10  # k of Eq. 8: neighbours per user taken from Â^m (always >= 1)
        view_exclude_observed: bool = (
            True  # Eq. 8 neighbours are items the user has not interacted with (code)
        )
        rebuild_every: int = 0  # rebuild the Eq. 8 graphs every T training steps; 0 = at every epoch start
        cl_weight: float = 0.03  # λ2 of Eq. 13 (official code cl_rate)
        cl_temperature: float = 0.085  # τ' of Eq. 11 (paper Sec. 4.4 on Tiktok; official code 0.5)
        cl_items: bool = False  # also contrast item views with h_i (the paper and code do users only)
        cl_chunk: int = 4096  # rows per InfoNCE block
        adv_weight: float = 0.01  # λ3 of Eq. 13 (code: G_rate 1e-4 times its D output scale 100)
        zeta: float = 1.0  # ζ of Eq. 5, weight of the augmented signal cos(h_u, h_i)
        aug_form: str = "normalized"  # Eq. 5's ζ term: "normalized" ζ·ĉ/||ĉ|| per row (code), "literal" ζ·ĉ
        gumbel_tau: float = 0.05  # τ of Eq. 5 (not given in the paper; official code real_data_tau 0.005)
        gumbel_form: str = "paper"  # "paper": softmax((A+g)/τ); "code": softmax(A + g/τ)
        gumbel_noise_scale: float = 0.05  # scale s of the Gumbel noise g (official code log_log_scale 1e-5)
        d_input_norm: bool = (
            True  # L2-normalise real and fake rows before D (official code; Eq. 4 leaves it open)
        )
        mask_observed: bool = False  # zero the user's observed items in the relation rows fed to D (code)
        gp_weight: float = 1.0  # λ1 of Eq. 7 (paper Sec. 4.4: best 1)
        d_columns: int = 0  # item columns D sees: 0 = all |I| if D fits the memory budget (else 512 sampled)
        d_hidden: int = 512  # cap on D's first hidden width (code: |I|/4, i.e. 0 = no cap); second is half
        d_rows: int = 32  # batch users whose rows D sees per step (0 = every user of the batch)
        d_norm: str = "none"  # D's normalisation: none | joint_batch | separate_batch (code) | layer
        d_steps: int = 1  # discriminator updates per generator update (Algorithm 1)
        d_leaky_slope: float = 0.2  # LeakyReLU slope in D (official code 1.0, which makes D linear)
        d_dropouts: tuple[float, float] = (0.31, 0.5)  # dropout of D's two blocks (code G_drop1, G_drop2)
        d_output_scale: float = 1.0  # multiplier of D's sigmoid output (code: 100)
        d_lr: float = 3e-4  # Adam learning rate of D (paper range 2.5e-4..3.5e-4)
        d_betas: tuple[float, float] = (0.5, 0.9)  # Adam betas of D (official code)
        lr: float | None = 5e-4  # AdamW learning rate of the main model (paper range); None = train.lr
        weight_decay: float = 0.014  # λ4 of Eq. 13 as AdamW decoupled decay (paper range 1.2e-2..1.6e-2)
        param_l2: float = 0.0  # λ4 of Eq. 13 as a loss term λ4·||E||² over the whole ID tables (0 = off)
        reg_weight: float = 1e-5  # L2 on the batch's final embeddings, divided by batch size (code decay)
        gae_weight: float = 0.01  # weight of the reconstruction loss of the r/p-GAE ablation
        variant: str = "full"  # ablation: full | wo_asl | wo_cl | wo_gt | rp_gae (paper Table 3)
        relation_chunk: int = 512  # users per [chunk, I] block when building the Eq. 8 graphs

    indptr: torch.Tensor
    indices: torch.Tensor
    view_items: torch.Tensor
    ui_row: torch.Tensor
    ui_row_t: torch.Tensor
    iu_row: torch.Tensor
    iu_row_t: torch.Tensor
    ui_gnn: torch.Tensor
    iu_gnn: torch.Tensor
    probe_users: torch.Tensor
    probe_pos: torch.Tensor
    probe_neg: torch.Tensor

    def __init__(self, data: Dataset, cfg: Config) -> None:
        super().__init__(data, cfg)
        self._check(cfg)
        d = cfg.embed_dim
        self.modality_names = list(data.modalities)
        self.n_modalities = len(self.modality_names)
        for m, name in enumerate(self.modality_names):
            self.register_buffer(f"feat_{m}", torch.from_numpy(content_rows(data, name)), persistent=False)
        self.transforms = nn.ModuleList(nn.Linear(data.features[n].shape[1], d) for n in self.modality_names)
        for lin in self.transforms:
            nn.init.xavier_uniform_(lin.weight)  # type: ignore[arg-type]
        self.missing = MissingEmbedding(data, self.modality_names, d)
        warn_contentless(data, self.modality_names, self.name)
        self.dropout = nn.Dropout(cfg.feat_dropout)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_users, d)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_items, d)))
        self.attention = ModalityAttention(d, cfg.n_heads, cfg.attn_value_proj)

        train = sp.csr_matrix(data.train, dtype=np.float32)
        train.sort_indices()
        self.register_buffer("indptr", torch.from_numpy(train.indptr.astype(np.int64)), persistent=False)
        self.register_buffer("indices", torch.from_numpy(train.indices.astype(np.int64)), persistent=False)
        # Eq. 2 aggregation (and Eq. 10 with gnn_norm="row"): rows scaled by 1/sqrt(degree).
        # Each sparse operator is kept with its transpose so backward passes need no CSR transposition.
        ui_row = sp.diags(_inv_sqrt_degree(train)) @ train
        train_t = sp.csr_matrix(train.T)
        iu_row = sp.diags(_inv_sqrt_degree(train_t)) @ train_t
        for name, mat in (("ui_row", ui_row), ("iu_row", iu_row)):
            self.register_buffer(name, scipy_to_torch(mat), persistent=False)
            self.register_buffer(name + "_t", scipy_to_torch(sp.csr_matrix(mat.T)), persistent=False)
        if cfg.gnn_norm == "sym":
            ui_sym, iu_sym = normalized_interactions(train)
            self.register_buffer("ui_gnn", ui_sym, persistent=False)
            self.register_buffer("iu_gnn", iu_sym, persistent=False)
        self.uses_d = cfg.variant in ("full", "wo_cl", "wo_gt")
        self.n_cols = (
            discriminator_columns(cfg.d_columns, data.n_items, cfg.d_hidden) if self.uses_d else data.n_items
        )
        self.discriminator = self._build_discriminator(cfg) if self.uses_d else None
        # D, the Gumbel noise, the column/row subsets and the GP interpolation draw from their own stream,
        # reseeded at every epoch start from the epoch's global seed: two variants with the same seed then see
        # the same BPR batches, initial weights and feature-dropout masks (paired ablations, exact resume).
        self._rng_seed = torch.initial_seed() + 11
        self._rng: torch.Generator | None = None
        self._w_sum, self._w_count = 0.0, 0
        self._register_probe(data, train)
        max_deg = int(np.diff(train.indptr).max()) if data.n_users else 0
        room = data.n_items - (max_deg if cfg.view_exclude_observed else 0)
        self.view_k = max(1, min(cfg.view_topk, room))
        # The Eq. 8 graphs are persistent so a restored checkpoint scores exactly like the trained model.
        self.register_buffer(
            "view_items", torch.zeros(self.n_modalities, data.n_users, self.view_k, dtype=torch.long)
        )
        self._steps = 0
        self._graphs: list[tuple[torch.Tensor, ...]] = []
        self._graph_key: tuple[object, ...] | None = None
        self._step_draw: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None] | None = None
        self.rebuild_views()

    def _build_discriminator(self, cfg: Config) -> Discriminator:
        """D over ``n_cols`` inputs (Eq. 4). Its initial weights come from a forked stream, so variants with and
        without D start the rest of the model from the same global random state (paired ablations)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch.initial_seed() + 7)
            return Discriminator(
                self.n_cols,
                tuple(cfg.d_dropouts),  # type: ignore[arg-type]
                cfg.d_leaky_slope,
                cfg.d_output_scale,
                norm=cfg.d_norm,
                hidden=cfg.d_hidden,
            )

    @staticmethod
    def _check(cfg: Config) -> None:
        if cfg.variant not in VARIANTS:
            raise ConfigError(f"mmssl variant must be one of {', '.join(VARIANTS)}, not {cfg.variant!r}")
        if cfg.gnn_norm not in ("row", "sym"):
            raise ConfigError(f"mmssl gnn_norm must be 'row' or 'sym', not {cfg.gnn_norm!r}")
        if cfg.gumbel_form not in ("paper", "code"):
            raise ConfigError(f"mmssl gumbel_form must be 'paper' or 'code', not {cfg.gumbel_form!r}")
        if cfg.view_topk < 1:
            raise ConfigError(f"mmssl view_topk must be >= 1, got {cfg.view_topk}")
        if cfg.d_steps < 0:
            raise ConfigError(f"mmssl d_steps must be >= 0, got {cfg.d_steps}")
        if cfg.d_norm not in D_NORMS:
            raise ConfigError(f"mmssl d_norm must be one of {', '.join(D_NORMS)}, not {cfg.d_norm!r}")
        if cfg.aug_form not in ("normalized", "literal"):
            raise ConfigError(f"mmssl aug_form must be 'normalized' or 'literal', not {cfg.aug_form!r}")
        if cfg.d_rows < 0 or cfg.d_columns < 0:
            raise ConfigError("mmssl d_rows and d_columns must be >= 0 (0 = all)")

    # ---- representations ----------------------------------------------------------------------------------
    def modality_features(self, dropout: bool = True) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Eq. 2: per modality, f_u^m [U, d] and f_i^m [I, d] from the transformed item features."""
        users, items = [], []
        for m, lin in enumerate(self.transforms):
            f = self.missing(m, lin(getattr(self, f"feat_{m}")))
            if dropout:
                f = self.dropout(f)
            fu = sparse_mm(self.ui_row, f, self.ui_row_t)
            users.append(fu)
            items.append(sparse_mm(self.iu_row, fu, self.iu_row_t))
        return users, items

    def _view_graphs(self) -> list[tuple[torch.Tensor, ...]]:
        """Normalised Eq. 8 graphs per modality as sparse CSR: [U, I] (1/√k), [I, U] (1/√|N_i^m|), transposes.

        Cached on the version of ``view_items``, so a rebuild or a checkpoint load refreshes them.
        """
        key = (self.view_items._version, self.view_items.data_ptr(), self.view_items.device)
        if self._graph_key == key:
            return self._graphs
        n_u, n_i, k = self.n_users, self.n_items, self.view_k
        dev = self.view_items.device
        crow = torch.arange(0, n_u * k + 1, k, device=dev)
        graphs: list[tuple[torch.Tensor, ...]] = []
        for m in range(self.n_modalities):
            cols = self.view_items[m].reshape(-1)
            count = torch.bincount(cols, minlength=n_i)
            inv_item = count.clamp_min(1).to(torch.float32).rsqrt()
            order = torch.argsort(cols, stable=True)
            icrow = torch.cat([torch.zeros(1, dtype=torch.long, device=dev), torch.cumsum(count, 0)])
            users = torch.div(order, k, rounding_mode="floor")
            u_val = torch.full((n_u * k,), k**-0.5, device=dev)
            ui = _csr(crow, cols, u_val, (n_u, n_i))
            ui_t = _csr(icrow, users, u_val[order], (n_i, n_u))
            iu = _csr(icrow, users, inv_item[cols[order]], (n_i, n_u))
            iu_t = _csr(crow, cols, inv_item[cols], (n_u, n_i))
            graphs.append((ui, ui_t, iu, iu_t))
        self._graphs, self._graph_key = graphs, key
        return graphs

    def modality_views(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Eq. 8: ID embeddings summed over each modality's generated neighbours: [U, d] and [I, d] per m."""
        user_views, item_views = [], []
        for ui, ui_t, iu, iu_t in self._view_graphs():
            user_views.append(sparse_mm(ui, self.item_emb, ui_t))
            item_views.append(sparse_mm(iu, self.user_emb, iu_t))
        return user_views, item_views

    def _propagate(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 10 message passing with a layer-mean readout over layers 0..L."""
        if self.cfg.gnn_norm == "sym":  # the two blocks of D^-1/2 A D^-1/2 are each other's transpose
            ui, ui_t, iu, iu_t = self.ui_gnn, self.iu_gnn, self.iu_gnn, self.ui_gnn
        else:
            ui, ui_t, iu, iu_t = self.ui_row, self.ui_row_t, self.iu_row, self.iu_row_t
        u_layers, i_layers = [users], [items]
        for _ in range(self.cfg.n_layers):
            u_next = sparse_mm(ui, i_layers[-1], ui_t)
            i_next = sparse_mm(iu, u_layers[-1], iu_t)
            u_layers.append(u_next)
            i_layers.append(i_next)
        return torch.stack(u_layers).mean(0), torch.stack(i_layers).mean(0)

    def forward(self) -> Embeddings:
        """One full propagation; extras hold the per-modality f^m (Eq. 2) and e^m (Eq. 8) for the losses."""
        cfg = self.cfg
        f_users, f_items = self.modality_features(dropout=self.training)
        e_users, e_items = self.modality_views()
        # Eq. 9 + mean pooling. The attention's [N, M, M, H, d/H] products are recomputed in the backward pass
        # rather than kept: at 1M interactions they were the largest activations of a step.
        att_u = recompute_in_backward(self.attention, torch.stack(e_users, dim=1)).mean(dim=1)
        att_i = recompute_in_backward(self.attention, torch.stack(e_items, dim=1)).mean(dim=1)
        u0 = self.user_emb + cfg.eta * F.normalize(att_u, dim=1)  # Eq. 10, layer 0
        i0 = self.item_emb + cfg.eta * F.normalize(att_i, dim=1)
        hu, hi = self._propagate(u0, i0)
        hu = hu + cfg.omega * sum(F.normalize(f, dim=1) for f in f_users)  # Eq. 12
        hi = hi + cfg.omega * sum(F.normalize(f, dim=1) for f in f_items)
        extras = {"f_users": f_users, "f_items": f_items, "e_users": e_users, "e_items": e_items}
        return Embeddings(hu, hi, extras)

    @torch.no_grad()
    def embedding_parts(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The final h of :meth:`forward` split into its three additive parts, each ([U, d], [I, d]).

        Propagation and the layer mean are linear, so Eq. 10 over Ê^0 = E + η·Ẽ/‖Ẽ‖ equals the propagated ID
        tables plus the propagated attention term, and Eq. 12 adds the content term:
        ``"id"`` = mean_l A^l E, ``"attention"`` = mean_l A^l (η·Ẽ/‖Ẽ‖), ``"content"`` = ω·Σ_m f^m/‖f^m‖.
        Their sum is ``forward()`` without feature dropout. Scoring with one part alone shows what the ranking
        rests on (``benchmarks/mmssl_parts.py``).
        """
        cfg = self.cfg
        f_users, f_items = self.modality_features(dropout=False)
        e_users, e_items = self.modality_views()
        att_u = self.attention(torch.stack(e_users, dim=1)).mean(dim=1)
        att_i = self.attention(torch.stack(e_items, dim=1)).mean(dim=1)
        return {
            "id": self._propagate(self.user_emb, self.item_emb),
            "attention": self._propagate(
                cfg.eta * F.normalize(att_u, dim=1), cfg.eta * F.normalize(att_i, dim=1)
            ),
            "content": (
                cfg.omega * sum(F.normalize(f, dim=1) for f in f_users),
                cfg.omega * sum(F.normalize(f, dim=1) for f in f_items),
            ),
        }

    # ---- generated graphs (Eqs. 3 and 8) -------------------------------------------------------------------
    @torch.no_grad()
    def rebuild_views(self) -> None:
        """Recompute every user's top-k items under each Â^m (Eq. 3) from the current, dropout-free f^m."""
        f_users, f_items = self.modality_features(dropout=False)
        excl = self.cfg.view_exclude_observed
        for m in range(self.n_modalities):
            top = topk_relations(
                f_users[m],
                f_items[m],
                self.view_k,
                self.indptr if excl else None,
                self.indices if excl else None,
                chunk_size=self.cfg.relation_chunk,
            )
            self.view_items[m].copy_(top)
        if self.view_items.numel() == 0:
            warnings.warn(
                "MMSSL: the generated modality graphs are empty (no users)", RuntimeWarning, stacklevel=2
            )

    def on_epoch_start(self, epoch: int) -> None:
        # The trainer seeds the global stream per epoch before this hook: derive the adversarial stream from it.
        self._rng_seed = torch.initial_seed() + 11
        self._rng = None
        self._w_sum, self._w_count = 0.0, 0
        if self.cfg.rebuild_every <= 0 and epoch > 0:
            self.rebuild_views()

    # ---- adversarial part (Eqs. 3-7) -----------------------------------------------------------------------
    def _generator(self) -> torch.Generator:
        """The adversarial part's own random stream, on the model's device."""
        dev = self.item_emb.device
        if self._rng is None or self._rng.device != dev:
            self._rng = torch.Generator(device=dev)
            self._rng.manual_seed(self._rng_seed)
        return self._rng

    def sample_columns(
        self, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """A random subset S of item columns ([c] sorted indices) and its position map ([I], -1 if absent).

        Returns (None, None) when D sees every item (the default wherever D fits the memory budget).
        """
        if self.n_cols >= self.n_items:
            return None, None
        dev = self.item_emb.device
        gen = generator if generator is not None else self._generator()
        cols = torch.randperm(self.n_items, device=dev, generator=gen)[: self.n_cols].sort().values
        pos = torch.full((self.n_items,), -1, dtype=torch.long, device=dev)
        pos[cols] = torch.arange(self.n_cols, device=dev)
        return cols, pos

    def d_users(self, users: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The ``d_rows`` batch users whose relation rows D sees this step ([R] indices; all when R >= B)."""
        rows = self.cfg.d_rows
        if rows <= 0 or rows >= len(users):
            return users
        gen = generator if generator is not None else self._generator()
        pick = torch.randperm(len(users), device=users.device, generator=gen)[:rows]
        return users[pick]

    def _cosine_rows(self, u: torch.Tensor, items: torch.Tensor, cols: torch.Tensor | None) -> torch.Tensor:
        """cos(u_b, x_i) for i in S: [B, c]."""
        it = items if cols is None else items[cols]
        return F.normalize(u, dim=1) @ F.normalize(it, dim=1).T

    def fake_rows(
        self, emb: Embeddings, users: torch.Tensor, cols: torch.Tensor | None, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Generated relation rows Â^m[u, S] (Eq. 3) for every modality, stacked: [M·B, c]."""
        assert emb.extras is not None
        rows = []
        for fu, fi in zip(emb.extras["f_users"], emb.extras["f_items"], strict=True):
            r = self._cosine_rows(fu[users], fi, cols)
            if self.cfg.mask_observed and mask is not None:
                r = r * (1 - mask)
            rows.append(F.normalize(r, dim=1) if self.cfg.d_input_norm else r)
        return torch.cat(rows)

    def real_parts(
        self,
        emb: Embeddings,
        users: torch.Tensor,
        cols: torch.Tensor | None,
        a: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The two terms of Eq. 5 before they are added: GumbelSoftmax(A[u, S]) and ζ·cos(h_u, h_S), each [B, c].

        w/o-GT uses A itself as the first term. With ``aug_form="normalized"`` (official code) the cosine row is
        L2-normalised before the ζ weight, so ζ sets the second term's row norm and the first term keeps a
        share of the row; ``"literal"`` is Eq. 5 as printed (at ζ = 100 the first term is then ~0.1% of the row).
        """
        cfg = self.cfg
        if cfg.variant == "wo_gt":
            base = a
        else:
            base = gumbel_transform(
                a, cfg.gumbel_tau, cfg.gumbel_noise_scale, cfg.gumbel_form, generator=generator
            )
        aug = self._cosine_rows(emb.users[users].detach(), emb.items.detach(), cols)
        if cfg.mask_observed:
            aug = aug * (1 - a)
        if cfg.aug_form == "normalized":
            aug = F.normalize(aug, dim=1)
        return base, cfg.zeta * aug

    def real_rows(
        self,
        emb: Embeddings,
        users: torch.Tensor,
        cols: torch.Tensor | None,
        a: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Ã[u, S] = GumbelSoftmax(A[u, S]) + ζ cos(h_u, h_S) (Eq. 5), row-normalised for D: [B, c]."""
        base, aug = self.real_parts(emb, users, cols, a, generator)
        r = base + aug
        return F.normalize(r, dim=1) if self.cfg.d_input_norm else r

    def critic(
        self, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """D's scores of real [R, c] and fake [M·R, c] rows: ([R], [M·R]).

        With ``d_norm="joint_batch"`` both go through one call, so BatchNorm normalises them with shared
        statistics and the critic can tell the two apart; ``"separate_batch"`` reproduces the official code's
        two calls (each batch centred on its own, which removes most of the difference between them).
        """
        assert self.discriminator is not None
        d = self.discriminator
        if self.cfg.d_norm == "separate_batch":
            return d(real, generator), d(fake, generator)
        out = d(torch.cat([real, fake]), generator)
        return out[: len(real)], out[len(real) :]

    def discriminator_step(
        self,
        batch: Batch,
        emb: Embeddings,
        opt: Adam,
        cols: torch.Tensor | None,
        pos: torch.Tensor | None,
        grad_clip: float | None = None,
        users: torch.Tensor | None = None,
    ) -> float:
        """One update of D on L_D (Eq. 7) with every generator tensor detached (D's gradient norm clipped to
        ``grad_clip`` when given, like the main step). ``users`` are the rows D sees (default: the batch's).
        Returns L_D."""
        assert self.discriminator is not None
        users = batch.users if users is None else users
        gen = self._generator()
        a = interaction_block(self.indptr, self.indices, users, pos, self.n_cols)
        with torch.no_grad():
            real = self.real_rows(emb, users, cols, a, gen)
            fake = self.fake_rows(emb, users, cols, a)
        d_real, d_fake = self.critic(real, fake, gen)
        gap = d_real.mean() - d_fake.mean()
        loss_d = -gap
        if self.cfg.gp_weight:
            loss_d = loss_d + self.cfg.gp_weight * gradient_penalty(
                lambda x: self.discriminator(x, gen),  # type: ignore[misc]
                real.repeat(self.n_modalities, 1),
                fake,
                generator=gen,
            )
        opt.zero_grad(set_to_none=True)
        loss_d.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], grad_clip)
        opt.step()
        self._w_sum += float(gap.detach())
        self._w_count += 1
        return float(loss_d.detach())

    def generator_adversarial_loss(
        self,
        emb: Embeddings,
        users: torch.Tensor,
        cols: torch.Tensor | None,
        pos: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """L_G = -E D(Â^m) (Eq. 6) over the rows of ``users`` [R], D frozen; a scalar with a graph to f^m."""
        assert self.discriminator is not None
        a = interaction_block(self.indptr, self.indices, users, pos, self.n_cols)
        fake = self.fake_rows(emb, users, cols, a)
        self.discriminator.requires_grad_(False)
        try:
            if self.cfg.d_norm == "joint_batch":
                with torch.no_grad():
                    real = self.real_rows(emb, users, cols, a, generator)
                _, d_fake = self.critic(real, fake, generator)
            else:
                d_fake = self.discriminator(fake, generator)
        finally:
            self.discriminator.requires_grad_(True)
        return -d_fake.mean()

    # ---- objective (Eqs. 11-14) ----------------------------------------------------------------------------
    def loss(self, batch: Batch, emb: Embeddings) -> dict[str, torch.Tensor]:
        """Named terms of Eq. 13: bpr, reg, cl (λ2 L_CL), adv_g (λ3 L_G) or gae (r/p-GAE)."""
        cfg = self.cfg
        assert emb.extras is not None
        users, pos_i, neg_i = batch.users, batch.pos, batch.neg
        u, p, n = emb.users[users], emb.items[pos_i], emb.items[neg_i]
        terms = {
            "bpr": bpr_loss((u * p).sum(1), (u * n).sum(1)),
            "reg": cfg.reg_weight * l2_reg(u, p, n, batch_size=len(users)),
        }
        if cfg.param_l2:
            # Eq. 13's last term as a coupled penalty on every row of the ID tables, not only the batch's.
            terms["l2"] = cfg.param_l2 * (self.user_emb.pow(2).sum() + self.item_emb.pow(2).sum())
        if cfg.variant != "wo_cl" and cfg.cl_weight:
            terms["cl"] = cfg.cl_weight * self.contrastive_loss(emb, users, pos_i)
        if self.discriminator is not None and cfg.adv_weight:
            gen = self._generator()
            if self._step_draw is not None:
                d_users, cols, pos = self._step_draw
            else:
                cols, pos = self.sample_columns(gen)
                d_users = self.d_users(users, gen)
            terms["adv_g"] = cfg.adv_weight * self.generator_adversarial_loss(emb, d_users, cols, pos, gen)
        if cfg.variant == "rp_gae":
            # Graph auto-encoder: reconstruct observed vs unobserved pairs from each modality's relation.
            gae = sum(
                bpr_loss((fu[users] * fi[pos_i]).sum(1), (fu[users] * fi[neg_i]).sum(1))
                for fu, fi in zip(emb.extras["f_users"], emb.extras["f_items"], strict=True)
            )
            terms["gae"] = cfg.gae_weight * torch.as_tensor(gae)
        return terms

    def contrastive_loss(self, emb: Embeddings, users: torch.Tensor, pos_i: torch.Tensor) -> torch.Tensor:
        """Eq. 11: InfoNCE between each modality view e_u^m and h_u over the batch's users (and items)."""
        cfg = self.cfg
        assert emb.extras is not None
        uniq = torch.unique(users)
        cl: torch.Tensor = sum(  # type: ignore[assignment]
            info_nce(e[uniq], emb.users[uniq], cfg.cl_temperature, cfg.cl_chunk)
            for e in emb.extras["e_users"]
        )
        if cfg.cl_items:
            uniq_i = torch.unique(pos_i)
            cl = cl + sum(
                info_nce(e[uniq_i], emb.items[uniq_i], cfg.cl_temperature, cfg.cl_chunk)
                for e in emb.extras["e_items"]
            )
        return torch.as_tensor(cl)

    def configure_optimizers(self, train: TrainSettings) -> list[Adam]:
        """[AdamW over the main model, Adam(betas 0.5, 0.9) over D] (paper Sec. 4.1.4)."""
        d_params = set(self.discriminator.parameters()) if self.discriminator is not None else set()
        main = [p for p in self.parameters() if p.requires_grad and p not in d_params]
        lr = self.cfg.lr if self.cfg.lr is not None else train.lr
        opts = [AdamW(main, lr=lr, weight_decay=self.cfg.weight_decay)]
        if self.discriminator is not None:
            opts.append(Adam(self.discriminator.parameters(), lr=self.cfg.d_lr, betas=self.cfg.d_betas))
        return opts

    def train_step(
        self, batch: Batch, optimizers: list[Adam], grad_clip: float | None = None
    ) -> dict[str, float]:
        """Algorithm 1 for one batch: ``d_steps`` updates of D, then one update of the main model.

        The generator's forward pass is shared: D's inputs are detached views of it (D's update does not
        change the generator's parameters, so recomputing them would give the same values). D and L_G see
        the same ``d_rows`` users and item columns in one step.
        """
        self._steps += 1
        if self.cfg.rebuild_every > 0 and self._steps % self.cfg.rebuild_every == 0:
            self.rebuild_views()
        emb = self.forward()
        out: dict[str, float] = {}
        if self.discriminator is not None:
            gen = self._generator()
            cols, pos = self.sample_columns(gen)
            d_users = self.d_users(batch.users, gen)
            self._step_draw = (d_users, cols, pos)
            if len(optimizers) > 1:
                for _ in range(self.cfg.d_steps):
                    out["adv_d"] = self.discriminator_step(
                        batch, emb, optimizers[1], cols, pos, grad_clip, users=d_users
                    )
        try:
            terms = self.loss(batch, emb)
        finally:
            self._step_draw = None
        total = torch.stack(list(terms.values())).sum()
        main = optimizers[0]
        main.zero_grad(set_to_none=True)
        total.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_([p for g in main.param_groups for p in g["params"]], grad_clip)
        main.step()
        out.update({k: float(v.detach()) for k, v in terms.items()})
        return out

    # ---- proof that each component acts --------------------------------------------------------------------
    def _register_probe(self, data: Dataset, train: sp.csr_matrix) -> None:
        """A fixed probe batch for :meth:`epoch_diagnostics`: up to 256 users with one positive and one negative.

        Drawn from a local generator with a constant seed, so the global random stream is untouched.
        """
        rng = np.random.default_rng(20230430)
        active = np.flatnonzero(np.diff(train.indptr) > 0)
        users = (
            np.sort(rng.choice(active, size=min(256, len(active)), replace=False)) if len(active) else active
        )
        starts, degs = train.indptr[users], np.diff(train.indptr)[users]
        pos = train.indices[starts + (rng.random(len(users)) * degs).astype(np.int64)]
        neg = rng.integers(0, data.n_items, size=len(users))
        for name, arr in (("probe_users", users), ("probe_pos", pos), ("probe_neg", neg)):
            self.register_buffer(name, torch.from_numpy(np.asarray(arr, dtype=np.int64)), persistent=False)

    def epoch_diagnostics(self) -> dict[str, float]:
        """Whether the adversarial part acts, measured on the fixed probe batch (see docs/mmssl.md).

        * ``critic_gap``: E D(real) - E D(fake) with D in eval mode (> 0: the critic separates them).
        * ``w_estimate``: the mean of the same gap over this epoch's D steps (the critic's Wasserstein estimate).
        * ``grad_ratio``: ||∇ λ3·L_G|| / ||∇ L_BPR|| over the modality transforms' parameters.
        * ``gumbel_share``: mean over rows of ||first term|| / (||first term|| + ||ζ term||) of Eq. 5.
        * ``view_new_share``: share of the Eq. 8 edges (u, i) that are not training interactions.
        """
        out = {"view_new_share": self._view_new_share()}
        if self.discriminator is None:
            return out
        was_training = self.training
        self.eval()
        gen = torch.Generator(device=self.item_emb.device)
        gen.manual_seed(1234)  # the same draws every epoch, so the figures are comparable across epochs
        try:
            emb = self.forward()
            users = self.probe_users
            cols, pos = self.sample_columns(gen)
            a = interaction_block(self.indptr, self.indices, users, pos, self.n_cols)
            with torch.no_grad():
                base, aug = self.real_parts(emb, users, cols, a, gen)
                real = F.normalize(base + aug, dim=1) if self.cfg.d_input_norm else base + aug
                fake = self.fake_rows(emb, users, cols, a)
                d_real, d_fake = self.critic(real, fake, gen)
            out["critic_gap"] = float(d_real.mean() - d_fake.mean())
            share = base.norm(dim=1) / (base.norm(dim=1) + aug.norm(dim=1)).clamp_min(1e-12)
            out["gumbel_share"] = float(share.mean())
            out["grad_ratio"] = self._grad_ratio(emb, users, cols, pos, gen)
        finally:
            self.train(was_training)
        out["w_estimate"] = self._w_sum / self._w_count if self._w_count else float("nan")
        return out

    def _grad_ratio(
        self,
        emb: Embeddings,
        users: torch.Tensor,
        cols: torch.Tensor | None,
        pos: torch.Tensor | None,
        gen: torch.Generator,
    ) -> float:
        params = [p for p in self.transforms.parameters() if p.requires_grad]
        u = emb.users[users]
        bpr = bpr_loss((u * emb.items[self.probe_pos]).sum(1), (u * emb.items[self.probe_neg]).sum(1))
        adv = self.cfg.adv_weight * self.generator_adversarial_loss(emb, users, cols, pos, gen)
        g_bpr = torch.autograd.grad(bpr, params, retain_graph=True, allow_unused=True)
        g_adv = torch.autograd.grad(adv, params, allow_unused=True)

        def norm(gs: tuple[torch.Tensor | None, ...]) -> float:
            return float(torch.sqrt(sum((g.pow(2).sum() for g in gs if g is not None), torch.tensor(0.0))))

        return norm(g_adv) / max(norm(g_bpr), 1e-12)

    @torch.no_grad()
    def _view_new_share(self) -> float:
        """Share of the Eq. 8 edges that link a user to an item outside their training interactions."""
        n_u, n_i = self.n_users, self.n_items
        if self.view_items.numel() == 0:
            return float("nan")
        deg = self.indptr[1:] - self.indptr[:-1]
        train_keys = torch.repeat_interleave(torch.arange(n_u, device=deg.device), deg) * n_i + self.indices
        rows = torch.arange(n_u, device=deg.device).view(1, n_u, 1)
        keys = (rows * n_i + self.view_items).reshape(-1)
        return 1.0 - float(torch.isin(keys, train_keys).float().mean())


def discriminator_weights(n_cols: int, hidden: int) -> int:
    """How many weights D has over ``n_cols`` inputs: n·h + h·h/2 + h/2 (+ biases), h = min(n/4, hidden)."""
    h1 = max(1, n_cols // 4 if hidden <= 0 else min(hidden, n_cols // 4))
    h2 = max(1, h1 // 2)
    return n_cols * h1 + h1 * h2 + h2 + h1 + h2 + 1


def discriminator_columns(d_columns: int, n_items: int, hidden: int = 0) -> int:
    """How many item columns D sees: ``d_columns`` when > 0, else every item if a full-width D fits.

    With its gradient and two Adam moments D takes 16 bytes per weight (docs/mmssl.md). Uncapped (the official
    code's n -> n/4 -> n/8 widths, ≈ 0.28·n² weights) that is 0.2 GB at |I| = 6,710 and 45 GB at |I| = 100k;
    with the default first hidden width 512 it is ≈ 8 KB per item (0.05 GB at 6,710 items, 0.8 GB at 100k). A
    full-width D that does not fit $MODALREC_MEMORY_BUDGET falls back to 512 sampled columns per step, with a
    warning; an explicit ``d_columns`` that does not fit is an error.
    """
    wanted = n_items if d_columns <= 0 else min(d_columns, n_items)
    budget = memory_budget()
    needed = discriminator_weights(wanted, hidden) * 16
    if needed <= budget:
        return wanted
    fallback = 512
    if d_columns <= 0 and n_items > fallback and discriminator_weights(fallback, hidden) * 16 <= budget:
        warnings.warn(
            f"MMSSL: a discriminator over all {n_items} items needs about {needed / 2**20:.0f} MiB but the "
            f"memory budget is {budget / 2**20:.0f} MiB; D sees {fallback} sampled item columns per step "
            f"instead (set model.d_columns, or raise {MEMORY_ENV})",
            RuntimeWarning,
            stacklevel=3,
        )
        return fallback
    raise ModalrecError(
        f"MMSSL's discriminator over {wanted} item columns needs about {needed / 2**20:.0f} MiB (weights, "
        f"gradient, Adam state) but the memory budget is {budget / 2**20:.0f} MiB; lower model.d_columns "
        f"(e.g. 512) or raise {MEMORY_ENV}"
    )
