"""SLMRec (Tao et al., "Self-Supervised Learning for Multimedia Recommendation", IEEE TMM 2022).

Architecture (Sec. II), with the item ID treated as one more modality:
    * Eqs. 1-4: one LightGCN encoder per modality m in {id} + M over the same user-item graph,
      layer-mean readout. Item inputs: the ID table for ``id``; W_m f_i + b_m (row-L2-normalised raw
      features, linear to d) for a content modality. User inputs: one shared ID table in every graph.
      Because LightGCN is linear, all modality graphs are propagated in one sparse product over the
      column-concatenated inputs [N, (M+1)*d]; this equals separate propagation per modality.
    * Eq. 5: fusion of the modality representations: concatenation followed by a linear layer (one for
      users, one for items) as in the official code, or the plain mean.
    * Eq. 6: y_ui = z_u . z_i.

Objectives:
    * Eq. 13 (main task): InfoNCE with cosine similarity at temperature tau over one observed item and
      sampled unobserved items (Eq. 12). BPR is available as ``main_loss="bpr"``.
    * Eqs. 7-9 (modal-agnostic SSL): two augmented views of the inputs, encoded by the same graph encoders
      and fused; InfoNCE at temperature tau_ssl between the two views of the batch's items.
        - FD (feature dropout): t(E) = M * E (Eq. 8), a Bernoulli mask on every factor of every modality.
        - FM (feature masking): each view zeroes the item inputs of one modality; the two views mask two
          different modalities drawn at random among {id} + M.
        - FD+FM: both at once.
    * Eqs. 10-11 (FAC, modal-specific SSL): the ID representation is projected through successive spaces
      s_1 -> s_2 -> ... (one per content modality, in ``fac_order``); in space s_k the k-th modality,
      projected by its own head, is contrasted with the ID chain at temperature tau_ssl. With one content
      modality this is a single ID-vs-modality alignment (the paper's Kwai setting).
    * Eq. 14: L = L_main + alpha L_ssl + lambda ||Theta||^2, with lambda applied as Adam weight decay
      (paper Sec. IV-A4: "the weight-decay parameter is used as the regularization weight"; the official
      code does the same).

Details the paper leaves open, settled as in the official code (github.com/zltao/SLMRec, read, not copied):
    raw features are row-L2-normalised, then a linear layer with bias maps each modality to d; one user
    table is shared by all modality graphs; fusion is "concat + linear"; FAC projections are linear layers
    with bias; FD/FM contrast the batch's positive items; defaults tau = tau_ssl = 0.2, alpha = 0.1,
    dropout 0.3, 3 layers, d = 64, weight decay 1e-4.
Where the official code differs from the paper, the paper is the default and the code an option:
    * main-task negatives: the code uses the other users' positives in the batch
      (``main_negatives="in_batch"``); the paper samples unobserved items (default ``"sampled"``: every
      user is scored against all the batch's sampled negatives, k = batch size, and negatives the user
      has interacted with are masked out).
    * FD: the code drops out each propagated layer output (``fd_on="layers"``); the paper masks the
      input features, t(E) = M * E (default ``fd_on="inputs"``).
    * FD/FM contrast: the code contrasts users and items (``ssl_nodes="users+items"``); the paper items
      (default ``"items"``).
    * FAC: the code uses raw dot products (``fac_similarity="dot"``) and halves the last space's width
      (not offered); the paper uses cosine similarity (default).
    * The code contrasts a batch's items with duplicates; here they are de-duplicated first, so an item is
      never its own negative.

Items lacking a modality: their layer-0 input in that modality's graph is a learned vector in the projected
space instead of W_m f_i + b_m (``missing_content.MissingEmbedding``); propagation then mixes it with the
content of the item's neighbours like any other input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch
from modalrec.errors import ConfigError
from modalrec.graph import lightgcn_readout, normalized_adjacency, sparse_mm
from modalrec.losses import bpr_loss, info_nce
from modalrec.models.base import Embeddings, Model, TrainSettings
from modalrec.models.missing_content import MissingEmbedding, content_rows, warn_contentless
from modalrec.optim import Adam

SSL_TASKS = ("fd", "fm", "fd+fm", "fac", "none")


class SLMRec(Model):
    """Per-modality LightGCN encoders, fused; InfoNCE main task plus one self-supervised task (FD/FM/FAC)."""

    name = "slmrec"
    modalities = "any"
    adj: torch.Tensor  # normalised user-item adjacency [(U+I), (U+I)] (sparse buffer)
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "FD": {"ssl_task": "fd"},
        "FM": {"ssl_task": "fm"},
        "FD+FM": {"ssl_task": "fd+fm"},
        "FAC": {"ssl_task": "fac"},
    }

    @dataclass
    class Config:
        embed_dim: int = 64  # d: width of every modality representation and of the fused one
        n_layers: int = 3  # L: LightGCN propagation depth in every modality graph (Eq. 4)
        fusion: str = "concat"  # Eq. 5: "concat" (concatenate + linear, official code) or "mean"
        main_loss: str = "infonce"  # "infonce" (Eq. 13) or "bpr" (the classic objective the paper replaces)
        main_negatives: str = "sampled"  # InfoNCE negatives: "sampled" (paper Eq. 12) or "in_batch" (code)
        temperature: float = 0.2  # τ of the main-task InfoNCE (Eq. 13)
        ssl_task: str = "fac"  # "fd", "fm", "fd+fm", "fac" or "none"
        ssl_weight: float = 0.1  # α of Eq. 14
        ssl_temperature: float = 0.2  # τ_ssl of Eqs. 9 and 11
        dropout: float = 0.3  # FD: probability of dropping each factor
        fd_on: str = "inputs"  # FD applies to "inputs" (paper Eq. 8) or to each propagated "layers" (code)
        ssl_nodes: str = "items"  # FD/FM contrast the batch's "items" (paper) or "users+items" (code)
        fac_similarity: str = "cosine"  # FAC similarity: "cosine" (paper) or "dot" (code)
        fac_order: str = ""  # comma-separated modality order of the FAC spaces; "" = dataset order
        weight_decay: float = 1e-4  # λ of Eq. 14, applied as Adam weight decay (paper Sec. IV-A4, code)
        normalize_features: bool = True  # L2-normalise each item's raw feature vector (code)
        chunk_size: int = 4096  # rows per block of the chunked InfoNCE

    def __init__(self, data: Dataset, cfg: Config) -> None:
        super().__init__(data, cfg)
        self._check(cfg)
        d = cfg.embed_dim
        self.modal_names: list[str] = list(data.modalities)
        self.n_views = len(self.modal_names) + 1  # index 0 is the ID "modality"
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_users, d)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_items, d)))
        self.proj = nn.ModuleList()
        for i, m in enumerate(self.modal_names):
            feats = torch.from_numpy(np.asarray(content_rows(data, m), dtype=np.float32))
            if cfg.normalize_features:
                feats = F.normalize(feats, dim=1)
            self.register_buffer(f"feat_{i}", feats, persistent=False)
            lin = nn.Linear(feats.shape[1], d)
            nn.init.xavier_uniform_(lin.weight)
            self.proj.append(lin)
        self.missing = MissingEmbedding(data, self.modal_names, d)
        warn_contentless(data, self.modal_names, self.name)
        self.register_buffer("adj", normalized_adjacency(data.train), persistent=False)
        self.train_csr = sp.csr_matrix(data.train, dtype=np.float32)  # false-negative look-ups (Eq. 12)
        if cfg.fusion == "concat":
            self.user_head: nn.Linear | None = nn.Linear(self.n_views * d, d)
            self.item_head: nn.Linear | None = nn.Linear(self.n_views * d, d)
            nn.init.xavier_uniform_(self.user_head.weight)
            nn.init.xavier_uniform_(self.item_head.weight)
        else:
            self.user_head = self.item_head = None
        # FAC: space k aligns the ID chain (id_heads[k] ∘ ... ∘ id_heads[0]) with modality fac_modal[k].
        self.fac_modal: list[int] = self._fac_order(cfg.fac_order)
        self.id_heads = nn.ModuleList()
        self.modal_heads = nn.ModuleList()
        if cfg.ssl_task == "fac":
            for _ in self.fac_modal:
                for heads in (self.id_heads, self.modal_heads):
                    lin = nn.Linear(d, d)
                    nn.init.xavier_uniform_(lin.weight)
                    heads.append(lin)

    @staticmethod
    def _check(cfg: Config) -> None:
        choices = {
            "fusion": ("concat", "mean"),
            "main_loss": ("infonce", "bpr"),
            "main_negatives": ("sampled", "in_batch"),
            "ssl_task": SSL_TASKS,
            "fd_on": ("inputs", "layers"),
            "ssl_nodes": ("items", "users+items"),
            "fac_similarity": ("cosine", "dot"),
        }
        for key, allowed in choices.items():
            value = getattr(cfg, key)
            if value not in allowed:
                raise ConfigError(f"slmrec: {key} must be one of {list(allowed)}, not {value!r}")
        if not 0.0 <= cfg.dropout < 1.0:
            raise ConfigError(f"slmrec: dropout must be in [0, 1), not {cfg.dropout}")

    def _fac_order(self, order: str) -> list[int]:
        if not order.strip():
            return list(range(1, self.n_views))
        names = [n.strip() for n in order.split(",") if n.strip()]
        if sorted(names) != sorted(self.modal_names):
            raise ConfigError(
                f"slmrec: fac_order must list each modality of {self.modal_names} once, not {names}"
            )
        return [self.modal_names.index(n) + 1 for n in names]

    # ---- encoders ------------------------------------------------------------------------------------------
    def item_inputs(self) -> torch.Tensor:
        """Layer-0 item inputs of every modality graph, ID first: [I, M+1, d]."""
        feats = [self.item_emb] + [
            self.missing(i, lin(getattr(self, f"feat_{i}"))) for i, lin in enumerate(self.proj)
        ]
        return torch.stack(feats, dim=1)

    def encode(self, items_in: torch.Tensor, layer_dropout: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Eqs. 1-4 for every modality at once.

        Args:
            items_in: item inputs [I, M+1, d] (possibly augmented).
            layer_dropout: dropout applied to each propagated layer (the official code's FD).

        Returns:
            users [U, M+1, d] and items [I, M+1, d]: the layer-mean readout of each modality graph.
        """
        v, d = self.n_views, self.cfg.embed_dim
        users_in = self.user_emb.unsqueeze(1).expand(-1, v, -1)
        ego = torch.cat([users_in, items_in], dim=0).reshape(-1, v * d)
        if layer_dropout > 0:
            layers = [ego]
            for _ in range(self.cfg.n_layers):
                layers.append(F.dropout(sparse_mm(self.adj, layers[-1]), layer_dropout, training=True))
            out = torch.stack(layers, dim=0).mean(dim=0)
        else:
            out = lightgcn_readout(self.adj, ego, self.cfg.n_layers)
        users, items = torch.split(out.reshape(-1, v, d), [self.n_users, self.n_items])
        return users, items

    def fuse(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 5: [U, M+1, d], [I, M+1, d] -> [U, d], [I, d]."""
        if self.user_head is None or self.item_head is None:
            return users.mean(dim=1), items.mean(dim=1)
        return self.user_head(users.flatten(1)), self.item_head(items.flatten(1))

    def forward(self) -> Embeddings:
        users, items = self.encode(self.item_inputs())
        fused_u, fused_i = self.fuse(users, items)
        return Embeddings(fused_u, fused_i, {"modal_items": items})

    # ---- augmentations (Eqs. 7-8) ------------------------------------------------------------------------
    def masked_modalities(self) -> tuple[int, int]:
        """FM: two different modality indices (0 = ID) drawn uniformly, one to mask in each view."""
        pick = torch.randperm(self.n_views)[:2]
        return int(pick[0]), int(pick[1])

    def augmented_view(
        self, items_in: torch.Tensor, mask_modality: int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One stochastic view t(E) (Eq. 7) encoded and fused: users [U, d], items [I, d]."""
        task, p = self.cfg.ssl_task, self.cfg.dropout
        x = items_in
        if mask_modality is not None:
            keep = torch.ones(self.n_views, 1, dtype=x.dtype, device=x.device)
            keep[mask_modality] = 0.0
            x = x * keep
        layer_dropout = 0.0
        if task in ("fd", "fd+fm") and p > 0:
            if self.cfg.fd_on == "inputs":
                x = F.dropout(x, p, training=True)
            else:
                layer_dropout = p
        return self.fuse(*self.encode(x, layer_dropout))

    # ---- losses --------------------------------------------------------------------------------------------
    def false_negatives(self, users: torch.Tensor, negs: torch.Tensor) -> torch.Tensor:
        """Boolean [B, K]: whether item ``negs[k]`` is a training positive of user ``users[b]``.

        Looked up in the CPU CSR matrix ([B, K] sparse slice), which is far faster than a sorted-key search.
        """
        sub = self.train_csr[users.cpu().numpy()][:, negs.cpu().numpy()].tocoo()
        mask = torch.zeros(len(users), len(negs), dtype=torch.bool)
        mask[torch.from_numpy(sub.row.astype(np.int64)), torch.from_numpy(sub.col.astype(np.int64))] = True
        return mask.to(users.device)

    def main_loss(self, batch: Batch, emb: Embeddings) -> torch.Tensor:
        """Eq. 13 (or BPR): scalar."""
        cfg = self.cfg
        u, p = emb.users[batch.users], emb.items[batch.pos]
        if cfg.main_loss == "bpr":
            n = emb.items[batch.neg]
            return bpr_loss((u * p).sum(1), (u * n).sum(1))
        if cfg.main_negatives == "in_batch":
            return info_nce(u, p, cfg.temperature, cfg.chunk_size)
        u, p, n = F.normalize(u, dim=1), F.normalize(p, dim=1), F.normalize(emb.items[batch.neg], dim=1)
        pos = (u * p).sum(1, keepdim=True) / cfg.temperature  # [B, 1]
        neg = u @ n.T / cfg.temperature  # [B, B]: every user against all the batch's sampled negatives
        false_neg = self.false_negatives(batch.users, batch.neg)
        neg = neg.masked_fill(false_neg, float("-inf"))
        return (torch.logsumexp(torch.cat([pos, neg], dim=1), dim=1) - pos.squeeze(1)).mean()

    def view_loss(self, batch: Batch) -> torch.Tensor:
        """Eq. 9 for FD, FM and FD+FM: InfoNCE between two augmented views of the batch's (unique) nodes."""
        items_in = self.item_inputs()
        if self.cfg.ssl_task in ("fm", "fd+fm"):
            m1, m2 = self.masked_modalities()
        else:
            m1 = m2 = None  # type: ignore[assignment]
        u1, i1 = self.augmented_view(items_in, m1)
        u2, i2 = self.augmented_view(items_in, m2)
        items = torch.unique(batch.pos)
        loss = info_nce(i1[items], i2[items], self.cfg.ssl_temperature, self.cfg.chunk_size)
        if self.cfg.ssl_nodes == "users+items":
            users = torch.unique(batch.users)
            loss = loss + info_nce(u1[users], u2[users], self.cfg.ssl_temperature, self.cfg.chunk_size)
        return loss

    def fac_loss(self, modal_items: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Eqs. 10-11: ID aligned with each content modality in successive projection spaces.

        Args:
            modal_items: per-modality item representations [I, M+1, d] (ID first).
            items: item indices [N] to contrast (unique).
        """
        z = modal_items[items]
        chain = z[:, 0]
        total = z.new_zeros(())
        normalize = self.cfg.fac_similarity == "cosine"
        for k, m in enumerate(self.fac_modal):
            chain = self.id_heads[k](chain)  # z_{id→s_k} = g_{s_{k-1}→s_k}(z_{id→s_{k-1}})
            target = self.modal_heads[k](z[:, m])  # z_{m→s_k}
            total = total + info_nce(chain, target, self.cfg.ssl_temperature, self.cfg.chunk_size, normalize)
        return total

    def ssl_loss(self, batch: Batch, emb: Embeddings) -> torch.Tensor:
        """L_ssl of the configured task (unweighted)."""
        if self.cfg.ssl_task == "fac":
            assert emb.extras is not None
            return self.fac_loss(emb.extras["modal_items"], torch.unique(batch.pos))
        return self.view_loss(batch)

    def loss(self, batch: Batch, emb: Embeddings) -> dict[str, torch.Tensor]:
        """Eq. 14 without the L2 term (that is the optimiser's weight decay): {'infonce'|'bpr', 'ssl'}."""
        terms = {self.cfg.main_loss: self.main_loss(batch, emb)}
        if self.cfg.ssl_task != "none" and self.cfg.ssl_weight > 0:
            terms["ssl"] = self.cfg.ssl_weight * self.ssl_loss(batch, emb)
        return terms

    def configure_optimizers(self, train: TrainSettings) -> list[Adam]:
        """One Adam whose weight decay is λ of Eq. 14 (``weight_decay``) plus the trainer's weight decay."""
        settings: dict[str, Any] = {
            "lr": train.lr,
            "weight_decay": self.cfg.weight_decay + train.weight_decay,
        }
        params = [p for p in self.parameters() if p.requires_grad]
        return [Adam(params, decoupled=train.optimizer == "adamw", **settings)]
