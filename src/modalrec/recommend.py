"""Top-K recommendations in raw ids from a finished run folder.

The model is rebuilt from the run's config on its dataset (loaded from the recorded path, or the one given),
its best weights are loaded safely, and the final embeddings are computed once.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modalrec.checkpoint import load_checkpoint, load_state
from modalrec.config import config_from_dict
from modalrec.data.dataset import Dataset
from modalrec.data.missing import FILLS
from modalrec.data.source import dataset_from_config, prepared
from modalrec.errors import ModalrecError
from modalrec.models import build_model
from modalrec.models.base import Embeddings, Model


class UnknownIdError(ModalrecError, KeyError):
    """A raw user or item id that the run does not know."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown id"


class DuplicateIdError(ModalrecError):
    """An item id given to ``add_items`` that already exists (the service answers 409 Conflict)."""


def load_run(
    run_dir: str | Path, data_path: str | None = None, data: Dataset | None = None
) -> tuple[Model, Dataset, dict[str, Any]]:
    """Rebuild a run's model (best weights) and dataset. Checks that ids match the checkpoint.

    The dataset is ``data`` when given, else loaded from ``data_path``, else from the path the run recorded; the
    run's ``data.drop_modality`` and ``data.missing_fill`` are applied to it as in training.
    """
    run = Path(run_dir)
    ckpt = check_run_checkpoint(load_checkpoint(run / "checkpoint.pt"), run / "checkpoint.pt")
    raw = dict(ckpt["config"])
    if data_path is not None:
        raw["data"] = {**(raw.get("data") or {}), "path": str(data_path)}
    cfg = config_from_dict(raw)
    if data is None:
        if cfg.data.path == "synthetic":
            _check_synthetic_size(cfg, ckpt, run)
        data = dataset_from_config(cfg.data, cfg.seed)
    else:
        data = prepared(data, cfg.data, cfg.seed)  # the run's drop and fill, as in training
    if data.n_users != ckpt["n_users"] or data.n_items != ckpt["n_items"]:
        raise ModalrecError(
            f"{run}: the checkpoint was trained on {ckpt['n_users']} users x {ckpt['n_items']} items but the data "
            f"at {cfg.data.path} has {data.n_users} x {data.n_items}"
        )
    if [str(u) for u in data.user_ids] != list(ckpt["user_ids"]) or [str(i) for i in data.item_ids] != list(
        ckpt["item_ids"]
    ):
        raise ModalrecError(f"{run}: the dataset's ids differ from those the checkpoint was trained on")
    model = build_model(cfg, data, torch.device("cpu"))
    load_state(model, ckpt["state_dict"], run / "checkpoint.pt")
    model.eval()
    return model, data, cfg.to_dict()


RUN_KEYS: dict[str, type | tuple[type, ...]] = {
    "config": dict,
    "n_users": int,
    "n_items": int,
    "user_ids": (list, tuple),
    "item_ids": (list, tuple),
}


