"""Readers and writers for the three on-disk dataset formats, with validation that names file, row and problem.

Formats (auto-detected from the folder's contents):
  * ``canonical``: interactions.csv (user,item[,timestamp]); items.csv (item[,...]) whose row i is row i of every
    ``<modality>.npy``; optional split/train.csv, split/val.csv, split/test.csv.
  * ``mmssl``: the MMSSL/LATTICE folder: train.json, val.json, test.json mapping user -> list of item indices,
    plus ``<modality>_feat.npy`` (e.g. image_feat.npy, text_feat.npy) aligned to item indices.
  * ``mmrec``: the MMRec folder: ``<name>.inter`` TSV with userID, itemID and x_label (0 train, 1 val, 2 test),
    plus ``*_feat.npy`` aligned to item indices.

Missing content (every format): an item that lacks a modality is a row of NaN in that modality's feature file,
or False in an optional ``<modality>.mask.npy`` (booleans [n_items], True = the item has the modality). A row
NaN or infinite only in part, a mask of the wrong shape or dtype, and a modality no item has are errors.
"""

from __future__ import annotations

import csv
import errno
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import scipy.sparse as sp

from modalrec.atomic import atomic_dir, check_output_path
from modalrec.data.dataset import Dataset, pairs_to_csr
from modalrec.data.split import split_interactions
from modalrec.errors import DataError

log = logging.getLogger(__name__)

FORMATS = ("canonical", "mmssl", "mmrec")


@dataclass
class SplitOptions:
    """How to split when the folder ships no split."""

    method: str = "ratio"
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0


@dataclass
class Interactions:
    """Raw interaction rows read from one file (ids as strings)."""

    users: list[str]
    items: list[str]
    timestamps: np.ndarray | None
    rows: list[int]  # 1-based line numbers, for error messages
    path: Path


def detect_format(folder: Path) -> str:
    """Guess the format of a dataset folder from the files it holds."""
    if (folder / "interactions.csv").exists() or (folder / "split" / "train.csv").exists():
        return "canonical"
    if (folder / "train.json").exists():
        return "mmssl"
    if any(folder.glob("*.inter")):
        return "mmrec"
    raise DataError(
        "cannot recognise the dataset format: expected interactions.csv (canonical), train.json (MMSSL/LATTICE) "
        "or a *.inter file (MMRec)",
        folder,
    )


def _check_folder(folder: Path) -> None:
    """The dataset folder exists, is a folder, can be listed and is not a symlink loop; else one clear line."""
    try:
        folder.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DataError("symlink loop: the path points back at itself", folder) from None
        if exc.errno == errno.ENOENT:
            raise DataError("dataset folder does not exist or is not a folder", folder) from None
        raise DataError(f"dataset folder cannot be opened ({exc.strerror})", folder) from None
    if not folder.is_dir():
        raise DataError("dataset folder does not exist or is not a folder", folder)
    try:
        next(os.scandir(folder), None)
    except OSError as exc:
        raise DataError(f"dataset folder cannot be read ({exc.strerror})", folder) from None


def load_dataset(
    path: str | os.PathLike[str], fmt: str = "auto", split: SplitOptions | None = None
) -> Dataset:
    """Load a dataset folder in any supported format (``fmt="auto"`` detects it)."""
    folder = Path(path)
    _check_folder(folder)
    fmt = detect_format(folder) if fmt == "auto" else fmt
    if fmt == "canonical":
        return _load_canonical(folder, split or SplitOptions())
    if fmt == "mmssl":
        return _load_mmssl(folder)
    if fmt == "mmrec":
        return _load_mmrec(folder)
    raise DataError(f"unknown format {fmt!r}; choose one of {('auto', *FORMATS)}")


# ---- CSV reading ----------------------------------------------------------------------------------------------


def _open_text(path: Path) -> TextIO:
    try:
        return path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read file: {exc.strerror}", path) from None


