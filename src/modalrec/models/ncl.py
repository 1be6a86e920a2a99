"""NCL (Lin et al., "Improving Graph Collaborative Filtering with Neighborhood-enriched Contrastive
Learning", WWW 2022).

A LightGCN encoder (layer-mean readout) trained with BPR plus two contrastive terms:

* Structural neighbours (Eqs. 8-10): the output of an even layer k (a node's k-hop homogeneous neighbours,
  users for users) is pulled towards the node's own layer-0 embedding:
      L_S^U = Σ_u -log exp(z_u^(k)·z_u^(0)/τ) / Σ_{v∈U} exp(z_u^(k)·z_v^(0)/τ)     (normalised z)
  and likewise L_S^I for items; L_S = L_S^U + α L_S^I.
* Semantic prototypes (Eqs. 11-14): users (items) are clustered by k-means on their layer-0 embeddings
  (the E-step, run once per epoch in ``on_epoch_start``); each embedding is pulled towards its
  prototype c:
      L_P^U = Σ_u -log exp(e_u·c_i/τ) / Σ_{c_j∈C} exp(e_u·c_j/τ)                   (normalised e, c)
  and likewise for items; L_P = L_P^U + α L_P^I. The M-step is the gradient step on this loss.

Objective (Eq. 15): L = L_bpr + λ1 L_S + λ2 L_P + λ3 ||Θ||².

Choices following the official code (RecBole-based release), as the paper leaves them open: the
contrastive sums run over the batch's users and positive items with *every* user (item) as a negative;
they are sums over the batch (we compute the mean and multiply by the anchor count, so the paper's tiny
λ1, λ2 keep their scale); the prototype term is switched on only after ``warm_up_epochs`` epochs; k-means
(ours, in torch: random initial centroids drawn from the data, Lloyd iterations, an empty cluster keeps
its previous centroid) runs on the raw layer-0 embeddings and the centroids are L2-normalised afterwards.

Default learning rate: Adam lr 1e-2 (``train_defaults``, as LightGCN; the official code uses 1e-3). At 1e-3 and
the paper's λ1 the structural term steers the first steps (on MovieLens-100k its gradient is 3.2 times BPR's and
Adam's first step gets 0.25 of BPR's best first-order decrease, 0.01 on the user table), the BPR loss stays at
ln 2 for the first epochs and early stopping ends the run at its epoch-0 model. A smaller λ1 (1e-8) lets BPR move
but the LightGCN encoder climbs too slowly at 1e-3 to pass epoch 0 within the patience; at 1e-2 with the paper's
λ1, λ2 BPR falls from the first epoch on MovieLens-100k and Tiktok (docs/defaults.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch
from modalrec.errors import ConfigError
from modalrec.graph import normalized_adjacency, sparse_mm
from modalrec.losses import info_nce, info_nce_all
from modalrec.models.base import Embeddings, Model, bpr_terms


def nearest_centroid(x: torch.Tensor, centroids: torch.Tensor, chunk_size: int = 8192) -> torch.Tensor:
    """Index of the nearest centroid (squared Euclidean) of each row: x [N, d], centroids [k, d] -> [N]."""
    c_sq = centroids.pow(2).sum(1)
    out = []
    for start in range(0, x.shape[0], chunk_size):
        block = x[start : start + chunk_size]
        dist = c_sq.unsqueeze(0) - 2.0 * block @ centroids.T  # ||x||² is constant per row
        out.append(dist.argmin(dim=1))
    return torch.cat(out)


def kmeans(
    x: torch.Tensor, k: int, n_iter: int = 20, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means: returns centroids [k, d] and the assignment [N] of each row of x [N, d].

    Initial centroids are k distinct rows drawn at random; an empty cluster keeps its previous centroid.
    ``k`` is clipped to N.
    """
    x = x.detach()
    n = x.shape[0]
    k = min(k, n)
    init = torch.randperm(n, generator=generator, device="cpu")[:k].to(x.device)
    centroids = x[init].clone()
    assign = nearest_centroid(x, centroids)
    for _ in range(n_iter):
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.zeros(k, dtype=x.dtype, device=x.device).index_add_(
            0, assign, torch.ones_like(x[:, 0])
        )
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled].unsqueeze(1)
        new_assign = nearest_centroid(x, centroids)
        if torch.equal(new_assign, assign):
            break
        assign = new_assign
    return centroids, assign


