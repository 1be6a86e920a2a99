"""SGL (Wu et al., "Self-supervised Graph Learning for Recommendation", SIGIR 2021).

A LightGCN encoder (He et al. 2020, Eqs. 3-4 of that paper) trained with BPR plus an InfoNCE term between
two stochastically augmented views of the user-item graph (SGL Section 3):

* Node dropout, "nd" (Eq. 5): s'(G) = (M' ⊙ V, E) - every user and item node is dropped with probability ρ
  together with its edges.
* Edge dropout, "ed" (Eq. 6): s(G) = (V, M ⊙ E) - every interaction is dropped with probability ρ; the
  same subgraph is used at every layer.
* Random walk, "rw" (Eq. 7): s(G) = (V, M^(l) ⊙ E) - a different edge-dropout mask per layer l.

Each view's subgraph is re-normalised as D^{-1/2} A D^{-1/2} and regenerated once per epoch
(``on_epoch_start``), as in Algorithm 1 of the paper and the official code. The contrastive loss (Eq.
9-10) with cosine similarity s:

    L_ssl^user = Σ_{u∈B} -log exp(s(z'_u, z''_u)/τ) / Σ_{v∈B} exp(s(z'_u, z''_v)/τ)

and likewise for items; the joint objective (Eq. 11) is L = L_bpr + λ1 (L_ssl^user + L_ssl^item) + λ2
||Θ||².

Details the paper leaves open, taken from the official code: the anchors are the *unique* users and
positive items of the batch (duplicates would be false negatives); negatives are the other anchors of the
same batch by default (``negatives="batch"``); ``negatives="all"`` contrasts against every user/item of
the other view, as the code's alternative loss does. We average (not sum) both BPR and InfoNCE over the
batch; λ1 keeps its meaning as the ratio of the two terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch
from modalrec.errors import ConfigError
from modalrec.graph import bipartite_layer_mean, normalized_interactions, sparse_mm
from modalrec.losses import info_nce, info_nce_all
from modalrec.models.base import Embeddings, Model, bpr_terms

AUGMENTATIONS = ("nd", "ed", "rw")


def drop_edges(train: sp.csr_matrix, ratio: float, rng: np.random.Generator) -> sp.csr_matrix:
    """Edge dropout (SGL Eq. 6): keep each interaction of the [U, I] matrix with probability 1 - ratio."""
    coo = train.tocoo()
    keep = rng.random(coo.nnz) >= ratio
    return sp.csr_matrix(
        (coo.data[keep], (coo.row[keep], coo.col[keep])), shape=train.shape, dtype=np.float32
    )


def drop_nodes(train: sp.csr_matrix, ratio: float, rng: np.random.Generator) -> sp.csr_matrix:
    """Node dropout (SGL Eq. 5): drop each user and each item with probability ratio, with all their edges."""
    n_users, n_items = train.shape
    keep_u = (rng.random(n_users) >= ratio).astype(np.float32)
    keep_i = (rng.random(n_items) >= ratio).astype(np.float32)
    out = sp.diags(keep_u) @ sp.csr_matrix(train, dtype=np.float32) @ sp.diags(keep_i)
    out = sp.csr_matrix(out, dtype=np.float32)
    out.eliminate_zeros()
    return out


Blocks = tuple[torch.Tensor, torch.Tensor]  # (R̂ [U, I], R̂ᵀ [I, U]) of one normalised bipartite graph


def augmented_blocks(train: sp.csr_matrix) -> Blocks:
    """D^{-1/2} A D^{-1/2} of the (perturbed) bipartite graph as its two blocks R̂, R̂ᵀ (torch sparse CSR).

    Degrees are those of the perturbed graph, as in the official code's re-normalised subgraph.
    """
    return normalized_interactions(train)


class SGL(Model):
    """LightGCN + graph-augmentation contrastive learning (node/edge dropout or random walk)."""

    name = "sgl"
    modalities = ()
    r_hat: torch.Tensor  # [U, I] user-item block R̂ of the normalised adjacency Â (sparse CSR buffer)
    r_hat_t: torch.Tensor  # [I, U] its transpose

    @dataclass
    class Config:
        embed_dim: int = 64  # latent dimensionality d
        n_layers: int = 3  # LightGCN propagation depth
        reg_weight: float = 1e-4  # λ2 of the L2 penalty on layer-0 batch embeddings (Eq. 11)
        aug: str = "ed"  # augmentation: "nd" node dropout, "ed" edge dropout, "rw" random walk (Section 3.2)
        ratio: float = 0.1  # ρ, dropout ratio of nodes/edges per view
        ssl_temp: float = 0.2  # τ of InfoNCE (Eq. 10)
        ssl_weight: float = (
            0.001  # λ1 of Eq. 11; the paper's 0.1 holds BPR at ln 2 at lr 1e-3 (docs/defaults.md)
        )
        negatives: str = (
            "batch"  # InfoNCE negatives: "batch" (paper Eq. 10) or "all" (every node of the view)
        )
        seed: int = 0  # seed of the view sampler; epoch e uses the stream (seed, e)

    def __init__(self, data: Dataset, cfg: Config) -> None:
        super().__init__(data, cfg)
        if cfg.aug not in AUGMENTATIONS:
            raise ConfigError(f"sgl: aug must be one of {AUGMENTATIONS}, not {cfg.aug!r}")
        if cfg.negatives not in ("batch", "all"):
            raise ConfigError(f"sgl: negatives must be 'batch' or 'all', not {cfg.negatives!r}")
        if not 0.0 <= cfg.ratio < 1.0:
            raise ConfigError(f"sgl: ratio must be in [0, 1), not {cfg.ratio}")
        self.train_matrix = sp.csr_matrix(data.train, dtype=np.float32)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_users, cfg.embed_dim)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_items, cfg.embed_dim)))
        r_hat, r_hat_t = normalized_interactions(data.train)
        self.register_buffer("r_hat", r_hat, persistent=False)
        self.register_buffer("r_hat_t", r_hat_t, persistent=False)
        self.views: list[list[Blocks]] = []
        self.on_epoch_start(0)

    # ---- augmentation -----------------------------------------------------------------------------------
    def make_view(self, rng: np.random.Generator) -> list[Blocks]:
        """One augmented view: n_layers propagation graphs (one object repeated unless aug is "rw")."""
        cfg = self.cfg
        if cfg.aug == "nd":
            return [augmented_blocks(drop_nodes(self.train_matrix, cfg.ratio, rng))] * cfg.n_layers
        if cfg.aug == "ed":
            return [augmented_blocks(drop_edges(self.train_matrix, cfg.ratio, rng))] * cfg.n_layers
        return [augmented_blocks(drop_edges(self.train_matrix, cfg.ratio, rng)) for _ in range(cfg.n_layers)]

    def on_epoch_start(self, epoch: int) -> None:
        """Regenerate the two augmented views s1(G), s2(G) (Algorithm 1: once per epoch)."""
        rng = np.random.default_rng([self.cfg.seed, epoch])
        device = self.user_emb.device
        self.views = [self._to_device(self.make_view(rng), device) for _ in range(2)]

    @staticmethod
    def _to_device(view: list[Blocks], device: torch.device) -> list[Blocks]:
        moved = {id(b): (b[0].to(device), b[1].to(device)) for b in view}  # keep repeated layers shared
        return [moved[id(b)] for b in view]

    # ---- encoder ----------------------------------------------------------------------------------------
    def encode(self, view: list[Blocks]) -> tuple[torch.Tensor, torch.Tensor]:
        """LightGCN layer-mean readout with one propagation graph per layer: users [U, d], items [I, d].

        A view with the same graph at every layer (main graph, "nd", "ed") uses the two-block self-adjoint
        propagation of LightGCN (no stored layer outputs); "rw" propagates layer by layer on its own blocks.
        """
        if all(b is view[0] for b in view):
            return bipartite_layer_mean(*view[0], self.user_emb, self.item_emb, len(view))
        users: torch.Tensor = self.user_emb
        items: torch.Tensor = self.item_emb
        acc_u, acc_i = users, items
        for r, r_t in view:
            users, items = sparse_mm(r, items, r_t), sparse_mm(r_t, users, r)
            acc_u, acc_i = acc_u + users, acc_i + items
        scale = 1.0 / (len(view) + 1)
        return acc_u * scale, acc_i * scale

    def forward(self) -> Embeddings:
        users, items = self.encode([(self.r_hat, self.r_hat_t)] * self.cfg.n_layers)
        return Embeddings(users, items)

    # ---- objective --------------------------------------------------------------------------------------
    def ssl_loss(self, batch: Batch) -> torch.Tensor:
        """L_ssl^user + L_ssl^item (Eq. 10) between the two current views for the batch's users and items."""
        device = self.user_emb.device
        if self.views[0][0][0].device != device:  # the model was moved after the views were drawn
            self.views = [self._to_device(view, device) for view in self.views]
        (u1, i1), (u2, i2) = (self.encode(v) for v in self.views)
        users = torch.unique(batch.users)
        items = torch.unique(batch.pos)
        tau = self.cfg.ssl_temp
        if self.cfg.negatives == "all":
            return info_nce_all(u1, u2, users, tau) + info_nce_all(i1, i2, items, tau)
        return info_nce(u1[users], u2[users], tau) + info_nce(i1[items], i2[items], tau)

    def loss(self, batch: Batch, emb: Embeddings) -> dict[str, torch.Tensor]:
        terms = bpr_terms(batch, emb, self.user_emb, self.item_emb, self.cfg.reg_weight)
        if self.cfg.ssl_weight > 0:
            terms["cl"] = self.cfg.ssl_weight * self.ssl_loss(batch)
        return terms
