"""LightGCN-M: LightGCN (He et al., SIGIR 2020) with multi-modal item features in its layer-0 item embeddings.

The MMSSL paper (Wei et al., WWW 2023, Sec. 4.1.3) lists LightGCN-M as "LightGCN as backbone that incorporates
multi-modal item features during the graph-based message passing" without further detail. Here the item input
of the propagation adds a learned projection of each modality (features row-L2-normalised by default):

    e_i^{(0)} = e_i + Σ_m W_m f̄_i^m / M,        e_u^{(0)} = e_u
    e^{(k+1)} = Â e^{(k)}                         (LightGCN Eq. 3)
    e = mean_k e^{(k)}                            (LightGCN Eq. 4)

so content reaches users through propagation. The L2 penalty applies to the batch's layer-0 ID embeddings
(LightGCN Eq. 5); the projections W_m are regularised through the optimiser's weight decay if any.
Items lacking a modality: the mean over modalities runs over the ones the item has (a renormalised fusion,
``missing_content.masked_mean``); an item with no content has e_i^{(0)} = e_i, the plain LightGCN input.
A training step propagates for the batch's rows only where it can (``batch_rows.py``; same values and gradients as
the full layer mean).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch
from modalrec.graph import bipartite_layer_mean, normalized_interactions
from modalrec.graph.batch_rows import batch_local_indices, layer_mean_batch_rows
from modalrec.models.base import Embeddings, Model, bpr_terms_on_rows
from modalrec.models.missing_content import MissingEmbedding, masked_mean, warn_contentless


class LightGCNM(Model):
    """LightGCN whose item layer-0 embedding is the ID embedding plus projected modality features."""

    name = "lightgcn_m"
    modalities = "any"
    r_hat: torch.Tensor  # [U, I] block R̂ of the normalised adjacency (sparse CSR)
    r_hat_t: torch.Tensor  # [I, U] its transpose

    @dataclass
    class Config:
        embed_dim: int = 64  # latent dimensionality d
        n_layers: int = 3  # propagation depth K
        reg_weight: float = 1e-4  # λ of the L2 penalty on layer-0 batch ID embeddings
        normalize_features: bool = (
            True  # row-L2-normalise each modality before projecting (scales differ a lot)
        )

    def __init__(self, data: Dataset, cfg: Config) -> None:
        super().__init__(data, cfg)
        self.modality_names = list(data.modalities)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_users, cfg.embed_dim)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_items, cfg.embed_dim)))
        self.proj = nn.ModuleDict()
        for i, m in enumerate(self.modality_names):
            feats = torch.from_numpy(data.features[m])
            if cfg.normalize_features:
                feats = F.normalize(feats, dim=1)
            self.register_buffer(f"feat_{i}", feats, persistent=False)
            lin = nn.Linear(feats.shape[1], cfg.embed_dim, bias=False)
            nn.init.xavier_uniform_(lin.weight)
            self.proj[m] = lin
        self.missing = MissingEmbedding(data, self.modality_names, None)  # holds the masks; no vector is used
        warn_contentless(data, self.modality_names, self.name)
        r_hat, r_hat_t = normalized_interactions(data.train)  # the two blocks of Â
        self.register_buffer("r_hat", r_hat, persistent=False)
        self.register_buffer("r_hat_t", r_hat_t, persistent=False)

    def content(self) -> torch.Tensor:
        """Mean projected modality content Σ_m W_m f̄^m / M of every item: [I, d]."""
        parts = [self.proj[m](getattr(self, f"feat_{i}")) for i, m in enumerate(self.modality_names)]
        present = self.missing.matrix()
        if present is None:
            return torch.stack(parts).mean(dim=0)
        return masked_mean(parts, present)

    def forward(self) -> Embeddings:
        items0 = self.item_emb + self.content()
        users, items = bipartite_layer_mean(
            self.r_hat, self.r_hat_t, self.user_emb, items0, self.cfg.n_layers
        )
        return Embeddings(users, items)

    def loss(self, batch: Batch, emb: Embeddings) -> dict[str, torch.Tensor]:
        return bpr_terms_on_rows(batch, emb, self.user_emb, self.item_emb, self.cfg.reg_weight)

    def batch_loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The loss of one batch, propagated for the batch's rows only (``batch_rows.py``)."""
        local, user_rows, item_rows = batch_local_indices(batch)
        items0 = self.item_emb + self.content()
        rows = layer_mean_batch_rows(
            self.r_hat, self.r_hat_t, self.user_emb, items0, self.cfg.n_layers, user_rows, item_rows
        )
        # the L2 term reads the ID embeddings of the items, not their layer-0 input with the content added
        extras = {"user_ego": rows.user_ego, "item_ego": self.item_emb[item_rows]}
        return self.loss(local, Embeddings(rows.users, rows.items, extras))
