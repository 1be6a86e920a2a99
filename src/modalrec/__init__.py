"""modalrec: multi-modal recommendation (MMSSL, SLMRec, MICRO/LATTICE and their baselines).

Public API::

    import modalrec
    model = modalrec.LightGCN(n_layers=3).fit("data/tiktok", epochs=50)   # one estimator class per model
    model.recommend(["u42"], k=10); model.save("models/lgcn"); modalrec.load("models/lgcn")
    modalrec.evaluate(model, split="test")

    # the configuration-driven path used by experiments
    from modalrec import load_dataset, make_synthetic, load_config, train, Recommender, evaluate, MODELS
"""

from typing import Any

from modalrec.api import ESTIMATORS, Estimator, NotFittedError, evaluate, load
from modalrec.config import EvalConfig, RunConfig, load_config
from modalrec.data import Dataset, SyntheticConfig, load_dataset, make_synthetic, save_dataset
from modalrec.errors import ConfigError, DataError, ModalrecError
from modalrec.models import MODELS, Embeddings, Model
from modalrec.recommend import Recommender
from modalrec.train import Trainer, train

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """The estimator classes (``modalrec.MMSSL``, ``modalrec.LightGCN``, ...), made from the model registry."""
    if name in ESTIMATORS:
        return ESTIMATORS[name]
    raise AttributeError(f"module 'modalrec' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *ESTIMATORS})


__all__ = [
    "MODELS",
    "ConfigError",
    "DataError",
    "Dataset",
    "Embeddings",
    "Estimator",
    "EvalConfig",
    "ModalrecError",
    "Model",
    "NotFittedError",
    "Recommender",
    "RunConfig",
    "SyntheticConfig",
    "Trainer",
    "__version__",
    "evaluate",
    "load",
    "load_config",
    "load_dataset",
    "make_synthetic",
    "save_dataset",
    "train",
    *ESTIMATORS,
]
