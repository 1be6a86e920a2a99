"""``modalrec export`` (npz without pickle, parquet with pyarrow) and the runtime ``Recommender.add_items``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from modalrec.cli import main
from modalrec.config import load_config
from modalrec.data import Dataset, save_dataset
from modalrec.errors import ModalrecError
from modalrec.models import build_model
from modalrec.recommend import Recommender

FAST = ["--set", "train.epochs=1", "--set", "train.batch_size=1024", "--set", "train.threads=1"]


@pytest.fixture(scope="module")
def run_dir(tiny: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = save_dataset(tiny, tmp_path_factory.mktemp("data") / "tiny")
    run = tmp_path_factory.mktemp("runs") / "vbpr"
    assert main(["-q", "train", "--model", "vbpr", "--data", str(folder), "--out", str(run), *FAST]) == 0
    return run


def test_export_npz_round_trip(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "emb.npz"
    assert main(["-q", "export", "--run", str(run_dir), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    z = np.load(out, allow_pickle=False)
    rec = Recommender.from_run(run_dir)
    assert list(z["user_ids"]) == [str(u) for u in rec.data.user_ids]
    assert list(z["item_ids"]) == rec.item_ids
    assert z["users"].dtype == np.float32 and z["users"].shape == tuple(rec.emb.users.shape)
    # VBPR's ranking needs its item bias: exported next to the embeddings, so scores can be rebuilt
    scores = z["users"][4] @ z["items"].T + z["item_bias"]
    want = rec.model.score(rec.emb, torch.tensor([4]))[0].detach().numpy()
    assert np.allclose(scores, want, atol=1e-4)


def test_export_parquet(run_dir: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    assert (
        main(["-q", "export", "--run", str(run_dir), "--format", "parquet", "--out", str(tmp_path / "e")])
        == 0
    )
    items = pq.read_table(tmp_path / "e" / "items.parquet")
    z = np.load(run_dir / "embeddings.npz") if (run_dir / "embeddings.npz").exists() else None
    assert z is None  # --out was given: nothing written into the run folder
    rec = Recommender.from_run(run_dir)
    assert items.column("id").to_pylist() == rec.item_ids
    emb = np.array(items.column("embedding").to_pylist(), dtype=np.float32)
    assert np.allclose(emb, rec.emb.items.numpy())


def test_add_items_python_api(tiny: Dataset) -> None:
    cfg = load_config(None, [], model_name="lattice")
    rec = Recommender(build_model(cfg, tiny, torch.device("cpu")), tiny)
    feats = {n: tiny.features[n][:2] for n in tiny.modalities}
    rec.add_items(["a", "b"], feats)
    assert rec.n_items == tiny.n_items + 2 and rec.item_ids[-2:] == ["a", "b"]
    assert [i for i, _ in rec.recommend([tiny.user_ids[0]], k=rec.n_items, exclude_seen=False)[0]].count(
        "a"
    ) == 1
    with pytest.raises(ModalrecError, match="already exists"):
        rec.add_items(["a"], {n: v[:1] for n, v in feats.items()})
    with pytest.raises(ModalrecError, match="shape"):
        rec.add_items(["c"], feats)
    # filter_items understands runtime ids
    top = rec.recommend([tiny.user_ids[0]], k=rec.n_items, exclude_seen=False, filter_items=["a"])[0]
    assert "a" not in {i for i, _ in top}
    lgcn = Recommender(
        build_model(load_config(None, [], model_name="lightgcn"), tiny, torch.device("cpu")), tiny
    )
    with pytest.raises(NotImplementedError):
        lgcn.add_items(["a"], {n: v[:1] for n, v in feats.items()})