def check_run_checkpoint(ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
    """A best-weights ``checkpoint.pt`` written by ``modalrec train``: its keys and their types, else one error."""
    for key, kind in RUN_KEYS.items():
        if key not in ckpt:
            raise ModalrecError(
                f"{path}: not a modalrec run checkpoint (no '{key}'); was it written by modalrec train?"
            )
        if not isinstance(ckpt[key], kind) or isinstance(ckpt[key], bool):
            raise ModalrecError(
                f"{path}: not a modalrec run checkpoint ('{key}' has type {type(ckpt[key]).__name__})"
            )
    if len(ckpt["user_ids"]) != ckpt["n_users"] or len(ckpt["item_ids"]) != ckpt["n_items"]:
        raise ModalrecError(f"{path}: inconsistent checkpoint (id lists do not match n_users/n_items)")
    return ckpt


def _check_synthetic_size(cfg: Any, ckpt: dict[str, Any], run: Path) -> None:
    """Before generating a run's synthetic data: its sizes must be the checkpoint's and fit the memory budget."""
    from modalrec.config import set_fields
    from modalrec.data.synthetic import SyntheticConfig, estimated_bytes
    from modalrec.runtime import MEMORY_ENV, memory_budget

    synth = SyntheticConfig(seed=cfg.seed)
    set_fields(synth, dict(cfg.data.synthetic), "data.synthetic.")
    if (synth.n_users, synth.n_items) != (ckpt["n_users"], ckpt["n_items"]):
        raise ModalrecError(
            f"{run}: the run config asks for synthetic data of {synth.n_users} users x {synth.n_items} items but "
            f"the checkpoint was trained on {ckpt['n_users']} x {ckpt['n_items']}"
        )
    need = estimated_bytes(synth)
    if need > memory_budget():
        raise ModalrecError(
            f"{run}: regenerating its synthetic data needs about {need / 2**30:.1f} GiB, more than the memory "
            f"budget of {memory_budget() / 2**30:.1f} GiB (set {MEMORY_ENV} to allow more)"
        )


class Recommender:
    """Serve top-K recommendations from a trained model (embeddings computed once)."""

    def __init__(self, model: Model, data: Dataset, missing_fill: str | None = None) -> None:
        """``missing_fill`` is the run's ``data.missing_fill``: it decides how ``add_items`` fills a new item's
        missing modality so that the model sees what it saw in training (see ``add_items``). None: "mask" when
        ``data`` still carries presence masks (the model was built on them), else "neighbours"."""
        if missing_fill is None:
            missing_fill = "mask" if data.feature_masks else "neighbours"
        if missing_fill not in FILLS:
            raise ModalrecError(f"missing_fill must be one of {'|'.join(FILLS)}, not {missing_fill!r}")
        self.model = model.eval()
        self.data = data
        self.missing_fill = missing_fill
        with torch.no_grad():
            self.emb: Embeddings = model()
        self._item_unit: torch.Tensor | None = None
        # Raw ids of every recommendable item: the dataset's, then those added at runtime by ``add_items``.
        self.item_ids: list[str] = [str(i) for i in data.item_ids]
        self._added: dict[str, int] = {}

    @classmethod
    def from_run(
        cls, run_dir: str | Path, data_path: str | None = None, data: Dataset | None = None
    ) -> Recommender:
        """Load a finished run folder (see ``load_run`` for where the data comes from)."""
        model, data, cfg = load_run(run_dir, data_path, data)
        return cls(model, data, str((cfg.get("data") or {}).get("missing_fill") or "neighbours"))

    def _user(self, raw: object) -> int:
        try:
            return self.data.user_index(raw)
        except KeyError:
            raise UnknownIdError(f"unknown user id {raw!r}") from None

    def _item(self, raw: object) -> int:
        try:
            return self.data.item_index(raw)
        except KeyError:
            if str(raw) in self._added:
                return self._added[str(raw)]
            raise UnknownIdError(f"unknown item id {raw!r}") from None

    @property
    def n_items(self) -> int:
        """Recommendable items: the dataset's plus those added at runtime."""
        return len(self.item_ids)

    @torch.no_grad()
    def add_items(
        self,
        raw_ids: Sequence[object],
        features: dict[str, np.ndarray],
        present: dict[str, np.ndarray] | None = None,
    ) -> str:
        """Make new items recommendable at once from their content features ({modality: [n_new, d_m]}).

        Uses the model's ``item_embeddings_from_features`` (NotImplementedError for models that cannot embed
        content). Per-item score extras (e.g. VBPR's item bias) are 0 for the new items. Raises ModalrecError
        for an id that already exists or a row count that does not match ``raw_ids``.

        Items may lack modalities: ``present`` maps a modality to bool [n_new] (True = the item has it; a
        modality not named is present for all). A missing row is filled the way the run filled its own missing
        rows (``missing_fill``), so the model sees what it was trained on:

        * "neighbours" or "mean": the mean of the catalogue items (a new item has no interactions, so it has no
          neighbours to impute from); the model is not told, as in training, where imputed rows were content;
        * "mask": the catalogue mean, and the masks are passed on to models whose
          ``item_embeddings_from_features`` accepts ``present``, so they treat the row as missing (their learned
          missing vector, fusion over the present modalities);
        * "zeros": a zero row, as the run fed its own missing items.

        Returns:
            how missing content was handled: "none" (nothing missing), "catalogue mean",
            "catalogue mean, masked" (the model was also given the masks) or "zeros".
        """
        ids = [str(r) for r in raw_ids]
        if not ids:
            raise ModalrecError("add_items needs at least one item id")
        if len(set(ids)) != len(ids):
            raise ModalrecError("add_items got the same item id twice")
        known = [r for r in ids if r in self._added or self._known_item(r)]
        if known:
            raise DuplicateIdError(f"item id {known[0]!r} already exists")
        for name, x in features.items():
            if np.asarray(x).ndim != 2 or len(x) != len(ids):
                raise ModalrecError(f"feature '{name}' must have shape [{len(ids)}, d], got {np.shape(x)}")
        features, present = self._fill_missing_rows(features, present or {})
        if present:
            empty = np.flatnonzero(~np.stack(list(present.values())).any(axis=0))
            if len(empty):
                raise ModalrecError(
                    f"item {ids[empty[0]]!r} has no content in any modality; a new item needs some"
                )
        embed: Any = self.model.item_embeddings_from_features  # ``present`` only where the model takes it
        masked = (
            bool(present) and self.missing_fill == "mask" and "present" in inspect.signature(embed).parameters
        )
        new = (embed(features, present=present) if masked else embed(features)).detach().to(self.emb.items)
        if new.shape != (len(ids), self.emb.items.shape[1]):
            raise ModalrecError(f"the model returned item embeddings of shape {tuple(new.shape)}")
        n_old = self.emb.items.shape[0]
        extras = dict(self.emb.extras or {})
        for key, val in extras.items():
            if isinstance(val, torch.Tensor) and val.ndim >= 1 and val.shape[0] == n_old:
                extras[key] = torch.cat([val, val.new_zeros((len(ids), *val.shape[1:]))])
        self.emb = Embeddings(self.emb.users, torch.cat([self.emb.items, new]), extras or self.emb.extras)
        for j, r in enumerate(ids):
            self._added[r] = n_old + j
        self.item_ids.extend(ids)
        self._item_unit = None
        if not present:
            return "none"
        if self.missing_fill == "zeros":
            return "zeros"
        return "catalogue mean, masked" if masked else "catalogue mean"

    def _fill_missing_rows(
        self, features: dict[str, np.ndarray], present: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Features with each missing row filled (catalogue mean, or zeros under the "zeros" fill), and the masks
        of every modality when some new item lacks one (an empty dict when no new item lacks anything)."""
        filled, masks = dict(features), {}
        for name, mask in present.items():
            mask = np.asarray(mask, dtype=bool)
            if name not in features or mask.shape != (len(features[name]),):
                raise ModalrecError(f"presence mask of '{name}' does not match its feature rows")
            if mask.all():
                continue
            if name not in self.data.features:
                raise ModalrecError(f"unknown modality '{name}'; this model uses {self.data.modalities}")
            rows = np.array(features[name], dtype=np.float32)
            if self.missing_fill == "zeros":
                rows[~mask] = 0.0
            else:  # under an imputing fill every catalogue row is content (imputed rows included)
                rows[~mask] = self.data.features[name][self.data.present(name)].mean(axis=0)
            filled[name], masks[name] = rows, mask
        if masks:  # models that take masks get one for every modality
            n = len(next(iter(features.values())))
            masks = {name: masks.get(name, np.ones(n, dtype=bool)) for name in features}
        return filled, masks

    def _known_item(self, raw: str) -> bool:
        try:
            self.data.item_index(raw)
        except KeyError:
            return False
        return True

    @torch.no_grad()
    def recommend(
        self,
        raw_user_ids: Iterable[object],
        k: int = 20,
        exclude_seen: bool = True,
        filter_items: Iterable[object] | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Top-k (raw item id, score) per user; seen = the user's training interactions."""
        if k < 1:
            raise ModalrecError(f"k must be at least 1, got {k}")
        users = np.array([self._user(u) for u in raw_user_ids], dtype=np.int64)
        if len(users) == 0:
            return []
        scores = self.model.score(self.emb, torch.from_numpy(users)).float().clone()
        if exclude_seen:
            sub = self.data.train[users]
            rows = np.repeat(np.arange(len(users)), np.diff(sub.indptr))
            scores[torch.from_numpy(rows), torch.from_numpy(sub.indices.astype(np.int64))] = -torch.inf
        if filter_items is not None:
            banned = torch.tensor([self._item(i) for i in filter_items], dtype=torch.long)
            if len(banned):
                scores[:, banned] = -torch.inf
        k = min(k, self.n_items)
        vals, idx = torch.topk(scores, k, dim=1)
        out = []
        for row_v, row_i in zip(vals.tolist(), idx.tolist(), strict=True):
            out.append(
                [(self.item_ids[i], float(v)) for v, i in zip(row_v, row_i, strict=True) if v > -np.inf]
            )
        return out

    @torch.no_grad()
    def similar_items(self, raw_item_id: object, k: int = 20) -> list[tuple[str, float]]:
        """The k items whose final embeddings have the highest cosine similarity to the given item."""
        if k < 1:
            raise ModalrecError(f"k must be at least 1, got {k}")
        idx = self._item(raw_item_id)
        if self._item_unit is None:
            self._item_unit = torch.nn.functional.normalize(self.emb.items.float(), dim=1)
        sims = self._item_unit @ self._item_unit[idx]
        sims[idx] = -torch.inf
        vals, top = torch.topk(sims, min(k, self.n_items - 1))
        return [(self.item_ids[i], float(v)) for v, i in zip(vals.tolist(), top.tolist(), strict=True)]
