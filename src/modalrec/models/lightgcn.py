"""LightGCN (He et al., SIGIR 2020): linear propagation over the normalised user-item graph.

Eq. 3: e^{(k+1)} = Â e^{(k)} with Â = D^{-1/2} A D^{-1/2}; Eq. 4: final embedding = mean over layers 0..K.
The L2 penalty applies to the layer-0 embeddings of the batch, as in the paper's Eq. 5.

A training step propagates for the batch's rows only where it can (``batch_rows.py``): the last user layer for the
batch's users, no full-size layer sums, and one backward pass for the whole gradient of both tables. The loss and
gradients equal those of the full propagation.

Default learning rate: Adam lr 1e-2 (``train_defaults``; the paper's code uses 1e-3 with up to 1,000 epochs). At
1e-3 the layer-mean readout of Xavier-initialised embeddings climbs so slowly that early stopping (patience 10
evaluations) ends the run on a plateau: on MovieLens-100k validation R@20 0.251 (best epoch 29 of 40) against
0.347 at 1e-2, on Tiktok 0.083 against 0.109 (grid {1e-3, 5e-3, 1e-2, 2e-2}, docs/defaults.md). A run that sets
``train.lr`` (config file, ``--set``, a compare config's train section) keeps its own value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch
from modalrec.graph import bipartite_layer_mean, normalized_interactions
from modalrec.graph.batch_rows import batch_local_indices, layer_mean_batch_rows
from modalrec.models.base import Embeddings, Model, bpr_terms_on_rows


class LightGCN(Model):
    """ID embeddings smoothed over the interaction graph with a layer-mean readout."""

    name = "lightgcn"
    modalities = ()
    train_defaults: ClassVar[dict[str, Any]] = {"lr": 1e-2}  # see the module docstring
    r_hat: torch.Tensor  # [U, I] user-item block R̂ of the normalised adjacency Â (sparse CSR buffer)
    r_hat_t: torch.Tensor  # [I, U] its transpose

    @dataclass
    class Config:
        embed_dim: int = 64  # latent dimensionality d
        n_layers: int = 3  # propagation depth K
        reg_weight: float = 1e-4  # λ of the L2 penalty on layer-0 batch embeddings

    def __init__(self, data: Dataset, cfg: Config) -> None:
        super().__init__(data, cfg)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_users, cfg.embed_dim)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_items, cfg.embed_dim)))
        r_hat, r_hat_t = normalized_interactions(data.train)
        self.register_buffer("r_hat", r_hat, persistent=False)
        self.register_buffer("r_hat_t", r_hat_t, persistent=False)

    def forward(self) -> Embeddings:
        users, items = bipartite_layer_mean(
            self.r_hat, self.r_hat_t, self.user_emb, self.item_emb, self.cfg.n_layers
        )
        return Embeddings(users, items)

    def loss(self, batch: Batch, emb: Embeddings) -> dict[str, torch.Tensor]:
        return bpr_terms_on_rows(batch, emb, self.user_emb, self.item_emb, self.cfg.reg_weight)

    def batch_loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """BPR + L2 of one batch (Eq. 5), propagated for the batch's rows only (``batch_rows.py``)."""
        local, user_rows, item_rows = batch_local_indices(batch)
        rows = layer_mean_batch_rows(
            self.r_hat, self.r_hat_t, self.user_emb, self.item_emb, self.cfg.n_layers, user_rows, item_rows
        )
        # the same loss() as the full forward, on the batch's rows with local indices
        extras = {"user_ego": rows.user_ego, "item_ego": rows.item_ego}
        return self.loss(local, Embeddings(rows.users, rows.items, extras))
