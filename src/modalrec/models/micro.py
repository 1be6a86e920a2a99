"""MICRO (Zhang et al., "Latent Structure Mining with Contrastive Modality Fusion for Multimedia
Recommendation", IEEE TKDE 2022).

Per modality m: a fixed kNN graph S̃^m from raw features (Eqs. 1-3), a learned kNN graph Ã^m from
transformed features (Eq. 4), mixed by A^m = λ S̃^m + (1-λ) Ã^m (Eq. 5), and L parameter-free convolutions of
the shared item ID embeddings over A^m (Eq. 6) giving h^m. An attention module fuses the h^m into h
(Eqs. 7-9); a contrastive loss pulls each h^m towards h (Eqs. 10-12). The CF backbone's item embedding is
enhanced by h/||h|| (Eq. 13); the score is an inner product (Eq. 14); the objective is BPR + β L_C (Eqs.
15-16). The machinery lives in ``item_graphs.py``.

Where the official code (CRIPAC-DIG/MICRO) differs, the paper is the default and the code's choice an option:
  * L_C: the paper averages both directions over modalities (Eq. 10); the code sums the one-directional
    I(h^m, h) over modalities -> ``cl_symmetric=False`` (one direction; still averaged over modalities).
  * raw features are trainable in the code -> ``finetune_features=True``.
  * the learned graph is rebuilt once per epoch in the code (``graph_update="epoch"``, the default here, since
    the paper does not say) or on every training forward (``"forward"``).
Computing L_C over all items at every step (the paper's form, ``cl_items=0``) costs O(I² d) per step, so an epoch's
cost would grow quadratically with the catalogue. By default ``cl_items`` = 256 averages it over 256 random anchor
items per step, each still contrasted with all items: an unbiased estimate of L_C at O(B I d) per step (catalogues
of at most B items use all of them, exactly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch
from modalrec.errors import ConfigError
from modalrec.models.base import Embeddings
from modalrec.models.item_graphs import (
    AttentionFusion,
    ItemGraphModel,
    fusion_contrastive_loss,
    propagate_edges,
    propagate_with_new,
)


class MICRO(ItemGraphModel):
    """Latent item graphs per modality, attentive + contrastive fusion, plugged into MF / NGCF / LightGCN."""

    name = "micro"
    modalities = "any"
    # Table 5 ablations, as Config overrides (the plain backbone is "CF").
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "w/o contrast": {"cl_weight": 0.0},
        "/feats": {"item_input": "features"},
        "CF+feats": {"use_graph": False, "item_input": "features"},
        "CF": {"plugin": False, "cl_weight": 0.0},
    }

    @dataclass
    class Config:
        embed_dim: int = 64  # latent dimensionality d (also the output size of the transforms W_m, Eq. 4)
        backbone: str = "lightgcn"  # downstream CF model: "mf", "ngcf" or "lightgcn" (Table 5)
        n_cf_layers: int = 2  # propagation depth of the NGCF / LightGCN backbone (official code: 2)
        knn_k: int = 10  # k of the kNN sparsification (Eq. 2)
        skip_lambda: float = 0.7  # λ of the skip connection to the initial graph (Eq. 5)
        n_item_layers: int = 1  # L graph convolutions over the item graphs (Eq. 6; paper: 1 or 2 per dataset)
        cl_weight: float = 0.03  # β of the contrastive loss (Eq. 16); 0 = "w/o contrast"
        tau: float = 0.5  # temperature τ of Eqs. 11-12
        cl_symmetric: bool = (
            True  # both InfoNCE directions (Eq. 10); False = the official code's one direction
        )
        cl_items: int = (
            256  # anchor items per step in L_C: B random ones (unbiased, O(B·I·d)); 0 = all (paper)
        )
        reg_weight: float = 1e-4  # L2 coefficient on the batch's layer-0 ID embeddings
        item_input: str = (
            "id"  # H_(0) of Eq. 6: "id" (shared item ID embeddings) or "features" (ẽ^m, "/feats")
        )
        use_graph: bool = (
            True  # False: h^m = the input itself, no item graph ("CF+feats" with item_input=features)
        )
        plugin: bool = True  # False: the bare backbone ("CF" row of Table 5)
        graph_update: str = "epoch"  # rebuild the learned graph per "epoch" (official code) or per "forward"
        finetune_features: bool = (
            False  # also train the raw features (official code); the paper keeps them fixed
        )
        ngcf_dropout: float = 0.1  # message dropout of the NGCF backbone
        chunk_size: int = 1024  # rows per block in kNN search and in L_C
        content_only_cold: bool = (
            False  # untrained items: zero ID input, x̃_i = mean of warm graph neighbours'
        )

    def __init__(self, data: Dataset, cfg: Config) -> None:
        super().__init__(data, cfg)
        if cfg.item_input not in ("id", "features"):
            raise ConfigError(f"item_input must be 'id' or 'features', not {cfg.item_input!r}")
        self.fusion = AttentionFusion(cfg.embed_dim)

    def _inputs(self, transformed: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.cfg.item_input == "features":
            return transformed
        return [self.id_input()] * self.item_graphs.n_modalities

    def item_branch(self) -> tuple[torch.Tensor, dict[str, Any]]:
        """h (Eq. 9) [I, d]; extras: views h^m [I, d], attention weights α [I, M], the graphs A^m."""
        transformed = self.item_graphs.transformed()
        inputs = self._inputs(transformed)
        if self.cfg.use_graph:
            graphs = self.item_graphs.graphs(transformed)
            views = [
                propagate_edges(g, x, self.cfg.n_item_layers)[-1] for g, x in zip(graphs, inputs, strict=True)
            ]
        else:
            graphs, views = [], inputs
        fused, alpha = self.fusion(views, self.item_graphs.presence())
        return fused, {"views": views, "fused": fused, "alpha": alpha, "graphs": graphs}

    def extra_losses(self, batch: Batch, emb: Embeddings) -> dict[str, torch.Tensor]:
        """β L_C (Eqs. 10-12, 16) over ``cl_items`` random anchor items, or over all items (``cl_items=0`` or a
        catalogue of at most ``cl_items`` items)."""
        if not self.plugin or self.cfg.cl_weight <= 0 or not emb.extras:
            return {}
        views, fused = emb.extras["views"], emb.extras["fused"]
        anchors = None
        if 0 < self.cfg.cl_items < self.n_items:
            anchors = torch.randperm(self.n_items, device=fused.device)[: self.cfg.cl_items]
        present = self.item_graphs.presence()
        if present is None:
            cl = fusion_contrastive_loss(
                views, fused, self.cfg.tau, self.cfg.chunk_size, self.cfg.cl_symmetric, anchors
            )
        else:  # each view contrasted at the anchors that have its modality only (no view of absent content)
            cl = fused.new_zeros(())
            for m, view in enumerate(views):
                own = present[:, m] if anchors is None else present[anchors, m]
                idx = torch.nonzero(own, as_tuple=True)[0]
                idx = idx if anchors is None else anchors[idx]
                if idx.numel():
                    cl = cl + fusion_contrastive_loss(
                        [view], fused, self.cfg.tau, self.cfg.chunk_size, self.cfg.cl_symmetric, idx
                    )
            cl = cl / len(views)
        return {"cl": self.cfg.cl_weight * cl}

    @torch.no_grad()
    def item_embeddings_from_features(
        self, features: dict[str, np.ndarray], present: dict[str, Any] | None = None
    ) -> torch.Tensor:
        """Embed unseen items from content alone: [n_new, d].

        Each new item joins every modality graph as a row pointing to itself and its top k-1 known items
        (Eqs. 1-5 against the known items' raw and transformed features); Eq. 6 then propagates the known
        items' embeddings to it, Eqs. 7-9 fuse the modalities, and Eq. 13 gives 0 + h/||h||, since an unseen
        item has no CF embedding x̃_i. Its own ID input is zero (it has none); with
        ``item_input="features"`` it is ẽ^m. ``present`` (modality -> bool [n_new]) marks new items lacking a
        modality: they get no row in its graph, its ẽ^m is the learned missing vector, and the attention runs
        over the modalities they have.
        """
        if not self.plugin:
            raise NotImplementedError(
                "MICRO with plugin=False is a plain CF model and cannot embed new items"
            )
        was_training = self.training
        self.eval()
        try:
            new_raw, n_new, new_present = self._new_item_inputs(features, present)
            transformed = self.item_graphs.transformed()
            inputs = self._inputs(transformed)
            if self.cfg.item_input == "features":
                new_inputs = [lin(x) for lin, x in zip(self.item_graphs.transforms, new_raw, strict=True)]
                if new_present is not None:  # a modality complete in training: the known items' mean ẽ^m
                    new_inputs = [
                        self.item_graphs.missing.substitute(m, x, new_present[m], t.mean(dim=0))
                        for m, (x, t) in enumerate(zip(new_inputs, transformed, strict=True))
                    ]
            else:
                new_inputs = [inputs[0].new_zeros(n_new, self.cfg.embed_dim)] * len(inputs)
            if self.cfg.use_graph:
                graphs = self.item_graphs.graphs(transformed)
                new_rows = self.item_graphs.rows_for_new_items(new_raw, new_present)
                views = [
                    propagate_with_new(g, r, x, xn, self.cfg.n_item_layers)[1]
                    for g, r, x, xn in zip(graphs, new_rows, inputs, new_inputs, strict=True)
                ]
            else:
                views = new_inputs
            fused, _ = self.fusion(views, None if new_present is None else torch.stack(new_present, dim=1))
            return F.normalize(fused, dim=1)
        finally:
            self.train(was_training)
