"""``modalrec prepare movielens-100k`` from the GroupLens archive: download (the network replaced by a local fake
archive), sha256 check, offline ``--source ml-100k.zip``, and failures that write nothing."""

from __future__ import annotations

import csv
import hashlib
import io
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest
from tests.test_features import _fake_ml100k

import modalrec.features.movielens as ml
from modalrec.cli import main
from modalrec.data import load_dataset


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test here may reach the network: the real urlopen fails loudly."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _fake_archive(tmp_path: Path) -> bytes:
    """The fake ml-100k folder (3 users, 4 movies, 12 ratings) zipped as GroupLens does: ml-100k/u.data, ..."""
    folder = tmp_path / "ml-100k"
    _fake_ml100k(folder)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-100k/", "")
        for name in ("u.data", "u.item"):
            zf.write(folder / name, f"ml-100k/{name}")
        zf.writestr("ml-100k/README", "fake")
    return buf.getvalue()


def _serve(monkeypatch: pytest.MonkeyPatch, payload: bytes) -> list[str]:
    """Answer every download with ``payload``; returns the list of URLs asked for."""
    asked: list[str] = []

    def fake_open(url: str, timeout: float) -> io.BytesIO:
        asked.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(ml, "open_url", fake_open)
    return asked


def _left_behind(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name not in ("ml-100k",))


def test_download_checks_sha256_and_converts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _fake_archive(tmp_path)
    digest = hashlib.sha256(archive).hexdigest()
    asked = _serve(monkeypatch, archive)
    monkeypatch.setattr(ml, "ML100K_SHA256", digest)  # the fake archive stands in for the official one
    out = tmp_path / "ml"
    assert main(["-q", "prepare", "movielens-100k", "--out", str(out), "--no-text"]) == 0
    assert asked == ["https://files.grouplens.org/datasets/movielens/ml-100k.zip"]
    rows = list(csv.reader((out / "interactions.csv").open()))
    assert rows[0] == ["user", "item", "timestamp"] and len(rows) == 13
    assert rows[1] == ["1", "1", "880000011"]
    assert sorted(p.name for p in out.iterdir()) == [
        "SOURCE.md",
        "genre.npy",
        "interactions.csv",
        "items.csv",
    ]
    assert digest in (out / "SOURCE.md").read_text(encoding="utf-8")
    data = load_dataset(out)
    assert (data.n_users, data.n_items, data.modalities) == (3, 4, ["genre"])


def test_explicit_sha256_and_mirror_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _fake_archive(tmp_path)
    asked = _serve(monkeypatch, archive)
    out = tmp_path / "ml"
    digest = hashlib.sha256(archive).hexdigest().upper()  # any case
    args = ["-q", "prepare", "movielens-100k", "--out", str(out), "--no-text", "--sha256", digest]
    assert main([*args, "--url", "https://mirror.example/ml-100k.zip"]) == 0
    assert asked == ["https://mirror.example/ml-100k.zip"]
    assert len(list(csv.reader((out / "interactions.csv").open()))) == 13


def test_digest_mismatch_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = _fake_archive(tmp_path)
    _serve(monkeypatch, archive)
    out = tmp_path / "ml"
    # the official digest: the fake archive does not match it
    assert main(["-q", "prepare", "movielens-100k", "--out", str(out), "--no-text"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ml-100k.zip: sha256 ")
    assert hashlib.sha256(archive).hexdigest() in err[0] and ml.ML100K_SHA256 in err[0]
    assert not out.exists() and _left_behind(tmp_path) == []


def test_network_failure_is_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def offline(url: str, timeout: float) -> io.BytesIO:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(ml, "open_url", offline)
    out = tmp_path / "ml"
    assert main(["-q", "prepare", "movielens-100k", "--out", str(out), "--no-text"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0] == (
        "error: could not download https://files.grouplens.org/datasets/movielens/ml-100k.zip (Name or service "
        "not known); without a network, pass --source with ml-100k.zip or an ml-100k folder"
    )
    assert not out.exists() and _left_behind(tmp_path) == []


def test_offline_zip_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = _fake_archive(tmp_path)
    local = tmp_path / "ml-100k.zip"
    local.write_bytes(archive)
    digest = hashlib.sha256(archive).hexdigest()
    base = ["-q", "prepare", "movielens-100k", "--no-text", "--source", str(local)]
    assert main([*base, "--out", str(tmp_path / "a")]) == 2  # the official digest refuses it
    assert "does not match the expected" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "a"), "--sha256", digest]) == 0
    assert load_dataset(tmp_path / "a").n_users == 3
    # a folder holding the extracted ml-100k/ works too
    assert main(["-q", "prepare", "movielens-100k", "--no-text", "--source", str(tmp_path), "--out",
                 str(tmp_path / "b")]) == 0  # fmt: skip
    assert load_dataset(tmp_path / "b").n_items == 4


@pytest.mark.parametrize(
    ("content", "sha", "message"),
    [
        (b"not a zip", None, "not a readable zip archive"),
        (None, "abc", "is not a sha256 digest"),
    ],
)
def test_bad_archive_or_digest(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes | None,
    sha: str | None,
    message: str,
) -> None:
    local = tmp_path / "ml-100k.zip"
    payload = content if content is not None else _fake_archive(tmp_path)
    local.write_bytes(payload)
    sha = sha or hashlib.sha256(payload).hexdigest()
    out = tmp_path / "out"
    args = ["-q", "prepare", "movielens-100k", "--no-text", "--source", str(local), "--sha256", sha]
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not out.exists()


def test_zip_without_ratings(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-100k/u.item", "1|x|||" + "|0" * 19 + "\n")
    local = tmp_path / "ml-100k.zip"
    local.write_bytes(buf.getvalue())
    with pytest.raises(ml.ModalrecError, match=r"no u\.data inside"):
        ml.read_ml100k_zip(local)
