"""MGCN (Yu et al., "Multi-View Graph Convolutional Network for Multimedia Recommendation", ACM MM 2023).

Components, in the paper's order (the formulas below follow the official code, enoche/MMRec ``mgcn.py``, which
the paper's description matches; with M modalities where the code has exactly image + text):

* Behaviour-guided purifier: projected features x^m = W_m f^m + b_m ([I, d]) gate the item ID embeddings,
  ẽ^m_i = e_i ⊙ σ(W^g_m x^m_i + b^g_m), so only the behaviour-relevant part of each modality passes.
* Multi-view encoder.
  - User-item view: LightGCN over the normalised interaction graph, layer mean of K layers: ē_u, ē_i.
  - Item-item views: per modality a frozen kNN graph S^m (top-k cosine neighbours of the raw features,
    weighted by the cosine, D^{-1/2} Ŝ^m D^{-1/2}); items h^m_i = (S^m)^L ẽ^m, users h^m_u = Σ_{i∈N_u}
    h^m_i / √(|N_u||N_i|) (one hop of the normalised interaction block R̂).
* Behaviour-aware fuser: modality-shared part h^s = Σ_m α_m h^m with α = softmax_m(qᵀ tanh(W h^m + b)) per node;
  modality-specific parts h^m - h^s, each weighted by the user/item preference P^m = σ(W^p_m ē + b^p_m) from
  the user-item view; h_mul = (h^s + Σ_m P^m ⊙ (h^m - h^s)) / (M + 1) (the code's average of the M + 1 terms).
* Prediction: e = ē + h_mul for users and items; ŷ_ui = e_uᵀ e_i.
* Objective: BPR + λ_E · ½(||e_u||² + ||e_p||² + ||e_n||²)/B on the batch's final embeddings (as the code) +
  λ_C · [InfoNCE(h_mul_i, ē_i) over the batch's positive items + InfoNCE(h_mul_u, ē_u) over its users], cosine
  similarity, temperature τ = 0.2, in-batch negatives.

Where the paper is silent we follow the code: K = 2, L = 1, k = 10, τ = 0.2, negative cosines are dropped from
the kNN graph here (the code keeps the top-k whatever their sign; with k = 10 on real features they are
positive) so that degrees stay positive. The code fine-tunes the raw features (``finetune_features=True``);
the default keeps them fixed, as the paper describes pre-extracted features. The code decays the learning
rate by 0.96 every 50 epochs: ``--set train.lr_schedule=step train.lr_step=50 train.lr_gamma=0.96``.

Items lacking a modality: S^m spans the items that have m (no row or column for the others), their x^m is a
learned vector (``missing_content.MissingEmbedding``), and for items the fuser's α and the modality-specific
terms run over the modalities the item has: h_mul_i = (h^s_i + Σ_{m ∈ M_i} P^m_i ⊙ (h^m_i - h^s_i)) / (|M_i| + 1).
An item with no content has h_mul_i = 0 and is carried by its LightGCN embedding ē_i.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch
from modalrec.graph import bipartite_layer_mean, normalized_interactions, sparse_mm
from modalrec.losses import bpr_loss, info_nce, l2_reg
from modalrec.models.base import Embeddings, Model
from modalrec.models.missing_content import (
    MissingEmbedding,
    masked_softmax,
    present_rows,
    renormalise,
    warn_contentless,
)
from modalrec.models.modality_graphs import frozen_knn_graph
from modalrec.models.raw_features import RawFeatures


def _linear(n_in: int, n_out: int, bias: bool = True) -> nn.Linear:
    lin = nn.Linear(n_in, n_out, bias=bias)
    nn.init.xavier_uniform_(lin.weight)
    if lin.bias is not None:
        nn.init.zeros_(lin.bias)
    return lin


class MGCN(Model):
    """Purified modality views over frozen item graphs, fused by behaviour-aware attention with the ID view."""

    name = "mgcn"
    modalities = "any"
    # The paper's ablations: without the purifier (modality views start from the projected features), without
    # the behaviour-aware fuser (plain mean of the modality views), without the self-supervised task.
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "w/o purifier": {"purifier": False},
        "w/o fuser": {"fuser": False},
        "w/o contrast": {"cl_weight": 0.0},
    }
    r_hat: torch.Tensor  # [U, I] normalised interaction block R̂ (CSR)
    r_hat_t: torch.Tensor  # [I, U] R̂ᵀ

    @dataclass
    class Config:
        embed_dim: int = 64  # latent dimensionality d
        n_ui_layers: int = 2  # K LightGCN layers of the user-item view (official: 2)
        n_item_layers: int = 1  # L convolutions over each item-item graph (official: 1)
        knn_k: int = 10  # k neighbours per item in each modality graph (official: 10)
        cl_weight: float = (
            0.001  # λ_C (official grid {0.001, 0.01, 0.1}); 0.01 holds BPR at ln 2 (docs/defaults.md)
        )
        tau: float = 0.2  # InfoNCE temperature (official: 0.2)
        reg_weight: float = 1e-4  # λ_E of the L2 term on the batch's final embeddings (official: 1e-4)
        purifier: bool = True  # False: modality views start from the projected features x^m ("w/o purifier")
        fuser: bool = True  # False: h_mul = mean_m h^m ("w/o fuser")
        finetune_features: bool = False  # train the raw features too (official code); the paper keeps them
        chunk_size: int = 1024  # rows per block of the kNN search

    def __init__(self, data: Dataset, cfg: Config) -> None:
        super().__init__(data, cfg)
        d = cfg.embed_dim
        names = list(data.features)
        self.n_modalities = len(names)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_users, d)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_items, d)))
        self.features = RawFeatures(data, names, trainable=cfg.finetune_features)
        self.proj = nn.ModuleList([_linear(dim, d) for dim in self.features.dims()])  # W_m, b_m
        self.gate = nn.ModuleList([_linear(d, d) for _ in names])  # purifier W^g_m, b^g_m
        self.prefer = nn.ModuleList([_linear(d, d) for _ in names])  # preference W^p_m, b^p_m
        self.att = _linear(d, d)  # W, b of the shared attention
        self.query = _linear(d, 1, bias=False)  # q
        for idx, m in enumerate(names):
            s, s_t = frozen_knn_graph(
                [data.features[m]],
                [1.0],
                cfg.knn_k,
                weighted=True,
                chunk_size=cfg.chunk_size,
                present=[present_rows(data, m)],
            )
            self.register_buffer(f"s_{idx}", s, persistent=False)
            self.register_buffer(f"s_t_{idx}", s_t, persistent=False)
        self.missing = MissingEmbedding(data, names, d)
        warn_contentless(data, names, self.name)
        r_hat, r_hat_t = normalized_interactions(data.train)
        self.register_buffer("r_hat", r_hat, persistent=False)
        self.register_buffer("r_hat_t", r_hat_t, persistent=False)

    def raw_features(self, idx: int) -> torch.Tensor:
        """Raw features f^m of modality ``idx``: [I, d_m]."""
        return self.features[idx]

    def item_graph(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen item graph S^m of modality ``idx`` and its transpose (sparse CSR [I, I])."""
        return getattr(self, f"s_{idx}"), getattr(self, f"s_t_{idx}")

    def purified(self, idx: int) -> torch.Tensor:
        """ẽ^m = e ⊙ σ(W^g_m x^m + b^g_m) [I, d] (or x^m itself without the purifier)."""
        x = self.missing(idx, self.proj[idx](self.raw_features(idx)))
        if not self.cfg.purifier:
            return x
        return self.item_emb * torch.sigmoid(self.gate[idx](x))

    def modality_view(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Item-item view of modality ``idx``: users h^m_u = R̂ h^m_i [U, d], items h^m_i = (S^m)^L ẽ^m [I, d]."""
        s, s_t = self.item_graph(idx)
        items = self.purified(idx)
        for _ in range(self.cfg.n_item_layers):
            items = sparse_mm(s, items, s_t)
        return sparse_mm(self.r_hat, items, self.r_hat_t), items

    def fuse(
        self, views: list[torch.Tensor], behaviour: torch.Tensor, present: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Behaviour-aware fuser on N nodes: views h^m [N, d] each, ē [N, d] -> h_mul [N, d], α [N, M].

        ``present`` (bool [N, M]): fuse each node over the modalities it has (α renormalised, absent
        modality-specific terms left out, the average over the terms present)."""
        stacked = torch.stack(views, dim=1)  # [N, M, d]
        if present is not None:
            if not self.cfg.fuser:
                alpha = renormalise(stacked.new_ones(len(views)), present)
                return (alpha.unsqueeze(-1) * stacked).sum(dim=1), alpha
            scores = self.query(torch.tanh(self.att(stacked))).squeeze(-1)
            alpha = masked_softmax(scores, present)
            shared = (alpha.unsqueeze(-1) * stacked).sum(dim=1)
            total = shared
            for idx, view in enumerate(views):
                gate = torch.sigmoid(self.prefer[idx](behaviour)) * present[:, idx : idx + 1]
                total = total + gate * (view - shared)
            return total / (present.sum(dim=1, keepdim=True) + 1), alpha
        if not self.cfg.fuser:
            return stacked.mean(dim=1), stacked.new_full(stacked.shape[:2], 1.0 / len(views))
        alpha = torch.softmax(self.query(torch.tanh(self.att(stacked))).squeeze(-1), dim=1)  # [N, M]
        shared = (alpha.unsqueeze(-1) * stacked).sum(dim=1)  # h^s
        total = shared
        for idx, view in enumerate(views):
            total = total + torch.sigmoid(self.prefer[idx](behaviour)) * (view - shared)
        return total / (len(views) + 1), alpha

    def forward(self) -> Embeddings:
        """e = ē + h_mul for users [U, d] and items [I, d]; extras hold ē, h_mul and α for the loss/tests."""
        id_users, id_items = bipartite_layer_mean(
            self.r_hat, self.r_hat_t, self.user_emb, self.item_emb, self.cfg.n_ui_layers
        )
        views = [self.modality_view(idx) for idx in range(self.n_modalities)]
        side_users, alpha_u = self.fuse([v[0] for v in views], id_users)
        side_items, alpha_i = self.fuse([v[1] for v in views], id_items, self.missing.matrix())
        extras = {
            "id_users": id_users,
            "id_items": id_items,
            "side_users": side_users,
            "side_items": side_items,
            "alpha_users": alpha_u,
            "alpha_items": alpha_i,
        }
        return Embeddings(id_users + side_users, id_items + side_items, extras)

    def loss(self, batch: Batch, emb: Embeddings) -> dict[str, torch.Tensor]:
        """BPR, λ_E L2 on the batch's final embeddings, λ_C (InfoNCE items + InfoNCE users)."""
        u = emb.users.index_select(0, batch.users)
        p, n = emb.items.index_select(0, batch.pos), emb.items.index_select(0, batch.neg)
        terms = {
            "bpr": bpr_loss((u * p).sum(1), (u * n).sum(1)),
            "reg": self.cfg.reg_weight * l2_reg(u, p, n, batch_size=len(batch.users)),
        }
        if self.cfg.cl_weight > 0 and emb.extras:
            ex = emb.extras
            cl = info_nce(
                ex["side_items"].index_select(0, batch.pos),
                ex["id_items"].index_select(0, batch.pos),
                self.cfg.tau,
            ) + info_nce(
                ex["side_users"].index_select(0, batch.users),
                ex["id_users"].index_select(0, batch.users),
                self.cfg.tau,
            )
            terms["cl"] = self.cfg.cl_weight * cl
        return terms
