"""The model registry: a plain dict from name to class (no import magic)."""

from __future__ import annotations

from modalrec.models.base import Embeddings, Model
from modalrec.models.bm3 import BM3
from modalrec.models.clcrec import CLCRec
from modalrec.models.diffmm import DiffMM
from modalrec.models.grcn import GRCN
from modalrec.models.hccf import HCCF
from modalrec.models.itemknn import ItemKNN, ItemKNNCBF
from modalrec.models.lattice import LATTICE
from modalrec.models.lightgcn import LightGCN
from modalrec.models.lightgcn_m import LightGCNM
from modalrec.models.mentor import MENTOR
from modalrec.models.mf import MF
from modalrec.models.micro import MICRO
from modalrec.models.mmgcl import MMGCL
from modalrec.models.mmgcn import MMGCN
from modalrec.models.mmssl import MMSSL
from modalrec.models.ncl import NCL
from modalrec.models.ngcf import NGCF
from modalrec.models.popularity import Popularity
from modalrec.models.sgl import SGL
from modalrec.models.slmrec import SLMRec
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
    # self-supervised and generative multi-modal models
    "diffmm": DiffMM,
    "bm3": BM3,
    "mentor": MENTOR,
}

__all__ = ["MODELS", "Embeddings", "Model"]
