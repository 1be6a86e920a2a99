"""SMORE (Ong & Khong, "Spectrum-based Modality Representation Fusion Graph Convolutional Network for
Multimodal Recommendation", WSDM 2025).

For M >= 1 modalities with projected features f^m = W_m x^m + b_m ([I, d]):
  * spectral modality fusion: F^m = rFFT(f^m) along the embedding axis (orthonormal); each modality is denoised by
    its own learnable complex filter, c^m = irFFT(F^m ⊙ K^m), and the modalities are fused in the frequency
    domain, where a product is a circular convolution of the signals: c^f = irFFT(K^f ⊙ Π_m F^m).
  * modality-aware item graphs: S^m the frozen top-k cosine graph of raw modality m (sym-normalised), and the
    fused graph S^f = max-pool of the S^m over the union of their edges.
  * item views: e^v = E_item ⊙ σ(G_v c^v + b_v) for v ∈ {1..M, f}; L propagations h^v = (S^v)^L e^v; users read
    the items they interacted with: h^v_u = R̂ h^v (R̂ = D_u^{-1/2} R D_i^{-1/2}).
  * behaviour view: LightGCN layer mean x = mean_{l=0..K} Â^l [E_user; E_item] over the interaction graph.
  * modality-aware preference: attention from the fused view, a^m = softmax_d(Q_m(h^f)) with Q_m =
    Linear-Tanh-Linear, gives h̃^m = a^m ⊙ h^m; behaviour gates g^v = Dropout(σ(P_v x)) give the side
    representation s = mean(g^1 ⊙ h̃^1, ..., g^M ⊙ h̃^M, g^f ⊙ h^f); the final representation is x + s.
  * loss: BPR on (x + s) + λ ½(||u||² + ||i⁺||² + ||i⁻||²)/B + β [InfoNCE(s_i⁺, x_i⁺) + InfoNCE(s_u, x_u)], both
    InfoNCE terms over the batch rows (in-batch negatives, temperature τ).

The paper text is not used here: equations and defaults follow the official code (enoche/MMRec ``smore.py`` and
``SMORE.yaml``; the first value of each tuned grid). Where we differ from that code:
  * any set of modalities (the code wires image and text): the fused spectrum is the product over all of them
    and the fused graph the max over all of them.
  * one k for every modality's kNN graph (the code has one per modality, both 10 at the grid's first value).
  * the kNN graphs drop negative cosines (``item_graphs.knn_normalized_graph``); the code keeps them.
  * raw features are fixed unless ``finetune_features`` (the code trains them).
  * the code's step schedule of the learning rate (×0.96 every 50 epochs) is left to the trainer's own options.
Ablation switches: ``use_spectrum`` (False: c^m = f^m and c^f = mean_m f^m, no filters), ``use_fusion_view``
(False: no fused view, hence no attention from it), ``use_preference`` (False: no attention, no gates, s = mean
of the views), ``cl_weight`` = 0.

Items lacking a modality: f^m is a learned vector (``missing_content.MissingEmbedding``) before the spectral
filters and the fusion; S^m spans the items that have m (no row or column for the others), so the max-pooled
S^f gives each item the neighbours of the modalities it has; an item's side representation s_i averages the
views of the modalities it has (plus the fused view), so an item with no content has s_i = 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch
from modalrec.graph import bipartite_layer_mean, normalized_interactions, sparse_mm
from modalrec.losses import bpr_loss, info_nce, l2_reg
from modalrec.models.base import Embeddings, Model
from modalrec.models.homogeneous_graphs import edges_to_csr, max_pool_graph
from modalrec.models.item_graphs import knn_normalized_graph
from modalrec.models.missing_content import MissingEmbedding, masked_mean, warn_contentless
from modalrec.models.raw_features import RawFeatures


def spectral_filter(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """irFFT(rFFT(x) ⊙ K) along dim 1 (orthonormal): x [N, d], kernel complex [d//2 + 1] -> [N, d]."""
    d = x.shape[1]
    return torch.fft.irfft(torch.fft.rfft(x, dim=1, norm="ortho") * kernel, n=d, dim=1, norm="ortho")


def spectral_fusion(xs: list[torch.Tensor], kernel: torch.Tensor) -> torch.Tensor:
    """irFFT(K ⊙ Π_m rFFT(x^m)) along dim 1 (orthonormal): M inputs [N, d] -> [N, d]."""
    d = xs[0].shape[1]
    spectrum = torch.fft.rfft(xs[0], dim=1, norm="ortho")
    for x in xs[1:]:
        spectrum = spectrum * torch.fft.rfft(x, dim=1, norm="ortho")
    return torch.fft.irfft(spectrum * kernel, n=d, dim=1, norm="ortho")


def _gate(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.Sigmoid())


class SMORE(Model):
    """Spectral modality fusion + modality-aware item graphs + preference gating over a LightGCN view."""

    name = "smore"
    modalities = "any"
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "w/o spectrum": {"use_spectrum": False},
        "w/o fusion view": {"use_fusion_view": False},
        "w/o preference": {"use_preference": False},
        "w/o contrast": {"cl_weight": 0.0},
    }
    r_hat: torch.Tensor  # [U, I] R̂ (sparse CSR)
    r_hat_t: torch.Tensor  # [I, U]

    @dataclass
    class Config:
        embed_dim: int = 64  # d (even or odd; the filters have d//2 + 1 frequencies)
        n_ui_layers: int = 3  # K LightGCN layers of the behaviour view (official grid [3, 4])
        n_item_layers: int = 1  # L propagations over each item-item graph
        knn_k: int = 10  # k of every modality's kNN graph (official grid [10, 15, 20, 40])
        reg_weight: float = (
            1e-5  # λ of the L2 term on the batch's final embeddings (official grid [1e-5, 1e-4])
        )
        cl_weight: float = 0.001  # β of the two InfoNCE terms; 0.01 holds BPR at ln 2 (docs/defaults.md)
        tau: float = 0.2  # temperature τ of InfoNCE
        dropout: float = 0.0  # dropout on the behaviour gates (official grid [0, 0.1])
        use_spectrum: bool = True  # False: no FFT filters (ablation)
        use_fusion_view: bool = True  # False: no fused spectrum / graph view (ablation)
        use_preference: bool = True  # False: no fused-view attention and no behaviour gates (ablation)
        finetune_features: bool = False  # train the raw features too (official code); fixed otherwise
        chunk_size: int = 1024  # rows per block of the kNN search

    def __init__(self, data: Dataset, cfg: Config) -> None:
        super().__init__(data, cfg)
        d = cfg.embed_dim
        names = list(data.features)
        self.n_modalities = len(names)
        self.features = RawFeatures(data, names, trainable=cfg.finetune_features)
        raw = [
            self.features[m].detach() for m in range(self.n_modalities)
        ]  # [I, d_m] each, for the fixed graphs
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_users, d)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_items, d)))
        self.projections = nn.ModuleList([nn.Linear(r.shape[1], d) for r in raw])
        n_freq = d // 2 + 1
        # complex kernels stored as (real, imaginary) pairs; standard-normal start as in the official code
        self.kernels = nn.Parameter(torch.randn(self.n_modalities, n_freq, 2))
        self.fusion_kernel = nn.Parameter(torch.randn(n_freq, 2))
        n_views = self.n_modalities + 1
        self.item_gates = nn.ModuleList([_gate(d) for _ in range(n_views)])  # last = fused view
        self.preference_gates = nn.ModuleList([_gate(d) for _ in range(n_views)])
        self.queries = nn.ModuleList(
            [
                nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, d, bias=False))
                for _ in range(self.n_modalities)
            ]
        )
        self.dropout = nn.Dropout(cfg.dropout)
        r_hat, r_hat_t = normalized_interactions(data.train)
        self.register_buffer("r_hat", r_hat, persistent=False)
        self.register_buffer("r_hat_t", r_hat_t, persistent=False)
        self.missing = MissingEmbedding(data, names, d)
        warn_contentless(data, names, self.name)
        graphs = [
            knn_normalized_graph(r, cfg.knn_k, cfg.chunk_size, self.missing.present(m))
            for m, r in enumerate(raw)
        ]
        graphs.append(max_pool_graph(graphs, data.n_items))
        for idx, g in enumerate(graphs):  # index M is the fused graph S^f
            a, a_t = edges_to_csr(g, data.n_items)
            self.register_buffer(f"graph_{idx}", a, persistent=False)
            self.register_buffer(f"graph_t_{idx}", a_t, persistent=False)

    def raw_features(self, idx: int) -> torch.Tensor:
        """x^m of modality ``idx``: [I, d_m]."""
        return self.features[idx]

    def graph(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """S^m for idx < M, the fused S^f for idx = M, with its transpose ([I, I] sparse CSR each)."""
        return getattr(self, f"graph_{idx}"), getattr(self, f"graph_t_{idx}")

    def spectral_views(self) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """The denoised c^m (list of [I, d]) and the fused c^f ([I, d], None without the fused view)."""
        feats = [self.missing(i, proj(self.raw_features(i))) for i, proj in enumerate(self.projections)]
        fused = None
        if not self.cfg.use_spectrum:
            if self.cfg.use_fusion_view:
                fused = torch.stack(feats).mean(0)
            return feats, fused
        kernels = torch.view_as_complex(self.kernels)
        denoised = [spectral_filter(f, kernels[m]) for m, f in enumerate(feats)]
        if self.cfg.use_fusion_view:
            fused = spectral_fusion(feats, torch.view_as_complex(self.fusion_kernel))
        return denoised, fused

    def _graph_view(self, idx: int, signal: torch.Tensor) -> torch.Tensor:
        """[h^v_u; h^v_i]: gated ID embeddings propagated over S^v, users reading their items: [(U+I), d]."""
        h = self.item_emb * self.item_gates[idx](signal)
        g, g_t = self.graph(idx)
        for _ in range(self.cfg.n_item_layers):
            h = sparse_mm(g, h, g_t)
        return torch.cat([sparse_mm(self.r_hat, h, self.r_hat_t), h], dim=0)

    def forward(self) -> Embeddings:
        """Users [U, d], items [I, d] = x + s; extras hold the side s and behaviour x views ([(U+I), d])."""
        users, items = bipartite_layer_mean(
            self.r_hat, self.r_hat_t, self.user_emb, self.item_emb, self.cfg.n_ui_layers
        )
        content = torch.cat([users, items], dim=0)
        denoised, fused_signal = self.spectral_views()
        views = [self._graph_view(m, c) for m, c in enumerate(denoised)]
        fused = None if fused_signal is None else self._graph_view(self.n_modalities, fused_signal)
        if self.cfg.use_preference:
            if fused is not None:
                views = [
                    torch.softmax(q(fused), dim=-1) * v for q, v in zip(self.queries, views, strict=True)
                ]
            views = [self.dropout(self.preference_gates[m](content)) * v for m, v in enumerate(views)]
            if fused is not None:
                fused = self.dropout(self.preference_gates[self.n_modalities](content)) * fused
        parts = views if fused is None else [*views, fused]
        present = self.missing.matrix()
        if present is None:
            side = torch.stack(parts).mean(0)
        else:  # items average the views of the modalities they have (users: all views)
            if fused is not None:
                present = torch.cat([present, present.any(dim=1, keepdim=True)], dim=1)
            users_all = present.new_ones(self.n_users, present.shape[1])
            side = masked_mean(parts, torch.cat([users_all, present], dim=0))
        final = content + side
        u, i = torch.split(final, [self.n_users, self.n_items])
        return Embeddings(u, i, {"side": side, "content": content})

    def loss(self, batch: Batch, emb: Embeddings) -> dict[str, torch.Tensor]:
        """BPR + λ L2 on the batch's final embeddings + β (InfoNCE on items + InfoNCE on users)."""
        u = emb.users.index_select(0, batch.users)
        p = emb.items.index_select(0, batch.pos)
        n = emb.items.index_select(0, batch.neg)
        terms = {
            "bpr": bpr_loss((u * p).sum(1), (u * n).sum(1)),
            "reg": self.cfg.reg_weight * l2_reg(u, p, n, batch_size=len(batch.users)),
        }
        if self.cfg.cl_weight > 0 and emb.extras:
            side, content = emb.extras["side"], emb.extras["content"]
            pos = batch.pos + self.n_users
            cl = info_nce(side.index_select(0, pos), content.index_select(0, pos), self.cfg.tau) + info_nce(
                side.index_select(0, batch.users), content.index_select(0, batch.users), self.cfg.tau
            )
            terms["cl"] = self.cfg.cl_weight * cl
        return terms
