"""Data-parallel training on ``torch.distributed``: ``torchrun --nproc_per_node N -m modalrec train ...``.

How it works (all ranks run the same ``Trainer``; ``Trainer.fit`` calls ``maybe_distribute`` first, which does
nothing unless the process was started by torchrun with ``WORLD_SIZE > 1``):

* every rank builds the same model from the run seed (rank 0's weights are broadcast once to be sure), draws the
  same global BPR batch from the same seeded sampler and keeps its contiguous shard of it (``batch_size`` is the
  global batch);
* after backward, each optimiser's gradients are all-reduced before its step: the sum over ranks of
  ``(n_r / N) * grad_r``, which is exactly the gradient of the global batch for losses that are means over the
  batch (BPR, the batch-normalised L2 terms) or do not depend on it (weight decay). The same optimiser state on
  every rank keeps the replicas identical. This is DDP's gradient all-reduce done at the optimiser (a step
  pre-hook), because models own their ``train_step`` and call their own ``forward``: wrapping them in
  ``DistributedDataParallel`` would bypass it;
* the full-graph propagation (``forward``) is **replicated** on every rank: each rank holds the whole model,
  graphs and features and computes all user/item embeddings each step. Data parallelism divides the loss and
  backward work over the batch, not the propagation;
* rank 0 evaluates (the others receive its result, so early stopping agrees) and writes the run folder; the other
  ranks write nothing and print nothing to stdout (errors still reach stderr). ``--resume`` works on all
  ranks: they read rank 0's ``last.pt`` (the run folder must be on a file system all ranks see);
* logged loss terms are the global-batch values (shard values weighted by ``n_r / N`` and summed).

Deviations from a single process with the same global batch: ``train.grad_clip`` clips each rank's shard
gradient before the all-reduce (not the global one); losses that contrast within the batch (in-batch negatives)
see only the rank's shard; floating-point sums run in another order (differences ~1e-6 per step).

Backend: gloo on CPU, nccl when the run's device is CUDA (each rank uses ``cuda:LOCAL_RANK``; untested here).
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from modalrec.data.sampling import Batch
from modalrec.optim import Adam

log = logging.getLogger("modalrec.distributed")


def env_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the torchrun environment; (0, 1, 0) outside it."""
    return (
        int(os.environ.get("RANK", "0")),
        int(os.environ.get("WORLD_SIZE", "1")),
        int(os.environ.get("LOCAL_RANK", "0")),
    )


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """[lo, hi) of rank's contiguous shard of n items (sizes differ by at most one)."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


class _State:
    def __init__(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world
        self.weight = 1.0 / world  # n_r / N of the current step


def _allreduce_grads(opt: Adam, state: _State) -> None:
    """Replace each parameter's gradient by sum_r (n_r / N) grad_r (params with no grad on any rank stay None)."""
    params = [p for group in opt.param_groups for p in group["params"]]
    if not params:
        return
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32)
    dist.all_reduce(has)
    live = [p for p, h in zip(params, has.tolist(), strict=True) if h > 0]
    if not live:
        return
    grads = []
    for p in live:
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        if g.is_sparse:
            g = g.to_dense()
        grads.append(g.reshape(-1) * state.weight)
    flat = torch.cat(grads)
    dist.all_reduce(flat)
    offset = 0
    for p in live:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def _wrap_train_step(model: Any, state: _State) -> None:
    inner = model.train_step

    def train_step(batch: Batch, optimizers: list[Adam], grad_clip: float | None = None) -> dict[str, float]:
        n = len(batch.users)
        lo, hi = shard_bounds(n, state.rank, state.world)
        if hi > lo:
            state.weight = (hi - lo) / n
            mine = Batch(batch.users[lo:hi], batch.pos[lo:hi], batch.neg[lo:hi])
        else:  # fewer triples than ranks: compute on the whole batch, contribute nothing
            state.weight, mine = 0.0, batch
        terms = inner(mine, optimizers, grad_clip)
        keys = list(terms)
        vals = torch.tensor([state.weight * terms[k] for k in keys], dtype=torch.float64)
        dist.all_reduce(vals)
        return dict(zip(keys, vals.tolist(), strict=True))

    model.train_step = train_step