class NCL(Model):
    """LightGCN + structural-neighbour and semantic-prototype contrastive learning."""

    name = "ncl"
    modalities = ()
    train_defaults: ClassVar[dict[str, Any]] = {"lr": 1e-2}  # see the module docstring
    adj: torch.Tensor  # normalised bipartite adjacency [(U+I), (U+I)] (sparse CSR buffer)
    user_centroids: torch.Tensor  # normalised user prototypes [k_u, d]
    item_centroids: torch.Tensor  # normalised item prototypes [k_i, d]
    user_cluster: torch.Tensor  # prototype index of every user [U]
    item_cluster: torch.Tensor  # prototype index of every item [I]

    @dataclass
    class Config:
        embed_dim: int = 64  # latent dimensionality d
        n_layers: int = 3  # LightGCN propagation depth
        reg_weight: float = 1e-4  # λ3 of the L2 penalty on layer-0 batch embeddings
        hyper_layers: int = 1  # structural neighbours come from layer k = 2 * hyper_layers (an even layer)
        ssl_temp: float = 0.1  # τ of both contrastive terms
        ssl_weight: float = 1e-7  # λ1 of the structural term L_S (applied to the batch sum)
        proto_weight: float = 8e-8  # λ2 of the prototype term L_P (applied to the batch sum)
        alpha: float = 1.0  # α, weight of the item side in L_S and L_P
        n_clusters: int = 1000  # number of prototypes k per side (clipped to the number of users/items)
        kmeans_iters: int = 20  # Lloyd iterations of each E-step
        warm_up_epochs: int = 20  # epochs trained without L_P (official code's warm_up_step)
        seed: int = 0  # seed of the k-means initialisation; epoch e uses seed + e
        negatives: str = "all"  # L_S negatives: "all" users/items (paper Eq. 9) or "batch" (cheaper)

    def __init__(self, data: Dataset, cfg: Config) -> None:
        super().__init__(data, cfg)
        if cfg.negatives not in ("all", "batch"):
            raise ConfigError(f"ncl: negatives must be 'all' or 'batch', not {cfg.negatives!r}")
        if 2 * cfg.hyper_layers > cfg.n_layers:
            raise ConfigError(
                f"ncl: layer 2*hyper_layers={2 * cfg.hyper_layers} exceeds n_layers={cfg.n_layers}"
            )
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_users, cfg.embed_dim)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_items, cfg.embed_dim)))
        self.register_buffer("adj", normalized_adjacency(data.train), persistent=False)
        ku, ki = min(cfg.n_clusters, data.n_users), min(cfg.n_clusters, data.n_items)
        self.register_buffer("user_centroids", torch.zeros(ku, cfg.embed_dim), persistent=False)
        self.register_buffer("item_centroids", torch.zeros(ki, cfg.embed_dim), persistent=False)
        self.register_buffer("user_cluster", torch.zeros(data.n_users, dtype=torch.long), persistent=False)
        self.register_buffer("item_cluster", torch.zeros(data.n_items, dtype=torch.long), persistent=False)
        self.epoch = 0

    def on_epoch_start(self, epoch: int) -> None:
        """E-step: cluster users and items (layer-0 embeddings) into prototypes; normalise the centroids."""
        self.epoch = epoch
        if self.cfg.proto_weight <= 0 or epoch < self.cfg.warm_up_epochs:
            return
        gen = torch.Generator().manual_seed(self.cfg.seed + epoch)
        with torch.no_grad():
            for emb, cent, clus in (
                (self.user_emb, "user_centroids", "user_cluster"),
                (self.item_emb, "item_centroids", "item_cluster"),
            ):
                c, a = kmeans(emb, getattr(self, cent).shape[0], self.cfg.kmeans_iters, gen)
                setattr(self, cent, F.normalize(c, dim=1))
                setattr(self, clus, a)

    def forward(self) -> Embeddings:
        ego = torch.cat([self.user_emb, self.item_emb], dim=0)
        layers = [ego]
        for _ in range(self.cfg.n_layers):
            layers.append(sparse_mm(self.adj, layers[-1]))
        out = torch.stack(layers, dim=0).mean(dim=0)
        users, items = torch.split(out, [self.n_users, self.n_items])
        return Embeddings(users, items, {"layers": layers})

    def structural_loss(
        self, layers: list[torch.Tensor], users: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        """L_S (Eqs. 8-10) summed over the anchors: layer-2h output vs layer-0 of every user / item."""
        ego, neigh = layers[0], layers[2 * self.cfg.hyper_layers]
        eu, ei = torch.split(ego, [self.n_users, self.n_items])
        nu, ni = torch.split(neigh, [self.n_users, self.n_items])
        tau = self.cfg.ssl_temp
        if self.cfg.negatives == "batch":
            users, items = torch.unique(users), torch.unique(items)
            lu = info_nce(nu[users], eu[users], tau) * users.numel()
            li = info_nce(ni[items], ei[items], tau) * items.numel()
        else:
            lu = info_nce_all(nu, eu, users, tau) * users.numel()
            li = info_nce_all(ni, ei, items, tau) * items.numel()
        return lu + self.cfg.alpha * li

    def prototype_loss(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """L_P (Eqs. 11-14) summed over the anchors: normalised e vs its prototype among all prototypes."""
        tau = self.cfg.ssl_temp
        eu = F.normalize(self.user_emb[users], dim=1)
        ei = F.normalize(self.item_emb[items], dim=1)
        lu = F.cross_entropy(eu @ self.user_centroids.T / tau, self.user_cluster[users], reduction="sum")
        li = F.cross_entropy(ei @ self.item_centroids.T / tau, self.item_cluster[items], reduction="sum")
        return lu + self.cfg.alpha * li

    def loss(self, batch: Batch, emb: Embeddings) -> dict[str, torch.Tensor]:
        terms = bpr_terms(batch, emb, self.user_emb, self.item_emb, self.cfg.reg_weight)
        users, items = batch.users, batch.pos
        if self.cfg.ssl_weight > 0:
            assert emb.extras is not None
            terms["cl"] = self.cfg.ssl_weight * self.structural_loss(emb.extras["layers"], users, items)
        if self.cfg.proto_weight > 0 and self.epoch >= self.cfg.warm_up_epochs:
            terms["proto"] = self.cfg.proto_weight * self.prototype_loss(users, items)
        return terms
