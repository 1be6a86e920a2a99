"""NGCF (Wang et al., "Neural Graph Collaborative Filtering", SIGIR 2019).

Embedding propagation with feature transformation and a non-linear, affinity-aware message (paper Eqs.
3-4):

    m_{u<-i} = 1/sqrt(|N_u||N_i|) (W1 e_i + W2 (e_i ⊙ e_u)),   m_{u<-u} = W1 e_u,
    e_u^(l) = LeakyReLU(m_{u<-u} + Σ_{i∈N_u} m_{u<-i})

in matrix form (Eq. 7), with L = D^{-1/2} A D^{-1/2} the normalised bipartite adjacency:

    E^(l) = LeakyReLU( (L + I) E^(l-1) W1^(l) + (L E^(l-1)) ⊙ E^(l-1) W2^(l) )

followed by message dropout (Section 2.4.2) on each layer's output. The readout concatenates every layer
(Eq. 9): e*_u = e_u^(0) || ... || e_u^(L), the score is the inner product (Eq. 10) and the loss is BPR
plus an L2 penalty (Eq. 11) divided by the batch size. Eq. 11 penalises all parameters; the official code
penalises the batch's *final* (concatenated) embeddings, which reaches W1/W2 through the propagation
(``reg_on="final"``); ``reg_on="ego"`` penalises the layer-0 rows only, like LightGCN; ``reg_on="all"`` is Eq. 11
taken literally, λ·||Θ||² over every parameter (whole embedding tables and W1/W2), not divided by the batch.

Node dropout (Section 2.4.2): the official code implements it by dropping entries of the sparse Laplacian
(with 1/(1-p) rescaling) at every training forward; ``node_dropout`` does the same (default 0, as in the
paper's recommended setting of message dropout only).

Official-code behaviour offered as an option (``official_layer=True``; default False follows the paper):
biases in both transformations, the LeakyReLU applied to each of the two terms separately, the interaction
term computed from (L + I) E instead of L E, and each layer's output L2-normalised before the
concatenation. ``normalize_layers=True`` is the form of the RecBole/MMRec toolboxes: the paper's
layer, with each layer's output L2-normalised and the normalised rows propagated to the next layer.
LeakyReLU slope 0.2 is the official code's (TensorFlow's default); the paper does not state it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch
from modalrec.errors import ConfigError
from modalrec.graph import normalized_adjacency, sparse_dropout, sparse_mm
from modalrec.losses import bpr_loss
from modalrec.models.base import Embeddings, Model, bpr_terms


class NGCF(Model):
    """Graph CF with transformed, element-wise-interacting messages and a concatenation readout."""

    name = "ngcf"
    modalities = ()
    adj: torch.Tensor  # normalised bipartite adjacency [(U+I), (U+I)] (sparse CSR buffer)

    @dataclass
    class Config:
        embed_dim: int = 64  # layer-0 embedding size d
        layer_sizes: list[int] = field(default_factory=lambda: [64, 64, 64])  # output size of each layer
        mess_dropout: float = 0.1  # message dropout on each layer's output (paper's default 0.1)
        node_dropout: float = (
            0.0  # dropout of Laplacian entries per training forward (official "node dropout")
        )
        leaky_slope: float = 0.2  # negative slope of the LeakyReLU (official code: TF default 0.2)
        reg_weight: float = 1e-5  # λ of the L2 penalty on layer-0 batch embeddings (paper: 1e-5)
        official_layer: bool = False  # official-code layer (biases, split activations, normalised readout)
        normalize_layers: bool = (
            False  # RecBole/MMRec form: L2-normalise each layer's output and propagate that
        )
        reg_on: str = (
            "ego"  # L2 on the batch's "ego" (layer-0) rows, its "final" readout rows, or "all" parameters
        )

    def __init__(self, data: Dataset, cfg: Config) -> None:
        super().__init__(data, cfg)
        if cfg.reg_on not in ("ego", "final", "all"):
            raise ConfigError(f"ngcf reg_on must be 'ego', 'final' or 'all', not {cfg.reg_on!r}")
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_users, cfg.embed_dim)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_items, cfg.embed_dim)))
        sizes = [cfg.embed_dim, *cfg.layer_sizes]
        bias = cfg.official_layer
        self.w1 = nn.ModuleList(nn.Linear(a, b, bias=bias) for a, b in itertools.pairwise(sizes))
        self.w2 = nn.ModuleList(nn.Linear(a, b, bias=bias) for a, b in itertools.pairwise(sizes))
        for lin in [*self.w1, *self.w2]:
            nn.init.xavier_uniform_(lin.weight)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        self.register_buffer("adj", normalized_adjacency(data.train), persistent=False)

    @property
    def out_dim(self) -> int:
        """Size of the concatenated readout: d + Σ layer sizes."""
        return self.cfg.embed_dim + sum(self.cfg.layer_sizes)

    def layer(self, index: int, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """One propagation layer (Eq. 7): [N, d_{l-1}] -> [N, d_l], before message dropout."""
        # L E; after node dropout L is no longer symmetric, so torch transposes it in the backward pass
        side = torch.sparse.mm(adj, x) if adj is not self.adj else sparse_mm(adj, x)
        w1, w2, slope = self.w1[index], self.w2[index], self.cfg.leaky_slope
        if self.cfg.official_layer:
            side = side + x  # (L + I) E feeds both terms in the official code
            return F.leaky_relu(w1(side), slope) + F.leaky_relu(w2(side * x), slope)
        return F.leaky_relu(w1(side + x) + w2(side * x), slope)

    def forward(self) -> Embeddings:
        adj = sparse_dropout(self.adj, self.cfg.node_dropout, self.training)
        x = torch.cat([self.user_emb, self.item_emb], dim=0)
        outs = [x]
        for index in range(len(self.w1)):
            x = self.layer(index, adj, x)
            x = F.dropout(x, self.cfg.mess_dropout, self.training)
            if self.cfg.normalize_layers:  # bounded layer outputs; the next layer reads the normalised rows
                x = F.normalize(x, dim=1)
            outs.append(F.normalize(x, dim=1) if self.cfg.official_layer else x)
        out = torch.cat(outs, dim=1)  # Eq. 9: concatenation of all layers, [N, out_dim]
        users, items = torch.split(out, [self.n_users, self.n_items])
        return Embeddings(users, items)

    def loss(self, batch: Batch, emb: Embeddings) -> dict[str, torch.Tensor]:
        if self.cfg.reg_on == "all":  # Eq. 11: λ·||Θ||² over every parameter
            u, p, n = emb.users[batch.users], emb.items[batch.pos], emb.items[batch.neg]
            penalty = torch.stack([t.pow(2).sum() for t in self.parameters()]).sum()
            return {"bpr": bpr_loss((u * p).sum(1), (u * n).sum(1)), "reg": self.cfg.reg_weight * penalty}
        if self.cfg.reg_on == "final":  # official code: λ/B · ½||[e*_u; e*_i; e*_j]||² on the readout
            return bpr_terms(batch, emb, emb.users, emb.items, self.cfg.reg_weight)
        return bpr_terms(batch, emb, self.user_emb, self.item_emb, self.cfg.reg_weight)
