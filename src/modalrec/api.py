"""The estimator API: one class per registered model, in the style of scikit-learn, Cornac and implicit.

    model = modalrec.LightGCN(n_layers=3)          # hyper-parameters checked against the model's Config
    model.fit("data/tiktok", epochs=50)            # a Dataset or a dataset folder; validation early stopping
    model.recommend(["u42"], k=10)                 # [[(raw item id, score), ...]]
    model.save("models/lightgcn")                  # a run folder: checkpoint, config, the data it was fit on
    model = modalrec.load("models/lightgcn")       # a working estimator again
    modalrec.evaluate(model, split="test")         # {"recall@20": ..., "ndcg@20": ..., "users": n}

The classes (``modalrec.MMSSL``, ``modalrec.LightGCN``, ...) are made here from the model registry by
:func:`estimator_class`, each a subclass of :class:`Estimator` named after its model class. Everything below
reuses the configuration-driven path: keyword hyper-parameters and training settings go through
:func:`modalrec.config.config_from_dict` (the same checks and messages as ``--set`` on the command line),
fitting is :class:`modalrec.train.Trainer`, recommendations are :class:`modalrec.recommend.Recommender` and a
saved estimator is a run folder that ``modalrec recommend --run`` and ``modalrec serve`` also read.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from modalrec.atomic import atomic_dir
from modalrec.checkpoint import save_checkpoint
from modalrec.config import EvalConfig, RunConfig, TrainConfig, config_from_dict, dump_config
from modalrec.data.dataset import Dataset
from modalrec.data.io import save_dataset
from modalrec.data.source import dataset_from_config
from modalrec.errors import ConfigError, ModalrecError
from modalrec.evaluate import evaluate as evaluate_model
from modalrec.models import MODELS
from modalrec.models.base import Embeddings, Model
from modalrec.recommend import Recommender, load_run
from modalrec.run_folder import read_metrics
from modalrec.train import Trainer

__all__ = ["ESTIMATORS", "Estimator", "NotFittedError", "estimator_class", "evaluate", "load"]

DataLike = Dataset | str | os.PathLike[str]


class NotFittedError(ModalrecError):
    """The estimator is used before ``fit`` (or ``modalrec.load``)."""


class Estimator:
    """A recommender with scikit-learn-style ``fit`` / ``recommend`` / ``score`` / ``save``.

    Subclasses (one per registered model) set ``model_name`` (the registry key, e.g. ``"mmssl"``) and
    ``model_class``. Constructor keywords are the model's hyper-parameters (``modalrec models`` lists them);
    an unknown name, a wrong type or a value out of range raises :class:`~modalrec.errors.ConfigError` at once.

    After ``fit``: ``model_`` is the trained :class:`~modalrec.models.Model` (best validation state),
    ``data_`` the :class:`~modalrec.data.Dataset` it was fit on, ``history_`` one row per epoch and
    ``metrics_`` what the run reported (validation and test metrics of the selected state, best epoch, ...).
    """

    model_name: ClassVar[str] = ""
    model_class: ClassVar[type[Model]]

    def __init__(self, **params: Any) -> None:
        if not self.model_name:
            raise ModalrecError("Estimator is abstract: use a model class such as modalrec.LightGCN")
        self._params = dict(params)
        self.config_ = config_from_dict({"model": {"name": self.model_name, **params}})  # validates now
        self.model_: Model | None = None
        self.data_: Dataset | None = None
        self.history_: list[dict[str, Any]] = []
        self.metrics_: dict[str, Any] = {}
        self._recommender: Recommender | None = None

    # ---- scikit-learn conventions -----------------------------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Every hyper-parameter of the model (defaults included)."""
        cfg = self.model_class.Config()
        values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
        return {**values, **self._params}

    def set_params(self, **params: Any) -> Estimator:
        """Change hyper-parameters (validated as in the constructor); a fitted model must be fit again."""
        merged = {**self._params, **params}
        self.config_ = config_from_dict({"model": {"name": self.model_name, **merged}})
        self._params = merged
        self.model_, self.data_, self._recommender = None, None, None
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params.items())
        return f"{type(self).__name__}({args})"

    # ---- training ---------------------------------------------------------------------------------------------
    def fit(
        self,
        data: DataLike,
        epochs: int | None = None,
        valid: bool = True,
        seed: int = 0,
        device: str = "auto",
        out: str | os.PathLike[str] | None = None,
        **settings: Any,
    ) -> Estimator:
        """Train on ``data`` (a Dataset, a dataset folder, or ``"synthetic"``); returns ``self``.

        Args:
            data: the dataset; a folder without a shipped split is split 8:1:1 with ``seed``.
            epochs: the most epochs to train (default: the training default, 200).
            valid: select the epoch on the validation split and stop early after ``patience`` evaluations
                without improvement. False: train all ``epochs`` and keep the last state.
            seed: initial weights, batch order and the split of a folder without one.
            device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N". Training runs there; the fitted
                model is then kept on the CPU for ``recommend``, ``score`` and ``evaluate``.
            out: also write a run folder there (log, curves, checkpoints); None: nothing is written.
            **settings: training settings (``lr``, ``batch_size``, ``patience``, ``threads``, ...) and evaluation
                settings (``ks``, ``metric``, ``protocol``, ...), as in the ``train:``/``eval:`` config sections.
        """
        cfg = self._run_config(epochs, valid, seed, device, settings, data)
        dataset = data if isinstance(data, Dataset) else dataset_from_config(cfg.data, cfg.seed)
        if valid and self.model_class.trainable and cfg.train.epochs > 0 and dataset.val.nnz == 0:
            raise ModalrecError(
                f"{dataset.name}: the validation split is empty, so there is nothing to stop early on; "
                "pass valid=False (train a fixed number of epochs) or data with validation interactions"
            )
        result = Trainer(cfg, data=dataset, out=Path(out) if out is not None else None).fit()
        self.config_ = cfg
        self._set_fitted(result.model, dataset, result.metrics, result.history)
        return self

    def _run_config(
        self,
        epochs: int | None,
        valid: bool,
        seed: int,
        device: str,
        settings: dict[str, Any],
        data: DataLike,
    ) -> RunConfig:
        train, evals = _split_settings(settings)
        if epochs is not None:
            train["epochs"] = epochs
        if not valid:
            # one validation, after the last epoch: the last state is the one kept
            train["eval_every"] = max(1, int(train.get("epochs", TrainConfig().epochs)))
        raw: dict[str, Any] = {
            "model": {"name": self.model_name, **self._params},
            "train": train,
            "eval": evals,
            "seed": seed,
            "device": device,
        }
        if not isinstance(data, Dataset):
            raw["data"] = {"path": os.fspath(data)}
        return config_from_dict(raw)

    def _set_fitted(
        self, model: Model, data: Dataset, metrics: dict[str, Any], history: list[dict[str, Any]]
    ) -> None:
        self.model_ = model.eval()
        self.data_ = data
        self.metrics_ = metrics
        self.history_ = history
        fill = self.config_.data.missing_fill if self.config_ is not None else None
        self._recommender = Recommender(self.model_.cpu(), data, fill)

    # ---- using a fitted model ---------------------------------------------------------------------------------
    @property
    def recommender(self) -> Recommender:
        """The fitted model's :class:`~modalrec.recommend.Recommender` (embeddings computed once)."""
        if self._recommender is None:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(data) first")
        return self._recommender

    def recommend(
        self,
        users: Iterable[object],
        k: int = 10,
        exclude_seen: bool = True,
        filter_items: Iterable[object] | None = None,
        scores: bool = True,
    ) -> list[list[tuple[str, float]]] | list[list[str]]:
        """The top ``k`` items of each raw user id: ``[[(item id, score), ...], ...]`` (ids only with
        ``scores=False``). ``exclude_seen`` drops the user's training items; ``filter_items`` never recommends
        those raw item ids. An unknown user id raises :class:`~modalrec.recommend.UnknownIdError`."""
        lists = self.recommender.recommend(users, k, exclude_seen, filter_items)
        if scores:
            return lists
        return [[item for item, _ in row] for row in lists]

    @torch.no_grad()
    def score(self, users: Sequence[object], items: Sequence[object]) -> np.ndarray:
        """The model's scores, float32 [len(users), len(items)]: row u, column i = score of item i for user u.

        Only the given users' [B, I] score block is computed, never the whole user-item matrix.
        """
        rec = self.recommender
        u = torch.tensor([rec._user(x) for x in users], dtype=torch.long)
        i = torch.tensor([rec._item(x) for x in items], dtype=torch.long)
        if len(u) == 0:
            return np.zeros((0, len(i)), dtype=np.float32)
        block = self.model_.score(rec.emb, u).float()  # type: ignore[union-attr]
        return block[:, i].numpy().astype(np.float32)

    def embeddings(self) -> Embeddings:
        """The final user [U, d] and item [I, d] embeddings the scores are computed from."""
        return self.recommender.emb

    # ---- persistence ------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write a self-contained run folder: ``checkpoint.pt`` (weights, config, ids), ``config.yaml``,
        ``metrics.json`` (what ``fit`` reported) and ``data/`` (the dataset it was fit on, canonical format).
        ``modalrec.load`` restores the estimator; ``modalrec recommend --run PATH`` and ``modalrec serve --run
        PATH`` read it too. Atomic: a failure leaves nothing behind."""
        model, data = self._fitted()
        target = Path(path)
        if target.exists() and not (target.is_dir() and not any(target.iterdir())) and not overwrite:
            raise ModalrecError(f"{target} exists; pass overwrite=True to replace it")
        cfg = config_from_dict(self.config_.to_dict())
        cfg.data.path = str(target.resolve() / "data")
        # the folder lists modalities alphabetically; models concatenate them in the fitted order
        cfg.data.modalities = list(data.modalities)
        payload = {
            "format": "modalrec-checkpoint-1",
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "config": cfg.to_dict(),
            "model": self.model_name,
            "epoch": int(self.metrics_.get("best_epoch", -1)),
            "n_users": data.n_users,
            "n_items": data.n_items,
            "user_ids": [str(u) for u in data.user_ids],
            "item_ids": [str(i) for i in data.item_ids],
        }
        with atomic_dir(target, overwrite=True) as stage:
            save_dataset(data, stage / "data")
            save_checkpoint(stage / "checkpoint.pt", payload)
            (stage / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
            if self.metrics_:
                text = json.dumps(self.metrics_, indent=2, default=float)
                (stage / "metrics.json").write_text(text + "\n", encoding="utf-8")
        return target

    def _fitted(self) -> tuple[Model, Dataset]:
        if self.model_ is None or self.data_ is None:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(data) first")
        return self.model_, self.data_


def _split_settings(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword settings of ``fit`` -> (``train:`` values, ``eval:`` values); an unknown name is a ConfigError
    that suggests the closest valid one."""
    train_keys = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "epochs"]
    eval_keys = [f.name for f in dataclasses.fields(EvalConfig)]
    train: dict[str, Any] = {}
    evals: dict[str, Any] = {}
    for key, value in settings.items():
        if key in train_keys:
            train[key] = value
        elif key in eval_keys:
            evals[key] = value
        else:
            valid = ["epochs", "valid", "seed", "device", "out", *train_keys, *eval_keys]
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"fit() got an unknown setting '{key}'; {hint}valid: data, {', '.join(valid)}")
    return train, evals


