"""FREEDOM (Zhou & Shen, "A Tale of Two Graphs: Freezing and Denoising Graph Structures for Multimodal
Recommendation", ACM MM 2023).

Two graphs:

* Frozen item-item graph. Per modality m, Ŝ^m keeps the top-k cosine neighbours of each item in the raw
  features (binary entries), S^m = D^{-1/2} Ŝ^m D^{-1/2}, and S = Σ_m α_m S^m with fixed weights α_m. S is
  built once before training and never updated (the "freezing" that replaces LATTICE's learned graph).
  Item representation: h = S^L e_id (L parameter-free convolutions of the item ID embeddings).
* Denoised user-item graph. Every epoch, degree-sensitive edge pruning keeps ⌊(1-ρ)|E|⌋ interactions sampled
  without replacement with probability ∝ 1/√(d_u d_i) (edges between low-degree nodes are kept more
  often), and the kept graph is re-normalised. LightGCN over it (layer mean of K layers) gives ē_u, ē_i.
  Inference uses the full, unpruned graph.

Final representations: e_u = ē_u, e_i = ē_i + h_i; score ŷ_ui = e_uᵀ e_i. Loss: BPR on ŷ plus λ Σ_m BPR on
e_uᵀ x^m_i with the projected features x^m_i = W_m f^m_i + b_m (which ties the ID space to each modality).

Where the paper is silent we follow the official code (enoche/MMRec ``freedom.py``): the kNN entries are binary
and include the item itself, the degree D is the row sum of Ŝ^m, the pruning weights are the normalised
values of the full graph, no L2 term on the embeddings (``reg_weight`` offers one), K = 2 user-item layers and
L = 1 item layer. Differences from the code, with options: the code fine-tunes the raw features through the
feature BPR term (``finetune_features=True``; the paper projects fixed features, our default); the code wires
exactly image + text with α_image = 0.1, α_text = 0.9, while any non-empty set of modalities is taken here with
weights from ``modality_weights`` (by name; uniform by default). The code draws the pruned edges with
``torch.multinomial`` without replacement; the Gumbel-top-k draw here has the same distribution.

Items lacking a modality: S^m is built over the items that have m (the others have no row or column in it), and
each row of S takes α renormalised over the modalities its item has, so the item's content neighbours come
from real content only; an item with no content has h_i = 0 and is carried by its LightGCN embedding ē_i. The
feature BPR term of modality m only uses (positive, negative) pairs that both have m.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch
from modalrec.errors import ConfigError
from modalrec.graph import BipartitePattern, bipartite_layer_mean, sparse_mm
from modalrec.losses import bpr_loss, l2_reg
from modalrec.models.base import Embeddings, Model
from modalrec.models.missing_content import MissingEmbedding, present_rows, warn_contentless
from modalrec.models.modality_graphs import edge_weights, frozen_knn_graph, pruned_keep_mask
from modalrec.models.raw_features import RawFeatures


def modality_weight_list(names: list[str], given: dict[str, float]) -> list[float]:
    """Fixed modality weights α_m in the order of ``names``: ``given`` by name (normalised to sum to one) or
    uniform when empty. Names must match the dataset's modalities exactly."""
    if not given:
        return [1.0 / len(names)] * len(names)
    if set(given) != set(names):
        raise ConfigError(
            f"modality_weights names {sorted(given)} must match the dataset's modalities {sorted(names)}"
        )
    total = float(sum(given.values()))
    if any(w < 0 for w in given.values()) or total <= 0:
        raise ConfigError(f"modality_weights must be non-negative with a positive sum, got {given}")
    return [given[m] / total for m in names]


