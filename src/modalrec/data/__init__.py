"""Data layer: the Dataset, readers and writers, splits, the BPR sampler and the synthetic generator."""

from modalrec.data.dataset import Dataset, pairs_to_csr
from modalrec.data.io import load_dataset, save_dataset
from modalrec.data.sampling import BPRSampler
from modalrec.data.split import split_interactions
from modalrec.data.synthetic import SyntheticConfig, make_synthetic

__all__ = [
    "BPRSampler",
    "Dataset",
    "SyntheticConfig",
    "load_dataset",
    "make_synthetic",
    "pairs_to_csr",
    "save_dataset",
    "split_interactions",
]
