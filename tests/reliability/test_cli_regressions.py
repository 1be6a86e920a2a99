"""Regression tests for the hostile-user CLI review: every case ends in one ``error:`` line and exit code 2 (or a
correct result), never a traceback, a half-written file or a run folder that describes a run that did not happen.
"""

from __future__ import annotations

import json
import os
import resource
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from modalrec.cli import _without_ddp, main
from modalrec.data import Dataset, save_dataset

TRAIN = ["--set", "train.epochs=1", "--set", "train.batch_size=1024", "--set", "train.threads=1"]
TRAIN += ["--set", "eval.ks=[10,20]", "--set", "train.progress=false"]


@pytest.fixture(scope="module")
def folder(tiny: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_dataset(tiny, tmp_path_factory.mktemp("data") / "tiny")


@pytest.fixture(scope="module")
def finished(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished LightGCN run (one epoch)."""
    run = tmp_path_factory.mktemp("runs") / "lgcn"
    assert main(["-q", "train", "--model", "lightgcn", "--data", str(folder), "--out", str(run), *TRAIN]) == 0
    return run


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def fails_cleanly(argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    """main(argv) exits 2 with exactly one ``error:`` line holding every needle, and no traceback."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    assert "Traceback" not in err
    assert sum(line.startswith("error:") or ": error:" in line for line in err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


# ---- tracebacks that are now one line ------------------------------------------------------------------------


def test_unreadable_folder(
    folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import modalrec.data.io as io_mod

    def denied(path: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(io_mod.os, "scandir", denied)  # running as root, chmod 000 would not stop a read
    fails_cleanly(["data", "stats", str(folder)], capsys, "cannot be read", "Permission denied")


def test_symlink_loop_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    fails_cleanly(["data", "validate", str(tmp_path / "a")], capsys, "symlink loop")


@pytest.mark.parametrize(
    "argv, needle",
    [
        (
            ["data", "split", "{folder}", "--out", "{tmp}/s", "--ratios", "foo,0.1,0.1"],
            "--ratios needs three",
        ),
        (["data", "split", "{folder}", "--out", "{tmp}/s", "--ratios", "0.8,0.1"], "--ratios needs three"),
        (["data", "split", "{folder}", "--out", "{tmp}/s", "--seed", "-1"], "--seed"),
        (["data", "synth", "--out", "{tmp}/s", "--seed", str(2**32)], "--seed"),
        (["train", "--model", "mf", "--seed", "-1"], "--seed"),
        (["train", "--model", "mf", "--seed", str(2**32)], "--seed"),
        (["train", "--model", "mf", "--set", f"seed={2**40}"], "seed must be an integer in [0, 4294967296)"),
        (["data", "synth", "--out", "{tmp}/s", "--users", "0"], "--users must be an integer in [2, "),
        (["data", "synth", "--out", "{tmp}/s", "--users", "-5"], "--users must be"),
        (["data", "synth", "--out", "{tmp}/s", "--items", "0"], "--items must be an integer in [10, "),
        (
            ["train", "--model", "lightgcn", "--set", "model.n_layers=-1"],
            "model.n_layers must be an integer >= 0",
        ),
        (["train", "--model", "mf", "--set", "model.embed_dim=0"], "model.embed_dim must be an integer >= 1"),
        (["train", "--model", "mf", "--set", "train.threads=-3"], "train.threads must be an integer in [0, "),
        (
            ["train", "--model", "mf", "--set", "eval.chunk_size=-1"],
            "eval.chunk_size must be an integer >= 0",
        ),
        (["train", "--model", "mf", "--set", "eval.group_bins=[8,4]"], "eval.group_bins must be"),
        (["train", "--model", "mf", "--set", "eval.group_bins=[-1,4]"], "eval.group_bins must be"),
        (["train", "--model", "mf", "--set", "eval.metric=recall@abc"], "eval.metric must look like"),
        (["train", "--model", "mf", "--set", "eval.metric=recall@20.5"], "eval.metric must look like"),
        (
            ["train", "--model", "sgl", "--set", "model.ratio=1.5"],
            "model.ratio must be a finite number in [0, 1)",
        ),
        (["train", "--model", "mf", "--set", "train.ema=.nan"], "train.ema must be"),
        (["serve", "--run", "{tmp}", "--port", "99999"], "--port"),
        (["serve", "--run", "{tmp}", "--port", "-1"], "--port"),
        (["compare", "--models", "mf", "--jobs", "-3"], "--jobs"),
        (["train", "--model", "lightgcn", "--ddp=-1"], "--ddp"),
        (["train", "--model", "mf", "--set", "train.lr=" + "[" * 3000 + "]" * 3000], "nested too deeply"),
    ],
)
def test_bad_values_are_one_line(
    argv: list[str], needle: str, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.replace("{folder}", str(folder)).replace("{tmp}", str(tmp_path)) for a in argv]
    fails_cleanly([*argv, "--out", str(tmp_path / "run")] if argv[0] == "train" else argv, capsys, needle)
    assert not (tmp_path / "run").exists() and not (tmp_path / "s").exists()  # no stub run folder or dataset


def test_outputs_at_or_under_a_file(
    folder: Path, finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "file"
    file.write_text("keep")
    for out in (file, file / "sub"):
        fails_cleanly(["data", "convert", str(folder), "--out", str(out)], capsys, str(file))
        fails_cleanly(["export", "--run", str(finished), "--out", str(out / "e.npz")], capsys, str(file))
        fails_cleanly(
            ["train", "--model", "mf", "--data", str(folder), "--out", str(out), *TRAIN], capsys, str(file)
        )
    assert file.read_text() == "keep"


def _alias_bomb(levels: int = 9) -> str:
    """A YAML "billion laughs": 9 levels of 9 aliases expand to 9**9 values if anything walks the whole value."""
    parts = ["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    parts += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "train: {patience: [" + ", ".join(parts) + "]}\n"


ALIAS_BOMB = _alias_bomb()


@pytest.mark.parametrize(
    "text, needle",
    [
        ("a: " + "[" * 5000 + "]" * 5000, "nested too deeply"),
        ("data:\n", None),  # an empty section is an empty mapping: accepted (then the data flag fills it)
        ("eval: 5\n", "'eval' must be a mapping"),
        ("model: [lightgcn]\n", "'model' must be a mapping"),
        ("train: {epochs: [1,\n", "malformed YAML"),
        (ALIAS_BOMB, "train.patience: expected an integer"),
    ],
)  # fmt: skip
def test_config_files(
    text: str, needle: str | None, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    argv = [
        "-q",
        "train",
        "--config",
        str(cfg),
        "--model",
        "mf",
        "--protocol",
        "paper",
        "--data",
        str(folder),
    ]
    argv += ["--out", str(tmp_path / "run"), *TRAIN]
    if needle is None:
        assert main(argv) == 0
        return
    err = fails_cleanly(argv, capsys, needle)
    assert len(err) < 1200  # an alias-expanded value is cut, not printed in full
    assert not (tmp_path / "run").exists()


def test_binary_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(bytes(range(128, 256)) * 4)
    fails_cleanly(["train", "--config", str(cfg), "--model", "mf"], capsys, "not a UTF-8 text file")


def test_foreign_checkpoints(finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "foreign"
    run.mkdir()
    torch.save({"state_dict": {"w": torch.zeros(2)}}, run / "checkpoint.pt")
    for argv in (["evaluate", "--run", str(run)], ["recommend", "--run", str(run), "--user", "u"]):
        fails_cleanly(argv, capsys, "not a modalrec run checkpoint")
    fails_cleanly(["export", "--run", str(run)], capsys, "not a modalrec run checkpoint")
    payload = torch.load(finished / "checkpoint.pt", weights_only=True)
    torch.save({**payload, "n_users": "many"}, run / "checkpoint.pt")
    fails_cleanly(["evaluate", "--run", str(run)], capsys, "'n_users' has type str")


def test_huge_synthetic_run_is_checked_before_allocating(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = torch.load(finished / "checkpoint.pt", weights_only=True)
    big = {"n_users": 200_000, "n_items": 100_000, "n_interactions": 1_000_000}
    payload["config"] = {**payload["config"], "data": {**payload["config"]["data"], "path": "synthetic"}}
    payload["config"]["data"]["synthetic"] = big
    run = tmp_path / "big"
    run.mkdir()
    torch.save(payload, run / "checkpoint.pt")
    fails_cleanly(
        ["recommend", "--run", str(run), "--user", "0"], capsys, "asks for synthetic data of 200000"
    )
    payload.update(n_users=200_000, n_items=100_000, user_ids=["0"] * 200_000, item_ids=["0"] * 100_000)
    torch.save(payload, run / "checkpoint.pt")
    monkeypatch.setenv("MODALREC_MEMORY_BUDGET", "64M")
    fails_cleanly(["recommend", "--run", str(run), "--user", "0"], capsys, "more than the memory budget")


def test_resume_with_damaged_files(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    args = [
        "train",
        "--model",
        "lightgcn",
        "--data",
        cfg["data"]["path"],
        "--out",
        str(run),
        "--resume",
        *TRAIN,
    ]
    (run / "metrics.json").write_text('{"model": "lightgcn", "te')
    fails_cleanly(args, capsys, "metrics.json: unreadable")
    (run / "metrics.json").unlink()
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    torch.save({k: v for k, v in payload.items() if k != "optimizers"}, run / "last.pt")
    fails_cleanly(args, capsys, "lacks ['optimizers', ")
    torch.save({**payload, "optimizers": [], "schedulers": [], "best_score": 0.0, "best_epoch": 0, "bad": 0,
                "history": "[]"}, run / "last.pt")  # fmt: skip
    fails_cleanly(args, capsys, "holds 0 optimiser states, the model has 1")


def test_write_failure_keeps_previous_files(
    folder: Path, finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file size limit (like a full disk): one line, exit 2, the previous export and dataset intact."""
    export = tmp_path / "e.npz"
    assert main(["-q", "export", "--run", str(finished), "--out", str(export)]) == 0
    before = export.read_bytes()
    conv = tmp_path / "conv"
    assert main(["-q", "data", "convert", str(folder), "--out", str(conv)]) == 0
    conv_before = snapshot(conv)
    capsys.readouterr()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    run = tmp_path / "run"
    try:
        code_export = main(["-q", "export", "--run", str(finished), "--out", str(export)])
        code_convert = main(["-q", "data", "convert", str(folder), "--out", str(conv), "--overwrite"])
        code_train = main(["-q", "train", "--model", "mf", "--data", str(folder), "--out", str(run), *TRAIN])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    err = capsys.readouterr().err
    assert (code_export, code_convert, code_train) == (2, 2, 2) and "Traceback" not in err, err
    assert err.count("error:") == 3 and err.count("EFBIG") == 3
    assert not [
        p for p in run.iterdir() if p.name.startswith(".")
    ]  # the failed checkpoint write left no temp file
    assert export.read_bytes() == before and snapshot(conv) == conv_before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


# ---- wrong results with exit 0 --------------------------------------------------------------------------------


def test_finished_run_is_not_overwritten_and_resume_must_match(
    folder: Path, finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(finished)
    base = ["train", "--data", str(folder), "--out", str(finished), *TRAIN]
    fails_cleanly(["-q", *base, "--model", "lightgcn"], capsys, "holds a finished run; pass --overwrite")
    fails_cleanly(["-q", *base, "--model", "mf", "--resume"], capsys, "model.name: 'lightgcn' -> 'mf'")
    fails_cleanly(
        ["-q", *base, "--model", "lightgcn", "--resume", "--set", "train.lr=0.05"], capsys, "train.lr"
    )
    fails_cleanly(["-q", *base, "--model", "lightgcn", "--resume", "--seed", "5"], capsys, "seed: 0 -> 5")
    assert snapshot(finished) == before  # config.yaml included: nothing rewritten by refused attempts
    assert main(["-q", *base, "--model", "lightgcn", "--resume"]) == 0  # same settings: re-reported
    # the stopping rule may change (documented: `--resume --set train.epochs=N` extends a stopped run)
    assert main(["-q", *base, "--model", "lightgcn", "--resume", "--set", "train.epochs=3"]) == 0
    after = snapshot(finished)
    assert after.pop("log.txt").startswith(
        before.pop("log.txt")
    )  # the re-report is logged, nothing else changes
    assert after == before


def test_overwrite_replaces_run_and_files_are_0644(folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["-q", "train", "--model", "mf", "--data", str(folder), "--out", str(run), *TRAIN]) == 0
    argv = [
        "-q",
        "train",
        "--model",
        "lightgcn",
        "--data",
        str(folder),
        "--out",
        str(run),
        "--overwrite",
        *TRAIN,
    ]
    assert main(argv) == 0
    assert json.loads((run / "metrics.json").read_text())["model"] == "lightgcn"
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["name"] == "lightgcn"
    mask = os.umask(0)
    os.umask(mask)
    for p in run.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask, p


def test_metrics_json_is_strict_json_with_an_empty_group(folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = ["-q", "train", "--model", "mf", "--data", str(folder), "--out", str(run), *TRAIN]
    assert main([*argv, "--set", "eval.group_bins=[0,100000]"]) == 0

    def refuse(name: str) -> None:
        raise AssertionError(f"bare {name} in metrics.json")

    metrics = json.loads((run / "metrics.json").read_text(), parse_constant=refuse)
    empty = metrics["test_groups"][-1]
    assert empty["users"] == 0 and empty["recall@20"] is None


def test_stray_dot_npy_is_not_a_modality(tiny: Dataset, tmp_path: Path) -> None:
    from modalrec.data import load_dataset

    out = save_dataset(tiny, tmp_path / "d")
    np.save(out / ".npy", np.ones((tiny.n_items, 2), dtype=np.float32))
    assert sorted(load_dataset(out).features) == ["textual", "visual"]


@pytest.mark.parametrize("raw", ["1_0", "١٠", "+ 1", "1e1"])
def test_mmrec_item_ids_must_be_plain_digits(
    raw: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        "userID\titemID\tx_label",
        "u1\t0\t0",
        "u1\t1\t1",
        "u1\t2\t2",
        f"u2\t{raw}\t0",
        "u2\t3\t1",
        "u2\t4\t2",
    ]
    (tmp_path / "d.inter").write_text("\n".join(rows) + "\n", encoding="utf-8")
    fails_cleanly(["data", "validate", str(tmp_path)], capsys, "line 5", "plain integers")


def test_split_overlap_names_file_line_and_raw_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    split = tmp_path / "split"
    split.mkdir()
    (split / "train.csv").write_text("user,item\nalice,book\nbob,pen\n")
    (split / "val.csv").write_text("user,item\nbob,book\n")
    (split / "test.csv").write_text("user,item\nalice,pen\nbob,pen\n")
    fails_cleanly(["data", "validate", str(tmp_path)], capsys, "test.csv, line 3", "user 'bob', item 'pen'")


def test_users_without_training_rows_are_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from modalrec.data.io import load_dataset
    from modalrec.data.source import warn_cold_users

    split = tmp_path / "split"
    split.mkdir()
    (split / "train.csv").write_text("user,item\nalice,book\nbob,pen\n")
    (split / "val.csv").write_text("user,item\nbob,book\n")
    (split / "test.csv").write_text("user,item\ncarol,pen\n")
    with caplog.at_level("WARNING"):
        assert warn_cold_users(load_dataset(tmp_path)) == 1
    assert "1 user(s)" in caplog.text and "'carol'" in caplog.text


def test_synth_smallest_sizes_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s"
    assert (
        main(
            ["-q", "data", "synth", "--out", str(out), "--users", "2", "--items", "10", "--interactions", "1"]
        )
        == 0
    )
    assert main(["data", "validate", str(out)]) == 0


def test_ddp_equals_form_is_parsed() -> None:
    assert _without_ddp(["--model", "mf", "--ddp=2", "--seed", "1"]) == ["--model", "mf", "--seed", "1"]
    assert _without_ddp(["--ddp", "2", "--model", "mf"]) == ["--model", "mf"]


def test_busy_port_is_one_line(finished: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("uvicorn")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        fails_cleanly(
            ["serve", "--run", str(finished), "--port", str(port)],
            capsys,
            f"cannot listen on 127.0.0.1:{port}",
        )


# ---- the service never answers 500 -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, body",
    [
        ("/recommend", '{"users": ["{u}"], "k": 1e400}'),
        ("/recommend", '{"users": ["{u}"], "k": NaN}'),
        ("/recommend", '{"users": ["{u}"], "k": Infinity}'),
        ("/recommend", '{"users": ["{u}"], "k": -Infinity}'),
        ("/recommend", '{"users": ["{u}"], "exclude_seen": NaN}'),
        ("/items", '{"items": [{"id": "n1", "features": {"visual": [Infinity], "textual": [1e400]}}]}'),
        ("/items", '{"items": [{"id": NaN, "features": {}}]}'),
    ],
)
def test_non_finite_json_is_422(path: str, body: str, tiny: Dataset) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from modalrec.config import load_config
    from modalrec.recommend import Recommender
    from modalrec.serving.app import create_app
    from modalrec.train import build_model

    cfg = load_config(None, [], model_name="vbpr")
    rec = Recommender(build_model(cfg, tiny, torch.device("cpu")), tiny)
    with TestClient(create_app(rec)) as client:
        reply = client.post(path, content=body.replace("{u}", str(tiny.user_ids[0])),
                            headers={"content-type": "application/json"})  # fmt: skip
        assert reply.status_code == 422, reply.text
        assert "detail" in reply.json()
        assert client.get("/health").status_code == 200  # the same connection still serves


def test_duplicate_item_is_409_by_type(tiny: Dataset) -> None:
    from modalrec.config import load_config
    from modalrec.errors import ModalrecError
    from modalrec.recommend import DuplicateIdError, Recommender
    from modalrec.train import build_model

    rec = Recommender(build_model(load_config(None, [], model_name="vbpr"), tiny, torch.device("cpu")), tiny)
    feats = {m: np.zeros((1, tiny.features[m].shape[1]), np.float32) for m in tiny.modalities}
    with pytest.raises(DuplicateIdError):
        rec.add_items([str(tiny.item_ids[0])], feats)
    with pytest.raises(ModalrecError) as info:
        rec.add_items(["x", "x"], {m: np.zeros((2, tiny.features[m].shape[1]), np.float32) for m in feats})
    assert not isinstance(info.value, DuplicateIdError)  # a malformed request (422), not a conflict
