"""Atomic output and resume: a training process killed with SIGKILL leaves loadable checkpoints, and
``--resume`` finishes it with exactly the metrics of an uninterrupted run (fixed seed, CPU, 1 thread)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modalrec.checkpoint import load_checkpoint

EPOCHS = 6
ARGS = [
    "-q",
    "train",
    "--model",
    "lightgcn",
    "--data",
    "synthetic",
    "--device",
    "cpu",
    "--seed",
    "3",
    "--set",
    "data.synthetic.n_users=300",
    "--set",
    "data.synthetic.n_items=200",
    "--set",
    "data.synthetic.n_interactions=6000",
    "--set",
    "data.synthetic.modality_dims={}",
    "--set",
    f"train.epochs={EPOCHS}",
    "--set",
    "train.batch_size=128",
    "--set",
    "train.patience=100",
    "--set",
    "train.threads=1",
    "--set",
    "eval.ks=[10,20]",
    "--set",
    "model.n_layers=2",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def start(out: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "modalrec", *ARGS, "--out", str(out), *extra],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def epochs_logged(out: Path) -> int:
    log = out / "log.txt"
    if not log.exists():
        return 0
    return len(re.findall(r"^\S+ \S+ epoch\s+\d+", log.read_text(), flags=re.M))


def kill_after_epochs(out: Path, n_epochs: int, extra_delay: float, timeout: float = 240.0) -> int:
    """Start a run, SIGKILL it ``extra_delay`` s after ``n_epochs`` epochs were logged; return epochs logged."""
    proc = start(out)
    deadline = time.monotonic() + timeout
    try:
        while epochs_logged(out) < n_epochs:
            if proc.poll() is not None:
                pytest.fail(f"training ended before it could be killed: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                pytest.fail("training too slow to reach the kill point")
            time.sleep(0.02)
        time.sleep(extra_delay)
        assert proc.poll() is None, "training finished before the kill; make the run longer"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return epochs_logged(out)


def finish(out: Path, *extra: str) -> dict[str, object]:
    proc = start(out, *extra)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    metrics: dict[str, object] = json.loads((out / "metrics.json").read_text())
    return metrics


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    return finish(tmp_path_factory.mktemp("full") / "run")


def test_sigkill_leaves_loadable_checkpoints(tmp_path: Path) -> None:
    """Kill at several moments (right after an epoch line, i.e. around the checkpoint writes, and mid-epoch):
    checkpoint.pt and last.pt always load with weights_only=True; no partially written file takes their place."""
    for i, delay in enumerate((0.0, 0.1)):
        out = tmp_path / f"run{i}"
        logged = kill_after_epochs(out, 1 + i % 2, delay)
        assert not (out / "metrics.json").exists()
        best = load_checkpoint(out / "checkpoint.pt")
        # ``logged`` is read after the kill: the epoch being finished may have written its checkpoints before
        # its log line reached log.txt, so a checkpoint can be one epoch ahead of the lines (epoch == logged).
        assert best["model"] == "lightgcn" and best["epoch"] <= logged
        last_path = out / "last.pt"
        if last_path.exists():  # the kill may land before the first last.pt rename
            last = load_checkpoint(last_path)
            assert last["epoch"] <= logged and len(json.loads(last["history"])) == last["epoch"] + 1
        for leftover in out.glob(".*.pt.*"):  # temp files of an interrupted write are never the real name
            assert not leftover.name.endswith(".pt")


def test_resume_after_sigkill_matches_uninterrupted(tmp_path: Path, uninterrupted: dict[str, object]) -> None:
    """SIGKILL mid-epoch, restart with --resume: finishes, and the test metrics equal the uninterrupted run's."""
    out = tmp_path / "run"
    logged = kill_after_epochs(out, 2, 0.05)
    assert 2 <= logged < EPOCHS
    assert load_checkpoint(out / "last.pt")["epoch"] >= 1
    resumed = finish(out, "--resume")
    assert resumed["epochs_run"] == uninterrupted["epochs_run"] == EPOCHS
    assert resumed["best_epoch"] == uninterrupted["best_epoch"]
    assert resumed["test"] == uninterrupted["test"]
    assert resumed["valid"] == uninterrupted["valid"]
    assert not (out / "last.pt").exists(), "last.pt is removed once the run finished"
    # the resumed log shows it did continue rather than restart
    assert "resumed from" in (out / "log.txt").read_text()
