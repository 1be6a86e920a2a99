"""Shared machinery of LATTICE (Zhang et al., ACM MM 2021) and MICRO (Zhang et al., TKDE 2022).

Both mine latent item-item graphs from content features and plug the resulting item representation into a
collaborative-filtering backbone. Equation numbers refer to the MICRO paper:

* Eqs. 1-3: per-modality initial kNN graph S̃^m from raw features (cosine, negatives dropped, top-k per item,
  D^{-1/2} S D^{-1/2}); built once, in row chunks, never as a dense [I, I] matrix.
* Eq. 4: transformed features ẽ^m = W_m e^m + b_m; the same kNN construction on them gives the learned
  graph Ã^m, differentiable in W_m through the kept similarity values.
* Eq. 5: A^m = λ S̃^m + (1 - λ) Ã^m, kept as a concatenated edge list (duplicate edges add up).
* Eq. 6: H_(l) = A^m H_(l-1), parameter-free propagation.
* Eqs. 7-9: attention fusion across modalities; Eqs. 10-12: the contrastive fusion loss.
* Eq. 13: x̂_i = x̃_i + h_i / ||h_i|| on top of a CF backbone (MF, NGCF or LightGCN; Table 5).

Graph refresh: the paper says the learned graph is "dynamically" inferred without saying how often. The
official code rebuilds it (with gradients) on the first batch of every epoch and reuses a detached copy for
the remaining batches; that is ``graph_update="epoch"`` here (default). ``"forward"`` rebuilds it on every
training forward, so W_m gets gradients at every step (slower). In evaluation mode the graph is always rebuilt
from the current weights, so a restored best state never uses a stale graph.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch
from modalrec.dispatch import use_fast_path
from modalrec.errors import ConfigError
from modalrec.graph import normalize_edges, normalized_adjacency, propagate, sparse_mm, spmm_edges
from modalrec.losses import MAX_UNSHIFTED_LOGIT, bpr_loss, l2_reg, recompute_in_backward
from modalrec.models.base import Embeddings, Model
from modalrec.models.missing_content import (
    MissingEmbedding,
    masked_knn_edges,
    masked_softmax,
    new_item_features,
    new_item_presence,
    present_rows,
    warn_contentless,
)


class Edges(NamedTuple):
    """A weighted sparse [I, I] graph as an edge list: rows, cols, vals, each [E]."""

    rows: torch.Tensor
    cols: torch.Tensor
    vals: torch.Tensor

    def scaled(self, weight: float | torch.Tensor) -> Edges:
        return Edges(self.rows, self.cols, self.vals * weight)

    def detach(self) -> Edges:
        return Edges(self.rows, self.cols, self.vals.detach())


def concat_edges(graphs: list[Edges]) -> Edges:
    """The sum of several graphs as one edge list (duplicate (row, col) pairs add up in ``spmm_edges``)."""
    return Edges(
        torch.cat([g.rows for g in graphs]),
        torch.cat([g.cols for g in graphs]),
        torch.cat([g.vals for g in graphs]),
    )


def knn_normalized_graph(
    feats: torch.Tensor, k: int, chunk_size: int = 1024, present: torch.Tensor | None = None
) -> Edges:
    """Eqs. 1-3 on a feature matrix [I, d]: cosine top-k per row, negatives dropped, symmetric normalisation.

    Differentiable in ``feats`` through the kept similarity values (the neighbour choice itself is discrete).
    Degrees are the row sums of the directed kNN matrix Ŝ, as in Eq. 3. With ``present`` (bool [I]) the graph
    spans the items that have the modality only; the others have no edge in it.
    """
    rows, cols, vals = masked_knn_edges(feats, present, k, chunk_size=chunk_size, drop_negative=True)
    return Edges(rows, cols, normalize_edges(rows, cols, vals, feats.shape[0], mode="sym"))


def propagate_edges(graph: Edges, x: torch.Tensor, n_layers: int) -> list[torch.Tensor]:
    """Eq. 6 applied ``n_layers`` times: [H_0, A H_0, A² H_0, ...], each [I, d]."""
    layers = [x]
    for _ in range(n_layers):
        layers.append(spmm_edges(graph.rows, graph.cols, graph.vals, layers[-1], x.shape[0]))
    return layers


class ItemGraphs(nn.Module):
    """Per-modality item graphs A^m = λ S̃^m + (1-λ) Ã^m (Eqs. 1-5) and the transforms W_m (Eq. 4).

    Args:
        features: modality name -> float32 [I, d_m], in a fixed order.
        dim: output dimensionality d of the transforms.
        k: neighbours per item (top-k).
        skip: λ of Eq. 5 (weight of the fixed initial graph).
        graph_update: "epoch" (official code) or "forward" (see the module docstring).
        finetune_features: learn the raw features too (the official code wraps them in a trainable embedding);
            the paper keeps them fixed, so the initial graph S̃^m is always built from the given raw features.
        chunk_size: rows per similarity block in the kNN search.
        data: the dataset, read for its presence masks only: an item lacking modality m has no edge in S̃^m or
            Ã^m (both are built over the items that have m).
        learn_missing: give absent items a learned missing vector as ẽ^m (``missing_content.MissingEmbedding``);
            needed only where ẽ^m is itself an input (MICRO's ``item_input="features"``), since the graphs never
            read absent rows.
    """

    def __init__(
        self,
        features: dict[str, np.ndarray],
        dim: int,
        k: int,
        skip: float,
        graph_update: str = "epoch",
        finetune_features: bool = False,
        chunk_size: int = 1024,
        data: Dataset | None = None,
        learn_missing: bool = False,
    ) -> None:
        super().__init__()
        if graph_update not in ("epoch", "forward"):
            raise ConfigError(f"graph_update must be 'epoch' or 'forward', not {graph_update!r}")
        if not 0.0 <= skip <= 1.0:
            raise ConfigError(f"the skip coefficient λ must lie in [0, 1], got {skip}")
        if k < 1:
            raise ConfigError(f"the kNN graph needs k >= 1 neighbours, got {k}")
        self.names = list(features)
        self.k, self.skip, self.graph_update, self.chunk_size = k, skip, graph_update, chunk_size
        self.n_items = next(iter(features.values())).shape[0]
        raw = [torch.from_numpy(np.ascontiguousarray(features[m], dtype=np.float32)) for m in self.names]
        if finetune_features:
            self.raw = nn.ParameterList([nn.Parameter(r.clone()) for r in raw])
        else:
            for idx, r in enumerate(raw):
                self.register_buffer(f"raw_{idx}", r, persistent=False)
        self.finetune_features = finetune_features
        linears = [nn.Linear(r.shape[1], dim) for r in raw]
        for lin in linears:
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.transforms = nn.ModuleList(linears)
        masks: list[torch.Tensor | None] = []
        for name in self.names:
            mask = None if data is None else present_rows(data, name)
            masks.append(None if mask is None else torch.from_numpy(mask))
        self.missing = MissingEmbedding(data, self.names, dim if learn_missing else None)
        for idx, r in enumerate(raw):
            with torch.no_grad():
                g = knn_normalized_graph(r, k, chunk_size, masks[idx])
            self.register_buffer(f"init_rows_{idx}", g.rows, persistent=False)
            self.register_buffer(f"init_cols_{idx}", g.cols, persistent=False)
            self.register_buffer(f"init_vals_{idx}", g.vals, persistent=False)
        self._cache: list[Edges] | None = None
        self._stale = True

    @property
    def n_modalities(self) -> int:
        return len(self.names)

    def present(self, idx: int) -> torch.Tensor | None:
        """Bool [I]: items that have modality ``idx`` (None: all), on the module's device."""
        return self.missing.present(idx)

    def presence(self) -> torch.Tensor | None:
        """Bool [I, M] presence of every modality, or None when nothing is missing."""
        return self.missing.matrix()

    def raw_features(self, idx: int) -> torch.Tensor:
        """Raw features e^m of modality ``idx``: [I, d_m]."""
        if self.finetune_features:
            return self.raw[idx]
        return getattr(self, f"raw_{idx}")

    def initial(self, idx: int) -> Edges:
        """The fixed normalised kNN graph S̃^m (Eq. 3) of modality ``idx``."""
        return Edges(
            getattr(self, f"init_rows_{idx}"),
            getattr(self, f"init_cols_{idx}"),
            getattr(self, f"init_vals_{idx}"),
        )

    def transformed(self) -> list[torch.Tensor]:
        """ẽ^m = W_m e^m + b_m (Eq. 4) for every modality: list of [I, d]."""
        return [self.missing(i, lin(self.raw_features(i))) for i, lin in enumerate(self.transforms)]

    def mark_stale(self) -> None:
        """Ask for a rebuild of the learned graphs at the next training forward (epoch start)."""
        self._stale = True

    def learned(self, transformed: list[torch.Tensor]) -> list[Edges]:
        """Ã^m (Eq. 4 + Eqs. 1-3), rebuilt or reused according to ``graph_update`` and the training mode."""
        if not self.training or self.graph_update == "forward" or self._stale or self._cache is None:
            graphs = [
                knn_normalized_graph(t, self.k, self.chunk_size, self.present(i))
                for i, t in enumerate(transformed)
            ]
            if self.training:
                self._cache = [g.detach() for g in graphs]
                self._stale = False
            return graphs
        return self._cache

    def graphs(self, transformed: list[torch.Tensor] | None = None) -> list[Edges]:
        """A^m = λ S̃^m + (1-λ) Ã^m (Eq. 5) for every modality, each as one edge list."""
        if transformed is None:
            transformed = self.transformed()
        out = []
        for idx, learned in enumerate(self.learned(transformed)):
            parts = []
            if self.skip > 0:
                parts.append(self.initial(idx).scaled(self.skip))
            if self.skip < 1:
                parts.append(learned.scaled(1.0 - self.skip))
            out.append(concat_edges(parts))
        return out

    # ---- unseen items --------------------------------------------------------------------------------------
    def rows_for_new_items(
        self, new_raw: list[torch.Tensor], new_present: list[torch.Tensor] | None = None
    ) -> list[Edges]:
        """Rows of A^m (Eq. 5) for unseen items against the known ones, per modality.

        A new item's neighbours are itself (cosine 1, as every known item's top-k contains itself) and its
        top k-1 known items. Weights follow Eq. 3 with the new row's own degree and each known neighbour's
        degree in its kNN graph. Row indices count new items from 0; the self edge carries column index
        ``-1``.

        Args:
            new_raw: per modality, raw features of the new items [n_new, d_m].
            new_present: per modality, bool [n_new]: a new item without modality m gets no row in A^m (and known
                items without m are never its neighbours there). None: every new item has every modality.
        """
        transformed = self.transformed()
        new_t = [lin(x) for lin, x in zip(self.transforms, new_raw, strict=True)]
        out = []
        for idx in range(self.n_modalities):
            known, new = self.present(idx), None if new_present is None else new_present[idx]
            parts = []
            if self.skip > 0:
                parts.append(
                    self._new_rows(new_raw[idx], self.raw_features(idx), known, new).scaled(self.skip)
                )
            if self.skip < 1:
                parts.append(self._new_rows(new_t[idx], transformed[idx], known, new).scaled(1 - self.skip))
            out.append(concat_edges(parts))
        return out

    def _new_rows(
        self,
        new: torch.Tensor,
        known: torch.Tensor,
        known_present: torch.Tensor | None = None,
        new_present: torch.Tensor | None = None,
    ) -> Edges:
        n_new, n = new.shape[0], known.shape[0]
        candidates = known if known_present is None else known[known_present]
        kk = min(self.k - 1, candidates.shape[0])
        sims = F.normalize(new, dim=1) @ F.normalize(candidates, dim=1).T  # [n_new, I] block, never [I, I]
        vals, cols = torch.topk(sims, kk, dim=1)
        rows = torch.arange(n_new, device=new.device).repeat_interleave(kk)
        cols, vals = cols.reshape(-1), vals.reshape(-1)
        if known_present is not None:
            cols = torch.nonzero(known_present, as_tuple=True)[0][cols]
        keep = vals > 0
        if new_present is not None:
            keep &= new_present.to(keep.device)[rows]
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
        known_rows, _, known_vals = masked_knn_edges(known, known_present, self.k, chunk_size=self.chunk_size)
        deg_known = torch.zeros(n, dtype=vals.dtype, device=vals.device).index_add(0, known_rows, known_vals)
        deg_new = torch.ones(n_new, dtype=vals.dtype, device=vals.device).index_add(0, rows, vals)
        weights = vals * deg_new[rows].rsqrt() * deg_known[cols].clamp_min(1e-12).rsqrt()
        self_idx = torch.arange(n_new, device=new.device)
        if new_present is not None:
            self_idx = self_idx[new_present.to(self_idx.device)]
        return Edges(
            torch.cat([rows, self_idx]),
            torch.cat([cols, torch.full_like(self_idx, -1)]),
            torch.cat([weights, 1.0 / deg_new[self_idx]]),
        )


class AttentionFusion(nn.Module):
    """Eqs. 7-9: w_i^m = qᵀ tanh(W h_i^m + b), α_i^m = softmax_m(w_i^m), h_i = Σ_m α_i^m h_i^m.

    W, b and q are shared by all modalities.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.query = nn.Linear(dim, 1, bias=False)
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        nn.init.xavier_uniform_(self.query.weight)

    def forward(
        self, views: list[torch.Tensor], present: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fuse M views [I, d] into h [I, d]; also returns the weights α [I, M] (rows sum to one).

        With ``present`` (bool [I, M]) Eq. 8's softmax runs over the modalities each item has (a zero row for an
        item with none, whose h is then zero).
        """
        stacked = torch.stack(views, dim=1)  # [I, M, d]
        scores = self.query(torch.tanh(self.proj(stacked))).squeeze(-1)  # [I, M], Eq. 7
        alpha = torch.softmax(scores, dim=1) if present is None else masked_softmax(scores, present)  # Eq. 8
        return (alpha.unsqueeze(-1) * stacked).sum(dim=1), alpha  # Eq. 9


def _directional_infonce(
    anchor: torch.Tensor, other: torch.Tensor, tau: float, chunk_size: int, anchors: torch.Tensor
) -> torch.Tensor:
    """Σ_{i in anchors} -I(anchor_i, other_i) of Eq. 11 with unit-norm inputs [N, d].

    Negatives of anchor i: other_j for every j ≠ i and anchor_j for every j ≠ i (the positive other_i is in
    the denominator too, as in Eq. 11). Every anchor sees all N items, so each term is exact.
    """
    total = anchor.new_zeros(())
    for start in range(0, anchors.shape[0], chunk_size):
        idx = anchors[start : start + chunk_size]
        a = anchor.index_select(0, idx)
        if use_fast_path(a, anchor, other):
            total = total + _TwoSetNceBlock.apply(a, idx, anchor, other, 1.0 / tau)
        else:
            block = functools.partial(_two_set_reference, idx, 1.0 / tau)
            total = total + recompute_in_backward(block, a, anchor, other)
    return total


def _two_set_reference(
    idx: torch.Tensor, inv_tau: float, a: torch.Tensor, anchor: torch.Tensor, other: torch.Tensor
) -> torch.Tensor:
    """The reference path of :class:`_TwoSetNceBlock`: the same sum through ``logsumexp``, autograd's backward."""
    between, within = _two_set_logits(a * inv_tau, idx, anchor, other)
    lse = torch.logaddexp(torch.logsumexp(between, dim=1), torch.logsumexp(within, dim=1))
    return (lse - (a * other.index_select(0, idx)).sum(dim=1) * inv_tau).sum()


class _TwoSetNceBlock(torch.autograd.Function):
    """One [c, N] block of :func:`_directional_infonce` with a hand-written backward.

    For a = anchor[idx] ([c, d], unit rows) the block's value is Σ_r [ log(Σ_j e^{a_r·o_j/τ} + Σ_{j≠idx_r}
    e^{a_r·x_j/τ}) - a_r·o_{idx_r}/τ ] (o = other, x = anchor). With P = e^{a·o/τ}/Z and Q = e^{a·x/τ}/Z (Q zero at
    each row's own item): ∂/∂a = (P o + Q x - o[idx])/τ, ∂/∂o = Pᵀ a/τ - a/τ scattered to rows idx, ∂/∂x = Qᵀ a/τ.
    As in ``losses.nce_block``: unit rows bound the logits by 1/τ, so for τ >= 1/30 they are exponentiated
    without a row maximum and the 1/Z normalisation is applied to the [c, d] operands; the [c, N] blocks are
    recomputed in the backward pass instead of kept (O(c·N) memory). Against autograd through ``logsumexp`` of the
    concatenated blocks under activation checkpointing (the earlier form) this saves the concatenation, several
    [c, 2N] temporaries and the autograd recomputation (timings in docs/performance.md).
    """

    @staticmethod
    def forward(
        ctx: Any,
        a: torch.Tensor,
        idx: torch.Tensor,
        anchor: torch.Tensor,
        other: torch.Tensor,
        inv_tau: float,
    ):
        ctx.bounded = inv_tau <= MAX_UNSHIFTED_LOGIT
        between, within = _two_set_logits(a * inv_tau, idx, anchor, other)
        if ctx.bounded:
            lse = between.exp_().sum(dim=1).add_(within.exp_().sum(dim=1)).log_()
        else:
            lse = torch.logaddexp(torch.logsumexp(between, dim=1), torch.logsumexp(within, dim=1))
        del between, within
        pos = (a * other.index_select(0, idx)).sum(dim=1).mul_(inv_tau)
        ctx.save_for_backward(a, idx, anchor, other, lse)
        ctx.inv_tau = inv_tau
        return (lse - pos).sum()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        a, idx, anchor, other, lse = ctx.saved_tensors
        scale = grad * ctx.inv_tau
        between, within = _two_set_logits(a * ctx.inv_tau, idx, anchor, other)
        if ctx.bounded:  # e^logit now, the row normalisation e^-lse on the [c, d] side
            between.exp_()
            within.exp_()
            weights = torch.exp(-lse).unsqueeze(1)
            aw = a * weights
        else:  # the softmax itself
            between.sub_(lse.unsqueeze(1)).exp_()
            within.sub_(lse.unsqueeze(1)).exp_()
            weights, aw = None, a
        grad_a = torch.mm(between, other).add_(torch.mm(within, anchor))
        if weights is not None:
            grad_a.mul_(weights)
        grad_a = grad_a.sub_(other.index_select(0, idx)).mul_(scale)
        grad_other = torch.mm(between.T, aw).index_add_(0, idx, a, alpha=-1.0).mul_(scale)
        grad_anchor = torch.mm(within.T, aw).mul_(scale)
        return grad_a, None, grad_anchor, grad_other, None


def _two_set_logits(
    a_scaled: torch.Tensor, idx: torch.Tensor, anchor: torch.Tensor, other: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logit blocks a·oᵀ/τ and a·xᵀ/τ ([c, N] each; a_scaled = a/τ); each row's own item in the second is -inf."""
    between = torch.mm(a_scaled, other.T)
    within = torch.mm(a_scaled, anchor.T)
    within[torch.arange(len(idx), device=idx.device), idx] = float("-inf")  # not its own negative
    return between, within


def fusion_contrastive_loss(
    views: list[torch.Tensor],
    fused: torch.Tensor,
    tau: float,
    chunk_size: int = 1024,
    symmetric: bool = True,
    anchors: torch.Tensor | None = None,
) -> torch.Tensor:
    """MICRO's contrastive fusion loss L_C (Eqs. 10-12), computed in [chunk, N] blocks.

    L_C = 1/N Σ_i 1/M Σ_m ½ (-I(h_i^m, h_i) - I(h_i, h_i^m)), θ = cosine similarity.

    Args:
        views: M modality embeddings h^m, each [N, d].
        fused: fused embeddings h [N, d].
        tau: temperature τ.
        symmetric: both directions as in Eq. 10; False keeps only I(h^m, h) (the official code's choice).
        anchors: optional item indices [B]: average the outer sum over these items only, each still contrasted
            with all N items, which gives an unbiased estimate of L_C at O(B·N) cost instead of O(N²).
    """
    f = F.normalize(fused, dim=1)
    if anchors is None:
        anchors = torch.arange(fused.shape[0], device=fused.device)
    total = fused.new_zeros(())
    for view in views:
        v = F.normalize(view, dim=1)
        forward = _directional_infonce(v, f, tau, chunk_size, anchors)
        if symmetric:
            total = total + 0.5 * (forward + _directional_infonce(f, v, tau, chunk_size, anchors))
        else:
            total = total + forward
    return total / (anchors.shape[0] * len(views))


class CFBackbone(nn.Module):
    """The downstream CF model of MICRO Sec. 3.4 / Table 5: "mf", "ngcf" or "lightgcn".

    * mf: x̃ = ID embeddings.
    * lightgcn: layer-mean of Â^l E over l = 0..K (He et al. 2020).
    * ngcf (Wang et al. 2019): E^(l+1) = LeakyReLU((Â + I) E^(l) W1 + b1) + LeakyReLU((Â E^(l) ⊙ E^(l)) W2
      + b2) with message dropout; readout = mean over l of the L2-normalised layer outputs (layer 0 as is).
      NGCF concatenates the layers; we average them so x̃_i keeps dimension d and Eq. 13 can add h_i without
      a projection.

    Attributes ``user_emb`` [U, d] and ``item_emb`` [I, d] are the layer-0 ID embeddings (also MICRO's H_(0)).
    """

    KINDS = ("mf", "ngcf", "lightgcn")
    adj: torch.Tensor

    def __init__(
        self, train: sp.csr_matrix, dim: int, kind: str, n_layers: int, dropout: float = 0.1
    ) -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ConfigError(f"unknown CF backbone {kind!r}; choose one of {self.KINDS}")
        self.kind, self.n_layers = kind, n_layers
        self.n_users, self.n_items = train.shape
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, dim)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, dim)))
        if kind != "mf":
            self.register_buffer("adj", normalized_adjacency(train), persistent=False)
        self.gc = nn.ModuleList([nn.Linear(dim, dim) for _ in range(n_layers if kind == "ngcf" else 0)])
        self.bi = nn.ModuleList([nn.Linear(dim, dim) for _ in range(n_layers if kind == "ngcf" else 0)])
        for lin in [*self.gc, *self.bi]:
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone output x̃_u [U, d] and x̃_i [I, d]."""
        if self.kind == "mf":
            return self.user_emb, self.item_emb
        ego = torch.cat([self.user_emb, self.item_emb], dim=0)
        if self.kind == "lightgcn":
            out = torch.stack(propagate(self.adj, ego, self.n_layers), dim=0).mean(dim=0)
        else:
            layers = [ego]
            x = ego
            for gc, bi in zip(self.gc, self.bi, strict=True):
                side = sparse_mm(self.adj, x)  # Â is symmetric and fixed
                x = F.leaky_relu(gc(side + x), 0.2) + F.leaky_relu(bi(side * x), 0.2)
                x = self.dropout(x)
                layers.append(F.normalize(x, dim=1))
            out = torch.stack(layers, dim=0).mean(dim=0)
        users, items = torch.split(out, [self.n_users, self.n_items])
        return users, items


def propagate_with_new(
    known: Edges, new: Edges, x_known: torch.Tensor, x_new: torch.Tensor, n_layers: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6 over known items plus unseen ones that point to them (the known rows are unaffected).

    Args:
        known: [I, I] graph of the known items.
        new: edges new -> known with the self edge at column -1 (see ``ItemGraphs.rows_for_new_items``).
        x_known: H_(0) of the known items [I, d]; x_new: H_(0) of the new items [n_new, d].

    Returns:
        H_(L) of the known items [I, d] and of the new items [n_new, d].
    """
    is_self = new.cols < 0
    rows, cols, vals = new.rows[~is_self], new.cols[~is_self], new.vals[~is_self]
    self_w = torch.zeros(x_new.shape[0], dtype=x_new.dtype, device=x_new.device).index_add(
        0, new.rows[is_self], new.vals[is_self]
    )
    h_known, h_new = x_known, x_new
    for _ in range(n_layers):
        h_new = spmm_edges(rows, cols, vals, h_known, x_new.shape[0]) + self_w.unsqueeze(1) * h_new
        h_known = spmm_edges(known.rows, known.cols, known.vals, h_known, x_known.shape[0])
    return h_known, h_new


