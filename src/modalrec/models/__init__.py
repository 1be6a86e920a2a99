"""The model registry: a plain dict from name to class (no import magic)."""

from __future__ import annotations

from modalrec.models.base import Embeddings, Model
from modalrec.models.lattice import LATTICE
from modalrec.models.lightgcn import LightGCN
from modalrec.models.mf import MF
from modalrec.models.micro import MICRO
from modalrec.models.slmrec import SLMRec
from modalrec.models.vbpr import VBPR

MODELS: dict[str, type[Model]] = {
    "mf": MF,
    "lightgcn": LightGCN,
    "vbpr": VBPR,
    "micro": MICRO,
    "lattice": LATTICE,
    "slmrec": SLMRec,
}

__all__ = ["MODELS", "Embeddings", "Model"]
