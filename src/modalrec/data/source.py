"""Turn a run's data settings into a Dataset: the synthetic generator or a folder, split as configured."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from modalrec.data.dataset import Dataset
from modalrec.data.io import SplitOptions, load_dataset
from modalrec.data.missing import prepare_missing
from modalrec.data.synthetic import SyntheticConfig, make_synthetic
from modalrec.errors import ConfigError
from modalrec.fields import set_fields

log = logging.getLogger("modalrec.data")


def synthetic_from_overrides(overrides: dict[str, Any], seed: int) -> Dataset:
    """The planted dataset with SyntheticConfig fields overridden (unknown fields are an error)."""
    cfg = SyntheticConfig(seed=seed)
    set_fields(cfg, overrides, "data.synthetic.")
    return make_synthetic(cfg)


def dataset_from_config(data_cfg: Any, seed: int) -> Dataset:
    """Load or generate the dataset described by a ``DataConfig``; the run seed drives splits and generation.

    Then ``data.drop_modality`` and ``data.missing_fill`` are applied (:func:`modalrec.data.missing.prepare_missing`),
    so every command that trains or evaluates from a config sees the same prepared data.
    """
    if data_cfg.path == "synthetic":
        data = synthetic_from_overrides(dict(data_cfg.synthetic), seed)
    else:
        method = "ratio" if data_cfg.split == "cold-start" else data_cfg.split
        ratios = tuple(float(r) for r in data_cfg.ratios)
        if len(ratios) != 3:
            raise ConfigError(f"data.ratios needs three numbers (train, val, test), got {list(ratios)}")
        ratios3 = (ratios[0], ratios[1], ratios[2])
        data = load_dataset(data_cfg.path, data_cfg.format, SplitOptions(method, ratios3, seed))
    if data_cfg.split == "cold-start":
        try:
            from modalrec.data.coldstart import cold_start_split
        except ImportError as exc:  # pragma: no cover - depends on the cold-start module being present
            raise ConfigError("the cold-start split is not available in this build") from exc
        data = cold_start_split(data, seed=seed)
    warn_cold_users(data)
    data = data.select_modalities(data_cfg.modalities)
    # Missing content last, on the modalities the run uses; the run seed makes the drop the same for every model.
    return prepare_missing(data, data_cfg.drop_modality, data_cfg.missing_fill, seed)


def prepared(data: Dataset, data_cfg: Any, seed: int) -> Dataset:
    """``data`` with the run's ``data.drop_modality`` and ``data.missing_fill`` applied, unless already done.

    For datasets handed to a trainer or a run loader directly (the Python API): those from
    :func:`dataset_from_config` carry a ``missing_summary`` and are returned as they are.
    """
    if data.missing_summary:
        return data
    return prepare_missing(data, data_cfg.drop_modality, data_cfg.missing_fill, seed)


def warn_cold_users(data: Dataset) -> int:
    """Log a warning when users with validation or test items have no training rows; returns their number.

    Such users are still evaluated (their scores come from an untrained embedding, or content for cold-start
    models), which lowers the metrics; the warning makes that visible instead of silent.
    """
    train_deg = np.diff(data.train.indptr)
    held = (np.diff(data.val.indptr) + np.diff(data.test.indptr)) > 0
    cold = int(((train_deg == 0) & held).sum())
    if cold:
        log.warning(
            "%s: %d user(s) with validation/test items have no training rows; they are evaluated anyway "
            "(e.g. user %r)",
            data.name,
            cold,
            str(data.user_ids[int(np.flatnonzero((train_deg == 0) & held)[0])]),
        )
    return cold