class ItemGraphModel(Model):
    """Common skeleton of LATTICE and MICRO: CF backbone + item-graph branch plugged in by Eq. 13.

    Subclasses implement ``item_branch`` (the fused item representation h [I, d] from the graphs) and may add
    loss terms in ``extra_losses``. The config must provide the fields read here (see ``MICRO.Config``).
    """

    modalities = "any"
    warm: torch.Tensor

    def __init__(self, data: Dataset, cfg: Any) -> None:
        super().__init__(data, cfg)
        self.backbone = CFBackbone(data.train, cfg.embed_dim, cfg.backbone, cfg.n_cf_layers, cfg.ngcf_dropout)
        self.item_graphs = ItemGraphs(
            data.features,
            cfg.embed_dim,
            cfg.knn_k,
            cfg.skip_lambda,
            cfg.graph_update,
            cfg.finetune_features,
            cfg.chunk_size,
            data,
            learn_missing=getattr(cfg, "item_input", "id") == "features",
        )
        warn_contentless(data, self.item_graphs.names, self.name)
        self.content_only_cold = bool(getattr(cfg, "content_only_cold", False))
        warm = np.asarray(data.train.sum(axis=0)).ravel() > 0
        self.register_buffer("warm", torch.from_numpy(warm.astype(np.float32)).unsqueeze(1), persistent=False)

    @property
    def plugin(self) -> bool:
        """Whether the item-graph branch is added to the backbone (False = the plain CF model)."""
        return bool(getattr(self.cfg, "plugin", True))

    def id_input(self) -> torch.Tensor:
        """H_(0) from item IDs [I, d]; with ``content_only_cold`` the rows of items without any training
        interaction are zero, so such items are represented by their content neighbours only."""
        if self.content_only_cold:
            return self.backbone.item_emb * self.warm
        return self.backbone.item_emb

    def _cold_cf_embeddings(self, items: torch.Tensor, graphs: list[Edges]) -> torch.Tensor:
        """x̃_i for items without training interactions (``content_only_cold``): their own CF embedding was
        never trained, so it is replaced by the A-weighted mean of their warm neighbours' x̃_j over the item
        graphs (zero when they have no warm neighbour or no graph is used). Warm rows are unchanged. [I, d]"""
        warm_items = items * self.warm
        if not graphs:
            return warm_items
        num = sum(spmm_edges(g.rows, g.cols, g.vals, warm_items, self.n_items) for g in graphs)
        den = sum(spmm_edges(g.rows, g.cols, g.vals, self.warm, self.n_items) for g in graphs)
        filled = torch.as_tensor(num) / torch.as_tensor(den).clamp_min(1e-12)
        return warm_items + (1.0 - self.warm) * filled

    def on_epoch_start(self, epoch: int) -> None:
        """Rebuild the learned graphs Ã^m at the next forward (``graph_update="epoch"``, official code)."""
        self.item_graphs.mark_stale()

    def item_branch(self) -> tuple[torch.Tensor, dict[str, Any]]:  # pragma: no cover - abstract
        """Fused item representation h [I, d] and extras for the loss."""
        raise NotImplementedError

    def extra_losses(self, batch: Batch, emb: Embeddings) -> dict[str, torch.Tensor]:
        """Additional named loss terms (MICRO's contrastive loss)."""
        return {}

    def forward(self) -> Embeddings:
        """x̃_u, x̂_i = x̃_i + h_i/||h_i|| (Eq. 13); extras carry the branch's intermediate tensors."""
        users, items = self.backbone()
        extras: dict[str, Any] = {}
        if self.plugin:
            h, extras = self.item_branch()
            if self.content_only_cold:
                items = self._cold_cf_embeddings(items, extras.get("graphs", []))
            items = items + F.normalize(h, dim=1)
        return Embeddings(users, items, extras)

    def loss(self, batch: Batch, emb: Embeddings) -> dict[str, torch.Tensor]:
        """BPR (Eq. 15) on the final scores (Eq. 14), L2 on the batch's layer-0 ID embeddings, plus extras."""
        u, p, n = emb.users[batch.users], emb.items[batch.pos], emb.items[batch.neg]
        ego = (
            self.backbone.user_emb[batch.users],
            self.backbone.item_emb[batch.pos],
            self.backbone.item_emb[batch.neg],
        )
        terms = {
            "bpr": bpr_loss((u * p).sum(1), (u * n).sum(1)),
            "reg": self.cfg.reg_weight * l2_reg(*ego, batch_size=len(batch.users)),
        }
        terms.update(self.extra_losses(batch, emb))
        return terms

    def _new_item_inputs(
        self, features: dict[str, np.ndarray], present: dict[str, Any] | None = None
    ) -> tuple[list[torch.Tensor], int, list[torch.Tensor] | None]:
        """Raw features of new items per modality [n_new, d_m], their count, and per modality bool [n_new]
        presence (None when every new item has every modality). A modality may be left out of ``features``
        only when ``present`` is given; its rows are then absent."""
        names = self.item_graphs.names
        missing = [m for m in names if m not in features]
        if missing and present is None:
            raise ConfigError(f"model '{self.name}' needs features of modalities {missing} for new items")
        sizes = {np.asarray(features[m]).shape[0] for m in names if m in features}
        if len(sizes) != 1:
            raise ConfigError(f"new-item features disagree on the number of items: {sorted(sizes)}")
        n_new = sizes.pop()
        dims = [int(lin.in_features) for lin in self.item_graphs.transforms]  # type: ignore[arg-type]
        for m, dim in zip(names, dims, strict=True):
            x = features.get(m)
            if x is not None and (np.ndim(x) != 2 or np.shape(x)[1] != dim):
                raise ConfigError(f"modality '{m}' of new items has shape {np.shape(x)}, expected (n, {dim})")
        masks = None
        if present is not None:
            mask_np = new_item_presence(names, features, present, n_new)
            features = new_item_features(names, dims, features, mask_np)
            masks = [torch.from_numpy(mask_np[m]).to(self.device) for m in names]
        new_raw = [
            torch.as_tensor(np.asarray(features[m], dtype=np.float32), device=self.device) for m in names
        ]
        return new_raw, n_new, masks
