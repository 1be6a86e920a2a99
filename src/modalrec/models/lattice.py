"""LATTICE (Zhang et al., "Mining Latent Structures for Multimedia Recommendation", ACM MM 2021).

The predecessor of MICRO, sharing its graph machinery (``item_graphs.py``; equation numbers of the MICRO
paper): per-modality graphs A^m = λ S̃^m + (1-λ) Ã^m (Eqs. 1-5) are aggregated into one item graph with
learnable modality weights, A = Σ_m α_m A^m with α = softmax(w), and L parameter-free convolutions of the
item ID embeddings over A (Eq. 6) give h, added to the backbone's item embedding as h/||h|| (Eq. 13).
Training is BPR only (no contrastive loss).

Official code (CRIPAC-DIG/LATTICE) differences, offered as options: raw features are trainable
(``finetune_features``); the learned graph is rebuilt once per epoch (``graph_update="epoch"``, the default,
as the paper does not say how often); the code sums the learned kNN matrices before normalising them, while
here each modality's graph is normalised (Eq. 3) before the weighted sum, which keeps A normalised as α sums
to one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modalrec.data.dataset import Dataset
from modalrec.models.item_graphs import (
    Edges,
    ItemGraphModel,
    concat_edges,
    propagate_edges,
    propagate_with_new,
)
from modalrec.models.missing_content import row_renormalised_edges


class LATTICE(ItemGraphModel):
    """One item graph aggregated from the modality graphs with softmax weights, plugged into a CF backbone."""

    name = "lattice"
    modalities = "any"
    variants: ClassVar[dict[str, dict[str, Any]]] = {"CF": {"plugin": False}}

    @dataclass
    class Config:
        embed_dim: int = 64  # latent dimensionality d (also the output size of the transforms W_m)
        backbone: str = "lightgcn"  # downstream CF model: "mf", "ngcf" or "lightgcn"
        n_cf_layers: int = 2  # propagation depth of the NGCF / LightGCN backbone (official code: 2)
        knn_k: int = 10  # k of the kNN sparsification
        skip_lambda: float = (
            0.9  # λ weight of the initial graph in A^m (LATTICE code default 0.9; MICRO uses 0.7)
        )
        n_item_layers: int = 1  # L graph convolutions over the aggregated item graph
        reg_weight: float = 1e-4  # L2 coefficient on the batch's layer-0 ID embeddings
        plugin: bool = True  # False: the bare backbone
        graph_update: str = "epoch"  # rebuild the learned graph per "epoch" (official code) or per "forward"
        finetune_features: bool = (
            False  # also train the raw features (official code); the paper keeps them fixed
        )
        ngcf_dropout: float = 0.1  # message dropout of the NGCF backbone
        chunk_size: int = 1024  # rows per block in the kNN search
        content_only_cold: bool = (
            False  # untrained items: zero ID input, x̃_i = mean of warm graph neighbours'
        )

    def __init__(self, data: Dataset, cfg: Config) -> None:
        super().__init__(data, cfg)
        # Equal initial weights, as in the official code (which starts from [0.5, 0.5] for two modalities).
        self.modal_weight = nn.Parameter(torch.zeros(self.item_graphs.n_modalities))

    def modality_weights(self) -> torch.Tensor:
        """α = softmax(w): [M], sums to one."""
        return torch.softmax(self.modal_weight, dim=0)

    def combine(self, graphs: list[Edges], alpha: torch.Tensor, present: torch.Tensor | None) -> Edges:
        """A = Σ_m α_m A^m; with ``present`` (bool [rows, M]) each row's α renormalised over the modalities
        that item has, so an item lacking one keeps a row of total weight one from the others."""
        return Edges(*row_renormalised_edges(graphs, alpha, present))

    def item_branch(self) -> tuple[torch.Tensor, dict[str, Any]]:
        """h = A^L e over the aggregated graph A = Σ_m α_m A^m: [I, d]; extras hold α [M]."""
        alpha = self.modality_weights()
        graphs = self.item_graphs.graphs()
        combined = self.combine(graphs, alpha, self.item_graphs.presence())
        h = propagate_edges(combined, self.id_input(), self.cfg.n_item_layers)[-1]
        return h, {"alpha": alpha, "graphs": [combined]}

    @torch.no_grad()
    def item_embeddings_from_features(
        self, features: dict[str, np.ndarray], present: dict[str, Any] | None = None
    ) -> torch.Tensor:
        """Embed unseen items from content alone: [n_new, d] (see ``MICRO.item_embeddings_from_features``).

        ``present`` (modality -> bool [n_new]) marks new items lacking a modality: they get no row in its graph
        and their α renormalises over the modalities they have."""
        if not self.plugin:
            raise NotImplementedError(
                "LATTICE with plugin=False is a plain CF model and cannot embed new items"
            )
        was_training = self.training
        self.eval()
        try:
            new_raw, n_new, new_present = self._new_item_inputs(features, present)
            alpha = self.modality_weights()
            graphs = self.item_graphs.graphs()
            rows = self.item_graphs.rows_for_new_items(new_raw, new_present)
            known = self.combine(graphs, alpha, self.item_graphs.presence())
            if new_present is None:
                new = concat_edges([r.scaled(alpha[m]) for m, r in enumerate(rows)])
            else:  # rows count new items from 0; the self edges (column -1) belong to those rows too
                new = self.combine(rows, alpha, torch.stack(new_present, dim=1))
            x = self.id_input()
            _, h = propagate_with_new(known, new, x, x.new_zeros(n_new, x.shape[1]), self.cfg.n_item_layers)
            return F.normalize(h, dim=1)
        finally:
            self.train(was_training)
