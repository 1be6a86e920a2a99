"""CLCRec (Wei et al., ACM MM 2021): contrastive learning between collaborative and content item embeddings.

Every item has a collaborative (ID) embedding e_i and a content embedding c_i = g(f_i) from an encoder g of
its concatenated modality features, so items never seen in training can be embedded from content alone.
Two contrastive objectives (paper Sec. 3, Eqs. 9-12), each an InfoNCE over a positive and ``n_neg`` sampled
items:

  * R-E (representation - embedding), Eq. 12: the positive item's normalised ID embedding against the
    normalised content embeddings of [positive, negatives]: -log exp(cos(e_i,c_i)/τ) / Σ_j exp(cos(e_i,c_j)/τ)
  * U-I (user - item), Eq. 10: the user embedding against the item representations of [positive, negatives],
    where a random ``sample_ratio`` share of the item representations is the content embedding instead of the
    ID embedding, which teaches the user embeddings to rank content embeddings too (the cold-start path).

loss = λ L_RE + (1 - λ) L_UI + reg_weight · (mean ||u|| + mean ||e_i||) / 2.
Choices following the official code (weiyinwei/CLCRec): encoder Linear -> LeakyReLU -> Linear with a 256-wide
hidden layer; U-I scores are plain dot products (only R-E uses cosine; ``ui_cosine`` switches U-I to cosine);
the regulariser is the mean L2 norm (not squared) of the batch's user and item ID embeddings.
Deviation for speed: the official code draws ``n_neg`` negatives per positive ([B, 1+n, d] gathers whose
backward dominates a CPU step); here each row has its own sampled negative (the batch's BPR negative) plus
``n_neg - 1`` uniformly drawn negatives shared by the whole batch (one [B, n] matmul), and the ID/content swap
of U-I is drawn per candidate item. Negatives are uniform over all items (the official sampler excludes the
user's positives, which on sparse data changes almost nothing).
Warm prediction uses the item ID embeddings (``warm_items = "id"``) as the official evaluation of warm items
does; ``item_embeddings_from_features`` gives the content embedding of new items for cold-start.
Items lacking a modality: its block of f_i is zero and a learned vector takes the place of that block's share of
the encoder's first (linear) layer (``missing_content.MissingEmbedding.offset``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch
from modalrec.models.base import Embeddings, Model
from modalrec.models.missing_content import (
    MissingEmbedding,
    content_rows,
    new_item_features,
    new_item_presence,
    warn_contentless,
)


def sampled_info_nce(
    anchor: torch.Tensor,
    pos: torch.Tensor,
    own_neg: torch.Tensor,
    shared_neg: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Mean of -log softmax over [positive, own negative, shared negatives] of anchor-candidate dot products / τ.

    Shapes: anchor, pos, own_neg [B, d] (row-wise pairs); shared_neg [n, d] (negatives common to the batch).
    """
    logits = torch.cat(
        [(anchor * pos).sum(1, keepdim=True), (anchor * own_neg).sum(1, keepdim=True), anchor @ shared_neg.T],
        dim=1,
    )
    logits = logits / temperature
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()


