"""Export a run's final user and item embeddings with their raw ids (npz or parquet).

npz (``numpy.load(path)`` works without ``allow_pickle``): ``user_ids`` [U] and ``item_ids`` [I] unicode
arrays, ``users`` [U, d] and ``items`` [I, d] float32, plus the model's per-item score extras under their
own name, such as VBPR's ``item_bias`` [I] (a dot product alone does not reproduce such a model's ranking).

parquet (needs pyarrow): ``users.parquet`` and ``items.parquet``, each with an ``id`` string column and an
``embedding`` fixed-size-list<float32> column (and the item extras as columns).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from modalrec.atomic import atomic_path, check_output_path
from modalrec.errors import ModalrecError
from modalrec.recommend import Recommender

_STANDARD = {"user_ids", "item_ids", "users", "items"}


def embedding_arrays(rec: Recommender) -> dict[str, np.ndarray]:
    """The arrays written by ``export``: ids, embeddings and per-item extras."""
    arrays: dict[str, np.ndarray] = {
        "user_ids": np.array([str(u) for u in rec.data.user_ids], dtype=np.str_),
        "item_ids": np.array(rec.item_ids, dtype=np.str_),
        "users": rec.emb.users.detach().float().numpy(),
        "items": rec.emb.items.detach().float().numpy(),
    }
    n_items = rec.emb.items.shape[0]
    for key, val in (rec.emb.extras or {}).items():
        if isinstance(val, torch.Tensor) and val.ndim == 1 and val.shape[0] == n_items and key not in arrays:
            arrays[key] = val.detach().float().numpy()
    return arrays


def export_embeddings(rec: Recommender, out: str | Path, fmt: str = "npz") -> list[Path]:
    """Write the embeddings to ``out`` (a ``.npz`` file for npz, a folder for parquet); returns the files."""
    arrays = embedding_arrays(rec)
    out = Path(out)
    if fmt == "npz":
        if out.suffix != ".npz":
            out = out.with_suffix(".npz")
        check_output_path(out)
        # plain numeric/unicode arrays: written and readable with allow_pickle=False; a failed write keeps the
        # previous file (temporary file + rename)
        with atomic_path(out, suffix=".npz") as tmp:
            np.savez(tmp, allow_pickle=False, **arrays)
        return [out]
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ModalrecError(
                "--format parquet needs pyarrow (pip install pyarrow); --format npz needs nothing extra"
            ) from None
        check_output_path(out, folder=True)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for side in ("users", "items"):
            emb = arrays[side]
            cols = {
                "id": pa.array(arrays[f"{side[:-1]}_ids"].tolist(), pa.string()),
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(emb.reshape(-1), pa.float32()), emb.shape[1]
                ),
            }
            if side == "items":
                for key in sorted(arrays.keys() - _STANDARD):
                    cols[key] = pa.array(arrays[key], pa.float32())
            path = out / f"{side}.parquet"
            with atomic_path(path, suffix=".parquet") as tmp:
                pq.write_table(pa.table(cols), tmp)
            written.append(path)
        return written
    raise ModalrecError(f"unknown export format {fmt!r}; choose npz or parquet")