def read_interactions_csv(path: Path, delimiter: str = ",") -> Interactions:
    """Read user,item[,timestamp] rows; errors name the line and the problem."""
    users: list[str] = []
    items: list[str] = []
    times: list[float] = []
    rows: list[int] = []
    with _open_text(path) as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            header = next(reader, None)
            if header is None:
                raise DataError("file is empty; expected a header 'user,item'", path, 1)
            header = [h.strip().lstrip("\ufeff") for h in header]
            for col in ("user", "item"):
                if col not in header:
                    raise DataError(f"header has no '{col}' column (found {header})", path, 1)
            iu, ii = header.index("user"), header.index("item")
            it = header.index("timestamp") if "timestamp" in header else None
            width = len(header)
            for line_no, row in enumerate(reader, start=2):
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != width:
                    raise DataError(f"expected {width} fields, found {len(row)}", path, line_no)
                u, i = row[iu].strip(), row[ii].strip()
                if not u or not i:
                    raise DataError("empty user or item id", path, line_no)
                if "\x00" in u or "\x00" in i:
                    raise DataError("user or item id contains a NUL character", path, line_no)
                users.append(u)
                items.append(i)
                rows.append(line_no)
                if it is not None:
                    try:
                        t = float(row[it])
                    except ValueError:
                        raise DataError(f"timestamp {row[it]!r} is not a number", path, line_no) from None
                    if not np.isfinite(t):
                        raise DataError(f"timestamp {row[it]!r} is not finite", path, line_no)
                    times.append(t)
        except UnicodeDecodeError:
            raise DataError("file is not valid UTF-8 text", path) from None
        except csv.Error as exc:
            raise DataError(f"malformed CSV: {_one_line(exc)}", path, max(1, reader.line_num)) from None
    ts = np.asarray(times, dtype=np.float64) if times else None
    return Interactions(users, items, ts, rows, path)


def read_item_list(path: Path) -> list[str]:
    """Read the 'item' column of items.csv (row order defines the item index)."""
    ids: list[str] = []
    seen: dict[str, int] = {}
    with _open_text(path) as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
            if header is None:
                raise DataError("file is empty; expected a header with an 'item' column", path, 1)
            header = [h.strip().lstrip("\ufeff") for h in header]
            if "item" not in header:
                raise DataError(f"header has no 'item' column (found {header})", path, 1)
            col = header.index("item")
            for line_no, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) <= col or not row[col].strip():
                    raise DataError("missing item id", path, line_no)
                item = row[col].strip()
                if "\x00" in item:
                    raise DataError("item id contains a NUL character", path, line_no)
                if item in seen:
                    raise DataError(f"item {item!r} listed twice (first on line {seen[item]})", path, line_no)
                seen[item] = line_no
                ids.append(item)
        except UnicodeDecodeError:
            raise DataError("file is not valid UTF-8 text", path) from None
        except csv.Error as exc:
            raise DataError(f"malformed CSV: {_one_line(exc)}", path, max(1, reader.line_num)) from None
    if not ids:
        raise DataError("no items listed", path)
    return ids


def _one_line(text: object) -> str:
    """Collapse an exception text onto one line (DataError messages are always one line)."""
    return " ".join(str(text).split())


def _raw_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset of a .npy file, from its header alone (nothing unpickled)."""
    try:
        with path.open("rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise DataError(f"unsupported .npy format version {version}", path)
            offset = fh.tell()
    except OSError as exc:
        raise DataError(f"cannot read file: {exc.strerror}", path) from None
    except (ValueError, EOFError, SyntaxError, TypeError) as exc:
        raise DataError(f"not a readable .npy array ({_one_line(exc)})", path) from None
    return tuple(int(v) for v in shape), dtype, offset


def _check_length(path: Path, shape: tuple[int, ...], dtype: np.dtype, offset: int) -> None:
    n_bytes = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if path.stat().st_size < offset + n_bytes:
        raise DataError(f"file is truncated: header says shape {shape} but the data is shorter", path)


def read_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a .npy file from its header alone (no data read, nothing unpickled).

    Rejects object dtypes (pickles), non-numeric or complex dtypes and files shorter than their header claims,
    so a lying or malicious file fails here before any large allocation.
    """
    shape, dtype, offset = _raw_npy_header(path)
    if dtype.hasobject:
        raise DataError("holds Python objects (a pickle); only numeric arrays are accepted", path)
    if not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise DataError(f"feature array has non-numeric dtype {dtype}", path)
    _check_length(path, shape, dtype, offset)
    return shape, dtype


