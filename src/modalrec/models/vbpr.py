"""VBPR (He & McAuley, AAAI 2016) generalised to any number of modalities.

Score (paper Eq. 2, without the global/user/item biases that do not change a user's ranking except β_i):
    x̂_ui = γ_u·γ_i + θ_u·(E f_i) + β'·f_i
where f_i is the concatenation of item i's modality features and E a learned projection. As in the MMSSL/MICRO
re-implementations, both parts are packed into one vector: user = [γ_u, θ_u], item = [γ_i, E f_i].
The visual bias term β'·f_i is kept as an option (``feature_bias``).

Regularisation: the paper's BPR-OPT objective puts an L2 prior on all parameters, including the content
weights E and β'. Leaving E and β' unpenalised (``content_reg_weight=0``) lets the content path, whose
dense weights each receive a gradient from every item in every batch, fit the training data within 2-3
epochs and then overfit while the ID factors barely learn (Tiktok: val R@20 peaked at ≈0.015 at epoch 2).
``content_reg_weight`` (λ_E = λ_β') applies that penalty. ``reg_content`` instead puts the batch items'
content factors E f_i under ``reg_weight``, as the MMRec re-implementation does.

Items lacking a modality: its block of f_i is zero and a learned vector v_m = [θ-part, bias part] takes the
place of E_m f^m_i and β'_m·f^m_i (``missing_content.MissingEmbedding.offset``), so "no image" is learned
rather than read as an all-zero image; an item with no content keeps its ID factors γ_i plus Σ_m v_m.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch
from modalrec.losses import bpr_loss, l2_reg
from modalrec.models.base import Embeddings, Model
from modalrec.models.missing_content import (
    MissingEmbedding,
    content_rows,
    new_item_features,
    new_item_presence,
    warn_contentless,
)


class VBPR(Model):
    """MF whose item factors are extended by a linear projection of the item's content features."""

    name = "vbpr"
    modalities = "any"
    features: torch.Tensor  # [I, Σ d_m] concatenated raw modality features (buffer)

    @dataclass
    class Config:
        embed_dim: int = 64  # total dimensionality d: d/2 ID factors γ plus d/2 content factors θ
        reg_weight: float = 1e-4  # λ of the L2 penalty on the batch's ID factors
        feature_bias: bool = True  # include the content bias β'·f_i of paper Eq. 2
        normalize_features: bool = True  # L2-normalise each modality's rows before concatenating (scale-free)
        content_reg_weight: float = 3e-3  # λ_E = λ_β': L2 on content weights E, β' per batch (Tiktok: 1e-1)
        reg_content: bool = False  # MMRec-style: batch items' E f_i also under reg_weight

    def __init__(self, data: Dataset, cfg: Config) -> None:
        super().__init__(data, cfg)
        half = cfg.embed_dim // 2
        self.modality_names = list(data.modalities)
        self.modality_dims = [int(data.features[m].shape[1]) for m in self.modality_names]
        feats = np.concatenate([self._prepare(content_rows(data, m)) for m in data.modalities], axis=1)
        self.register_buffer("features", torch.from_numpy(feats.astype(np.float32)), persistent=False)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_users, 2 * half)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_items, half)))
        self.proj = nn.Linear(feats.shape[1], half, bias=False)
        nn.init.xavier_uniform_(self.proj.weight)
        self.bias = nn.Linear(feats.shape[1], 1, bias=False) if cfg.feature_bias else None
        if self.bias is not None:
            nn.init.zeros_(self.bias.weight)
        # an absent modality's block of f_i is zero; a learned [θ-part, bias] vector takes its place
        self.missing = MissingEmbedding(data, self.modality_names, half + 1)
        warn_contentless(data, self.modality_names, self.name)

    def _items(
        self, id_part: torch.Tensor, feats: torch.Tensor, offset: torch.Tensor | None = None
    ) -> torch.Tensor:
        content = self.proj(feats)
        if offset is not None:
            content = content + offset[:, :-1]
        return torch.cat([id_part, content], dim=1)

    def forward(self) -> Embeddings:
        offset = self.missing.offset()
        items = self._items(self.item_emb, self.features, offset)
        extras = None
        if self.bias is not None:
            bias = self.bias(self.features).squeeze(1)
            extras = {"item_bias": bias if offset is None else bias + offset[:, -1]}
        return Embeddings(self.user_emb, items, extras)

    def score(self, emb: Embeddings, users: torch.Tensor) -> torch.Tensor:
        scores = emb.users[users] @ emb.items.T
        if emb.extras:
            scores = scores + emb.extras["item_bias"].unsqueeze(0)
        return scores

    def _prepare(self, feats: np.ndarray) -> np.ndarray:
        """Raw features, or rows scaled to unit L2 norm: raw scales differ wildly between modalities and
        datasets (e.g. Tiktok's), which makes one learning rate fit none of them."""
        if not self.cfg.normalize_features:
            return feats
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        return (feats / np.maximum(norms, 1e-12)).astype(np.float32)

    def item_embeddings_from_features(
        self, features: dict[str, np.ndarray], present: dict[str, Any] | None = None
    ) -> torch.Tensor:
        """Cold items ([n_new, d]): no ID factors yet (zeros), content factors E f_i from the learned projection.

        The content bias β'·f_i is not part of the embedding; serving treats it as 0 for added items.
        ``present`` (modality -> bool [n_new]) marks new items lacking a modality: its block contributes the
        learned missing vector, or nothing when every training item had that modality.
        """
        missing = [m for m in self.modality_names if m not in features]
        if missing and present is None:
            raise ValueError(f"VBPR needs features for modalities {missing}")
        mask_t = None
        if present is not None:
            n_new = len(next(iter(features.values())))
            masks = new_item_presence(self.modality_names, features, present, n_new)
            features = new_item_features(self.modality_names, self.modality_dims, features, masks)
            mask_t = torch.from_numpy(np.stack([masks[m] for m in self.modality_names], axis=1))
        feats = np.concatenate(
            [self._prepare(np.asarray(features[m], dtype=np.float32)) for m in self.modality_names], axis=1
        )
        x = torch.from_numpy(feats).to(self.features.device)
        with torch.no_grad():
            offset = None if mask_t is None else self.missing.offset(mask_t)
            return self._items(torch.zeros(len(x), self.item_emb.shape[1], device=x.device), x, offset)

    def loss(self, batch: Batch, emb: Embeddings) -> dict[str, torch.Tensor]:
        u, p, n = emb.users[batch.users], emb.items[batch.pos], emb.items[batch.neg]
        pos, neg = (u * p).sum(1), (u * n).sum(1)
        if emb.extras:
            pos = pos + emb.extras["item_bias"][batch.pos]
            neg = neg + emb.extras["item_bias"][batch.neg]
        if self.cfg.reg_content:
            reg = l2_reg(u, p, n, batch_size=len(batch.users))
        else:
            reg = l2_reg(u, self.item_emb[batch.pos], self.item_emb[batch.neg], batch_size=len(batch.users))
        terms = {"bpr": bpr_loss(pos, neg), "reg": self.cfg.reg_weight * reg}
        if self.cfg.content_reg_weight > 0:
            content = self.proj.weight.pow(2).sum()
            if self.bias is not None:
                content = content + self.bias.weight.pow(2).sum()
            terms["reg_content"] = self.cfg.content_reg_weight * content
        return terms
