"""Data-parallel training: 2 CPU processes (torchrun, gloo) match one process with the same global batch."""

from __future__ import annotations

import csv
import itertools
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from modalrec.callbacks import Callback, TrainerView
from modalrec.checkpoint import load_checkpoint
from modalrec.cli import main
from modalrec.config import load_config
from modalrec.data import Dataset, save_dataset
from modalrec.distributed import shard_bounds
from modalrec.train import Trainer

# Global batch 999 on ~4,800 training pairs (uneven shards 500/499): 5 steps per epoch, 3 epochs, validation
# every epoch.
ARGS = [
    "--model", "lightgcn",
    "--set", "train.epochs=3",
    "--set", "train.batch_size=999",
    "--set", "train.threads=1",
    "--set", "train.patience=10",
    "--set", "eval.ks=[20]",
]  # fmt: skip
# Stated tolerance: replicas differ from one process only by the order of floating-point sums.
ATOL = 1e-5


class InterruptAt(Callback):
    """Raises KeyboardInterrupt when epoch ``epoch`` starts (as a kill would), leaving last.pt behind."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_start(self, trainer: TrainerView, epoch: int) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_shard_bounds_cover_the_batch() -> None:
    for n, world in ((10, 3), (2, 4), (1000, 2), (0, 2)):
        spans = [shard_bounds(n, r, world) for r in range(world)]
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
        assert max(h - lo for lo, h in spans) - min(h - lo for lo, h in spans) <= 1


def test_sync_callback_shards_and_weights(tiny: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank 1 of 2 trains on the second half of the batch; logged terms are weighted by n_r / N."""
    import modalrec.distributed as d
    from modalrec.data.sampling import Batch

    reduced: list[torch.Tensor] = []
    monkeypatch.setattr(d.dist, "all_reduce", lambda t: reduced.append(t.clone()))
    trainer: Any = SimpleNamespace(device=torch.device("cpu"))
    sync = d.DistributedSync(rank=1, world=2)
    mine = sync.on_batch(trainer, Batch(torch.arange(5), torch.arange(5), torch.arange(5)))
    assert mine.users.tolist() == [3, 4] and sync.weight == pytest.approx(2 / 5)
    terms = {"bpr": 2.0}
    sync.on_step_end(trainer, terms)
    assert reduced[-1].tolist() == [pytest.approx(2.0 * 2 / 5)]  # this rank's share of the global mean
    # a batch smaller than the world: the rank computes on it but contributes weight 0
    mine = sync.on_batch(trainer, Batch(torch.arange(1), torch.arange(1), torch.arange(1)))
    sync.on_step_end(trainer, {"bpr": 2.0})
    assert mine.users.tolist() == [0] and reduced[-1].tolist() == [0.0]


def _history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_two_processes_match_one(tiny: Dataset, tmp_path: Path) -> None:
    data = save_dataset(tiny, tmp_path / "tiny")
    single = tmp_path / "single"
    assert main(["-q", "train", "--data", str(data), "--out", str(single), *ARGS]) == 0

    ddp = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "modalrec", "-q", "train", "--data", str(data), "--out", str(ddp), *ARGS]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run folder:") == 1  # only rank 0 reports and writes

    a = load_checkpoint(single / "checkpoint.pt")
    b = load_checkpoint(ddp / "checkpoint.pt")
    assert a["epoch"] == b["epoch"]
    for key, value in a["state_dict"].items():
        assert torch.allclose(value, b["state_dict"][key], atol=ATOL), key
    for row_a, row_b in zip(_history(single), _history(ddp), strict=True):
        for key in ("loss_bpr", "loss_reg", "val_recall@20"):
            assert float(row_a[key]) == pytest.approx(float(row_b[key]), abs=ATOL), key
    assert not list(tmp_path.glob("ddp/last.pt"))

    # Resume: a single-process run interrupted after epoch 0, resumed by 2 ranks from its last.pt.
    overrides = [a for a in ARGS[2:] if a != "--set"]
    cfg = load_config(None, overrides, model_name="lightgcn", data_path=str(data))
    trainer = Trainer(cfg, out=tmp_path / "cut", callbacks=[InterruptAt(1)])
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert (tmp_path / "cut" / "last.pt").exists()
    cmd[cmd.index(str(ddp))] = str(tmp_path / "cut")
    proc = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    c = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert c["epoch"] == a["epoch"]
    for key, value in a["state_dict"].items():
        assert torch.allclose(value, c["state_dict"][key], atol=ATOL), key
