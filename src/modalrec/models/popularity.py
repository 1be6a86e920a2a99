"""Most-popular baseline: every user gets the items with the most training interactions.

Not a paper model, but the floor every recommender must clear; the shared behavioural tests use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch
from modalrec.models.base import Embeddings, Model


class Popularity(Model):
    """Scores each item by its number of training interactions (no parameters, no training)."""

    name = "pop"
    modalities = ()
    trainable = False
    counts: torch.Tensor  # [I] training interactions per item (buffer)

    @dataclass
    class Config:
        pass

    def __init__(self, data: Dataset, cfg: Config) -> None:
        super().__init__(data, cfg)
        counts = np.asarray(data.train.sum(axis=0)).ravel().astype(np.float32)
        self.register_buffer("counts", torch.from_numpy(counts), persistent=False)

    def forward(self) -> Embeddings:
        """users [U, 1] of ones and items [I, 1] of counts, so the default dot-product score is the count."""
        return Embeddings(torch.ones(self.n_users, 1), self.counts.unsqueeze(1))

    def loss(self, batch: Batch, emb: Embeddings) -> dict[str, torch.Tensor]:
        raise NotImplementedError("the popularity baseline has nothing to train")
