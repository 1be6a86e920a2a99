"""Does MMSSL's adversarial part act? Train a few steps and print the critic diagnostics for several settings.

Usage (from the repository root; the data folder is any dataset with item features, e.g. the Tiktok split):
    .venv/bin/python benchmarks/mmssl_adversarial_probe.py --data PATH/tiktok --steps 30 \
        '{}' '{"d_norm": "joint_batch"}' '{"d_norm": "layer"}'

Each positional argument is a JSON object of ``MMSSL.Config`` overrides applied on top of the Tiktok config's
model settings (``configs/tiktok/mmssl.yaml``). Every setting starts from seed 0 and sees the same batches. Every
``steps / 3`` steps the script prints the step's loss terms, the process CPU seconds per step (robust to a busy
machine) and :meth:`MMSSL.epoch_diagnostics` (critic gap, Wasserstein estimate, L_G/BPR gradient ratio, Gumbel
share, new Eq. 8 edges) computed on the model's fixed probe batch.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

from modalrec.data import load_dataset
from modalrec.data.sampling import BPRSampler
from modalrec.models.base import TrainSettings
from modalrec.models.mmssl import MMSSL

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiktok" / "mmssl.yaml"


def probe(data_path: str, steps: int, overrides: dict[str, object]) -> None:
    """Train ``steps`` MMSSL batches with ``overrides`` and print the diagnostics three times."""
    data = load_dataset(data_path)
    settings = {k: v for k, v in yaml.safe_load(CONFIG.read_text())["model"].items() if k != "name"}
    settings.update(overrides)
    torch.manual_seed(0)
    model = MMSSL(data, MMSSL.Config(**settings))  # type: ignore[arg-type]
    opts = model.configure_optimizers(TrainSettings())
    model.train()
    model.on_epoch_start(0)
    batches = iter(BPRSampler(data.train, 1024, seed=0, mode="users").epoch(0))
    step_cpu = 0.0  # process CPU seconds of the training steps alone (the diagnostics are not counted)
    for step in range(1, steps + 1):
        tic = time.process_time()
        terms = model.train_step(next(batches), opts)
        step_cpu += time.process_time() - tic
        if step % max(1, steps // 3) == 0:
            cpu = step_cpu / step
            diag = model.epoch_diagnostics()
            print(
                json.dumps(overrides),
                f"step {step} cpu/step {cpu:.2f}s",
                " ".join(f"{k}={v:.4f}" for k, v in terms.items()),
                "|",
                " ".join(f"{k}={v:.4f}" for k, v in diag.items()),
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="dataset folder with item features")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("settings", nargs="*", default=["{}"], help="JSON objects of MMSSL.Config overrides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for spec in args.settings:
        probe(args.data, args.steps, json.loads(spec))


if __name__ == "__main__":
    main()
