"""Items that lack some content: drop a modality for a share of items, and fill the rows of missing items.

A dataset records which items have which modality in ``Dataset.feature_masks`` (see
:class:`modalrec.data.dataset.Dataset`). This module changes that state for a run:

* :func:`drop_modality` hides a modality for a seeded random share of the items that have it, to measure how
  much a model loses when content is missing (``data.drop_modality``, e.g. ``visual:0.3``).
* :func:`fill_missing` decides what models see for missing items (``data.missing_fill``):

  - ``neighbours`` (default): the row is imputed with the mean feature of the items the missing item shares
    users with in the training interactions (item -> user -> item, each neighbour weighted by the number of users
    it shares); an item with no such neighbour that has the modality gets the mean of the items that have it.
    The imputed row is then used as the item's content (masks cleared), so every model benefits from it.
  - ``mean``: the mean of the items that have the modality, used as content (masks cleared).
  - ``mask``: the rows stay empty and the masks are kept: each model applies its own handling of missing content
    (a learned missing embedding, item graphs over present items only, fusion weights renormalised over the
    modalities an item has; see docs/missing-modalities-models.md).
  - ``zeros``: zero rows and the masks cleared: the naive baseline of a model fed zeros that it cannot tell
    from real content, kept for comparison only.

  ``neighbours`` is the default because, on planted data with 60% of one modality missing, VBPR lost least with
  it (the measurements are in docs/missing-modalities.md).

* :func:`prepare_missing` applies both for a run and records what was done in ``Dataset.missing_summary``.

Items that lack every modality are cold-content items. Under an imputing fill :func:`fill_missing` logs one
warning with their count; under ``mask`` each content model logs it once, for the modalities it reads, and falls
back to the items' ID embeddings for them.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any

import numpy as np
import scipy.sparse as sp

from modalrec.data.dataset import Dataset
from modalrec.errors import ConfigError

log = logging.getLogger("modalrec.data")

FILLS = ("neighbours", "mean", "mask", "zeros")
CHUNK_ENTRIES = 2**22  # bound on the entries of one [missing items, n_items] co-occurrence block


def parse_drop_spec(spec: str) -> dict[str, float]:
    """``"visual:0.3,acoustic:0.5"`` -> {"visual": 0.3, "acoustic": 0.5}; ``""`` -> {}.

    Each fraction must be a number in [0, 1]; a modality may be named once. Errors are ConfigErrors naming
    ``data.drop_modality``.
    """
    out: dict[str, float] = {}
    if not isinstance(spec, str):
        raise ConfigError(f"data.drop_modality must be text like 'visual:0.3', got {spec!r}")
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.rpartition(":")
        name = name.strip()
        try:
            frac = float(value) if sep and value.strip() else float("nan")
        except ValueError:
            frac = float("nan")
        if not name or not (0.0 <= frac <= 1.0):
            raise ConfigError(
                f"data.drop_modality must be 'modality:fraction' entries separated by commas, each fraction "
                f"in [0, 1] (e.g. 'visual:0.3,textual:0.5'), got {part!r}"
            )
        if name in out:
            raise ConfigError(f"data.drop_modality names modality '{name}' twice")
        out[name] = frac
    return out


def drop_modality(data: Dataset, spec: str | dict[str, float], seed: int) -> Dataset:
    """Hide each named modality for a seeded random share of the items that have it.

    Args:
        data: the dataset; not changed.
        spec: ``"modality:fraction[,modality:fraction...]"`` or the parsed dict; fractions in [0, 1].
        seed: the run seed. The items dropped for a modality depend only on (seed, modality name, which items
            have it), so runs of different models with one seed drop the same items, and for one seed the items
            dropped at a smaller fraction are among those dropped at a larger one (a nested sweep).

    Returns:
        A new Dataset whose masks mark round(fraction × n_present) more items as missing per modality (their
        rows zeroed). At fraction < 1 at least one item keeps the modality. At fraction 1.0 the modality is
        removed from the dataset altogether, with a logged notice, since a modality no item has is otherwise
        an error: the run measures the model without that content.
    """
    text = spec if isinstance(spec, str) else ",".join(f"{name}:{frac}" for name, frac in spec.items())
    fractions = parse_drop_spec(text)  # the same checks for both forms
    unknown = [m for m in fractions if m not in data.features]
    if unknown:
        raise ConfigError(
            f"data.drop_modality names modality {unknown[0]!r} but the dataset has {data.modalities or 'none'}"
        )
    features = dict(data.features)
    masks = dict(data.feature_masks)
    for name, frac in fractions.items():
        if frac >= 1.0:
            kept = [m for m in data.modalities if fractions.get(m, 0.0) < 1.0]
            log.warning(
                "%s: data.drop_modality removes modality '%s' for every item; the run uses %s",
                data.name,
                name,
                f"the modalities {kept} only" if kept else "no content at all (ID embeddings only)",
            )
            del features[name]
            masks.pop(name, None)
            continue
        present = data.present(name)
        idx = np.flatnonzero(present)
        n_drop = min(round(frac * len(idx)), len(idx) - 1)
        if n_drop <= 0:
            continue
        rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
        dropped = idx[rng.permutation(len(idx))[:n_drop]]
        mask = present.copy()
        mask[dropped] = False
        rows = features[name].copy()
        rows[dropped] = 0.0
        features[name], masks[name] = rows, mask
    return _rebuild(data, features, masks)


def fill_missing(data: Dataset, how: str = "neighbours") -> Dataset:
    """Fill the rows of items that lack a modality; see the module docstring for the strategies.

    Args:
        data: the dataset; not changed.
        how: "neighbours" (default), "mean", "mask" or "zeros".

    Returns:
        ``data`` itself when nothing is missing or ``how`` is "mask", else a new Dataset without masks: for
        "neighbours" and "mean" the missing rows hold imputed content, for "zeros" they are zero.
        Logs one warning when some items lack every modality (cold-content items) and ``how`` imputes content;
        under "mask" the models report them.
    """
    if how not in FILLS:
        raise ConfigError(f"data.missing_fill must be one of {'|'.join(FILLS)}, not {how!r}")
    if not data.feature_masks:
        return data
    if how == "mask":
        # each content model says itself how many of the items it reads have no content
        # (models.missing_content.warn_contentless): a second, data-level line would repeat it
        return data
    warn_cold_content(data, how)
    features = dict(data.features)
    if how == "zeros":
        for name in data.feature_masks:
            rows = features[name].copy()
            rows[~data.present(name)] = 0.0
            features[name] = rows
        return _rebuild(data, features, {})
    for name, present in data.feature_masks.items():
        x = features[name]
        mean = x[present].mean(axis=0, dtype=np.float64).astype(np.float32)
        missing = np.flatnonzero(~present)
        rows = x.copy()
        if how == "mean":
            rows[missing] = mean
        else:
            rows[missing] = neighbour_means(data.train, x, present, missing, mean)
        features[name] = rows
    return _rebuild(data, features, {})


def neighbour_means(
    train: sp.csr_matrix, x: np.ndarray, present: np.ndarray, missing: np.ndarray, fallback: np.ndarray
) -> np.ndarray:
    """Co-occurrence-weighted mean feature of each missing item's two-hop neighbours that have the content.

    For a missing item i, with R the binary [n_users, n_items] training matrix and C = Rᵀ R (C[i, j] = users
    who interacted with both i and j):

        fill(i) = Σ_{j present} C[i, j] x_j / Σ_{j present} C[i, j],   or ``fallback`` when the sum is 0.

    Only the rows of C for the missing items are formed, sparse, in chunks of at most ``CHUNK_ENTRIES`` / n_items
    items; no [n_items, n_items] matrix is built.

    Args:
        train: binary CSR [n_users, n_items].
        x: features [n_items, d] (rows of missing items are ignored).
        present: bool [n_items].
        missing: indices of the items to fill, shape [m].
        fallback: [d] row for items without a present neighbour.

    Returns:
        float32 [m, d].
    """
    # float32 throughout (counts are exact below 2**24): no float64 copy of a large feature matrix
    r = sp.csr_matrix(train, dtype=np.float32)
    r.data[:] = 1.0
    rt = sp.csr_matrix(r.T)  # [n_items, n_users]
    keep = sp.diags(present.astype(np.float32))  # drops neighbours without the content (and the item itself)
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty((len(missing), x.shape[1]), dtype=np.float32)
    step = max(1, CHUNK_ENTRIES // max(1, x.shape[0]))
    for start in range(0, len(missing), step):
        block = missing[start : start + step]
        co = sp.csr_matrix(rt[block] @ r @ keep)  # [b, n_items] co-occurrence counts with present items
        weight = np.asarray(co.sum(axis=1), dtype=np.float64).ravel()
        has = weight > 0
        part = np.empty((len(block), x.shape[1]), dtype=np.float32)
        part[:] = fallback
        if has.any():
            part[has] = np.asarray(co[has] @ x) / weight[has, None].astype(np.float32)  # [b', d]
        out[start : start + len(block)] = part
    return out


def warn_cold_content(data: Dataset, how: str = "mask") -> int:
    """Log one warning when items lack every modality; returns their number.

    ``how`` is the fill about to be applied; the warning says what models will see for those items.
    """
    cold = data.items_without_content()
    n = int(cold.sum())
    if n:
        log.warning(
            "%s: %d item(s) have no content in any modality (e.g. item %r); %s",
            data.name,
            n,
            str(data.item_ids[int(np.flatnonzero(cold)[0])]),
            {
                "zeros": "with data.missing_fill=zeros models read all-zero content for them",
                "mask": "models fall back to their ID embeddings for them",
            }.get(how, f"their content is imputed ({how}) from the items that have it"),
        )
    return n


def prepare_missing(data: Dataset, drop: str, fill: str, seed: int) -> Dataset:
    """Apply ``data.drop_modality`` then ``data.missing_fill`` for a run and record what was done.

    Returns:
        The prepared dataset; its ``missing_summary`` holds the drop setting, the fill, the modalities removed
        by a fraction of 1.0, the number of items that lack each modality (counted before filling, so also for
        "zeros") and the number of items without any content.
    """
    before = data.modalities
    if drop:
        data = drop_modality(data, drop, seed)
    summary: dict[str, Any] = {
        "drop_modality": drop,
        "fill": fill,
        "removed_modalities": [m for m in before if m not in data.features],
        "missing_items": {m: int((~data.present(m)).sum()) for m in data.modalities},
        "items_without_content": int(data.items_without_content().sum()),
    }
    data = fill_missing(data, fill)
    data = _rebuild(data, data.features, data.feature_masks)  # never annotate the caller's (cached) dataset
    data.missing_summary = summary
    return data


def _rebuild(data: Dataset, features: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> Dataset:
    """A new Dataset with ``data``'s users, items and splits and the given features and masks."""
    return Dataset(
        data.name,
        data.user_ids,
        data.item_ids,
        data.train,
        data.val,
        data.test,
        dict(features),
        dict(masks),
    )
