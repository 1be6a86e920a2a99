"""HCCF (Xia et al., "Hypergraph Contrastive Collaborative Filtering", SIGIR 2022).

Two views of every user/item at each layer l = 1..L:

* Local view (Eq. 1): graph propagation over the normalised interaction graph Ā,
      z^(l) = σ(Ā E^(l-1))
with edge dropout on Ā during training.
* Global view, a learnable hypergraph with H hyperedges per side (Eqs. 2-4), parameterised in low rank:
      Λ^u = E_u^(0) W^u  ([U, H]),  Λ^i = E_i^(0) W^i  ([I, H])    (node-hyperedge dependencies)
      Γ_u^(l) = σ(Λ^u · σ(Λ^u^T E_u^(l-1)))                        (node -> hyperedge -> node)
with dropout on the dependency matrix Λ during training.

Layers combine the two views, E^(l) = z^(l) + Γ^(l), and the final embedding sums every layer, E =
Σ_{l=0..L} E^(l); the score is the inner product. Cross-view contrastive learning (Eq. 8) aligns the local
and global embedding of the same node at each layer, against every other node of the global view:

    L_s = Σ_l Σ_{u∈B} -log exp(s(z_u^(l), Γ_u^(l))/τ) / Σ_{u'∈U} exp(s(z_u^(l), Γ_{u'}^(l))/τ)  (+ items)

with cosine similarity s; objective L = L_bpr + λ1 L_s + λ2 ||Θ||².

Open details taken from the official PyTorch release: 32-d embeddings, H = 128, two layers, keep rate 0.5
for both dropouts, τ = 1, λ1 = 1e-3, λ2 = 1e-7 on the squared norm of *all* parameters; the contrastive
term averages over the batch's users and positive items and sums over layers. σ is a LeakyReLU of slope
``leaky_slope`` (the paper writes σ; the TensorFlow release uses slope 0.5). The paper's hierarchical
hyperedge mapping (c layers Ψ(X) = σ(V X) + X over the H hyperedge embeddings X = σ(Λᵀ E), V ∈ R^{H×H}, before the
hyperedge -> node step; c = 3 in the TensorFlow release) is ``mix_layers`` = c, default 0 because the PyTorch
release leaves it out; each GNN layer and side has its own V's. The local view
uses the symmetric D^{-1/2} A D^{-1/2} of LightGCN, without self-loops (as the release).

Where the PyTorch release differs from the paper (defaults follow the paper; each is an option):
* its layers are linear (the LeakyReLU is defined but not applied): ``leaky_slope = 1.0``;
* its contrastive term uses the batch's unique users/items as negatives, not all nodes: ``negatives = "batch"``;
* it stops the gradient through the local view in that term (only the hypergraph view is pulled towards the
  local one): ``detach_local = True``.

The TensorFlow release (``labcode_efficient.py``, the code behind the paper's tables; its Amazon command uses
τ = 0.1, λ1 = 1e-7, λ2 = 1e-2) differs from both in three more places, each an option:
* residual layers, E^(l) = z^(l) + Γ^(l) + E^(l-1): ``residual = True``;
* a margin ranking loss max(0, 1 − (ŷ_ui − ŷ_uj)) instead of BPR: ``rank_loss = "hinge"`` (averaged over the
  batch's pairs here; the release sums over min(40, |N_u|) pairs per user and divides by the number of users);
* in the contrastive term both views are L2-normalised and the hypergraph view is then multiplied by a learnable
  d x d matrix per layer (shared by users and items) before the dot product: ``ssl_projection = True`` (its
  negatives are the batch's nodes, so it requires ``negatives = "batch"``).
Together with ``mix_layers = 3``, ``leaky_slope = 0.5`` and ``negatives = "batch"`` this is the TF release's model.

``dep_scale`` multiplies the dependency matrix Λ, so the hypergraph view scales by its square. The authors' sparse
PyTorch variant (``Model_sparse.py``, suggested in their README for sparse data) has this knob (``mult``, tuned
in {0.01, 0.1, 1}): on sparse data the hypergraph path Λ Λᵀ E grows cubically with the embeddings and
memorises the training pairs, and a small scale keeps it a correction to the local view. That variant also drops
the learned projection: its dependency matrix is the scaled embedding table itself, Λ^u = mult · E_u^(0) (so
H = d hyperedges, no W, no dropout on Λ), which is ``dependency = "embedding"`` here; the default ``"learned"``
is the paper's Λ = E W.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch
from modalrec.errors import ConfigError
from modalrec.graph import normalized_adjacency, sparse_dropout, sparse_mm
from modalrec.losses import bpr_loss, info_nce, info_nce_all
from modalrec.models.base import Embeddings, Model


class HCCF(Model):
    """Local graph view + learnable low-rank hypergraph view, aligned by cross-view InfoNCE."""

    name = "hccf"
    modalities = ()
    adj: torch.Tensor  # normalised bipartite adjacency [(U+I), (U+I)] (sparse CSR buffer)

    @dataclass
    class Config:
        embed_dim: int = 32  # latent dimensionality d (official release: 32)
        n_layers: int = 2  # propagation depth L
        n_hyperedges: int = 128  # H, hyperedges per side (rank of Λ = E W)
        keep_rate: float = 0.5  # keep probability of the edge dropout on Ā and the dropout on Λ (training)
        leaky_slope: float = 0.5  # slope of the LeakyReLU σ; 1.0 = linear layers
        ssl_temp: float = 1.0  # τ of the cross-view InfoNCE (Eq. 8)
        ssl_weight: float = 1e-3  # λ1 of the contrastive term
        reg_weight: float = 1e-7  # λ2 of the squared norm of all parameters
        negatives: str = "all"  # InfoNCE negatives: "all" nodes (Eq. 8) or the "batch" nodes (release)
        detach_local: bool = False  # release: no gradient through the local view in the contrastive term
        mix_layers: int = 0  # c hyperedge-mixing layers σ(V X) + X (paper; TF release 3, PyTorch release 0)
        residual: bool = False  # TF release: E^(l) = z^(l) + Γ^(l) + E^(l-1)
        rank_loss: str = "bpr"  # "bpr", or "hinge" = max(0, 1 - (ŷ_ui - ŷ_uj)) as the TF release
        ssl_projection: bool = False  # TF release: normalised hypergraph view x learnable d x d W per layer
        dep_scale: float = 1.0  # multiplier of Λ (sparse release's "mult"); Γ scales by its square
        dependency: str = "learned"  # Λ = E W ("learned", paper) or Λ = E ("embedding", sparse release)

    def __init__(self, data: Dataset, cfg: Config) -> None:
        super().__init__(data, cfg)
        if not 0.0 < cfg.keep_rate <= 1.0:
            raise ConfigError(f"hccf: keep_rate must be in (0, 1], not {cfg.keep_rate}")
        if cfg.negatives not in ("all", "batch"):
            raise ConfigError(f"hccf: negatives must be 'all' or 'batch', not {cfg.negatives!r}")
        if cfg.ssl_projection and cfg.negatives != "batch":
            raise ConfigError("hccf: ssl_projection contrasts the batch's nodes only; set negatives: batch")
        if cfg.rank_loss not in ("bpr", "hinge"):
            raise ConfigError(f"hccf: rank_loss must be 'bpr' or 'hinge', not {cfg.rank_loss!r}")
        if cfg.dependency not in ("learned", "embedding"):
            raise ConfigError(f"hccf: dependency must be 'learned' or 'embedding', not {cfg.dependency!r}")
        learned = cfg.dependency == "learned"
        d = cfg.embed_dim
        h = cfg.n_hyperedges if learned else d  # the sparse release's hyperedges are the d embedding columns
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_users, d)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_items, d)))
        # W^u, W^v of Λ = E W; absent in the sparse release (they would otherwise enter the all-parameter L2)
        self.user_hyper = nn.Parameter(nn.init.xavier_uniform_(torch.empty(d, h))) if learned else None
        self.item_hyper = nn.Parameter(nn.init.xavier_uniform_(torch.empty(d, h))) if learned else None
        if cfg.mix_layers < 0:
            raise ConfigError(f"hccf: mix_layers must be >= 0, not {cfg.mix_layers}")
        # V matrices of the hierarchical mapping, [layer][side][j] flattened (side 0 users, 1 items)
        self.mixers = nn.ParameterList(
            nn.Parameter(nn.init.xavier_uniform_(torch.empty(h, h)))
            for _ in range(cfg.n_layers * 2 * cfg.mix_layers)
        )
        # contrastive projections W of the TF release, one per layer, applied to the normalised hypergraph view
        self.ssl_proj = nn.ParameterList(
            nn.Parameter(nn.init.xavier_uniform_(torch.empty(d, d)))
            for _ in range(cfg.n_layers if cfg.ssl_projection else 0)
        )
        self.register_buffer("adj", normalized_adjacency(data.train), persistent=False)

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        slope = self.cfg.leaky_slope
        return x if slope == 1.0 else F.leaky_relu(x, slope)

    def hyper_layer(self, dep: torch.Tensor, x: torch.Tensor, layer: int = 0, side: int = 0) -> torch.Tensor:
        """Hypergraph message passing node -> hyperedge -> node (Eq. 3): dep [N, H], x [N, d] -> [N, d].

        With ``mix_layers`` = c the hyperedge embeddings [H, d] first pass c residual layers σ(V X) + X.
        """
        edges = self._act(dep.T @ x)
        c = self.cfg.mix_layers
        for j in range((layer * 2 + side) * c, (layer * 2 + side + 1) * c):
            edges = self._act(self.mixers[j] @ edges) + edges
        return self._act(dep @ edges)

    def dependencies(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Node-hyperedge dependency matrices Λ^u [U, H] and Λ^i [I, H] (Eq. 2), scaled by ``dep_scale``.

        "learned": Λ = E W with dropout (keep rate) during training, as the paper and the main release;
        "embedding": Λ = E (H = d), undropped, as the sparse release.
        """
        scale = self.cfg.dep_scale
        if self.user_hyper is None or self.item_hyper is None:
            return scale * self.user_emb, scale * self.item_emb
        drop = 1.0 - self.cfg.keep_rate
        dep_u = F.dropout(scale * (self.user_emb @ self.user_hyper), drop, self.training)
        dep_i = F.dropout(scale * (self.item_emb @ self.item_hyper), drop, self.training)
        return dep_u, dep_i

    def views(self) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Final embeddings [U+I, d] and per-layer local (z) and global (Γ) views, each [U+I, d]."""
        drop = 1.0 - self.cfg.keep_rate
        adj = sparse_dropout(self.adj, drop, self.training)
        dep_u, dep_i = self.dependencies()
        x = torch.cat([self.user_emb, self.item_emb], dim=0)
        total = x
        local, glob = [], []
        for layer in range(self.cfg.n_layers):
            # edge dropout makes Ā asymmetric, so only the undropped (symmetric) Ā may use the fast backward
            z = self._act(sparse_mm(adj, x) if adj is self.adj else torch.sparse.mm(adj, x))
            xu, xi = torch.split(x, [self.n_users, self.n_items])
            g = torch.cat(
                [self.hyper_layer(dep_u, xu, layer, 0), self.hyper_layer(dep_i, xi, layer, 1)], dim=0
            )
            local.append(z)
            glob.append(g)
            x = z + g + x if self.cfg.residual else z + g
            total = total + x
        return total, local, glob

    def forward(self) -> Embeddings:
        total, local, glob = self.views()
        users, items = torch.split(total, [self.n_users, self.n_items])
        return Embeddings(users, items, {"local": local, "global": glob})

    def loss(self, batch: Batch, emb: Embeddings) -> dict[str, torch.Tensor]:
        u, p, n = emb.users[batch.users], emb.items[batch.pos], emb.items[batch.neg]
        reg = sum(t.pow(2).sum() for t in self.parameters())
        pos, neg = (u * p).sum(1), (u * n).sum(1)
        terms = {
            self.cfg.rank_loss: bpr_loss(pos, neg)
            if self.cfg.rank_loss == "bpr"
            else F.relu(1.0 - (pos - neg)).mean(),
            "reg": self.cfg.reg_weight * torch.as_tensor(reg),
        }
        if self.cfg.ssl_weight > 0:
            assert emb.extras is not None
            users, items = torch.unique(batch.users), torch.unique(batch.pos)
            tau, cl = self.cfg.ssl_temp, u.new_zeros(())
            for layer, (z, g) in enumerate(zip(emb.extras["local"], emb.extras["global"], strict=True)):
                zu, zi = torch.split(z.detach() if self.cfg.detach_local else z, [self.n_users, self.n_items])
                gu, gi = torch.split(g, [self.n_users, self.n_items])
                if self.cfg.ssl_projection:
                    cl = cl + self._projected_nce(layer, (zu[users], gu[users]), (zi[items], gi[items]))
                elif self.cfg.negatives == "batch":
                    cl = cl + info_nce(zu[users], gu[users], tau) + info_nce(zi[items], gi[items], tau)
                else:
                    cl = cl + info_nce_all(zu, gu, users, tau) + info_nce_all(zi, gi, items, tau)
            terms["cl"] = self.cfg.ssl_weight * cl
        return terms

    def _projected_nce(self, layer: int, *pairs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """TF-release contrast of one layer: for each (local [n, d], global [n, d]) pair of the batch's nodes,
        InfoNCE of normalised local rows against normalised global rows times W_layer, dot product / τ."""
        w, total = self.ssl_proj[layer], pairs[0][0].new_zeros(())
        for local, glob in pairs:
            total = total + info_nce(
                F.normalize(local, dim=1), F.normalize(glob, dim=1) @ w, self.cfg.ssl_temp, normalize=False
            )
        return total
