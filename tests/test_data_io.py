"""Readers, writers and validation errors of the three dataset formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modalrec.data import Dataset, load_dataset, save_dataset
from modalrec.data.io import SplitOptions, detect_format
from modalrec.errors import DataError


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _canonical(folder: Path, n_users: int = 12, n_items: int = 8) -> None:
    rows = ["user,item"] + [f"u{u},i{(u + j) % n_items}" for u in range(n_users) for j in range(5)]
    _write(folder / "interactions.csv", "\n".join(rows) + "\n")
    _write(folder / "items.csv", "item\n" + "\n".join(f"i{i}" for i in range(n_items)) + "\n")
    np.save(folder / "visual.npy", np.arange(n_items * 3, dtype=np.float32).reshape(n_items, 3))


def test_canonical_round_trip(tmp_path: Path, tiny: Dataset) -> None:
    out = save_dataset(tiny, tmp_path / "copy")
    assert detect_format(out) == "canonical"
    back = load_dataset(out)
    assert back.n_users == tiny.n_users and back.n_items == tiny.n_items
    assert (back.train != tiny.train).nnz == 0 and (back.test != tiny.test).nnz == 0
    assert list(back.item_ids) == list(tiny.item_ids)
    np.testing.assert_array_equal(back.features["visual"], tiny.features["visual"])


def test_canonical_without_split_is_split_by_seed(tmp_path: Path) -> None:
    _canonical(tmp_path)
    a = load_dataset(tmp_path, split=SplitOptions(seed=1))
    b = load_dataset(tmp_path, split=SplitOptions(seed=1))
    assert a.train.nnz + a.val.nnz + a.test.nnz == 60
    assert (a.test != b.test).nnz == 0
    assert a.features["visual"].shape == (8, 3)


def test_duplicates_are_dropped_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _canonical(tmp_path)
    with (tmp_path / "interactions.csv").open("a") as fh:
        fh.write("u0,i0\n")
    data = load_dataset(tmp_path)
    assert data.train.nnz + data.val.nnz + data.test.nnz == 60
    assert "duplicate" in caplog.text


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: _write(f / "interactions.csv", "usr,item\n1,2\n"), "no 'user' column"),
        (lambda f: _write(f / "interactions.csv", "user,item\nu0,i0\nu1\n"), "line 3: expected 2 fields"),
        (
            lambda f: _write(f / "interactions.csv", "user,item\nu0,i0\nu1,zzz\n"),
            "line 3: item 'zzz' is not listed",
        ),
        (lambda f: _write(f / "interactions.csv", ""), "file is empty"),
        (lambda f: (f / "interactions.csv").write_bytes(b"user,item\n\xff\xfe,1\n"), "not valid UTF-8"),
        (
            lambda f: np.save(f / "visual.npy", np.zeros((3, 2), np.float32)),
            "has 3 rows but the dataset has 8",
        ),
        (lambda f: np.save(f / "visual.npy", np.full((8, 2), np.nan, np.float32)), "missing for every item"),
        (lambda f: _write(f / "items.csv", "item\ni0\ni0\n"), "listed twice"),
    ],
)
def test_canonical_errors_name_file_and_row(tmp_path: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    _canonical(tmp_path)
    mutate(tmp_path)
    with pytest.raises(DataError, match=None) as info:
        load_dataset(tmp_path)
    assert message in str(info.value)


def test_split_overlap_with_train_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path / "split" / "train.csv", "user,item\n0,0\n0,1\n1,1\n")
    _write(tmp_path / "split" / "val.csv", "user,item\n0,2\n")
    _write(tmp_path / "split" / "test.csv", "user,item\n1,1\n")
    with pytest.raises(DataError, match="test pair"):
        load_dataset(tmp_path)


def test_empty_split_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path / "split" / "train.csv", "user,item\n0,0\n0,1\n1,1\n")
    _write(tmp_path / "split" / "val.csv", "user,item\n")
    _write(tmp_path / "split" / "test.csv", "user,item\n1,2\n")
    with pytest.raises(DataError, match="validation split is empty"):
        load_dataset(tmp_path)


def test_mmssl_json_format(tmp_path: Path) -> None:
    (tmp_path / "train.json").write_text(json.dumps({"0": [0, 1, 2], "1": [1, 3]}))
    (tmp_path / "val.json").write_text(json.dumps({"0": [3], "1": [0]}))
    (tmp_path / "test.json").write_text(json.dumps({"0": [4], "1": [2]}))
    np.save(tmp_path / "image_feat.npy", np.ones((5, 4), np.float32))
    np.save(tmp_path / "text_feat.npy", np.ones((5, 6), np.float32))
    data = load_dataset(tmp_path)
    assert (data.n_users, data.n_items) == (2, 5)
    assert data.train.nnz == 5 and data.val.nnz == 2 and data.test.nnz == 2
    assert sorted(data.features) == ["image", "text"]
    (tmp_path / "val.json").write_text("{bad json")
    with pytest.raises(DataError, match=r"val.json, line 1: malformed JSON"):
        load_dataset(tmp_path)


def test_mmrec_inter_format(tmp_path: Path) -> None:
    lines = ["userID\titemID\trating\ttimestamp\tx_label"]
    lines += [f"{u}\t{i}\t5\t0\t{0 if i < 3 else (1 if i == 3 else 2)}" for u in range(3) for i in range(5)]
    _write(tmp_path / "toy.inter", "\n".join(lines) + "\n")
    np.save(tmp_path / "image_feat.npy", np.ones((5, 4), np.float32))
    data = load_dataset(tmp_path)
    assert (data.train.nnz, data.val.nnz, data.test.nnz) == (9, 3, 3)
    assert data.modalities == ["image"]
    _write(tmp_path / "toy.inter", "userID\titemID\tx_label\n0\t1\t7\n")
    with pytest.raises(DataError, match="line 2: x_label must be 0, 1 or 2"):
        load_dataset(tmp_path)


def test_unknown_folder_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot recognise the dataset format"):
        load_dataset(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "missing")


def test_save_refuses_to_overwrite(tmp_path: Path, tiny: Dataset) -> None:
    save_dataset(tiny, tmp_path / "d")
    with pytest.raises(DataError, match="not empty"):
        save_dataset(tiny, tmp_path / "d")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary folder left behind"