def _wrap_configure_optimizers(model: Any, state: _State) -> None:
    inner = model.configure_optimizers

    def configure_optimizers(settings: Any) -> list[Adam]:
        optimizers = inner(settings)
        for opt in optimizers:
            opt.register_step_pre_hook(lambda o, args, kwargs: _allreduce_grads(o, state))
        return list(optimizers)

    model.configure_optimizers = configure_optimizers


def maybe_distribute(trainer: Any) -> bool:
    """Turn ``trainer`` into one rank of a data-parallel run when launched by torchrun; False otherwise.

    Called at the start of ``Trainer.fit``. Initialises the process group (gloo on CPU, nccl on CUDA) unless it
    already exists, and patches this trainer (and, in this process, ``modalrec.train``'s ``evaluate`` /
    checkpoint writers) until ``fit`` ends.
    """
    rank, world, local_rank = env_world()
    if world <= 1 and not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return False
    # modalrec.train the module (the package's ``train`` attribute is the function of that name)
    train_mod: Any = importlib.import_module("modalrec.train")

    created = False
    if not dist.is_initialized():
        backend = "nccl" if trainer.device.type == "cuda" else "gloo"
        dist.init_process_group(backend)
        created = True
    rank, world = dist.get_rank(), dist.get_world_size()
    if trainer.device.type == "cuda":  # pragma: no cover - no GPU here
        torch.cuda.set_device(local_rank)
        trainer.device = torch.device(f"cuda:{local_rank}")
        trainer.model.to(trainer.device)
    if trainer.cfg.train.grad_clip:
        log.warning("distributed: train.grad_clip clips each rank's shard gradient before the all-reduce")
    state = _State(rank, world)
    model = trainer.model
    with torch.no_grad():
        for tensor in model.state_dict().values():
            dense = not tensor.is_sparse and tensor.layout == torch.strided
            if dense and (
                tensor.is_floating_point() or tensor.dtype in (torch.int64, torch.int32, torch.bool)
            ):
                dist.broadcast(tensor, 0)
    _wrap_train_step(model, state)
    _wrap_configure_optimizers(model, state)

    originals: dict[str, Any] = {"evaluate": train_mod.evaluate}
    orig_evaluate = train_mod.evaluate

    def evaluate(*args: Any, **kwargs: Any) -> Any:
        box = [orig_evaluate(*args, **kwargs) if rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    train_mod.evaluate = evaluate
    private: Path | None = None
    if rank != 0:
        originals["save_checkpoint"] = train_mod.save_checkpoint
        originals["atomic_write_text"] = train_mod.atomic_write_text
        train_mod.save_checkpoint = lambda *a, **k: None
        train_mod.atomic_write_text = lambda *a, **k: None
        if trainer.out is not None:
            # Ranks > 0 read rank 0's files (resume) from a private copy and write nothing.
            private = Path(tempfile.mkdtemp(prefix=f"modalrec-rank{rank}-"))
            for name in ("last.pt", "checkpoint.pt", "metrics.json"):
                if trainer.resume and (trainer.out / name).exists():
                    shutil.copy2(trainer.out / name, private / name)
            trainer.out = private
        trainer._start_logging = lambda: None
        trainer._write_outputs = lambda metrics: None
        logging.getLogger("modalrec.train").setLevel(logging.WARNING)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the CLI's report comes from rank 0 only
    inner_stop = trainer._stop_logging

    def stop_logging() -> None:
        try:
            inner_stop()
        finally:
            for name, fn in originals.items():
                setattr(train_mod, name, fn)
            if private is not None:
                shutil.rmtree(private, ignore_errors=True)
            if created:
                dist.destroy_process_group()

    trainer._stop_logging = stop_logging
    log.info(
        "distributed: rank %d of %d (%s)", rank, world, dist.get_backend() if created else "existing group"
    )
    return True


def launch(nproc: int, train_args: Sequence[str]) -> int:
    """Run ``modalrec train <train_args>`` on ``nproc`` local processes through torchrun (``--standalone``)."""
    from torch.distributed.run import main as torchrun_main

    if nproc < 1:
        raise ValueError("nproc must be at least 1")
    torchrun_main(["--standalone", "--nproc_per_node", str(nproc), "-m", "modalrec", "train", *train_args])
    return 0


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m modalrec.distributed --nproc N <modalrec train arguments>``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m modalrec.distributed", description=launch.__doc__)
    parser.add_argument("--nproc", type=int, default=2, help="processes on this machine")
    args, rest = parser.parse_known_args(argv)
    return launch(args.nproc, rest)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main())
