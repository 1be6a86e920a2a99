"""Shared helpers of the model tests: a plain training loop and test recall against popularity."""

from __future__ import annotations

import numpy as np
import torch

from modalrec.data import Dataset
from modalrec.data.sampling import BPRSampler
from modalrec.models.base import Model, TrainSettings


def recall_at(model: Model, data: Dataset, k: int = 20) -> float:
    """Mean test recall@k with training items masked (min(|test|, k) denominator)."""
    model.eval()
    users = np.flatnonzero(np.diff(data.test.indptr) > 0)
    with torch.no_grad():
        scores = model.score(model(), torch.from_numpy(users))
    scores[torch.from_numpy(data.train[users].toarray() > 0)] = -torch.inf
    top = scores.topk(k, dim=1).indices.numpy()
    truth = data.test[users].toarray() > 0
    return float((np.take_along_axis(truth, top, 1).sum(1) / np.minimum(truth.sum(1), k)).mean())


def popularity_recall(data: Dataset, k: int = 20) -> float:
    users = np.flatnonzero(np.diff(data.test.indptr) > 0)
    scores = np.tile(np.asarray(data.train.sum(0)).ravel(), (len(users), 1))
    scores[data.train[users].toarray() > 0] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    truth = data.test[users].toarray() > 0
    return float((np.take_along_axis(truth, top, 1).sum(1) / np.minimum(truth.sum(1), k)).mean())


def train(
    model: Model, data: Dataset, epochs: int = 6, lr: float = 0.03, batch_size: int = 1024
) -> list[dict[str, float]]:
    """Plain training loop; returns the mean of each loss term per epoch."""
    opts = model.configure_optimizers(TrainSettings(lr=lr))
    sampler = BPRSampler(data.train, batch_size, seed=0)
    history = []
    for epoch in range(epochs):
        model.train()
        model.on_epoch_start(epoch)
        logs = [model.train_step(b, opts) for b in sampler.epoch(epoch)]
        history.append({k: float(np.mean([row[k] for row in logs])) for k in logs[0]})
    return history
