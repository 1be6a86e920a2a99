"""Item content features kept inside a model, either fixed (buffers) or fine-tuned (parameters).

FREEDOM, MGCN, SMORE and PGL project each modality's raw features; their official code fine-tunes the raw features
through the loss, the papers project fixed ones. One small module holds both forms so ``.to(device)`` moves them
and a model reads modality m as ``features[m]`` whichever form it uses.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from modalrec.data.dataset import Dataset


class RawFeatures(nn.Module):
    """The [I, d_m] feature matrix of each modality in ``names`` (dataset order), fixed or trainable.

    Args:
        data: the dataset whose ``features`` hold the matrices.
        names: modality names, in the order the model indexes them.
        trainable: keep them as parameters (fine-tuned by the optimiser) rather than non-persistent buffers.
    """

    def __init__(self, data: Dataset, names: list[str], trainable: bool) -> None:
        super().__init__()
        mats = [torch.from_numpy(np.ascontiguousarray(data.features[m], dtype=np.float32)) for m in names]
        self.trainable = trainable
        self.n_modalities = len(mats)
        if trainable:
            # a copy: the optimiser updates parameters in place, which must not write into the dataset's arrays
            self.params = nn.ParameterList([nn.Parameter(x.clone()) for x in mats])
        else:
            for idx, x in enumerate(mats):
                self.register_buffer(f"fixed_{idx}", x, persistent=False)

    def __getitem__(self, idx: int) -> torch.Tensor:
        """Features of modality ``idx``: [I, d_m]."""
        if self.trainable:
            return self.params[idx]
        return getattr(self, f"fixed_{idx}")

    def __len__(self) -> int:
        return self.n_modalities

    def dims(self) -> list[int]:
        """The feature width d_m of each modality."""
        return [self[idx].shape[1] for idx in range(self.n_modalities)]
