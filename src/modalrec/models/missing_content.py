"""Items that lack some modalities: the shared pieces every content model uses (docs/missing-modalities-models.md).

A dataset marks, per modality, which items have that content (``Dataset.feature_masks``; True = present). The
feature rows of the other items hold zeros or an imputation; a model must never read them as if they were that
item's content. Three mechanisms cover every model:

* :class:`MissingEmbedding` — one learned vector per incomplete modality in the space a model projects the
  features to, substituted for the projected rows of the items that lack it (a model can tell "no image" from
  any real image, and learns what to assume in its place).
* :func:`masked_knn_edges` — a modality's kNN item graph over the items that have it: the other items get no
  row and no column there, so no item takes content neighbours from content that does not exist.
* :func:`renormalise` / :func:`masked_mean` / :func:`row_renormalised_edges` — fusion weights over modalities
  renormalised per item over the modalities it has (an item with one modality of two gets all its weight
  from that one).

An item with no content at all gets no content edges and zero fusion weight everywhere: it falls back to its ID
path (:func:`warn_contentless` says how many such items a model is built with).

When nothing is missing every helper takes the path the models had before (no extra parameters, buffers or
arithmetic), so results are bit-identical to a model built without masks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from modalrec.data.dataset import Dataset
from modalrec.graph import knn_edges

log = logging.getLogger(__name__)


def present_rows(data: Dataset, name: str) -> np.ndarray | None:
    """Bool [I]: which items have modality ``name``; None when every item has it."""
    mask = data.feature_masks.get(name)
    if mask is None or bool(np.all(mask)):
        return None
    return np.asarray(mask, dtype=bool)


def content_rows(data: Dataset, name: str) -> np.ndarray:
    """Features [I, d_m] of modality ``name`` with the rows of items that lack it set to zero (a copy; the
    dataset's own array when every item has it). Whatever a filler left in those rows is never read."""
    mask = present_rows(data, name)
    feats = data.features[name]
    if mask is None:
        return feats
    out = np.array(feats, dtype=np.float32, copy=True)
    out[~mask] = 0.0
    return out


def any_missing(data: Dataset, names: list[str]) -> bool:
    """Whether any item lacks any of the modalities ``names``."""
    return any(present_rows(data, n) is not None for n in names)


def presence_matrix(data: Dataset, names: list[str]) -> torch.Tensor:
    """Bool [I, M]: entry (i, m) is True where item i has modality ``names[m]``."""
    cols = [data.present(n) for n in names]
    return (
        torch.from_numpy(np.stack(cols, axis=1).astype(bool)) if cols else torch.ones(data.n_items, 0).bool()
    )


def warn_contentless(data: Dataset, names: list[str], model: str) -> int:
    """Log how many items have none of the modalities ``names`` (they fall back to the ID path); returns it."""
    if not any_missing(data, names):
        return 0
    n = int((~presence_matrix(data, names).any(dim=1)).sum())
    if n:
        log.warning(
            "%s: %d of %d items have no content in %s; they are represented by their interactions (ID) only",
            model,
            n,
            data.n_items,
            ", ".join(names),
        )
    return n


def renormalise(weights: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Fusion weights over modalities renormalised per item over the modalities it has.

    Args:
        weights: [M] (one weight per modality, shared by all items) or [I, M] (per item), non-negative.
        present: bool [I, M].

    Returns:
        [I, M]: w_im·p_im / Σ_m' w_im'·p_im'; a row of zeros for an item with no modality (or zero weights).
    """
    w = weights.unsqueeze(0) if weights.dim() == 1 else weights
    w = w * present.to(w.dtype)
    total = w.sum(dim=1, keepdim=True)
    # rows without weight divide their zeros by one: a value and a gradient of zero, never 0/0
    return w / torch.where(total > 0, total, torch.ones_like(total))


def masked_softmax(scores: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Softmax over modalities [I, M] restricted to the present ones; all-zero rows for items with none."""
    some = present.any(dim=1, keepdim=True)
    # an item with no modality keeps its (finite) scores and is zeroed after the softmax, so neither the value
    # nor the gradient of its row is ever a softmax over -inf only (NaN)
    masked = scores.masked_fill(~present & some, float("-inf"))
    return torch.softmax(masked, dim=1) * some.to(scores.dtype)


def masked_mean(views: torch.Tensor | list[torch.Tensor], present: torch.Tensor) -> torch.Tensor:
    """Mean over the present modalities of each item: views [M, I, d], present bool [I, M] -> [I, d].

    Items with no modality get a zero row.
    """
    stacked = torch.stack(list(views)) if isinstance(views, list) else views
    w = present.T.to(stacked.dtype).unsqueeze(-1)  # [M, I, 1]
    count = w.sum(dim=0)
    return (stacked * w).sum(dim=0) / count.clamp_min(1.0)


def masked_knn_edges(
    x: torch.Tensor,
    present: torch.Tensor | None,
    k: int,
    chunk_size: int = 1024,
    drop_negative: bool = True,
    exclude_self: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``graph.knn_edges`` over the items that have the modality only, in the full item index.

    Args:
        x: [I, d] features (gradients flow to the kept similarities, as in ``knn_edges``).
        present: bool [I] or None (every item present: exactly ``knn_edges``).

    Returns:
        rows, cols, vals [E]; items without the modality appear in neither rows nor cols.
    """
    if present is None:
        return knn_edges(x, k, chunk_size=chunk_size, drop_negative=drop_negative, exclude_self=exclude_self)
    idx = torch.nonzero(present.to(x.device), as_tuple=True)[0]
    rows, cols, vals = knn_edges(
        x.index_select(0, idx),
        k,
        chunk_size=chunk_size,
        drop_negative=drop_negative,
        exclude_self=exclude_self,
    )
    return idx[rows], idx[cols], vals


def row_renormalised_edges(
    parts: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    weights: torch.Tensor,
    present: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Σ_m w_m S^m as one edge list, each item's row weights renormalised over the modalities it has.

    Args:
        parts: per modality the edge list (rows, cols, vals) of S^m.
        weights: [M] modality weights w_m (may carry gradients).
        present: bool [I, M], or None: plain Σ_m w_m S^m.

    Row i of the result is Σ_m w̃_im S^m_i with w̃_i = :func:`renormalise` (w, present)_i, so an item lacking
    modality m (an empty row in S^m) takes its whole row weight from the modalities it has.
    """
    if present is None:
        return (
            torch.cat([p[0] for p in parts]),
            torch.cat([p[1] for p in parts]),
            torch.cat([p[2] * weights[m] for m, p in enumerate(parts)]),
        )
    w = renormalise(weights.to(present.device), present)  # [I, M]
    return (
        torch.cat([p[0] for p in parts]),
        torch.cat([p[1] for p in parts]),
        torch.cat([p[2] * w[p[0], m] for m, p in enumerate(parts)]),
    )


class MissingEmbedding(nn.Module):
    """A learned stand-in, per incomplete modality, for the projected content of items that lack it.

    For modality m with missing items, ``forward(m, z)`` returns torch.where(p^m_i, z_i, v_m) for z [I, d_m']
    the projected features (v_m [d_m'] learned, initialised at zero). Complete modalities pass through unchanged
    and own no parameter, so a model built on complete data has exactly its previous parameters.

    Args:
        data: the dataset whose masks say which items have which modality (None: nothing missing).
        names: modality names in the order the model indexes them.
        dims: the width of each modality's projected space (one int for all); None keeps the masks only (for
            models that renormalise their fusion and need no stand-in vector).
    """

    def __init__(self, data: Dataset | None, names: list[str], dims: int | list[int] | None) -> None:
        super().__init__()
        widths = [dims] * len(names) if isinstance(dims, int) or dims is None else list(dims)
        self.names = list(names)
        self.vectors = nn.ParameterDict()
        self._incomplete: list[int] = []
        for idx, name in enumerate(names):
            mask = None if data is None else present_rows(data, name)
            if mask is None:
                continue
            self._incomplete.append(idx)
            self.register_buffer(f"present_{idx}", torch.from_numpy(mask), persistent=False)
            width = widths[idx]
            if width is not None:
                self.vectors[str(idx)] = nn.Parameter(torch.zeros(width))

    @property
    def active(self) -> bool:
        """Whether any modality has missing items."""
        return bool(self._incomplete)

    def present(self, idx: int) -> torch.Tensor | None:
        """Bool [I] presence of modality ``idx`` (None: complete)."""
        return getattr(self, f"present_{idx}") if idx in self._incomplete else None

    def matrix(self, n_items: int | None = None) -> torch.Tensor | None:
        """Bool [I, M] presence of every modality, or None when nothing is missing."""
        if not self._incomplete:
            return None
        ref = self.present(self._incomplete[0])
        assert ref is not None
        cols = [self.present(m) for m in range(len(self.names))]
        return torch.stack([c if c is not None else torch.ones_like(ref) for c in cols], dim=1)

    def offset(self, present: torch.Tensor | None = None) -> torch.Tensor | None:
        """Σ_m [item lacks m] v_m: [I, d] (or [n, d] for the given bool [n, M] ``present``); None if nothing is
        missing. For a model whose first layer is linear over concatenated modality blocks with the absent
        blocks zeroed, adding this puts v_m exactly where W_m f^m would be (all widths must be equal)."""
        if present is None:
            if not self._incomplete:
                return None
            parts = [
                torch.where(self.present(m).unsqueeze(1), 0.0, self.vectors[str(m)].unsqueeze(0))  # type: ignore[union-attr]
                for m in self._incomplete
                if str(m) in self.vectors
            ]
            return torch.stack(parts).sum(dim=0)
        absent = ~present.to(torch.bool)
        learned = [m for m in range(len(self.names)) if str(m) in self.vectors]
        if not learned or not bool(absent[:, learned].any()):
            return None
        vecs = torch.stack([self.vectors[str(m)] for m in learned])  # [M', d]
        return absent[:, learned].to(vecs.dtype).to(vecs.device) @ vecs

    def forward(self, idx: int, projected: torch.Tensor) -> torch.Tensor:
        """Projected features [I, d] of modality ``idx`` with missing items' rows replaced by v_m."""
        mask = self.present(idx)
        if mask is None or str(idx) not in self.vectors:
            return projected
        return torch.where(mask.unsqueeze(1), projected, self.vectors[str(idx)].to(projected.dtype))

    def substitute(
        self, idx: int, projected: torch.Tensor, present: torch.Tensor, fallback: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Rows of new items [n, d] lacking modality ``idx`` (``present`` bool [n] False) replaced by v_m.

        A modality complete in training has no v_m: ``fallback`` [d] is used instead (e.g. the mean projected
        content of the known items), or zeros.
        """
        if bool(present.all()):
            return projected
        if str(idx) in self.vectors:
            stand_in = self.vectors[str(idx)].to(projected.dtype)
        elif fallback is not None:
            stand_in = fallback.to(projected.dtype)
        else:
            stand_in = projected.new_zeros(projected.shape[1])
        return torch.where(present.to(projected.device).unsqueeze(1), projected, stand_in)


def new_item_presence(
    names: list[str], features: dict[str, np.ndarray], present: dict[str, object] | None, n_new: int
) -> dict[str, np.ndarray]:
    """Bool [n_new] per modality for items to embed from content: the ``present`` masks given, a modality left
    out of ``features`` absent for all, the rest present."""
    out: dict[str, np.ndarray] = {}
    for name in names:
        given = None if present is None else present.get(name)
        if given is not None:
            mask = np.asarray(given.cpu() if isinstance(given, torch.Tensor) else given, dtype=bool).reshape(
                -1
            )
            if mask.shape != (n_new,):
                raise ValueError(
                    f"presence mask of modality '{name}' has {mask.shape[0]} rows, expected {n_new}"
                )
        elif name not in features:
            mask = np.zeros(n_new, dtype=bool)
        else:
            mask = np.ones(n_new, dtype=bool)
        out[name] = mask
    return out


def new_item_features(
    names: list[str], dims: list[int], features: dict[str, np.ndarray], present: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Feature matrices [n_new, d_m] of every modality for new items: given rows where present, zeros elsewhere
    (a modality left out entirely becomes zeros; its rows are never read as content)."""
    out = {}
    for name, dim in zip(names, dims, strict=True):
        mask = present[name]
        if name in features:
            x = np.array(features[name], dtype=np.float32, copy=True)
        else:
            x = np.zeros((len(mask), dim), dtype=np.float32)
        x[~mask] = 0.0
        out[name] = np.nan_to_num(x, nan=0.0)
    return out
