"""The model contract every recommender implements (docs/architecture.md describes it with an example).

A model owns its graphs and feature tensors as buffers, so ``.to(device)`` moves everything; it never reads files.
The trainer only calls ``forward``, ``loss``, ``score`` and the optional hooks below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch import nn

from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch
from modalrec.optim import Adam


class Embeddings(NamedTuple):
    """Final representations from one full propagation: users [U, d], items [I, d], plus model extras."""

    users: torch.Tensor
    items: torch.Tensor
    extras: dict[str, Any] | None = None


@dataclass
class TrainSettings:
    """What a model may read from the training configuration when building its optimisers."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"


def bpr_terms(
    batch: Batch, emb: Embeddings, user_ego: torch.Tensor, item_ego: torch.Tensor, reg_weight: float
) -> dict[str, torch.Tensor]:
    """The common loss of graph CF models: BPR on the final embeddings plus λ·L2 on the batch's layer-0 rows.

    Shapes: emb.users [U, d'], emb.items [I, d']; user_ego [U, d], item_ego [I, d] (the learnable tables).
    """
    from modalrec.losses import bpr_loss, l2_reg

    # index_select rather than [] indexing: a faster gather, and its backward is a plain index_add_
    u, p, n = (
        t.index_select(0, i)
        for t, i in ((emb.users, batch.users), (emb.items, batch.pos), (emb.items, batch.neg))
    )
    ego = (
        user_ego.index_select(0, batch.users),
        item_ego.index_select(0, batch.pos),
        item_ego.index_select(0, batch.neg),
    )
    return {
        "bpr": bpr_loss((u * p).sum(1), (u * n).sum(1)),
        "reg": reg_weight * l2_reg(*ego, batch_size=len(batch.users)),
    }


def bpr_terms_on_rows(
    batch: Batch, emb: Embeddings, user_table: torch.Tensor, item_table: torch.Tensor, reg_weight: float
) -> dict[str, torch.Tensor]:
    """:func:`bpr_terms` for a model that may pass the batch-rows form (``batch_rows.py``).

    After a full forward, ``emb`` holds every row and the L2 term reads the tables [U, d], [I, d]. From a
    ``batch_loss`` that propagated the batch's rows only, ``emb`` holds those rows, ``batch`` indexes them, and
    ``emb.extras["user_ego"]`` / ``["item_ego"]`` carry their layer-0 rows for the L2 term.
    """
    extras = emb.extras or {}
    user_ego = extras.get("user_ego", user_table)
    item_ego = extras.get("item_ego", item_table)
    return bpr_terms(batch, emb, user_ego, item_ego, reg_weight)


class Model(nn.Module):
    """Base class of every recommender.

    Class attributes:
        name: registry key.
        Config: dataclass of hyper-parameters (paper defaults), each field documented.
        modalities: ``()`` for ID-only models, ``"any"`` for models using any non-empty set of modalities,
            ``"optional"`` for models that use modalities when present.
        trainable: False for models with nothing to learn (e.g. ItemKNN).
        train_defaults: ``train.*`` values this model trains with unless the run sets them (config file,
            ``--set`` or a compare config's train section), e.g. ``{"lr": 5e-3}``; the recorded config holds
            the value used. Empty: the trainer's defaults (``TrainConfig``).
    """

    name: ClassVar[str] = "base"
    modalities: ClassVar[tuple[str, ...] | str] = ()
    trainable: ClassVar[bool] = True
    variants: ClassVar[dict[str, dict[str, Any]]] = {}
    train_defaults: ClassVar[dict[str, Any]] = {}

    @dataclass
    class Config:
        embed_dim: int = 64

    def __init__(self, data: Dataset, cfg: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_users = data.n_users
        self.n_items = data.n_items
        if self.modalities == "any" and not data.features:
            from modalrec.errors import ConfigError

            raise ConfigError(f"model '{self.name}' needs at least one item modality; the dataset has none")

    # ---- the contract -------------------------------------------------------------------------------------
    def forward(self) -> Embeddings:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, batch: Batch, emb: Embeddings) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def score(self, emb: Embeddings, users: torch.Tensor) -> torch.Tensor:
        """Scores of the given users against every item: [B, I]."""
        return emb.users[users] @ emb.items.T

    # ---- optional hooks -----------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        """Called before each training epoch (e.g. to rebuild graphs)."""

    def configure_optimizers(self, train: TrainSettings) -> list[Adam]:
        """Default: one Adam (or AdamW) over all parameters (``modalrec.optim``; fused kernel when available)."""
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return []
        return [
            Adam(params, lr=train.lr, weight_decay=train.weight_decay, decoupled=train.optimizer == "adamw")
        ]

    def batch_loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The named loss terms of one training batch: ``loss(batch, forward())`` unless a model can do less work."""
        return self.loss(batch, self.forward())

    def train_step(
        self, batch: Batch, optimizers: list[Adam], grad_clip: float | None = None
    ) -> dict[str, float]:
        """One optimisation step: forward, named losses, backward, step. Returns each term as a float."""
        terms = self.batch_loss(batch)
        total = torch.stack(list(terms.values())).sum()
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        total.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(self.parameters(), grad_clip)
        for opt in optimizers:
            opt.step()
        return {k: float(v.detach()) for k, v in terms.items()}

    def epoch_diagnostics(self) -> dict[str, float]:
        """Figures that show whether a model's components act, computed after each training epoch.

        The trainer logs them as ``diag_<name>`` in history.csv, the epoch line and curves.png. They must not
        draw from the global random stream (a run with and without them trains identically). Default: none.
        """
        return {}

    def item_embeddings_from_features(
        self, features: dict[str, np.ndarray], present: dict[str, Any] | None = None
    ) -> torch.Tensor:
        """Embed unseen items from their content alone ([n_new, d]); models that cannot raise.

        ``present`` (modality -> bool [n_new], array or tensor) marks new items that lack a modality; a modality
        left out of ``features`` counts as absent for every new item when ``present`` is given. Absent rows are
        never read as content (see ``missing_content``).
        """
        raise NotImplementedError(f"model '{self.name}' cannot embed items from content features")

    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")
