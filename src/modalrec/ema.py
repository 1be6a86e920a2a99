"""Exponential moving average of a model's parameters (Polyak averaging), for evaluation and checkpoints.

With ``train.ema = β > 0`` the trainer keeps a shadow copy θ̄ of every parameter and after each optimisation step
sets θ̄ ← β_t θ̄ + (1 − β_t) θ, with the warm-up β_t = min(β, (1 + t) / (10 + t)) so that early evaluations are
not dominated by the initial weights. Validation, early stopping, the saved best state and the final test all use
θ̄; training itself continues on θ. This is not part of any paper here: it is a training-loop option that
smooths models whose validation score swings from epoch to epoch (e.g. MMSSL's adversarial training,
docs/mmssl.md). Buffers (graphs, running statistics) are not averaged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class ParameterAverage:
    """Shadow weights θ̄ of ``model``'s parameters, updated with :meth:`update` after every step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = [p.detach().clone() for p in model.parameters()]

    def current_decay(self) -> float:
        """β_t of the next update: the warm-up keeps the first averages close to recent weights."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """θ̄ ← β_t θ̄ + (1 − β_t) θ for every parameter."""
        weight = 1.0 - self.current_decay()
        torch._foreach_lerp_(self.shadow, [p.detach() for p in model.parameters()], weight)
        self.updates += 1

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Within the block the model holds θ̄; its own weights θ come back afterwards (also on errors)."""
        params = list(model.parameters())
        backup = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, s in zip(params, self.shadow, strict=True):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(params, backup, strict=True):
                    p.copy_(b)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": [s.clone() for s in self.shadow]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay, self.updates = float(state["decay"]), int(state["updates"])
        for s, saved in zip(self.shadow, state["shadow"], strict=True):
            s.copy_(saved)
