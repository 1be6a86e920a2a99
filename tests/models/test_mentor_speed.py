"""MENTOR's shared-computation forward against the per-view computation it replaces, on a tiny seeded case."""

from __future__ import annotations

import torch

from modalrec.data import Dataset
from modalrec.models.mentor import MENTOR


def test_shared_inputs_and_tiled_views_match_the_per_view_forward(tiny: Dataset) -> None:
    torch.manual_seed(0)
    model = MENTOR(tiny, MENTOR.Config())
    model.train()
    torch.manual_seed(5)
    emb = model.forward()
    extras = emb.extras or {}
    # reference: every view through the encoders' own forward, the perturbed ones drawing the same noise
    torch.manual_seed(5)
    channels = model._channels()
    noisy = [model._fuse(model._channels(model.cfg.noise_eps, view)) for view in range(2)]
    torch.testing.assert_close(extras["fused"], model._fuse(channels), rtol=0, atol=0)
    for got, expected in zip(extras["noisy"], noisy, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    m = model.n_modalities
    h_id = model.id_encoder(model.adj, model.id_feat)
    torch.testing.assert_close(extras["guide"], model._fuse([h_id] * m, weighted=False))
    for got, c in zip(extras["modal"], channels, strict=True):
        torch.testing.assert_close(got, model._fuse([c] * m, weighted=False))
