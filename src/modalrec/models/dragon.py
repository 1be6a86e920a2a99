"""DRAGON (Zhou et al., "Enhancing Dyadic Relations with Homogeneous Graphs for Multimodal Recommendation",
ECAI 2023): dual representations from heterogeneous and homogeneous graphs.

Per modality m (any number M >= 1):
  * item input  i^m = MLP_m(x^m) = W2 LeakyReLU(W1 x^m + b1) + b2 (hidden width 4d), user input a learnable
    preference p^m_u ([U, d]); both rows L2-normalised: z^m = normalize([p^m; i^m]).
  * heterogeneous (user-item) graph: h^m = z^m + Â z^m + Â² z^m, Â = D^{-1/2} A D^{-1/2} of the bipartite
    interaction graph without self loops (sum readout over ``n_ui_layers`` + 1 layers).
Modality fusion ("concat", the official default): users u = ‖_m w_u^m h^m_u with learnable per-user weights
w_u ∈ R^M (initialised by a softmax over M), items i = ‖_m h^m_i, so the final dimension is M·d.
Homogeneous graphs:
  * item-item: S = Σ_m α_m S^m, S^m the frozen binary top-k cosine graph of raw modality m, sym-normalised;
    i ← i + S^L i.
  * user-user: each user's top-k co-interacting users v (by shared-item count c_uv), weights β_uv =
    softmax_v(c_uv) over the kept neighbours; u ← u + Σ_v β_uv u_v.
Score ŷ_ui = uᵀi; loss = BPR + λ (Σ_m mean_{u∈B} (p^m_u)² + mean(w²)).

The paper text is not used here: equations and defaults follow the official code (enoche/MMRec ``dragon.py``
and its ``DRAGON.yaml``). Where we differ from that code:
  * any set of modalities; α_m equal by default (the code wires image/text with α_image = 0.1; set
    ``item_graph_weights`` in the modality order of the dataset to reproduce it).
  * the user-user graph is built once, sparse and in row blocks (``homogeneous_graphs.cooccurrence_topk``);
    users with fewer than k co-interacting users keep just those (the code pads the list by random repeats,
    which skews the softmax towards the repeated users).
  * BPR uses the natural logarithm (the code's log2 only rescales the term).
  * the code builds item-dropped copies of the interaction graph that its forward never uses; they are omitted.

Option beyond paper and code: ``user_similarity="cosine"`` ranks and weights the co-interacting users by
c_uv / sqrt(|N_u| |N_v|) instead of the raw count c_uv. The raw count grows with v's activity, so on data with a
few very active users those users are everyone's neighbours: on Tiktok (median 2 training items per user, max
603) at k = 40 the 100 most active users hold 59% of all user-user edges and the average kept neighbour has 247
training items; u ← u + Σ_v β_uv u_v then adds nearly the same mean of those users to every user, and each step
on a hub's preferences moves thousands of users' scores at once (validation recall swings by ±0.01 from epoch to
epoch). By cosine the 100 most-kept users hold 15% of the edges and the average neighbour has 61 items.

Items lacking a modality: MLP_m(x^m) is a learned vector (``missing_content.MissingEmbedding``); S^m spans the
items that have m and each row of S takes α renormalised over its item's modalities, so an item with no content
has no item-item neighbours and is represented through the user-item graph only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch
from modalrec.errors import ConfigError
from modalrec.graph import normalized_adjacency, propagate, sparse_mm
from modalrec.losses import bpr_loss
from modalrec.models.base import Embeddings, Model
from modalrec.models.homogeneous_graphs import (
    binary_knn_graph,
    cooccurrence_topk,
    edges_to_csr,
    modality_weights,
    row_softmax,
    weighted_sum_graph,
)
from modalrec.models.item_graphs import Edges
from modalrec.models.missing_content import MissingEmbedding, warn_contentless


class DRAGON(Model):
    """Per-modality user-item GCNs fused by concatenation, refined on user-user and item-item graphs."""

    name = "dragon"
    modalities = "any"
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "w/o user graph": {"use_user_graph": False},
        "w/o item graph": {"use_item_graph": False},
        "w/o homogeneous": {"use_user_graph": False, "use_item_graph": False},
        "sum fusion": {"fusion": "sum"},
    }
    adj: torch.Tensor  # [(U+I), (U+I)] normalised bipartite adjacency (sparse CSR)
    item_graph: torch.Tensor  # [I, I] item-item graph S (sparse CSR) and its transpose
    item_graph_t: torch.Tensor
    user_graph: (
        torch.Tensor
    )  # [U, U] user-user weights β (sparse CSR, top-k entries per row) and its transpose
    user_graph_t: torch.Tensor

    @dataclass
    class Config:
        embed_dim: int = 64  # d: size of each modality's representation (the final size is M·d with concat)
        n_ui_layers: int = 2  # propagation layers over the user-item graph (sum readout, official code: 2)
        mlp_hidden: int = 256  # hidden width of the feature MLP (official code: 4·64)
        knn_k: int = 10  # k of the frozen item-item kNN graphs
        item_graph_weights: list[float] | None = None  # α_m per modality (dataset order); None = equal
        n_item_layers: int = 1  # L propagations over the item-item graph
        user_k: int = 40  # co-interacting users kept per user
        user_weighting: str = "softmax"  # β_uv: "softmax" of shared-item counts (code) or "mean"
        user_similarity: str = "count"  # ranks the neighbours (and feeds the softmax): shared-item "count"
        # (paper, code) or "cosine" c_uv / sqrt(|N_u||N_v|), which keeps the most active users from being
        # every user's neighbour (see the module docstring)
        fusion: str = "concat"  # "concat" (code default) or "sum" of the weighted modality representations
        use_user_graph: bool = True  # False: no user-user refinement (ablation)
        use_item_graph: bool = True  # False: no item-item refinement (ablation)
        reg_weight: float = 1e-4  # λ on the batch users' preferences and the fusion weights
        chunk_size: int = 1024  # rows per block in the kNN and co-interaction searches

    def __init__(self, data: Dataset, cfg: Config) -> None:
        super().__init__(data, cfg)
        if cfg.fusion not in ("concat", "sum"):
            raise ConfigError(f"fusion must be 'concat' or 'sum', not {cfg.fusion!r}")
        if cfg.user_weighting not in ("softmax", "mean"):
            raise ConfigError(f"user_weighting must be 'softmax' or 'mean', not {cfg.user_weighting!r}")
        names = list(data.features)
        d = cfg.embed_dim
        for idx, m in enumerate(names):
            feats = torch.from_numpy(np.ascontiguousarray(data.features[m], dtype=np.float32))
            self.register_buffer(f"feat_{idx}", feats, persistent=False)
        self.n_modalities = len(names)
        self.mlps = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Linear(data.features[m].shape[1], cfg.mlp_hidden),
                    nn.LeakyReLU(),
                    nn.Linear(cfg.mlp_hidden, d),
                )
                for m in names
            ]
        )
        self.preferences = nn.ParameterList(
            [nn.Parameter(nn.init.xavier_normal_(torch.empty(data.n_users, d))) for _ in names]
        )
        # per-user modality weights w_u, initialised as the code does: a softmax over M of Gaussian draws
        init = nn.init.xavier_normal_(torch.empty(data.n_users, self.n_modalities, 1))
        self.user_modal_weight = nn.Parameter(torch.softmax(init, dim=1).squeeze(-1))
        self.register_buffer("adj", normalized_adjacency(data.train), persistent=False)

        weights = modality_weights(cfg.item_graph_weights, self.n_modalities)
        self.missing = MissingEmbedding(data, names, d)
        warn_contentless(data, names, self.name)
        graphs = [
            binary_knn_graph(self._feat(i), cfg.knn_k, cfg.chunk_size, self.missing.present(i))
            for i in range(self.n_modalities)
        ]
        item_graph, item_graph_t = edges_to_csr(
            weighted_sum_graph(graphs, weights, self.missing.matrix()), data.n_items
        )
        self.register_buffer("item_graph", item_graph, persistent=False)
        self.register_buffer("item_graph_t", item_graph_t, persistent=False)

        rows, cols, counts = cooccurrence_topk(data.train, cfg.user_k, cfg.chunk_size, cfg.user_similarity)
        if cfg.user_weighting == "softmax":
            beta = row_softmax(rows, counts, data.n_users)
        else:
            beta = row_softmax(rows, torch.zeros_like(counts), data.n_users)
        user_graph, user_graph_t = edges_to_csr(Edges(rows, cols, beta), data.n_users)
        self.register_buffer("user_graph", user_graph, persistent=False)
        self.register_buffer("user_graph_t", user_graph_t, persistent=False)

    def _feat(self, idx: int) -> torch.Tensor:
        return getattr(self, f"feat_{idx}")

    def modality_representations(self) -> list[torch.Tensor]:
        """h^m = Σ_{l=0..L} Â^l normalize([p^m; MLP_m(x^m)]) per modality: list of [(U+I), d]."""
        out = []
        for idx, (mlp, pref) in enumerate(zip(self.mlps, self.preferences, strict=True)):
            z = F.normalize(torch.cat([pref, self.missing(idx, mlp(self._feat(idx)))], dim=0), dim=1)
            out.append(torch.stack(propagate(self.adj, z, self.cfg.n_ui_layers), dim=0).sum(dim=0))
        return out

    def forward(self) -> Embeddings:
        """Final users [U, M·d] and items [I, M·d] (M·d → d with ``fusion="sum"``)."""
        reps = self.modality_representations()
        w = self.user_modal_weight  # [U, M]
        user_parts = [w[:, m : m + 1] * h[: self.n_users] for m, h in enumerate(reps)]
        item_parts = [h[self.n_users :] for h in reps]
        if self.cfg.fusion == "concat":
            users, items = torch.cat(user_parts, dim=1), torch.cat(item_parts, dim=1)
        else:
            users, items = torch.stack(user_parts).sum(0), torch.stack(item_parts).sum(0)
        if self.cfg.use_item_graph:
            h = items
            for _ in range(self.cfg.n_item_layers):
                h = sparse_mm(self.item_graph, h, self.item_graph_t)
            items = items + h
        if self.cfg.use_user_graph:
            users = users + sparse_mm(self.user_graph, users, self.user_graph_t)
        return Embeddings(users, items)

    def loss(self, batch: Batch, emb: Embeddings) -> dict[str, torch.Tensor]:
        """BPR on uᵀi plus λ (Σ_m mean (p^m_u)² over the batch users + mean w²), as the official code."""
        u = emb.users.index_select(0, batch.users)
        p = emb.items.index_select(0, batch.pos)
        n = emb.items.index_select(0, batch.neg)
        reg = sum(pref.index_select(0, batch.users).pow(2).mean() for pref in self.preferences)
        reg = torch.as_tensor(reg) + self.user_modal_weight.pow(2).mean()
        return {
            "bpr": bpr_loss((u * p).sum(1), (u * n).sum(1)),
            "reg": self.cfg.reg_weight * reg,
        }
