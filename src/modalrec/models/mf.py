"""MF-BPR (Rendle et al., UAI 2009): matrix factorisation trained with the BPR pairwise loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch
from modalrec.losses import bpr_loss, l2_reg
from modalrec.models.base import Embeddings, Model


class MF(Model):
    """Latent factors per user and item; score = e_u · e_i."""

    name = "mf"
    modalities = ()

    @dataclass
    class Config:
        embed_dim: int = 64  # latent dimensionality d
        reg_weight: float = 1e-4  # λ of the L2 penalty on the batch's embeddings (divided by batch size)

    def __init__(self, data: Dataset, cfg: Config) -> None:
        super().__init__(data, cfg)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_users, cfg.embed_dim)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_items, cfg.embed_dim)))

    def forward(self) -> Embeddings:
        return Embeddings(self.user_emb, self.item_emb)

    def loss(self, batch: Batch, emb: Embeddings) -> dict[str, torch.Tensor]:
        u, p, n = emb.users[batch.users], emb.items[batch.pos], emb.items[batch.neg]
        return {
            "bpr": bpr_loss((u * p).sum(1), (u * n).sum(1)),
            "reg": self.cfg.reg_weight * l2_reg(u, p, n, batch_size=len(batch.users)),
        }