class CLCRec(Model):
    """ID embeddings aligned with a content encoder by two contrastive losses; cold items embed by content."""

    name = "clcrec"
    modalities = "any"
    features: torch.Tensor

    @dataclass
    class Config:
        embed_dim: int = 64  # dimensionality d of ID and content embeddings
        hidden_dim: int = 256  # hidden width of the content encoder (official code)
        n_neg: int = 128  # sampled negative items per positive
        temperature: float = 2.0  # τ of both contrastive losses (official default)
        cl_lambda: float = 0.5  # λ: weight of L_RE, 1 - λ of L_UI
        sample_ratio: float = 0.5  # fraction of U-I item representations replaced by content embeddings
        reg_weight: float = 0.1  # weight of the mean-norm regulariser on batch ID embeddings
        ui_cosine: bool = False  # U-I loss on cosine instead of dot product (the official code uses dot)
        warm_items: str = "id"  # item representation at prediction time: "id", "content" or "sum"
        normalize_features: bool = True  # row-L2-normalise each modality before concatenation

    def __init__(self, data: Dataset, cfg: Config) -> None:
        super().__init__(data, cfg)
        if cfg.warm_items not in ("id", "content", "sum"):
            raise ValueError(f"CLCRec warm_items must be 'id', 'content' or 'sum', not {cfg.warm_items!r}")
        self.modality_names = list(data.modalities)
        self.modality_dims = [int(data.features[m].shape[1]) for m in self.modality_names]
        feats = self._prepare({m: content_rows(data, m) for m in self.modality_names})
        self.register_buffer("features", feats, persistent=False)
        self.user_emb = nn.Parameter(nn.init.xavier_normal_(torch.empty(data.n_users, cfg.embed_dim)))
        self.item_emb = nn.Parameter(nn.init.xavier_normal_(torch.empty(data.n_items, cfg.embed_dim)))
        self.encoder = nn.Sequential(
            nn.Linear(self.features.shape[1], cfg.hidden_dim),
            nn.LeakyReLU(),
            nn.Linear(cfg.hidden_dim, cfg.embed_dim),
        )
        for mod in self.encoder:
            if isinstance(mod, nn.Linear):
                nn.init.xavier_normal_(mod.weight)
        # an absent modality's block of f is zero; a learned vector in the first layer's output takes the place
        # of W1_m f^m (the encoder's first layer is linear over the concatenated blocks)
        self.missing = MissingEmbedding(data, self.modality_names, cfg.hidden_dim)
        warn_contentless(data, self.modality_names, self.name)

    def _prepare(self, features: dict[str, np.ndarray]) -> torch.Tensor:
        """Concatenate (normalised) modality features in the training order: [n, Σ_m d_m]."""
        missing = [m for m in self.modality_names if m not in features]
        if missing:
            raise ValueError(f"CLCRec needs features for modalities {missing}")
        parts = []
        for m in self.modality_names:
            x = torch.from_numpy(np.ascontiguousarray(features[m], dtype=np.float32))
            parts.append(F.normalize(x, dim=1) if self.cfg.normalize_features else x)
        return torch.cat(parts, dim=1)

    def content(self, feats: torch.Tensor | None = None, present: torch.Tensor | None = None) -> torch.Tensor:
        """Content embeddings c = g(f): [n, d] (all training items when ``feats`` is None; ``present`` bool
        [n, M] marks the modalities new items have)."""
        offset = (
            self.missing.offset()
            if feats is None
            else (None if present is None else self.missing.offset(present))
        )
        if offset is None:
            return self.encoder(self.features if feats is None else feats)
        hidden = self.encoder[0](self.features if feats is None else feats) + offset
        return self.encoder[2](self.encoder[1](hidden))

    def forward(self) -> Embeddings:
        content = self.content()
        items: torch.Tensor
        if self.cfg.warm_items == "id":
            items = self.item_emb
        elif self.cfg.warm_items == "content":
            items = content
        else:
            items = self.item_emb + content
        return Embeddings(self.user_emb, items, {"content": content})

    def loss(self, batch: Batch, emb: Embeddings) -> dict[str, torch.Tensor]:
        content = emb.extras["content"] if emb.extras else self.content()
        n_shared = max(0, self.cfg.n_neg - 1)
        shared = torch.randint(0, self.n_items, (n_shared,), device=batch.pos.device)
        tau = self.cfg.temperature
        # R-E (Eq. 12): the positive's ID embedding vs the content of the positive and of the negatives, cosine.
        anchor = F.normalize(self.item_emb[batch.pos], dim=1)
        c_pos, c_neg, c_shared = (F.normalize(content[idx], dim=1) for idx in (batch.pos, batch.neg, shared))
        l_re = sampled_info_nce(anchor, c_pos, c_neg, c_shared, tau)
        # U-I (Eq. 10): a random share of the item representations comes from content instead of ID.
        mixed = []
        for idx in (batch.pos, batch.neg, shared):
            swap = torch.rand(len(idx), 1, device=idx.device) < self.cfg.sample_ratio
            mixed.append(torch.where(swap, content[idx], self.item_emb[idx]))
        user, m_pos, m_neg, m_shared = self.user_emb[batch.users], mixed[0], mixed[1], mixed[2]
        if self.cfg.ui_cosine:
            user, m_pos, m_neg, m_shared = (F.normalize(t, dim=1) for t in (user, m_pos, m_neg, m_shared))
        l_ui = sampled_info_nce(user, m_pos, m_neg, m_shared, tau)
        item_ids = torch.cat([batch.pos, batch.neg, shared])
        reg = (self.user_emb[batch.users].norm(dim=1).mean() + self.item_emb[item_ids].norm(dim=1).mean()) / 2
        lam = self.cfg.cl_lambda
        return {"re": lam * l_re, "ui": (1 - lam) * l_ui, "reg": self.cfg.reg_weight * reg}

    def item_embeddings_from_features(
        self, features: dict[str, np.ndarray], present: dict[str, Any] | None = None
    ) -> torch.Tensor:
        """Content-encoder embeddings of new items from their modality features: [n_new, d] (cold-start).

        ``present`` (modality -> bool [n_new]) marks new items lacking a modality: its block is zero and the
        learned missing vector (if training had items without it) takes its place."""
        mask = None
        if present is not None:
            n_new = len(next(iter(features.values())))
            masks = new_item_presence(self.modality_names, features, present, n_new)
            features = new_item_features(self.modality_names, self.modality_dims, features, masks)
            mask = torch.from_numpy(np.stack([masks[m] for m in self.modality_names], axis=1)).to(self.device)
        feats = self._prepare(features).to(self.device)
        with torch.no_grad():
            return self.content(feats, mask)
