"""The valid range of every numeric configuration value, checked in one place.

``check_ranges(obj, prefix, table)`` walks a config dataclass (or a plain mapping) and raises ``ConfigError`` for
a value outside its range, naming the key, the range and the value, e.g.
``model.embed_dim must be an integer >= 1, got 0``. Non-finite floats (nan, inf) are refused everywhere.

Tables: ``TRAIN``, ``EVAL``, ``SYNTHETIC`` and ``MODEL`` (model hyper-parameters by name, shared by all models);
model fields that are not in ``MODEL`` get the generic rule: integers >= 0, floats finite.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from modalrec.errors import ConfigError

SEED_LIMIT = 2**32  # numpy's SeedSequence-free generators and torch.manual_seed accept [0, 2**32)


@dataclass(frozen=True)
class Range:
    """lo <= value <= hi, with open ends where ``lo_open``/``hi_open``; ``None`` = unbounded."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))

    def describe(self, integer: bool) -> str:
        kind = "an integer" if integer else "a finite number"
        lo = None if self.lo is None else (int(self.lo) if integer else self.lo)
        hi = None if self.hi is None else (int(self.hi) if integer else self.hi)
        if lo is not None and hi is not None:
            return f"{kind} in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"
        if lo is not None:
            return f"{kind} {'>' if self.lo_open else '>='} {lo}"
        if hi is not None:
            return f"{kind} {'<' if self.hi_open else '<='} {hi}"
        return kind


NONNEG = Range(0)
POSITIVE_INT = Range(1)
POSITIVE = Range(0, lo_open=True)
PROBABILITY = Range(0, 1, hi_open=True)  # dropout-like rates: 1 would drop everything
FRACTION = Range(0, 1, lo_open=True)  # keep rates, sample shares: 0 would keep nothing
SEED = Range(0, SEED_LIMIT, hi_open=True)

TRAIN: dict[str, Range] = {
    "epochs": NONNEG,
    "lr": Range(0, 1e6, lo_open=True, hi_open=True),  # an absurd lr overflows inside the optimiser
    "batch_size": POSITIVE_INT,
    "patience": POSITIVE_INT,
    "weight_decay": NONNEG,
    "grad_clip": NONNEG,  # 0 = off
    "lr_step": POSITIVE_INT,
    "lr_gamma": NONNEG,
    "ema": Range(0, 1, hi_open=True),  # 0 = off
    "eval_every": POSITIVE_INT,
    "threads": Range(0, 4096),  # 0 = all cores
    "max_batches": NONNEG,  # 0 = whole epochs
    "health_epochs": NONNEG,  # 0 = no health check
}

EVAL: dict[str, Range] = {
    "ks": Range(1, 100_000),
    "chunk_size": NONNEG,  # 0 = automatic
    "group_bins": NONNEG,
}

SYNTHETIC: dict[str, Range] = {
    "n_users": Range(2, 10_000_000),
    "n_items": Range(
        10, 10_000_000
    ),  # the generator draws at least 3 items per user, half the catalogue at most
    "n_interactions": Range(1, 2_000_000_000),
    "latent_dim": POSITIVE_INT,
    "n_clusters": POSITIVE_INT,
    "cluster_spread": NONNEG,
    "temperature": POSITIVE,
    "popularity_skew": NONNEG,
    "modality_dims": Range(1, 100_000),
    "modality_noise": NONNEG,
    "split_ratios": Range(0, 1),
    "seed": SEED,
    "chunk_users": POSITIVE_INT,
    "candidates": NONNEG,  # 0 = all items
}

_POSITIVE_INT_FIELDS = [
    "embed_dim",
    "hidden_dim",
    "content_dim",
    "feat_dim",
    "n_heads",
    "n_hyperedges",
    "n_clusters",
    "n_neg",
    "k",
    "knn_k",
    "view_topk",
    "chunk_size",
    "cl_chunk",
    "relation_chunk",
    "n_routing",
    "layer_sizes",
    "kmeans_iters",
]
_PROBABILITY_FIELDS = [
    "dropout",
    "edge_drop",
    "mask_prob",
    "mess_dropout",
    "ngcf_dropout",
    "node_dropout",
    "feat_dropout",
    "ratio",
    "d_dropouts",
]
_POSITIVE_FIELDS = [
    "temperature",
    "tau",
    "ssl_temp",
    "ssl_temperature",
    "cl_temperature",
    "gumbel_tau",
    "zeta",
]

