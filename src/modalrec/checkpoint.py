"""Safe checkpoint files: plain dicts of tensors, numbers, strings and lists, loaded with ``weights_only=True``.

Writes go through ``modalrec.atomic`` (temporary file + rename), so a kill at any moment leaves the previous
file intact. ``atomic_write_bytes``/``atomic_write_text`` are re-exported here for older imports.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modalrec.atomic import atomic_write_bytes, atomic_write_text
from modalrec.errors import ModalrecError

__all__ = ["atomic_write_bytes", "atomic_write_text", "load_checkpoint", "load_state", "save_checkpoint"]


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Atomically save a checkpoint dict."""
    atomic_write_bytes(path, lambda fh: torch.save(payload, fh))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely (no arbitrary code: ``weights_only=True``)."""
    if not path.exists():
        raise ModalrecError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only=True refused a Python object: never unpickle it. Keep the first line of torch's text.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ModalrecError(
            f"{path}: not a readable modalrec checkpoint (refused by weights_only=True: it holds Python objects "
            f"other than tensors, numbers, strings and containers; {first[:200]})"
        ) from None
    except Exception as exc:
        text = " ".join(str(exc).split())[:300]
        raise ModalrecError(
            f"{path}: not a readable modalrec checkpoint ({type(exc).__name__}: {text})"
        ) from None
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise ModalrecError(f"{path}: not a modalrec checkpoint (no state_dict)")
    return payload


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: Path | str) -> None:
    """Load a state dict, turning key/shape mismatches into a clear error."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ModalrecError(
            f"{source}: checkpoint does not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            "was it trained with another model or configuration?"
        )
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise ModalrecError(
                f"{source}: parameter {key} has shape {tuple(value.shape)} in the checkpoint but "
                f"{tuple(own[key].shape)} here; was it trained on other data (users/items) or another embed_dim?"
            )
    model.load_state_dict(state)