def estimator_class(name: str, model_cls: type[Model]) -> type[Estimator]:
    """A subclass of :class:`Estimator` for the registered model ``name`` (class name = the model's)."""
    doc = (model_cls.__doc__ or "").strip().splitlines()
    summary = doc[0] if doc else name
    return type(
        model_cls.__name__,
        (Estimator,),
        {
            "model_name": name,
            "model_class": model_cls,
            "__module__": __name__,
            "__qualname__": model_cls.__name__,
            "__doc__": f"{summary}\n\nEstimator for the registered model '{name}'; see :class:`Estimator`.",
        },
    )


# One estimator class per registered model, by class name: modalrec.MMSSL, modalrec.LightGCN, ...
ESTIMATORS: dict[str, type[Estimator]] = {
    cls.__name__: estimator_class(key, cls) for key, cls in MODELS.items()
}
_BY_KEY: dict[str, type[Estimator]] = {est.model_name: est for est in ESTIMATORS.values()}


def load(path: str | os.PathLike[str], data: DataLike | None = None) -> Estimator:
    """Restore a saved estimator (or any ``modalrec train`` run folder) as a working, fitted estimator.

    The data is ``data`` when given (a Dataset or folder with the same users and items), else the folder's
    ``data/`` copy written by ``save``, else the dataset path the run recorded. ``metrics_`` is the folder's
    ``metrics.json`` when there is one.
    """
    folder = Path(path)
    if not (folder / "checkpoint.pt").is_file():
        raise ModalrecError(f"{folder}: no checkpoint.pt (not a saved estimator or run folder)")
    dataset = data if isinstance(data, Dataset) else None
    data_path = None if data is None or dataset is not None else os.fspath(data)  # type: ignore[arg-type]
    if data is None and (folder / "data").is_dir():
        data_path = str(folder / "data")
    model, dataset, raw = load_run(folder, data_path, dataset)
    cfg = config_from_dict(raw)
    params = {k: v for k, v in cfg.model.items() if k != "name"}
    est = _BY_KEY[cfg.model_name](**params)
    est.config_ = cfg
    metrics = read_metrics(folder / "metrics.json") if (folder / "metrics.json").is_file() else {}
    est._set_fitted(model, dataset, metrics, [])
    return est


