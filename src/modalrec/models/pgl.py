"""PGL (Yu et al., "Mind Individual Information! Principal Graph Learning for Multimedia Recommendation",
AAAI 2025): train on a principal subgraph of the interaction graph, infer on the full graph.

Representations (any number M >= 1 of modalities, each of size d, concatenated to M·d):
  * items i = ‖_m normalize(W_m x^m + b_m); users u = ‖_m p^m_u with learnable p^m ([U, d] per modality).
  * a frozen item-item graph S = Σ_m α_m S^m (binary top-k cosine kNN of raw modality m, sym-normalised):
    h = S^L i.
  * message passing: the LightGCN layer mean over K layers of a graph G gives (ū, ī); final items ī + h, users ū.
    In training G is the principal subgraph; in evaluation it is the full normalised graph Â.
Principal subgraph extraction (re-drawn at every epoch for "local", fixed for "global"):
  * "local" (degree-sensitive): draw ⌊ρ|E|⌋ interactions without replacement with probability ∝ 1/√(d_u d_i),
    which favours edges between low-degree nodes, and sym-normalise the kept subgraph by its own degrees.
  * "global" (truncated SVD): with the r leading singular triplets (σ_j, a_j, b_j) of Â (σ descending), keep
    n = ⌊φ r⌋ of them and re-weight them by the opposite end of the spectrum, G = Σ_{j<n} σ_j σ_{r-1-j} a_j b_jᵀ,
    entries |G_xy| < ε dropped. Built in row blocks, never as a dense (U+I)² matrix.
Loss: BPR on ūᵀ(ī + h) + β ½ [InfoNCE(δ(ū_B), δ'(ū_B)) + InfoNCE(δ(i⁺_B), δ'(i⁺_B))], two independent dropout
masks δ, δ' of the same batch rows as the two views (in-batch negatives, temperature τ). No L2 term.

The paper text is not used here: equations follow the official code (enoche/MMRec ``pgl.py``); defaults follow
``PGL.yaml`` except the contrastive weight β = 0.05, which the authors' released Baby log uses (the MMRec yaml
sets it to 0, turning the InfoNCE term off). Where we differ from that code:
  * any set of modalities; α_m equal by default (the code: α_image = 0.1, α_text = 0.9; set
    ``item_graph_weights`` in the dataset's modality order to reproduce it).
  * the global subgraph is computed in row blocks of ``chunk_size``; ``svd_max_per_row`` > 0 additionally keeps
    only the largest |G_xy| per row (the code keeps every entry above ε, which can grow to (U+I)² entries).
  * raw features are fixed unless ``finetune_features`` (the code trains them).

Items lacking a modality: W_m x^m + b_m is a learned vector (``missing_content.MissingEmbedding``); S^m spans the
items that have m and each row of S takes α renormalised over its item's modalities. PGL has no item ID table:
an item with no content starts from the learned vectors and is told apart by its interactions only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
import torch.nn.functional as F
from torch import nn

from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch
from modalrec.errors import ConfigError
from modalrec.graph import (
    bipartite_adjacency,
    bipartite_layer_mean,
    inv_sqrt_degree,
    normalized_interactions,
    scipy_to_torch,
    sparse_mm,
    sym_normalize,
    to_csr,
)
from modalrec.losses import bpr_loss, info_nce
from modalrec.models.base import Embeddings, Model
from modalrec.models.homogeneous_graphs import (
    binary_knn_graph,
    edges_to_csr,
    modality_weights,
    weighted_sum_graph,
)
from modalrec.models.missing_content import MissingEmbedding, warn_contentless
from modalrec.models.raw_features import RawFeatures

SUBGRAPHS = ("local", "global", "full")


def degree_sensitive_sample(
    users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int, ratio: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """ "local" extraction: ⌊ratio·|E|⌋ edges drawn without replacement with probability ∝ 1/√(d_u d_i).

    Args:
        users, items: the interactions' endpoints [E] (int64).
    Returns:
        the kept edges' (users, items), each [⌊ratio·|E|⌋].
    """
    ones = torch.ones(users.shape[0], device=users.device)
    du = torch.zeros(n_users, device=users.device).index_add(0, users, ones)
    di = torch.zeros(n_items, device=users.device).index_add(0, items, ones)
    prob = inv_sqrt_degree(du)[users] * inv_sqrt_degree(di)[items]
    n_keep = max(1, int(users.shape[0] * ratio))
    keep = torch.multinomial(prob, n_keep, replacement=False)
    return users[keep], items[keep]


def normalized_blocks(
    users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """R̂ = D_u^{-1/2} R D_i^{-1/2} of a binary edge list and its transpose, as sparse CSR ([U, I], [I, U])."""
    ones = torch.ones(users.shape[0], device=users.device)
    du = torch.zeros(n_users, device=users.device).index_add(0, users, ones)
    di = torch.zeros(n_items, device=users.device).index_add(0, items, ones)
    vals = inv_sqrt_degree(du)[users] * inv_sqrt_degree(di)[items]
    r = torch.sparse_coo_tensor(
        torch.stack([users, items]), vals, (n_users, n_items), check_invariants=False
    ).coalesce()
    r_t = torch.sparse_coo_tensor(
        torch.stack([items, users]), vals, (n_items, n_users), check_invariants=False
    ).coalesce()
    return to_csr(r), to_csr(r_t)


def svd_principal_graph(
    adj: sp.spmatrix,
    rank: int,
    fraction: float = 0.25,
    threshold: float = 1e-3,
    max_per_row: int = 0,
    chunk_size: int = 1024,
) -> sp.csr_matrix:
    """ "global" extraction: G = Σ_{j<n} σ_j σ_{r-1-j} a_j b_jᵀ from the rank-r truncated SVD of ``adj``.

    Args:
        adj: [N, N] normalised adjacency (sparse).
        rank: r singular triplets computed (clipped to N - 1).
        fraction: φ; n = ⌊φ r⌋ (at least 1) leading triplets are kept.
        threshold: ε; entries with |G_xy| < ε are dropped.
        max_per_row: > 0 keeps only that many largest-|G_xy| entries per row (0 = all above ε).
        chunk_size: rows of G formed at a time ([chunk, N] dense blocks).
    Returns:
        G as scipy CSR [N, N].
    """
    n = adj.shape[0]
    r = max(1, min(rank, n - 1))
    v0 = np.random.default_rng(0).random(n)  # a fixed start vector: ARPACK is otherwise randomly seeded
    a, s, bt = spla.svds(sp.csr_matrix(adj, dtype=np.float64), k=r, v0=v0)
    order = np.argsort(-s)
    a, s, bt = a[:, order], s[order], bt[order]
    keep = max(1, int(fraction * r))
    weights = s[:keep] * s[::-1][:keep]  # σ_j σ_{r-1-j}
    left = (a[:, :keep] * weights).astype(np.float32)
    right = bt[:keep].astype(np.float32)
    blocks = []
    for start in range(0, n, chunk_size):
        block = left[start : start + chunk_size] @ right  # [chunk, N], never [N, N]
        block[np.abs(block) < threshold] = 0.0
        if 0 < max_per_row < n:
            drop = np.argpartition(np.abs(block), n - max_per_row, axis=1)[:, : n - max_per_row]
            np.put_along_axis(block, drop, 0.0, axis=1)
        blocks.append(sp.csr_matrix(block))
    return sp.csr_matrix(sp.vstack(blocks))


class PGL(Model):
    """Modality-feature LightGCN trained on a principal subgraph, plus a frozen item-item graph."""

    name = "pgl"
    modalities = "any"
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "global": {"subgraph": "global"},
        "full graph": {"subgraph": "full"},
        "w/o item graph": {"n_item_layers": 0},
        "w/o contrast": {"cl_weight": 0.0},
    }
    r_hat: torch.Tensor  # [U, I] full R̂ (sparse CSR)
    r_hat_t: torch.Tensor  # [I, U]
    edge_users: torch.Tensor  # [E] training interactions
    edge_items: torch.Tensor
    item_graph: torch.Tensor  # [I, I] item-item graph S (sparse CSR) and its transpose
    item_graph_t: torch.Tensor
    global_graph: torch.Tensor  # "global": the principal subgraph G [(U+I), (U+I)] (sparse CSR) and Gᵀ
    global_graph_t: torch.Tensor

    @dataclass
    class Config:
        embed_dim: int = 64  # d per modality (user and item representations have M·d entries)
        n_ui_layers: int = 2  # K LightGCN layers over the (sub)graph
        n_item_layers: int = 1  # L propagations over the item-item graph (0 = none)
        knn_k: int = 10  # k of the item kNN graphs
        item_graph_weights: list[float] | None = None  # α_m per modality (dataset order); None = equal
        subgraph: str = "local"  # training graph: "local" (degree-sensitive), "global" (SVD) or "full"
        keep_ratio: float = 0.3  # ρ: share of interactions kept by "local" at each epoch
        svd_rank: int = 64  # r singular triplets of "global" (official: the embedding size)
        svd_fraction: float = 0.25  # φ: share of the r triplets kept by "global"
        svd_threshold: float = 1e-3  # ε: smaller |G_xy| are dropped by "global"
        svd_max_per_row: int = 0  # > 0: keep only the largest entries per row of G (0 = all above ε)
        cl_weight: float = 0.05  # β of the dropout-view InfoNCE (authors' log; MMRec yaml: 0)
        tau: float = 0.2  # temperature τ
        dropout: float = 0.2  # dropout of the two InfoNCE views
        finetune_features: bool = False  # train the raw features too (official code); fixed otherwise
        chunk_size: int = 1024  # rows per block of the kNN search and of the SVD product

    def __init__(self, data: Dataset, cfg: Config) -> None:
        super().__init__(data, cfg)
        if cfg.subgraph not in SUBGRAPHS:
            raise ConfigError(f"subgraph must be one of {SUBGRAPHS}, not {cfg.subgraph!r}")
        if not 0.0 < cfg.keep_ratio <= 1.0:
            raise ConfigError(f"keep_ratio must lie in (0, 1], got {cfg.keep_ratio}")
        names = list(data.features)
        d = cfg.embed_dim
        self.n_modalities = len(names)
        self.features = RawFeatures(data, names, trainable=cfg.finetune_features)
        raw = [
            self.features[m].detach() for m in range(self.n_modalities)
        ]  # [I, d_m] each, for the fixed graphs
        self.projections = nn.ModuleList([nn.Linear(r.shape[1], d) for r in raw])
        self.user_prefs = nn.ParameterList(
            [nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_users, d))) for _ in names]
        )
        self.view_dropout = nn.Dropout(cfg.dropout)
        r_hat, r_hat_t = normalized_interactions(data.train)
        self.register_buffer("r_hat", r_hat, persistent=False)
        self.register_buffer("r_hat_t", r_hat_t, persistent=False)
        coo = data.train.tocoo()
        self.register_buffer("edge_users", torch.from_numpy(coo.row.astype(np.int64)), persistent=False)
        self.register_buffer("edge_items", torch.from_numpy(coo.col.astype(np.int64)), persistent=False)
        weights = modality_weights(cfg.item_graph_weights, self.n_modalities)
        self.missing = MissingEmbedding(data, names, d)
        warn_contentless(data, names, self.name)
        graph = weighted_sum_graph(
            [
                binary_knn_graph(r, cfg.knn_k, cfg.chunk_size, self.missing.present(m))
                for m, r in enumerate(raw)
            ],
            weights,
            self.missing.matrix(),
        )
        item_graph, item_graph_t = edges_to_csr(graph, data.n_items)
        self.register_buffer("item_graph", item_graph, persistent=False)
        self.register_buffer("item_graph_t", item_graph_t, persistent=False)
        if cfg.subgraph == "global":
            g = svd_principal_graph(
                sym_normalize(bipartite_adjacency(data.train)),
                cfg.svd_rank,
                cfg.svd_fraction,
                cfg.svd_threshold,
                cfg.svd_max_per_row,
                cfg.chunk_size,
            )
            self.register_buffer("global_graph", scipy_to_torch(g), persistent=False)
            self.register_buffer("global_graph_t", scipy_to_torch(sp.csr_matrix(g.T)), persistent=False)
        self._local: tuple[torch.Tensor, torch.Tensor] | None = None

    def raw_features(self, idx: int) -> torch.Tensor:
        """x^m of modality ``idx``: [I, d_m]."""
        return self.features[idx]

    def on_epoch_start(self, epoch: int) -> None:
        """Draw this epoch's "local" principal subgraph (the code's ``pre_epoch_processing``)."""
        if self.cfg.subgraph == "local":
            self._local = self.local_subgraph()

    def local_subgraph(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A fresh degree-sensitive subgraph as its normalised blocks ([U, I], [I, U] sparse CSR)."""
        users, items = degree_sensitive_sample(
            self.edge_users, self.edge_items, self.n_users, self.n_items, self.cfg.keep_ratio
        )
        return normalized_blocks(users, items, self.n_users, self.n_items)

    def _propagate(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LightGCN layer mean over the training subgraph (train mode) or the full graph (eval mode)."""
        k = self.cfg.n_ui_layers
        if not self.training or self.cfg.subgraph == "full":
            return bipartite_layer_mean(self.r_hat, self.r_hat_t, users, items, k)
        if self.cfg.subgraph == "local":
            if self._local is None or self._local[0].device != users.device:
                self._local = self.local_subgraph()
            return bipartite_layer_mean(self._local[0], self._local[1], users, items, k)
        x = torch.cat([users, items], dim=0)
        total, layer = x, x
        for _ in range(k):
            layer = sparse_mm(self.global_graph, layer, self.global_graph_t)
            total = total + layer
        u, i = torch.split(total / (k + 1), [self.n_users, self.n_items])
        return u, i

    def forward(self) -> Embeddings:
        """Users [U, M·d] and items [I, M·d]: the propagated representations, items plus h = S^L i."""
        items = torch.cat(
            [
                F.normalize(self.missing(m, proj(self.raw_features(m))), dim=1)
                for m, proj in enumerate(self.projections)
            ],
            dim=1,
        )
        users = torch.cat(list(self.user_prefs), dim=1)
        h = items
        for _ in range(self.cfg.n_item_layers):
            h = sparse_mm(self.item_graph, h, self.item_graph_t)
        u, i = self._propagate(users, items)
        return Embeddings(u, i + h if self.cfg.n_item_layers > 0 else i)

    def loss(self, batch: Batch, emb: Embeddings) -> dict[str, torch.Tensor]:
        """BPR + β ½ (InfoNCE over two dropout views of the batch users + of the positive items)."""
        u = emb.users.index_select(0, batch.users)
        p = emb.items.index_select(0, batch.pos)
        n = emb.items.index_select(0, batch.neg)
        terms = {"bpr": bpr_loss((u * p).sum(1), (u * n).sum(1))}
        if self.cfg.cl_weight > 0:
            drop = self.view_dropout
            cl = info_nce(drop(u), drop(u), self.cfg.tau) + info_nce(drop(p), drop(p), self.cfg.tau)
            terms["cl"] = self.cfg.cl_weight * 0.5 * cl
        return terms