def feature_rows(path: Path) -> int:
    """Number of rows (items) of a .npy feature file, read from its validated header."""
    shape, _ = read_npy_header(path)
    if len(shape) not in (1, 2):
        raise DataError(f"feature array must be 2-D [items, dim], got shape {shape}", path)
    return shape[0]


def load_feature_file(path: Path, n_items: int, modality: str | None = None) -> np.ndarray:
    """Load a [n_items, d] float matrix from .npy; checks shape, dtype and finiteness (naming the bad row).

    A row that is NaN in full marks an item that lacks this modality and is returned as is (NaN); a row that
    is NaN or infinite only in part is an error naming the file, the row and the modality, and so is a file
    whose every row is NaN (a modality no item has).
    """
    shape, _ = read_npy_header(path)
    if len(shape) == 1:
        shape = (shape[0], 1)
    if len(shape) != 2:
        raise DataError(f"feature array must be 2-D [items, dim], got shape {shape}", path)
    if shape[0] != n_items:
        raise DataError(f"has {shape[0]} rows but the dataset has {n_items} items (one row per item)", path)
    if shape[1] < 1:
        raise DataError(f"feature array has shape {shape}: no feature columns", path)
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"not a readable .npy array ({_one_line(exc)})", path) from None
    arr = arr.reshape(shape)
    with np.errstate(over="ignore", invalid="ignore"):
        arr = arr.astype(np.float32)
    name = f"modality '{modality}' " if modality else ""
    missing = np.isnan(arr).all(axis=1)
    bad = ~np.isfinite(arr).all(axis=1) & ~missing
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{name}row {row} (item index {row}) contains NaN or infinite values in part of the row "
            "(an item without this content must be a row of NaN in full)",
            path,
        )
    if missing.all():
        raise DataError(
            f"{name or 'the modality '}is missing for every item (every row is NaN); remove the file to drop "
            "the modality",
            path,
        )
    return arr


MASK_SUFFIX = ".mask.npy"


def load_mask_file(path: Path, n_items: int, modality: str) -> np.ndarray:
    """Load ``<modality>.mask.npy``: booleans of shape [n_items], True where the item has the modality."""
    shape, dtype, offset = _raw_npy_header(path)
    if dtype != np.bool_ or shape != (n_items,):
        raise DataError(
            f"mask of modality '{modality}' must be booleans of shape ({n_items},) (True = the item has it), "
            f"got {dtype} {shape}",
            path,
        )
    _check_length(path, shape, dtype, offset)
    try:
        mask = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"not a readable .npy array ({_one_line(exc)})", path) from None
    return np.asarray(mask, dtype=bool)


# ---- index building -------------------------------------------------------------------------------------------


_DIGITS = re.compile(r"\d+")


def _natural_key(raw: str) -> tuple[tuple[int, int | str] | tuple[int, int, str], ...]:
    """'u10' -> (('u'), 10): digit runs compare as numbers, so u2 < u10 and 9 < 10."""
    parts = re.split(r"(\d+)", raw)
    # Compare digit runs by (length without leading zeros, digits): numeric order for numbers of any length,
    # without int() (which refuses > 4300 digits).
    return tuple(
        (0, len(p.lstrip("0")), p.lstrip("0")) if _DIGITS.fullmatch(p) else (1, p) for p in parts if p
    )


def _sorted_ids(ids: list[str] | set[str]) -> list[str]:
    """Ids in natural order (numbers numerically), so indices are stable across runs and round trips."""
    return sorted(set(ids), key=lambda s: (_natural_key(s), s))


