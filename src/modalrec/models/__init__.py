"""The model registry: a plain dict from name to class (no import magic), and model construction."""

from __future__ import annotations

from typing import Any, Protocol

import torch

from modalrec.data.dataset import Dataset
from modalrec.fields import set_fields
from modalrec.models.base import Embeddings, Model
from modalrec.models.bm3 import BM3
from modalrec.models.clcrec import CLCRec
from modalrec.models.diffmm import DiffMM
from modalrec.models.dragon import DRAGON
from modalrec.models.freedom import FREEDOM
from modalrec.models.grcn import GRCN
from modalrec.models.hccf import HCCF
from modalrec.models.itemknn import ItemKNN, ItemKNNCBF
from modalrec.models.lattice import LATTICE
from modalrec.models.lgmrec import LGMRec
from modalrec.models.lightgcn import LightGCN
from modalrec.models.lightgcn_m import LightGCNM
from modalrec.models.mentor import MENTOR
from modalrec.models.mf import MF
from modalrec.models.mgcn import MGCN
from modalrec.models.micro import MICRO
from modalrec.models.mmgcl import MMGCL
from modalrec.models.mmgcn import MMGCN
from modalrec.models.mmssl import MMSSL
from modalrec.models.ncl import NCL
from modalrec.models.ngcf import NGCF
from modalrec.models.pgl import PGL
from modalrec.models.popularity import Popularity
from modalrec.models.sgl import SGL
from modalrec.models.slmrec import SLMRec
from modalrec.models.smore import SMORE
from modalrec.models.vbpr import VBPR

MODELS: dict[str, type[Model]] = {
    # the three seed systems
    "mmssl": MMSSL,
    "slmrec": SLMRec,
    "micro": MICRO,
    "lattice": LATTICE,
    # ID-only baselines
    "pop": Popularity,
    "mf": MF,
    "lightgcn": LightGCN,
    "ngcf": NGCF,
    "sgl": SGL,
    "ncl": NCL,
    "hccf": HCCF,
    "itemknn": ItemKNN,
    # multi-modal baselines
    "vbpr": VBPR,
    "lightgcn_m": LightGCNM,
    "mmgcn": MMGCN,
    "grcn": GRCN,
    "clcrec": CLCRec,
    "mmgcl": MMGCL,
    "itemknn_cbf": ItemKNNCBF,
    # the item-graph family the field compares against
    "freedom": FREEDOM,
    "dragon": DRAGON,
    "mgcn": MGCN,
    "lgmrec": LGMRec,
    "smore": SMORE,
    "pgl": PGL,
    # self-supervised and generative multi-modal models
    "diffmm": DiffMM,
    "bm3": BM3,
    "mentor": MENTOR,
}


class ModelSpec(Protocol):
    """What :func:`build_model` reads from a run configuration (``modalrec.config.RunConfig`` has all three)."""

    @property
    def model_name(self) -> str: ...

    @property
    def model(self) -> dict[str, Any]: ...

    @property
    def seed(self) -> int: ...


def model_config(model_cls: type[Model], params: dict[str, Any]) -> Any:
    """The model's Config dataclass with ``params`` (minus "name") applied and type-checked (ConfigError)."""
    cfg = model_cls.Config()
    set_fields(cfg, {k: v for k, v in params.items() if k != "name"}, "model.")
    return cfg


def build_model(spec: ModelSpec, data: Dataset, device: torch.device) -> Model:
    """Instantiate the configured model on ``data`` with the run seed's initial weights, on ``device``."""
    model_cls = MODELS[spec.model_name]
    cfg = model_config(model_cls, spec.model)
    torch.manual_seed(spec.seed)
    return model_cls(data, cfg).to(device)


__all__ = ["MODELS", "Embeddings", "Model", "ModelSpec", "build_model", "model_config"]