def evaluate(
    model: Estimator | Model,
    data: DataLike | None = None,
    split: str | None = None,
    cfg: EvalConfig | None = None,
    emb: Embeddings | None = None,
    per_user: bool = False,
    **eval_settings: Any,
) -> dict[str, Any]:
    """All-rank metrics of a fitted estimator (or a bare :class:`~modalrec.models.Model`) on ``split``.

    For an estimator: ``data`` defaults to the data it was fit on (another Dataset or folder must have the same
    user and item ids), ``split`` to "test", and the evaluation settings to those of ``fit``, overridden by
    ``cfg`` or keywords (``protocol="paper"``, ``ks=[10, 20]``, ...). For a bare model (the lower-level form)
    ``data`` is required and ``split`` defaults to "val", as in :func:`modalrec.evaluate.evaluate`.

    Returns {"recall@20": float, ..., "users": number evaluated} (plus "per_user" arrays with ``per_user``).
    """
    if not isinstance(model, Estimator):
        if not isinstance(data, Dataset):
            raise ModalrecError("evaluating a bare model needs its Dataset as data")
        return evaluate_model(model, data, split or "val", cfg, emb, per_user)
    if split not in (None, "val", "test"):
        raise ModalrecError(f"split must be 'val' or 'test', not {split!r}")
    fitted, own = model._fitted()
    dataset = own if data is None else _same_ids(own, data, model.config_.seed)
    eval_cfg = cfg or model.config_.eval
    if eval_settings:
        raw = {**dataclasses.asdict(eval_cfg), **eval_settings}
        eval_cfg = config_from_dict({"model": model.model_name, "eval": raw}).eval
    eval_cfg.validate(dataset.n_items)
    return evaluate_model(
        fitted,
        dataset,
        split or "test",
        eval_cfg,
        emb if emb is not None else model.recommender.emb,
        per_user,
    )


def _same_ids(own: Dataset, data: DataLike, seed: int) -> Dataset:
    """``data`` as a Dataset, checked to have the fitted data's users and items (the model's index space)."""
    from modalrec.config import DataConfig

    dataset = (
        data if isinstance(data, Dataset) else dataset_from_config(DataConfig(path=os.fspath(data)), seed)
    )
    if [str(u) for u in dataset.user_ids] != [str(u) for u in own.user_ids] or [
        str(i) for i in dataset.item_ids
    ] != [str(i) for i in own.item_ids]:
        raise ModalrecError(
            f"{dataset.name}: its user and item ids differ from those of the data the model was fit on "
            f"({own.name}); evaluate on data with the same users and items"
        )
    return dataset