def _to_index(
    inter: Interactions, user_index: dict[str, int], item_index: dict[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    u = np.empty(len(inter.users), dtype=np.int64)
    i = np.empty(len(inter.items), dtype=np.int64)
    for k, (raw_u, raw_i) in enumerate(zip(inter.users, inter.items, strict=True)):
        if raw_i not in item_index:
            raise DataError(f"item {raw_i!r} is not listed in items.csv", inter.path, inter.rows[k])
        if raw_u not in user_index:
            raise DataError(f"user {raw_u!r} does not occur in the interactions", inter.path, inter.rows[k])
        u[k] = user_index[raw_u]
        i[k] = item_index[raw_i]
    return u, i


def _dedupe(
    u: np.ndarray, i: np.ndarray, n_items: int, path: Path, t: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    keys = u * n_items + i
    _, first = np.unique(keys, return_index=True)
    if len(first) < len(keys):
        log.warning("%s: dropped %d duplicate (user, item) rows", path, len(keys) - len(first))
        first = np.sort(first)
        return u[first], i[first], (t[first] if t is not None else None)
    return u, i, t


def _load_features(
    folder: Path, n_items: int, suffix: str = ".npy", strip: str = ""
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Feature matrices {modality: [n_items, d]} and presence masks {modality: bool [n_items]} of a folder.

    An item lacks a modality when its row is NaN in full or when ``<modality>.mask.npy`` says False; only
    modalities with a missing item get a mask. Every error names the file, and the row where there is one.
    """
    feats: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    for path in sorted(folder.glob(f"*{suffix}")):
        if path.name.endswith(MASK_SUFFIX):
            continue  # a presence mask, read with its modality below
        name = path.name[: -len(suffix)]
        if strip and name.endswith(strip):
            name = name[: -len(strip)]
        if not name or name.startswith("."):
            log.warning("%s: ignored (a hidden file, not a modality)", path)
            continue
        arr = load_feature_file(path, n_items, name)
        present = ~np.isnan(arr).all(axis=1)
        mask_path = folder / f"{name}{MASK_SUFFIX}"
        if mask_path.exists():
            present &= load_mask_file(mask_path, n_items, name)
            if n_items and not present.any():
                raise DataError(
                    f"modality '{name}' is missing for every item (its NaN rows and its mask together cover "
                    "all items)",
                    mask_path,
                )
        if not present.all():
            arr[~present] = 0.0  # masked-off rows hold no content, whatever the file had there
            masks[name] = present
        feats[name] = arr
    for path in sorted(folder.glob(f"*{MASK_SUFFIX}")):
        if path.name[: -len(MASK_SUFFIX)] not in feats:
            raise DataError(
                f"a presence mask without its feature file (modalities here: {sorted(feats) or 'none'})", path
            )
    return feats, masks


def _check_splits(
    name: str,
    folder: Path,
    train: sp.csr_matrix,
    val: sp.csr_matrix,
    test: sp.csr_matrix,
    ids: tuple[list[str], list[str]] | None = None,
    sources: dict[str, Path] | None = None,
) -> None:
    """Non-empty splits, validation and test disjoint from train. An overlap names the raw ids and, when the
    split has a file of its own (``sources``: {"validation"/"test": path}), that file and the pair's line."""
    if train.nnz == 0:
        raise DataError("the training split is empty", folder)
    for split_name, mat in (("validation", val), ("test", test)):
        if mat.nnz == 0:
            raise DataError(f"the {split_name} split is empty", folder)
        overlap = mat.multiply(train)
        if overlap.nnz:
            r, c = overlap.nonzero()
            user, item = (ids[0][r[0]], ids[1][c[0]]) if ids is not None else (str(r[0]), str(c[0]))
            path = (sources or {}).get(split_name)
            line = _find_pair_line(path, user, item) if path is not None else None
            raise DataError(
                f"{overlap.nnz} {split_name} pair(s) also in the training split, e.g. user {user!r}, item {item!r}",
                path or folder,
                line,
            )


def validate_splits(data: Dataset, folder: Path) -> None:
    """The split invariants ``load_dataset`` checks (non-empty splits, held-out pairs not in train) for a built
    ``data``; ``folder`` is named in the error."""
    ids = ([str(u) for u in data.user_ids], [str(i) for i in data.item_ids])
    _check_splits(data.name, folder, data.train, data.val, data.test, ids)


def _find_pair_line(path: Path, user: str, item: str) -> int | None:
    """The 1-based line of ``path`` whose fields hold both ``user`` and ``item`` (for error messages only)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line_no, line in enumerate(fh, start=1):
                fields = {f.strip().strip('"') for f in re.split(r"[,\t]", line.rstrip("\r\n"))}
                if user in fields and item in fields:
                    return line_no
    except OSError:
        return None
    return None


MAX_ITEM_INDEX = 2**31 - 2  # item indices must fit int32 sparse indices
MAX_UNUSED_ITEMS = 1_000_000  # without feature files, at most this many indices may be unused (gaps)


def _check_catalogue_size(max_item: int, n_distinct: int, path: Path, row: int | None = None) -> None:
    """Index-based formats size the catalogue as max index + 1: refuse ids that would make it absurdly large.

    With feature files the row count fixes the catalogue instead; without them, an index far beyond the number of
    distinct items (e.g. a raw id such as 10**12 where 0-based indices are expected) would allocate a huge
    catalogue of never-seen items.
    """
    if max_item > MAX_ITEM_INDEX or max_item + 1 - n_distinct > MAX_UNUSED_ITEMS:
        raise DataError(
            f"item index {max_item} is implausibly large for {n_distinct} distinct items: this format expects "
            "0-based item indices (re-index the items, or add *_feat.npy files that fix the catalogue size)",
            path,
            row,
        )


# ---- formats --------------------------------------------------------------------------------------------------


def _load_canonical(folder: Path, split: SplitOptions) -> Dataset:
    split_dir = folder / "split"
    has_split = (split_dir / "train.csv").exists()
    parts: dict[str, Interactions] = {}
    if has_split:
        for part in ("train", "val", "test"):
            path = split_dir / f"{part}.csv"
            if not path.exists():
                raise DataError(f"split/train.csv exists but split/{part}.csv is missing", folder)
            parts[part] = read_interactions_csv(path)
    else:
        path = folder / "interactions.csv"
        if not path.exists():
            raise DataError("missing interactions.csv", folder)
        parts["all"] = read_interactions_csv(path)
    items_path = folder / "items.csv"
    if items_path.exists():
        item_ids = read_item_list(items_path)
    else:
        if any(folder.glob("*.npy")):
            raise DataError("feature files need items.csv to say which item each row belongs to", folder)
        item_ids = _sorted_ids({i for p in parts.values() for i in p.items})
    user_ids = _sorted_ids({u for p in parts.values() for u in p.users})
    if not user_ids:
        raise DataError("no interactions found", folder)
    user_index = {u: k for k, u in enumerate(user_ids)}
    item_index = {i: k for k, i in enumerate(item_ids)}
    n_u, n_i = len(user_ids), len(item_ids)
    if has_split:
        mats = []
        for part in ("train", "val", "test"):
            u, i = _to_index(parts[part], user_index, item_index)
            u, i, _ = _dedupe(u, i, n_i, parts[part].path)
            mats.append(pairs_to_csr(u, i, n_u, n_i))
        train, val, test = mats
    else:
        inter = parts["all"]
        u, i = _to_index(inter, user_index, item_index)
        u, i, t = _dedupe(u, i, n_i, inter.path, inter.timestamps)
        train, val, test = split_interactions(u, i, n_u, n_i, split.method, split.ratios, split.seed, t)
    sources = {"validation": split_dir / "val.csv", "test": split_dir / "test.csv"} if has_split else None
    _check_splits(folder.name, folder, train, val, test, (user_ids, item_ids), sources)
    features, masks = _load_features(folder, n_i)
    return Dataset(folder.name, np.array(user_ids), np.array(item_ids), train, val, test, features, masks)


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _DuplicateKey(Exception):
    pass


def _read_json_split(path: Path) -> dict[str, list[int]]:
    try:
        with path.open(encoding="utf-8") as fh:
            data = json.load(fh, object_pairs_hook=_no_duplicate_keys)
    except OSError as exc:
        raise DataError(f"cannot read file: {exc.strerror}", path) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"malformed JSON: {exc.msg}", path, max(1, exc.lineno)) from None
    except UnicodeDecodeError:
        raise DataError("file is not valid UTF-8 text", path) from None
    except _DuplicateKey as exc:
        raise DataError(f"user {exc.args[0]!r} is listed twice", path) from None
    except RecursionError:
        raise DataError("JSON is nested too deeply", path) from None
    except ValueError as exc:  # e.g. an integer with more than 4300 digits
        raise DataError(f"malformed JSON: {_one_line(exc)}", path) from None
    if not isinstance(data, dict):
        raise DataError("expected a JSON object mapping user -> list of item indices", path)
    for user, items in data.items():
        if not user.strip() or "\x00" in user:
            raise DataError(f"empty user id or user id with a NUL character: {user!r}", path)
        if not isinstance(items, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in items
        ):
            raise DataError(f"user {user!r}: expected a list of integer item indices", path)
        if any(v < 0 for v in items):
            raise DataError(f"user {user!r}: negative item index", path)
    return data


def _load_mmssl(folder: Path) -> Dataset:
    splits = {}
    for part in ("train", "val", "test"):
        path = folder / f"{part}.json"
        if not path.exists():
            raise DataError(f"missing {part}.json", folder)
        splits[part] = _read_json_split(path)
    user_ids = _sorted_ids({u for s in splits.values() for u in s})
    max_item = max((max(v) for s in splits.values() for v in s.values() if v), default=-1)
    feat_files = sorted(folder.glob("*_feat.npy"))
    n_items = max_item + 1
    if feat_files:
        n_items = feature_rows(feat_files[0])
        if max_item >= n_items:
            raise DataError(
                f"item index {max_item} is out of range for {n_items} feature rows", feat_files[0]
            )
    elif max_item >= 0:
        distinct = {i for s in splits.values() for v in s.values() for i in v}
        where = next(
            part for part in ("train", "val", "test") for v in splits[part].values() if max_item in v
        )
        _check_catalogue_size(max_item, len(distinct), folder / f"{where}.json")
    user_index = {u: k for k, u in enumerate(user_ids)}
    mats = []
    for part in ("train", "val", "test"):
        pairs = [(user_index[u], i) for u, items in splits[part].items() for i in items]
        arr = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        u, i, _ = _dedupe(arr[:, 0], arr[:, 1], n_items, folder / f"{part}.json")
        mats.append(pairs_to_csr(u, i, len(user_ids), n_items))
    ids = (user_ids, [str(i) for i in range(n_items)])
    sources = {"validation": folder / "val.json", "test": folder / "test.json"}
    _check_splits(folder.name, folder, mats[0], mats[1], mats[2], ids, sources)
    features, masks = _load_features(folder, n_items, "_feat.npy")
    item_ids = np.array([str(i) for i in range(n_items)])
    return Dataset(folder.name, np.array(user_ids), item_ids, mats[0], mats[1], mats[2], features, masks)


_PLAIN_INT = re.compile(r"[+-]?[0-9]+")


def _plain_int(text: str) -> int:
    """``int()`` for ASCII digits only: Python's ``int`` also reads ``1_0`` and Arabic-Indic digits as 10."""
    t = text.strip()
    if not _PLAIN_INT.fullmatch(t) or len(t) > 30:
        raise ValueError(text)
    return int(t)


def _mmrec_fields(
    row: list[str], cols: tuple[int, int, int], path: Path, line_no: int
) -> tuple[str, int, int]:
    """(user, item, label) of one validated data row of an MMRec ``.inter`` file."""
    iu, ii, il = cols
    try:
        item, label = _plain_int(row[ii]), _plain_int(row[il])
    except ValueError:
        raise DataError(
            f"itemID and x_label must be plain integers (digits 0-9), got {row[ii][:40]!r}, {row[il][:40]!r}",
            path,
            line_no,
        ) from None
    if label not in (0, 1, 2):
        raise DataError(f"x_label must be 0, 1 or 2, not {label}", path, line_no)
    if item < 0:
        raise DataError(f"negative itemID {item}", path, line_no)
    if item > MAX_ITEM_INDEX:
        raise DataError(f"itemID {item} is too large (limit {MAX_ITEM_INDEX})", path, line_no)
    if not row[iu].strip() or "\x00" in row[iu]:
        raise DataError("empty userID or userID with a NUL character", path, line_no)
    return row[iu].strip(), item, label


def _read_mmrec_inter(path: Path) -> tuple[list[str], list[int], list[int], list[int]]:
    """Users, items, labels and line numbers of an MMRec ``.inter`` file (userID, itemID, x_label columns)."""
    users, items, labels, rows = [], [], [], []
    with _open_text(path) as fh:
        reader = csv.reader(fh, delimiter="\t")
        try:
            header = [h.strip().split(":")[0] for h in next(reader, [])]
            for col in ("userID", "itemID", "x_label"):
                if col not in header:
                    raise DataError(f"header has no '{col}' column (found {header})", path, 1)
            cols = (header.index("userID"), header.index("itemID"), header.index("x_label"))
            for line_no, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataError(
                        f"expected {len(header)} tab-separated fields, found {len(row)}", path, line_no
                    )
                user, item, label = _mmrec_fields(row, cols, path, line_no)
                users.append(user)
                items.append(item)
                labels.append(label)
                rows.append(line_no)
        except UnicodeDecodeError:
            raise DataError("file is not valid UTF-8 text", path) from None
        except csv.Error as exc:
            raise DataError(f"malformed TSV: {_one_line(exc)}", path, max(1, reader.line_num)) from None
    return users, items, labels, rows


def _load_mmrec(folder: Path) -> Dataset:
    inter_files = sorted(folder.glob("*.inter"))
    if len(inter_files) != 1:
        raise DataError(f"expected exactly one *.inter file, found {len(inter_files)}", folder)
    path = inter_files[0]
    users, items, labels, rows = _read_mmrec_inter(path)
    if not users:
        raise DataError("no interactions found", path)
    user_ids = _sorted_ids(set(users))
    user_index = {u: k for k, u in enumerate(user_ids)}
    n_items = max(items) + 1
    feat_files = sorted(folder.glob("*_feat.npy"))
    if feat_files:
        n_feat = feature_rows(feat_files[0])
        if n_items > n_feat:
            raise DataError(f"itemID {n_items - 1} is out of range for {n_feat} feature rows", feat_files[0])
        n_items = n_feat
    else:
        _check_catalogue_size(n_items - 1, len(set(items)), path, rows[items.index(n_items - 1)])
    u_arr = np.array([user_index[u] for u in users], dtype=np.int64)
    i_arr = np.asarray(items, dtype=np.int64)
    lab = np.asarray(labels)
    mats = []
    for label in (0, 1, 2):
        m = lab == label
        u, i, _ = _dedupe(u_arr[m], i_arr[m], n_items, path)
        mats.append(pairs_to_csr(u, i, len(user_ids), n_items))
    ids = (user_ids, [str(i) for i in range(n_items)])
    _check_splits(folder.name, folder, mats[0], mats[1], mats[2], ids, {"validation": path, "test": path})
    features, masks = _load_features(folder, n_items, "_feat.npy")
    item_ids = np.array([str(i) for i in range(n_items)])
    return Dataset(folder.name, np.array(user_ids), item_ids, mats[0], mats[1], mats[2], features, masks)


# ---- writer ---------------------------------------------------------------------------------------------------


def _write_pairs(path: Path, data: Dataset, mats: list[sp.csr_matrix]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["user", "item"])
        for mat in mats:
            coo = mat.tocoo()
            order = np.lexsort((coo.col, coo.row))
            for r, c in zip(coo.row[order], coo.col[order], strict=True):
                writer.writerow([data.user_ids[r], data.item_ids[c]])


def save_dataset(data: Dataset, out: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write ``data`` in the canonical format, atomically: a temporary folder renamed into place.

    Items that lack a modality (``data.present``) are written as rows of NaN, so the folder reads back with the
    same masks; content a filler put in their place is not written.
    """
    target = Path(out)
    check_output_path(target, folder=True)
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise DataError("output folder exists and is not empty (use --overwrite)", target)
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "split").mkdir()
        _write_pairs(tmp / "interactions.csv", data, [data.train, data.val, data.test])
        for part, mat in (("train", data.train), ("val", data.val), ("test", data.test)):
            _write_pairs(tmp / "split" / f"{part}.csv", data, [mat])
        with (tmp / "items.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["item"])
            writer.writerows([i] for i in data.item_ids)
        for name, feats in data.features.items():
            out_feats = feats.astype(np.float32)  # a copy: the dataset's own array is never written into
            out_feats[~data.present(name)] = np.nan  # an item without this content is a row of NaN on disk
            np.save(tmp / f"{name}.npy", out_feats, allow_pickle=False)
    return target
