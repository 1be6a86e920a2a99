"""Defaults whose auxiliary losses leave BPR room to learn, checked on the first batch at initialisation.

Adam's first step is -lr·sign(g) for the summed gradient g. The share of the best first-order BPR decrease that
this step gets is s = Σ g_bpr·sign(g) / Σ |g_bpr|: 1 when the auxiliary terms leave BPR's signs alone, 0 or
below when they overrule them. Defaults at which a model's BPR loss stayed at ln 2 on MovieLens-100k and Tiktok
had s ≤ 0.44 on this MovieLens-sized planted case (NCL ssl_weight 1e-7: 0.44, MMGCL cl_weight 0.1: -0.26,
SGL ssl_weight 0.1: -0.12, MGCN/SMORE cl_weight 0.01: 0.24/0.28); the defaults that learn have s ≥ 0.54.
NCL keeps the paper's λ1 (s = 0.44) and trains at Adam lr 1e-2, which takes BPR off ln 2 within 20 steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from conftest import tiny_config
from modalrec.config import load_config
from modalrec.data import Dataset, make_synthetic
from modalrec.data.sampling import BPRSampler
from modalrec.models import MODELS
from modalrec.models.base import TrainSettings

SANE = 0.5  # BPR must get at least half of its best first-step decrease


@pytest.fixture(scope="module")
def movielens_sized() -> Dataset:
    """A planted dataset of MovieLens-100k's size (943 users, 1,682 items, ~80k training pairs)."""
    cfg = dataclasses.replace(
        tiny_config(),
        n_users=943,
        n_items=1682,
        n_interactions=100_000,
        modality_dims={"visual": 64, "textual": 32},
    )
    return make_synthetic(cfg, name="movielens-sized")


def first_step_bpr_share(data: Dataset, name: str, **params: Any) -> float:
    """s (module docstring) of model ``name`` on the first batch of 2,048 pairs at initialisation."""
    torch.manual_seed(0)
    cls = MODELS[name]
    model = cls(data, cls.Config(**params))
    model.train()
    model.on_epoch_start(0)
    batch = next(iter(BPRSampler(data.train, 2048, seed=0).epoch(0)))
    terms = model.batch_loss(batch)
    params_ = [p for p in model.parameters() if p.requires_grad]

    def flat(loss: torch.Tensor) -> torch.Tensor:
        grads = torch.autograd.grad(loss, params_, retain_graph=True, allow_unused=True)
        pairs = zip(grads, params_, strict=True)
        return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in pairs])

    per_term = {k: flat(v) for k, v in terms.items() if v.requires_grad}
    total = torch.stack(list(per_term.values())).sum(0)
    bpr = per_term["bpr"]
    return float((bpr * total.sign()).sum() / bpr.abs().sum())


@pytest.mark.parametrize("name", ["mmgcl", "sgl", "mgcn", "smore"])
def test_defaults_leave_bpr_its_first_step(movielens_sized: Dataset, name: str) -> None:
    assert first_step_bpr_share(movielens_sized, name) >= SANE


@pytest.mark.parametrize(
    "name,params",
    [("ncl", {"ssl_weight": 1e-7}), ("mmgcl", {"cl_weight": 0.1}), ("sgl", {"ssl_weight": 0.1})],
)
def test_settings_that_stalled_bpr_fail_the_check(
    movielens_sized: Dataset, name: str, params: dict[str, Any]
) -> None:
    # the check tells the settings that did not learn from those that do; NCL keeps the paper's λ1 and trains at
    # a larger learning rate instead (test below), which the check does not see (Adam's step is lr·sign(g))
    assert first_step_bpr_share(movielens_sized, name, **params) < SANE


def bpr_after_steps(data: Dataset, name: str, steps: int = 20, **params: Any) -> float:
    """BPR loss of the last of ``steps`` batches at the model's default training settings (lr, batch size)."""
    train = load_config(None, [], model_name=name).train
    torch.manual_seed(0)
    cls = MODELS[name]
    model = cls(data, cls.Config(**params))
    model.train()
    model.on_epoch_start(0)
    opts = model.configure_optimizers(TrainSettings(lr=train.lr))
    sampler = BPRSampler(data.train, train.batch_size, seed=0)
    batches = (b for epoch in range(steps) for b in sampler.epoch(epoch))
    return [model.train_step(next(batches), opts)["bpr"] for _ in range(steps)][-1]


@pytest.mark.parametrize("name", ["lightgcn", "ncl"])
def test_default_training_moves_bpr_off_ln2(movielens_sized: Dataset, name: str) -> None:
    # 20 steps at Adam lr 1e-3 leave BPR at 0.688 (LightGCN) and 0.693 (NCL); the defaults (lr 1e-2) reach 0.34/0.36
    assert bpr_after_steps(movielens_sized, name) < 0.5
