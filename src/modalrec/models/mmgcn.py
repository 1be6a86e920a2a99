"""MMGCN (Wei et al., ACM MM 2019): a graph convolution per modality with modality-specific user preferences.

For every modality m the user-item graph carries that modality's node states: items start from their
(projected) content features f_i^m, users from a learned modality preference vector p_u^m. Each layer l has

    aggregation (Eq. 2, mean):  h_v = LeakyReLU(mean_{n ∈ N(v)} W_1 x_n)
    combination (Eqs. 5-7):     x̂_v = LeakyReLU(W_2 x_v + b_2) + e_v    (e_v: the ID embedding, shared)
        element-wise (official): x_v' = LeakyReLU(W_3 h_v + b_3) + x̂_v          (``concat=False``)
        concatenation (Eq. 6):   x_v' = LeakyReLU(W_3 [h_v ; x̂_v] + b_3)        (``concat=True``)
and the final representations sum the modality outputs (Eq. 8): u = Σ_m u^m, i = Σ_m i^m; score u·i, BPR loss.

Details the paper leaves open follow the official code (weiyinwei/MMGCN): wide raw features are first
projected by a linear layer to ``feat_dim`` and the layer-1 input [p; f] is row-L2-normalised; the first
aggregation keeps the input width and its combination maps to ``embed_dim``; the ID embedding enters every
layer. The neighbour mean excludes the node itself. Everything is sparse: one [U+I, U+I] row-normalised
adjacency shared by all modalities.

Items lacking a modality: their layer-1 content input in that modality's GCN is a learned vector (in the
projected space, or the raw one when features are not projected; ``missing_content.MissingEmbedding``), so no
user preference is pulled towards a content vector that does not exist; the ID embedding still enters every
layer, so an item with no content at all is carried by its ID.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch
from modalrec.graph import bipartite_adjacency, scipy_to_torch
from modalrec.losses import bpr_loss, l2_reg
from modalrec.models.base import Embeddings, Model
from modalrec.models.missing_content import MissingEmbedding, content_rows, warn_contentless


def row_normalized_bipartite(train: sp.spmatrix) -> torch.Tensor:
    """D^{-1} A of the bipartite user-item graph (neighbour mean, Eq. 2), [(U+I), (U+I)] torch sparse CSR."""
    adj = bipartite_adjacency(train)
    deg = np.asarray(adj.sum(axis=1)).ravel()
    with np.errstate(divide="ignore"):
        inv = np.where(deg > 0, 1.0 / deg, 0.0).astype(np.float32)
    return scipy_to_torch(sp.diags(inv) @ adj)


class _ModalityGCN(nn.Module):
    """One modality's stack of aggregation + combination layers (MMGCN Eqs. 2-7)."""

    def __init__(self, n_users: int, feat_in: int, cfg: MMGCN.Config) -> None:
        super().__init__()
        self.project = cfg.feat_dim > 0 and feat_in > cfg.feat_dim
        width = cfg.feat_dim if self.project else feat_in
        self.mlp = nn.Linear(feat_in, width) if self.project else None
        self.preference = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users, width)))
        self.concat = cfg.concat
        d = cfg.embed_dim
        self.agg = nn.ModuleList()
        self.lin = nn.ModuleList()
        self.comb = nn.ModuleList()
        for layer in range(cfg.n_layers):
            d_in = width if layer == 0 else d
            self.agg.append(nn.Linear(d_in, d_in, bias=False))
            self.lin.append(nn.Linear(d_in, d))
            self.comb.append(nn.Linear(d_in + d if cfg.concat else d_in, d))
        for mod in self.modules():
            if isinstance(mod, nn.Linear):
                nn.init.xavier_uniform_(mod.weight)

    def forward(
        self,
        adj: torch.Tensor,
        feats: torch.Tensor,
        id_emb: torch.Tensor,
        substitute: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Args: adj [(U+I), (U+I)] row-normalised; feats [I, d_m]; id_emb [(U+I), d]; ``substitute`` puts the
        missing-content vector into the (projected) item rows [I, width]. Returns [(U+I), d]."""
        items = self.mlp(feats) if self.mlp is not None else feats
        if substitute is not None:
            items = substitute(items)
        x = F.normalize(torch.cat([self.preference, items], dim=0), dim=1)
        for agg, lin, comb in zip(self.agg, self.lin, self.comb, strict=True):
            h = F.leaky_relu(torch.sparse.mm(adj, agg(x)))
            x_hat = F.leaky_relu(lin(x)) + id_emb
            x = (
                F.leaky_relu(comb(torch.cat([h, x_hat], dim=1)))
                if self.concat
                else F.leaky_relu(comb(h)) + x_hat
            )
        return x


class MMGCN(Model):
    """Per-modality GCNs over the user-item graph, each with its own user preference, outputs summed."""

    name = "mmgcn"
    modalities = "any"
    adj: torch.Tensor

    @dataclass
    class Config:
        embed_dim: int = 64  # ID embedding and output width d
        n_layers: int = 2  # aggregation + combination layers per modality
        feat_dim: int = 256  # project raw features wider than this to this width (official code); 0 = never
        concat: bool = False  # combination layer: concatenation (Eq. 6) or element-wise sum (Eq. 7, official)
        reg_weight: float = 1e-4  # λ of the L2 penalty on the batch's ID embeddings and preferences
        normalize_features: bool = True  # row-L2-normalise raw features (their scales differ a lot)

    def __init__(self, data: Dataset, cfg: Config) -> None:
        super().__init__(data, cfg)
        self.modality_names = list(data.modalities)
        self.id_emb = nn.Parameter(
            nn.init.xavier_normal_(torch.empty(data.n_users + data.n_items, cfg.embed_dim))
        )
        self.gcns = nn.ModuleList()
        for i, m in enumerate(self.modality_names):
            feats = torch.from_numpy(content_rows(data, m))
            if cfg.normalize_features:
                feats = F.normalize(feats, dim=1)
            self.register_buffer(f"feat_{i}", feats, persistent=False)
            self.gcns.append(_ModalityGCN(data.n_users, feats.shape[1], cfg))
        self.missing = MissingEmbedding(
            data, self.modality_names, [g.preference.shape[1] for g in self._gcns()]
        )
        warn_contentless(data, self.modality_names, self.name)
        self.register_buffer("adj", row_normalized_bipartite(data.train), persistent=False)

    def _gcns(self) -> list[_ModalityGCN]:
        return [gcn for gcn in self.gcns if isinstance(gcn, _ModalityGCN)]

    def forward(self) -> Embeddings:
        out = torch.stack(
            [
                gcn(self.adj, getattr(self, f"feat_{i}"), self.id_emb, self._substitute(i))
                for i, gcn in enumerate(self.gcns)
            ]
        ).sum(dim=0)
        users, items = torch.split(out, [self.n_users, self.n_items])
        return Embeddings(users, items)

    def _substitute(self, idx: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
        return partial(self.missing, idx) if self.missing.present(idx) is not None else None

    def loss(self, batch: Batch, emb: Embeddings) -> dict[str, torch.Tensor]:
        u, p, n = emb.users[batch.users], emb.items[batch.pos], emb.items[batch.neg]
        ids = (
            self.id_emb[batch.users],
            self.id_emb[self.n_users + batch.pos],
            self.id_emb[self.n_users + batch.neg],
        )
        prefs = tuple(gcn.preference[batch.users] for gcn in self._gcns())
        return {
            "bpr": bpr_loss((u * p).sum(1), (u * n).sum(1)),
            "reg": self.cfg.reg_weight * l2_reg(*ids, *prefs, batch_size=len(batch.users)),
        }