class FREEDOM(Model):
    """LightGCN on a pruned user-item graph + item IDs convolved over a frozen modality kNN graph."""

    name = "freedom"
    modalities = "any"
    # The paper's ablations: no pruning / random dropout instead of degree-sensitive pruning (the denoising
    # graph), no item-item graph (the frozen graph), and no feature BPR term.
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "w/o pruning": {"prune_ratio": 0.0},
        "random dropout": {"pruning": "uniform"},
        "w/o item graph": {"item_graph": False},
        "w/o feature loss": {"feat_weight": 0.0},
    }
    r_hat: torch.Tensor  # [U, I] normalised full interaction block (CSR), used for inference
    r_hat_t: torch.Tensor  # [I, U] its transpose
    s_graph: torch.Tensor  # [I, I] frozen item graph S (CSR)
    s_graph_t: torch.Tensor  # [I, I] Sᵀ

    @dataclass
    class Config:
        embed_dim: int = 64  # latent dimensionality d (IDs and projected features)
        n_ui_layers: int = 2  # K LightGCN layers over the (pruned) user-item graph (official code: 2)
        n_item_layers: int = 1  # L convolutions over the frozen item graph (official code: 1)
        knn_k: int = 10  # k neighbours per item in each modality graph
        modality_weights: dict[str, float] = field(
            default_factory=dict
        )  # fixed α_m by modality name; empty = uniform (official: image 0.1, text 0.9)
        prune_ratio: float = 0.8  # ρ, share of interactions dropped each epoch (official grid {0.8, 0.9})
        pruning: str = "degree"  # "degree" (∝ 1/√(d_u d_i), the paper) or "uniform" (random dropout)
        item_graph: bool = True  # False: no frozen item graph (h = 0)
        feat_weight: float = 1e-4  # λ of the feature BPR terms (official grid {0, 1e-5, 1e-4, 1e-3})
        reg_weight: float = 0.0  # L2 on the batch's layer-0 ID embeddings (official code: none)
        finetune_features: bool = False  # train the raw features too (official code); the paper keeps them
        chunk_size: int = 1024  # rows per block of the kNN search

    def __init__(self, data: Dataset, cfg: Config) -> None:
        super().__init__(data, cfg)
        if cfg.pruning not in ("degree", "uniform"):
            raise ConfigError(f"pruning must be 'degree' or 'uniform', not {cfg.pruning!r}")
        if not 0.0 <= cfg.prune_ratio < 1.0:
            raise ConfigError(f"prune_ratio ρ must lie in [0, 1), got {cfg.prune_ratio}")
        names = list(data.features)
        d = cfg.embed_dim
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_users, d)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_items, d)))
        self.features = RawFeatures(data, names, trainable=cfg.finetune_features)
        linears = [nn.Linear(dim, d) for dim in self.features.dims()]
        for lin in linears:
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.proj = nn.ModuleList(linears)
        self.n_modalities = len(names)
        weights = modality_weight_list(names, cfg.modality_weights)
        s, s_t = frozen_knn_graph(
            [data.features[m] for m in names],
            weights,
            cfg.knn_k,
            weighted=False,
            chunk_size=cfg.chunk_size,
            present=[present_rows(data, m) for m in names],
        )
        self.missing = MissingEmbedding(data, names, None)  # the masks only (for the feature BPR term)
        warn_contentless(data, names, self.name)
        self.register_buffer("s_graph", s, persistent=False)
        self.register_buffer("s_graph_t", s_t, persistent=False)
        self.pattern = BipartitePattern(data.train)
        r_hat, r_hat_t = self.pattern.blocks()
        self.register_buffer("r_hat", r_hat, persistent=False)
        self.register_buffer("r_hat_t", r_hat_t, persistent=False)
        self._edge_p = (
            edge_weights(self.pattern) if cfg.pruning == "degree" else torch.ones(len(self.pattern))
        )
        self._pruned: tuple[torch.Tensor, torch.Tensor] | None = None

    def raw_features(self, idx: int) -> torch.Tensor:
        """Raw features f^m of modality ``idx``: [I, d_m]."""
        return self.features[idx]

    def prune(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw this epoch's pruned graph and return its normalised blocks (R̂' [U, I], R̂'ᵀ [I, U])."""
        if self.cfg.prune_ratio <= 0:
            return self.r_hat, self.r_hat_t
        keep = pruned_keep_mask(self._edge_p, self.cfg.prune_ratio)
        r, r_t = self.pattern.blocks(keep)
        return r.to(self.r_hat.device), r_t.to(self.r_hat.device)

    def on_epoch_start(self, epoch: int) -> None:
        """Degree-sensitive edge pruning, once per epoch (official code: ``pre_epoch_processing``)."""
        self._pruned = self.prune()

    def forward(self) -> Embeddings:
        """e_u = ē_u [U, d]; e_i = ē_i + S^L e_id [I, d] (pruned graph in training, full graph otherwise)."""
        if self.training:
            if self._pruned is None:
                self._pruned = self.prune()
            r, r_t = self._pruned
        else:
            r, r_t = self.r_hat, self.r_hat_t
        users, items = bipartite_layer_mean(r, r_t, self.user_emb, self.item_emb, self.cfg.n_ui_layers)
        if self.cfg.item_graph:
            h: torch.Tensor = self.item_emb
            for _ in range(self.cfg.n_item_layers):
                h = sparse_mm(self.s_graph, h, self.s_graph_t)
            items = items + h
        return Embeddings(users, items)

    def loss(self, batch: Batch, emb: Embeddings) -> dict[str, torch.Tensor]:
        """BPR on ŷ, λ Σ_m BPR on e_uᵀ x^m_i, and the optional L2 term."""
        u = emb.users.index_select(0, batch.users)
        p, n = emb.items.index_select(0, batch.pos), emb.items.index_select(0, batch.neg)
        terms = {"bpr": bpr_loss((u * p).sum(1), (u * n).sum(1))}
        if self.cfg.feat_weight > 0:
            feat = u.new_zeros(())
            for idx, lin in enumerate(self.proj):
                raw = self.raw_features(idx)
                pos, neg, uu = batch.pos, batch.neg, u
                present = self.missing.present(idx)
                if present is not None:  # only pairs whose two items have this modality
                    keep = present[pos] & present[neg]
                    if not bool(keep.any()):
                        continue
                    pos, neg, uu = pos[keep], neg[keep], u[keep]
                xp, xn = lin(raw.index_select(0, pos)), lin(raw.index_select(0, neg))
                feat = feat + bpr_loss((uu * xp).sum(1), (uu * xn).sum(1))
            terms["feat"] = self.cfg.feat_weight * feat
        if self.cfg.reg_weight > 0:
            ego = (
                self.user_emb.index_select(0, batch.users),
                self.item_emb.index_select(0, batch.pos),
                self.item_emb.index_select(0, batch.neg),
            )
            terms["reg"] = self.cfg.reg_weight * l2_reg(*ego, batch_size=len(batch.users))
        return terms
