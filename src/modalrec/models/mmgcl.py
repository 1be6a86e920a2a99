"""MMGCL (Yi et al., SIGIR 2022): multi-modal graph contrastive learning for micro-video recommendation.

Encoder: one LightGCN-style branch per modality (plus an ID branch, ``with_id``) over the user-item graph. A
branch b has its own user embeddings u^b and item inputs i^b (ID embeddings, or a linear projection W_m f̄^m
of modality m's row-normalised features); it propagates e^{(k+1)} = Â e^{(k)} and reads out the layer mean
(LightGCN Eqs. 3-4). The final representation concatenates the branch outputs (``fusion = "concat"``) or sums
them. Self-supervision builds two augmented views of the multi-modal graph:
  * modality edge dropout (ME): every branch's graph independently loses each edge with probability
    ``edge_drop`` (re-normalised), so each modality sees a different corrupted structure;
  * modality masking (MM): every item's input in modality m is replaced by zeros with probability
    ``mask_prob`` (the ID branch is never masked), so a modality is inferred from the others and the graph;
and maximises the agreement of the two views of the same node with InfoNCE over the batch's distinct users and
items (cosine, temperature τ, in-batch negatives). loss = BPR + λ_c (L_cl^user + L_cl^item) + reg.
The paper text is not at hand here: ME/MM/InfoNCE follow its description; the branch layout, concatenation
fusion and the defaults (τ = 0.2, rates 0.2) are the usual LightGCN/SGL-style settings and are worth tuning.
The paper's additional "negative sampling" view (a modality-shuffled hard negative) is not implemented.

Default λ_c = 0.01 (the usual SGL-style 0.1 is what ``configs/tiktok/mmgcl.yaml`` sets). At 0.1 the contrastive
gradient overrules BPR's on the first steps: content branches start with every user pointing one way (mean
pairwise cosine 0.81 for MovieLens genres, 0.83 for Tiktok visual), so InfoNCE pushes users apart, against the
ranking; Adam's first step gets -0.82 (MovieLens-100k) and -0.63 (Tiktok) of BPR's best first-order decrease, the
BPR loss does not fall and validation recall falls below its epoch-0 value. At 0.01 that share is 0.91 / 0.98
and BPR trains (docs/defaults.md).

Items lacking a modality: that branch's item input is a learned vector in the projected space
(``missing_content.MissingEmbedding``) instead of W_m f̄^m; the MM view may still mask it like any input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch
from modalrec.graph import BipartitePattern, bipartite_layer_mean
from modalrec.losses import bpr_loss, info_nce, l2_reg
from modalrec.models.base import Embeddings, Model
from modalrec.models.missing_content import MissingEmbedding, warn_contentless


class MMGCL(Model):
    """Per-modality LightGCN branches trained with BPR plus ME/MM-view contrastive learning."""

    name = "mmgcl"
    modalities = "any"
    r_hat: torch.Tensor  # R̂ [U, I] of the full graph (sparse CSR buffer)
    r_hat_t: torch.Tensor  # R̂ᵀ [I, U]

    @dataclass
    class Config:
        embed_dim: int = 64  # width d of every branch
        n_layers: int = 3  # LightGCN propagation depth K
        with_id: bool = True  # add an ID-embedding branch beside the modality branches
        fusion: str = "concat"  # combine branch outputs: "concat" or "sum"
        edge_drop: float = 0.2  # ME view: per-branch edge dropout probability
        mask_prob: float = 0.2  # MM view: per-item probability of masking a modality's input
        cl_weight: float = 0.01  # λ_c of the contrastive loss (0.1 holds BPR still; module docstring)
        temperature: float = 0.2  # τ of InfoNCE
        reg_weight: float = 1e-4  # λ of the L2 penalty on the batch's layer-0 embeddings
        normalize_features: bool = True  # row-L2-normalise each modality before projecting

    def __init__(self, data: Dataset, cfg: Config) -> None:
        super().__init__(data, cfg)
        if cfg.fusion not in ("concat", "sum"):
            raise ValueError(f"MMGCL fusion must be 'concat' or 'sum', not {cfg.fusion!r}")
        self.modality_names = list(data.modalities)
        d = cfg.embed_dim
        n_branches = len(self.modality_names) + int(cfg.with_id)
        self.user_emb = nn.ParameterList(
            [nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_users, d))) for _ in range(n_branches)]
        )
        self.item_emb = (
            nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_items, d))) if cfg.with_id else None
        )
        self.proj = nn.ModuleList()
        for i, m in enumerate(self.modality_names):
            feats = torch.from_numpy(data.features[m])
            if cfg.normalize_features:
                feats = F.normalize(feats, dim=1)
            self.register_buffer(f"feat_{i}", feats, persistent=False)
            lin = nn.Linear(feats.shape[1], d, bias=False)
            nn.init.xavier_uniform_(lin.weight)
            self.proj.append(lin)
        self.missing = MissingEmbedding(data, self.modality_names, d)
        warn_contentless(data, self.modality_names, self.name)
        # The graph as its two normalised blocks R̂ [U, I], R̂ᵀ [I, U]; an ME view keeps the sparsity pattern and
        # zeroes the dropped interactions' values (degrees recomputed), so propagation is the lean
        # bipartite_layer_mean (O((U+I)·d) activation memory per branch instead of O(|E|·d) per layer).
        self.pattern = BipartitePattern(data.train)  # index tensors on the CPU; views are moved per step
        r_hat, r_hat_t = self.pattern.blocks()
        self.register_buffer("r_hat", r_hat, persistent=False)
        self.register_buffer("r_hat_t", r_hat_t, persistent=False)

    def _item_inputs(self, mask_prob: float = 0.0) -> list[torch.Tensor]:
        """Layer-0 item inputs of every branch ([I, d] each); modality rows masked with ``mask_prob``."""
        inputs: list[torch.Tensor] = [] if self.item_emb is None else [self.item_emb]
        for i, lin in enumerate(self.proj):
            x = self.missing(i, lin(getattr(self, f"feat_{i}")))
            if mask_prob > 0:
                keep = (torch.rand(x.shape[0], 1, device=x.device) >= mask_prob).to(x.dtype)
                x = x * keep
            inputs.append(x)
        return inputs

    def _encode(self, edge_drop: float = 0.0, mask_prob: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """One propagation of every branch; returns fused users [U, D] and items [I, D]."""
        outs_u, outs_i = [], []
        for user, item in zip(self.user_emb, self._item_inputs(mask_prob), strict=True):
            if (
                edge_drop > 0
            ):  # each branch its own corruption; an interaction goes in both directions at once
                r, r_t = self.pattern.blocks(torch.rand(len(self.pattern)) >= edge_drop)
                blocks = (r.to(user.device), r_t.to(user.device))
            else:
                blocks = (self.r_hat, self.r_hat_t)
            u, i = bipartite_layer_mean(*blocks, user, item, self.cfg.n_layers)
            outs_u.append(u)
            outs_i.append(i)
        if self.cfg.fusion == "concat":
            return torch.cat(outs_u, dim=1), torch.cat(outs_i, dim=1)
        return torch.stack(outs_u).sum(dim=0), torch.stack(outs_i).sum(dim=0)

    def forward(self) -> Embeddings:
        users, items = self._encode()
        return Embeddings(users, items)

    def loss(self, batch: Batch, emb: Embeddings) -> dict[str, torch.Tensor]:
        u, p, n = emb.users[batch.users], emb.items[batch.pos], emb.items[batch.neg]
        terms = {"bpr": bpr_loss((u * p).sum(1), (u * n).sum(1))}
        ego = [user[batch.users] for user in self.user_emb]
        if self.item_emb is not None:
            ego += [self.item_emb[batch.pos], self.item_emb[batch.neg]]
        terms["reg"] = self.cfg.reg_weight * l2_reg(*ego, batch_size=len(batch.users))
        if self.cfg.cl_weight > 0:
            u1, i1 = self._encode(edge_drop=self.cfg.edge_drop)
            u2, i2 = self._encode(mask_prob=self.cfg.mask_prob)
            users = torch.unique(batch.users)
            items = torch.unique(torch.cat([batch.pos, batch.neg]))
            t = self.cfg.temperature
            cl = info_nce(u1[users], u2[users], t) + info_nce(i1[items], i2[items], t)
            terms["cl"] = self.cfg.cl_weight * cl
        return terms
