"""Items that lack content: readers and their messages, mask files, round trip, drop_modality, the fills, the
config keys end to end through the CLI, and partial items in the service."""

from __future__ import annotations

import inspect
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from modalrec.cli import main
from modalrec.config import load_config
from modalrec.data import Dataset, load_dataset, save_dataset
from modalrec.data.missing import drop_modality, fill_missing, parse_drop_spec, prepare_missing
from modalrec.errors import ConfigError, DataError
from modalrec.models import build_model
from modalrec.models.lattice import LATTICE
from modalrec.recommend import Recommender

FAST = ["--set", "train.epochs=1", "--set", "train.batch_size=1024", "--set", "train.threads=1"]
FAST += ["--set", "eval.ks=[10,20]", "--set", "train.health_epochs=0", "--set", "train.progress=false"]


@pytest.fixture(scope="module")
def tiny_folder(tiny: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_dataset(tiny, tmp_path_factory.mktemp("data") / "tiny")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _small() -> Dataset:
    """4 users x 6 items; visual [6, 2] with items 2 and 5 missing. Item 5 has no training interaction."""
    r = np.array(
        [
            [1, 1, 1, 0, 0, 0],
            [0, 1, 1, 1, 0, 0],
            [1, 0, 0, 0, 1, 0],
            [0, 0, 1, 0, 1, 0],
        ],
        dtype=np.float32,
    )
    held = np.zeros_like(r)
    held[0, 3] = held[1, 0] = held[2, 5] = held[3, 1] = 1
    x = np.array([[1, 0], [0, 2], [np.nan, np.nan], [4, 4], [-2, 6], [np.nan, np.nan]], dtype=np.float32)
    return Dataset(
        "small",
        np.array([f"u{k}" for k in range(4)]),
        np.array([f"i{k}" for k in range(6)]),
        sp.csr_matrix(r),
        sp.csr_matrix(held),
        sp.csr_matrix(held),
        {"visual": x, "textual": np.arange(12, dtype=np.float32).reshape(6, 2)},
    )


# ---- readers, validator messages, round trip ------------------------------------------------------------------


def test_nan_row_is_a_missing_item_and_round_trips(tiny_folder: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_folder, tmp_path / "d")
    arr = np.load(folder / "visual.npy")
    arr[[3, 17]] = np.nan
    np.save(folder / "visual.npy", arr)
    data = load_dataset(folder)
    assert np.flatnonzero(~data.present("visual")).tolist() == [3, 17]
    assert data.present("textual").all()
    assert (data.features["visual"][[3, 17]] == 0).all()  # stored as zeros until filled
    assert data.stats()["missing_items"] == {"visual": 2, "textual": 0}
    out = save_dataset(data, tmp_path / "out")
    written = np.load(out / "visual.npy")
    assert np.isnan(written[[3, 17]]).all() and np.isfinite(np.delete(written, [3, 17], axis=0)).all()
    back = load_dataset(out)
    assert (back.present("visual") == data.present("visual")).all()
    assert np.array_equal(back.features["visual"], data.features["visual"])


def test_mask_file_marks_missing_items(tiny_folder: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_folder, tmp_path / "d")
    mask = np.ones(200, dtype=bool)
    mask[[0, 5, 9]] = False
    np.save(folder / "textual.mask.npy", mask)
    data = load_dataset(folder)
    assert sorted(data.modalities) == ["textual", "visual"]
    assert np.flatnonzero(~data.present("textual")).tolist() == [0, 5, 9]
    assert (data.features["textual"][[0, 5, 9]] == 0).all()  # masked rows hold no content
    assert data.stats()["items_without_content"] == 0


@pytest.mark.parametrize(
    ("mutate", "file", "needles"),
    [
        (lambda f: _set_cell(f / "visual.npy", 7, 2, np.nan), "visual.npy", ["modality 'visual'", "row 7"]),
        (lambda f: _set_cell(f / "visual.npy", 4, 0, np.inf), "visual.npy", ["modality 'visual'", "row 4"]),
        (
            lambda f: np.save(f / "visual.npy", np.full((200, 16), np.nan, np.float32)),
            "visual.npy",
            ["modality 'visual'", "missing for every item"],
        ),
        (
            lambda f: np.save(f / "visual.mask.npy", np.ones(200, dtype=np.int8)),
            "visual.mask.npy",
            ["modality 'visual'", "booleans of shape (200,)", "int8"],
        ),
        (
            lambda f: np.save(f / "visual.mask.npy", np.ones(199, dtype=bool)),
            "visual.mask.npy",
            ["modality 'visual'", "(199,)"],
        ),
        (
            lambda f: np.save(f / "visual.mask.npy", np.zeros(200, dtype=bool)),
            "visual.mask.npy",
            ["modality 'visual'", "missing for every item"],
        ),
        (lambda f: np.save(f / "audio.mask.npy", np.ones(200, dtype=bool)), "audio.mask.npy", ["without"]),
    ],
)
def test_validator_messages_name_file_row_and_modality(
    tiny_folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mutate,
    file: str,
    needles: list[str],
) -> None:  # type: ignore[no-untyped-def]
    folder = _copy(tiny_folder, tmp_path / "d")
    mutate(folder)
    with pytest.raises(DataError) as info:
        load_dataset(folder)
    assert str(folder / file) in str(info.value)
    for needle in needles:
        assert needle in str(info.value)
    assert main(["-q", "data", "validate", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and file in err[0] and needles[0] in err[0]


def _set_cell(path: Path, row: int, col: int, value: float) -> None:
    arr = np.load(path)
    arr[row, col] = value
    np.save(path, arr)


def test_mmssl_format_reads_nan_rows_and_masks(tmp_path: Path) -> None:
    (tmp_path / "train.json").write_text(json.dumps({"0": [0, 1, 2], "1": [1, 3]}))
    (tmp_path / "val.json").write_text(json.dumps({"0": [3], "1": [0]}))
    (tmp_path / "test.json").write_text(json.dumps({"0": [4], "1": [2]}))
    image = np.ones((5, 4), np.float32)
    image[2] = np.nan
    np.save(tmp_path / "image_feat.npy", image)
    np.save(tmp_path / "text_feat.npy", np.ones((5, 6), np.float32))
    np.save(tmp_path / "text.mask.npy", np.array([True, True, True, True, False]))
    data = load_dataset(tmp_path)
    assert np.flatnonzero(~data.present("image")).tolist() == [2]
    assert np.flatnonzero(~data.present("text")).tolist() == [4]
    image[2, 1] = 0.5  # a row NaN only in part
    np.save(tmp_path / "image_feat.npy", image)
    with pytest.raises(DataError, match=r"image_feat.npy: modality 'image' row 2 \(item index 2\)"):
        load_dataset(tmp_path)


def test_data_validate_and_stats_report_missing_items(
    tiny_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _copy(tiny_folder, tmp_path / "d")
    _nan_rows(folder / "visual.npy", [1, 2, 3])
    _nan_rows(folder / "textual.npy", [3, 4])
    assert main(["data", "validate", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "missing: 3 of 200 items lack 'visual'" in out
    assert "missing: 2 of 200 items lack 'textual'" in out
    assert "missing: 1 of 200 items have no content at all" in out
    assert main(["data", "stats", str(folder), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["missing_items"] == {"textual": 2, "visual": 3} and stats["items_without_content"] == 1


def _nan_rows(path: Path, rows: list[int]) -> None:
    arr = np.load(path)
    arr[rows] = np.nan
    np.save(path, arr)


# ---- drop_modality ----------------------------------------------------------------------------------------------


def test_drop_spec_parsing() -> None:
    assert parse_drop_spec("") == {}
    assert parse_drop_spec("visual:0.3, textual:1") == {"visual": 0.3, "textual": 1.0}
    for bad in ("visual", "visual:1.5", "visual:-0.1", ":0.3", "visual:abc", "visual:0.1,visual:0.2"):
        with pytest.raises(ConfigError, match=r"data\.drop_modality"):
            parse_drop_spec(bad)


def test_drop_modality_fraction_seed_and_nesting(tiny: Dataset) -> None:
    half = tiny.present("visual").copy()
    half[::2] = False  # 100 items already lack visual
    data = Dataset(
        tiny.name, tiny.user_ids, tiny.item_ids, tiny.train, tiny.val, tiny.test, dict(tiny.features),
        {"visual": half},
    )  # fmt: skip
    a = drop_modality(data, "visual:0.3", seed=4)
    dropped = ~a.present("visual") & half
    assert int(dropped.sum()) == 30  # 30% of the 100 items that had it, no already-missing item counted
    assert (a.features["visual"][dropped] == 0).all()
    assert a.present("textual").all()
    assert np.array_equal(drop_modality(data, "visual:0.3", seed=4).present("visual"), a.present("visual"))
    assert not np.array_equal(
        drop_modality(data, "visual:0.3", seed=5).present("visual"), a.present("visual")
    )
    b = drop_modality(data, "visual:0.6,textual:0.5", seed=4)
    assert int((~b.present("visual") & half).sum()) == 60 and int((~b.present("textual")).sum()) == 100
    assert not (~a.present("visual") & b.present("visual")).any()  # the 30% are among the 60%
    assert tiny.present("visual").all() and not data.present("visual")[0]  # inputs unchanged


def test_drop_fraction_one_removes_the_modality(tiny: Dataset, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="modalrec.data"):
        out = drop_modality(tiny, "visual:1.0", seed=0)
    assert out.modalities == ["textual"]
    assert "removes modality 'visual'" in caplog.text and "['textual'] only" in caplog.text
    with pytest.raises(ConfigError, match="names modality 'audio'"):
        drop_modality(tiny, "audio:0.5", seed=0)


# ---- fills ------------------------------------------------------------------------------------------------------


def test_neighbour_fill_equals_dense_two_hop_mean() -> None:
    data = _small()
    filled = fill_missing(data, "neighbours")
    r = data.train.toarray()
    co = r.T @ r  # dense [I, I]: fine for the 6-item oracle
    x, present = data.features["visual"], data.present("visual")
    mean = x[present].mean(axis=0)
    for i in np.flatnonzero(~present):
        w = co[i] * present
        want = (w @ x) / w.sum() if w.sum() > 0 else mean
        assert filled.features["visual"][i] == pytest.approx(want, abs=1e-6)
    # by hand: item 2 is seen by u0 (with 0, 1), u1 (with 1, 3) and u3 (with 4): weights 1, 2, 1, 1
    assert filled.features["visual"][2] == pytest.approx(np.array([1 + 0 + 4 - 2, 0 + 4 + 4 + 6]) / 5)
    assert filled.features["visual"][5] == pytest.approx(mean)  # no training interaction: the mean
    assert filled.present("visual").all()  # imputed rows are content: masks cleared
    assert fill_missing(data, "mask") is data  # "mask" leaves rows and masks to the models
    assert np.array_equal(filled.features["visual"][present], x[present])


def test_neighbour_fill_is_chunked(monkeypatch: pytest.MonkeyPatch) -> None:
    import modalrec.data.missing as missing

    whole = fill_missing(_small(), "neighbours").features["visual"]
    monkeypatch.setattr(missing, "CHUNK_ENTRIES", 1)  # one missing item per block
    assert np.array_equal(fill_missing(_small(), "neighbours").features["visual"], whole)


def test_mean_and_zero_fills(caplog: pytest.LogCaptureFixture) -> None:
    data = _small()
    mean = fill_missing(data, "mean")
    want = data.features["visual"][data.present("visual")].mean(axis=0)
    assert mean.features["visual"][2] == pytest.approx(want) and mean.features["visual"][5] == pytest.approx(
        want
    )
    assert mean.present("visual").all()  # imputed rows are content for every model
    zeros = fill_missing(data, "zeros")
    assert zeros.feature_masks == {} and zeros.present("visual").all()  # the model cannot tell
    assert (zeros.features["visual"][[2, 5]] == 0).all()
    with pytest.raises(ConfigError, match=r"data\.missing_fill"):
        fill_missing(data, "median")


def test_cold_content_items_warn_once(caplog: pytest.LogCaptureFixture) -> None:
    data = _small()
    masks = {"visual": data.present("visual"), "textual": np.array([1, 1, 0, 1, 1, 1], dtype=bool)}
    both = Dataset(
        data.name, data.user_ids, data.item_ids, data.train, data.val, data.test, dict(data.features), masks
    )
    with caplog.at_level(logging.WARNING, logger="modalrec"):
        out = prepare_missing(both, "", "mask", seed=0)
        assert not [r for r in caplog.records if "no content" in r.getMessage()]  # the models say it, once
        build_model(load_config(None, [], model_name="vbpr"), out, torch.device("cpu"))
    lines = [r.getMessage() for r in caplog.records if "no content" in r.getMessage()]
    assert len(lines) == 1 and "1 of 6 items" in lines[0] and "ID" in lines[0], lines
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="modalrec"):
        imputed = prepare_missing(both, "", "mean", seed=0)
        build_model(load_config(None, [], model_name="vbpr"), imputed, torch.device("cpu"))
    lines = [r.getMessage() for r in caplog.records if "no content" in r.getMessage()]
    assert len(lines) == 1 and "1 item(s)" in lines[0] and "'i2'" in lines[0] and "imputed (mean)" in lines[0]
    assert out.missing_summary == {
        "drop_modality": "",
        "fill": "mask",
        "removed_modalities": [],
        "missing_items": {"visual": 2, "textual": 1},
        "items_without_content": 1,
    }


# ---- config keys and the CLI end to end -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("data.missing_fill=median", "data.missing_fill must be one of neighbours|mean|mask|zeros"),
        ("data.drop_modality=visual:2", "data.drop_modality"),
        ("data.drop_modality=visual", "data.drop_modality"),
    ],
)
def test_config_keys_are_validated(setting: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=message.split("|")[0]):
        load_config(None, [setting], model_name="mf")
    assert main(["-q", "train", "--model", "mf", "--set", setting]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_cli_drop_and_fill_end_to_end(tiny_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "drop"
    argv = ["-q", "train", "--model", "vbpr", "--data", str(tiny_folder), "--out", str(run), *FAST]
    assert main([*argv, "--set", "data.drop_modality=visual:0.3"]) == 0
    info = json.loads((run / "metrics.json").read_text())["missing_content"]
    assert info["drop_modality"] == "visual:0.3" and info["fill"] == "neighbours"
    assert info["missing_items"] == {"visual": 60, "textual": 0}  # 30% of 200 items
    # the same run seed drops the same items whatever the model: a second model is paired with the first
    cfg = load_config(
        None,
        ["data.drop_modality=visual:0.3", "data.missing_fill=mask"],
        model_name="lattice",
        data_path=str(tiny_folder),
    )
    from modalrec.data.source import dataset_from_config

    a = dataset_from_config(cfg.data, cfg.seed)
    assert int((~a.present("visual")).sum()) == 60
    zeros = tmp_path / "zeros"
    argv_z = ["-q", "train", "--model", "vbpr", "--data", str(tiny_folder), "--out", str(zeros), *FAST]
    assert main([*argv_z, "--set", "data.drop_modality=visual:0.3", "--set", "data.missing_fill=zeros"]) == 0
    info = json.loads((zeros / "metrics.json").read_text())["missing_content"]
    assert info["fill"] == "zeros" and info["missing_items"]["visual"] == 60  # counted before the zeros
    rec = Recommender.from_run(zeros)  # serving fills a new item's missing row as the run did: zeros
    feats = {"visual": np.ones((1, 16), np.float32), "textual": a.features["textual"][:1]}
    assert rec.missing_fill == "zeros"
    assert rec.add_items(["new"], feats, {"visual": np.array([False])}) == "zeros"
    want = rec.model.item_embeddings_from_features({**feats, "visual": np.zeros((1, 16), np.float32)})
    assert torch.allclose(rec.emb.items[-1], want[0], atol=1e-6)


def test_api_trainer_applies_the_settings_to_a_given_dataset(tiny: Dataset, tmp_path: Path) -> None:
    from modalrec.recommend import load_run
    from modalrec.train import train

    sets = ["data.drop_modality=textual:0.5", "train.epochs=1", "train.threads=1", "train.health_epochs=0"]
    cfg = load_config(None, [*sets, "train.progress=false"], model_name="vbpr")
    result = train(cfg, data=tiny, out=tmp_path / "run")
    assert result.metrics["missing_content"]["missing_items"] == {"visual": 0, "textual": 100}
    assert tiny.feature_masks == {}  # the caller's dataset is not changed
    _, data, _ = load_run(tmp_path / "run", data=tiny)  # replayed: the same items lack textual
    assert np.array_equal(data.present("textual"), result.data.present("textual"))


def test_cli_compare_with_drop(tiny_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    argv = ["-q", "compare", "--models", "mf,vbpr", "--seeds", "1", "--jobs", "1", "--data", str(tiny_folder)]
    assert main([*argv, "--out", str(out), *FAST, "--set", "data.drop_modality=visual:1.0"]) == 0
    info = json.loads((out / "runs" / "vbpr" / "seed0" / "metrics.json").read_text())["missing_content"]
    assert info["removed_modalities"] == ["visual"] and info["missing_items"] == {"textual": 0}


# ---- serving ----------------------------------------------------------------------------------------------------


class _MaskAwareLATTICE(LATTICE):
    """LATTICE that records the masks it is given (the keyword a mask-aware model accepts)."""

    name = "lattice"
    seen: dict[str, np.ndarray] | None = None

    def item_embeddings_from_features(  # type: ignore[override]
        self, features: dict[str, np.ndarray], present: dict[str, np.ndarray] | None = None
    ) -> torch.Tensor:
        type(self).seen = present
        return super().item_embeddings_from_features(features)


def _embed(
    rec: Recommender, features: dict[str, np.ndarray], present: dict[str, list[bool]]
) -> tuple[torch.Tensor, bool]:
    """The model's embedding of one item given in full (masks passed where the model takes them)."""
    embed: Any = rec.model.item_embeddings_from_features
    if "present" in inspect.signature(embed).parameters:
        return embed(features, present={k: np.array(v) for k, v in present.items()}), True
    return embed(features), False


@pytest.mark.parametrize("fill", ["mask", "neighbours", "zeros"])
def test_partial_item_is_filled_as_the_run_filled(tiny: Dataset, fill: str) -> None:
    cfg = load_config(None, [], model_name="lattice")
    torch.manual_seed(0)
    rec = Recommender(build_model(cfg, tiny, torch.device("cpu")), tiny, missing_fill=fill)
    text = tiny.features["textual"][:1]
    how = rec.add_items(
        ["p"], {"visual": np.ones((1, 16), np.float32), "textual": text}, {"visual": np.array([False])}
    )
    row = tiny.features["visual"].mean(axis=0, keepdims=True)
    if fill == "zeros":  # the model was trained on zero rows for missing items: it gets one, unmasked
        row = np.zeros_like(row)
    feats = {"visual": row, "textual": text}
    if fill == "mask":
        want, masked = _embed(rec, feats, {"visual": [False], "textual": [True]})
    else:  # imputed and zero rows were content in training: the model is not told
        want, masked = rec.model.item_embeddings_from_features(feats), False
    assert how == {"mask": "catalogue mean, masked" if masked else "catalogue mean"}.get(
        fill, "zeros" if fill == "zeros" else "catalogue mean"
    )
    assert torch.allclose(rec.emb.items[-1], want[0], atol=1e-5)
    with pytest.raises(Exception, match="no content in any modality"):
        rec.add_items(
            ["q"],
            {"visual": np.zeros((1, 16), np.float32), "textual": np.zeros((1, 12), np.float32)},
            {"visual": np.array([False]), "textual": np.array([False])},
        )


def test_mask_aware_model_is_given_the_masks(tiny: Dataset) -> None:
    cfg = load_config(None, [], model_name="lattice")
    model = _MaskAwareLATTICE(tiny, build_model(cfg, tiny, torch.device("cpu")).cfg)
    rec = Recommender(model, tiny, missing_fill="mask")
    feats = {"visual": np.zeros((2, 16), np.float32), "textual": tiny.features["textual"][:2]}
    how = rec.add_items(["a", "b"], feats, {"visual": np.array([True, False])})
    assert how == "catalogue mean, masked"
    assert _MaskAwareLATTICE.seen is not None
    assert _MaskAwareLATTICE.seen["visual"].tolist() == [True, False]
    assert _MaskAwareLATTICE.seen["textual"].tolist() == [True, True]


@pytest.mark.filterwarnings("ignore:Using `httpx`")
def test_service_accepts_partial_items(tiny: Dataset) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from modalrec.serving.app import create_app

    cfg = load_config(None, [], model_name="lattice")
    torch.manual_seed(0)
    rec = Recommender(build_model(cfg, tiny, torch.device("cpu")), tiny, missing_fill="mask")
    client = TestClient(create_app(rec))
    vis = tiny.features["visual"][0].tolist()
    txt = tiny.features["textual"][0].tolist()
    body = {
        "items": [
            {"id": "full", "features": {"visual": vis, "textual": txt}},
            {"id": "no-image", "features": {"visual": None, "textual": txt}},
            {"id": "no-text", "features": {"visual": vis}},
        ]
    }
    r = client.post("/items", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["missing"] == {"no-image": ["visual"], "no-text": ["textual"]}
    mean_vis = tiny.features["visual"].mean(axis=0, keepdims=True)
    feats = {"visual": mean_vis, "textual": np.array([txt], np.float32)}
    want, masked = _embed(rec, feats, {"visual": [False], "textual": [True]})
    assert r.json()["missing_fill"] == ("catalogue mean, masked" if masked else "catalogue mean")
    assert torch.allclose(rec.emb.items[-2], want[0], atol=1e-5)
    r = client.post("/items", json={"items": [{"id": "nothing", "features": {"visual": None}}]})
    assert r.status_code == 422 and "none of the modalities" in r.json()["detail"]


def test_dropping_every_modality_of_a_content_model_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = ["--set", "data.synthetic={n_users: 60, n_items: 40, n_interactions: 600}"]
    argv = [
        "-q",
        "train",
        "--model",
        "vbpr",
        "--data",
        "synthetic",
        *small,
        *FAST,
        "--out",
        str(tmp_path / "r"),
    ]
    assert main([*argv, "--set", "data.modalities=[visual]", "--set", "data.drop_modality=visual:1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "data.drop_modality=visual:1 removes every modality" in err[-1]
    assert not (tmp_path / "r").exists()


def test_a_dataset_never_changes_the_dicts_it_was_built_from(tiny: Dataset) -> None:
    import dataclasses

    data = _small()
    before_masks, before_feats = dict(data.feature_masks), dict(data.features)
    one = dataclasses.replace(data, features={"textual": data.features["textual"]}, feature_masks={})
    again = dataclasses.replace(data)  # shares nothing mutable with ``data``
    assert data.feature_masks.keys() == before_masks.keys() and data.features.keys() == before_feats.keys()
    assert one.modalities == ["textual"] and again.feature_masks.keys() == {"visual"}
    assert again.feature_masks is not data.feature_masks