MODEL: dict[str, Range] = {
    **{name: POSITIVE_INT for name in _POSITIVE_INT_FIELDS},
    "d_columns": NONNEG,  # MMSSL: 0 = every item column
    "d_steps": NONNEG,  # MMSSL: 0 = an untrained discriminator (the ablation's control)
    **{name: PROBABILITY for name in _PROBABILITY_FIELDS},
    **{name: POSITIVE for name in _POSITIVE_FIELDS},
    "keep_rate": FRACTION,
    "sample_ratio": FRACTION,
    "skip_lambda": Range(0, 1),
    "d_betas": Range(0, 1, hi_open=True),
    "lr": TRAIN["lr"],
    "d_lr": TRAIN["lr"],
    "seed": SEED,
}
_GENERIC_INT = NONNEG
_GENERIC_FLOAT = Range()


def _values(value: Any) -> Iterable[Any]:
    if isinstance(value, Mapping):
        return value.values()
    if isinstance(value, list | tuple):
        return value
    return (value,)


def check_value(key: str, value: Any, rng: Range | None) -> None:
    """Check one value (or each element of a list/tuple/mapping of numbers) against ``rng``."""
    for v in _values(value):
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue  # types are checked by config.coerce; only numbers have ranges
        integer = isinstance(v, int)
        r = rng or (_GENERIC_INT if integer else _GENERIC_FLOAT)
        if not r.contains(v):
            raise ConfigError(f"{key} must be {r.describe(integer)}, got {v}")


def check_ranges(obj: Any, prefix: str, table: Mapping[str, Range], generic: bool = False) -> None:
    """Check every numeric field of the dataclass or mapping ``obj`` named in ``table``.

    With ``generic=True`` fields missing from ``table`` get the generic rule (integers >= 0, floats finite).
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        items = [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]
    else:
        items = list(dict(obj).items())
    for name, value in items:
        if name in table:
            check_value(f"{prefix}{name}", value, table[name])
        elif generic:
            check_value(f"{prefix}{name}", value, None)


def check_seed(value: int, key: str = "seed") -> None:
    """Seeds must be in [0, 2**32): numpy and torch generators refuse others with a traceback."""
    check_value(key, value, SEED)


def check_sorted_bins(bins: list[int], key: str = "eval.group_bins") -> None:
    """User-group lower edges must be distinct and increasing (each >= 0 is checked by ``EVAL``)."""
    if not bins or any(nxt <= cur for cur, nxt in itertools.pairwise(bins)):
        raise ConfigError(f"{key} must be a non-empty increasing list of integers >= 0, got {list(bins)}")


def check_run_config(cfg: Any) -> None:
    """Every numeric range of a ``RunConfig`` (called by ``config.validate``)."""
    check_seed(cfg.seed)
    check_ranges(cfg.train, "train.", TRAIN)
    check_ranges(cfg.eval, "eval.", EVAL)
    check_sorted_bins(list(cfg.eval.group_bins))
    check_metric_name(cfg.eval.metric)
    check_ranges({k: v for k, v in cfg.model.items() if k != "name"}, "model.", MODEL, generic=True)
    check_value("data.ratios", cfg.data.ratios, Range(0, 1))
    if isinstance(cfg.data.synthetic, Mapping):
        check_ranges(cfg.data.synthetic, "data.synthetic.", SYNTHETIC)


def check_metric_name(metric: str, key: str = "eval.metric") -> None:
    """``name@K`` with K a plain positive integer (``recall@abc``, ``recall@20.5`` and ``recall@٢٠`` are refused)."""
    name, _, k = metric.partition("@")
    if not (name and k and k.isascii() and k.isdigit() and int(k) >= 1):
        raise ConfigError(
            f"{key} must look like recall@20 (a metric name, '@', a whole number K >= 1), got {metric!r}"
        )


def arg_int(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse ``type=`` for an integer in [lo, hi]; the error names the range (argparse exits with 2)."""
    rng = Range(lo, hi)

    def parse(text: str) -> int:
        try:
            value = int(text.strip()) if text.strip().isascii() else None
        except ValueError:
            value = None
        if value is None or not rng.contains(value):
            raise argparse.ArgumentTypeError(f"must be {rng.describe(integer=True)}, got {text!r}")
        return value

    parse.__name__ = "integer"
    return parse
