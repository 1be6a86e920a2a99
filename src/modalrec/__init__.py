"""modalrec: multi-modal recommendation (MMSSL, SLMRec, MICRO/LATTICE and their baselines).

Public API::

    from modalrec import load_dataset, make_synthetic, load_config, train, Recommender, evaluate, MODELS
"""

from modalrec.config import RunConfig, load_config
from modalrec.data import Dataset, SyntheticConfig, load_dataset, make_synthetic, save_dataset
from modalrec.errors import ConfigError, DataError, ModalrecError
from modalrec.evaluate import EvalConfig, evaluate
from modalrec.models import MODELS, Embeddings, Model
from modalrec.recommend import Recommender
from modalrec.train import Trainer, train

__version__ = "0.1.0"

__all__ = [
    "MODELS",
    "ConfigError",
    "DataError",
    "Dataset",
    "Embeddings",
    "EvalConfig",
    "ModalrecError",
    "Model",
    "Recommender",
    "RunConfig",
    "SyntheticConfig",
    "Trainer",
    "__version__",
    "evaluate",
    "load_config",
    "load_dataset",
    "make_synthetic",
    "save_dataset",
    "train",
]
