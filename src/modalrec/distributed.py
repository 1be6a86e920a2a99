"""Data-parallel training on ``torch.distributed``: ``torchrun --nproc_per_node N -m modalrec train ...``.

How it works (all ranks run the same ``Trainer``; when the process was started by torchrun with
``WORLD_SIZE > 1`` the Trainer adds the :class:`DistributedSync` callback and lets only rank 0 log and write):

* every rank builds the same model from the run seed (rank 0's weights are broadcast once to be sure), draws the
  same global BPR batch from the same seeded sampler and keeps its contiguous shard of it (``batch_size`` is the
  global batch);
* after backward, each optimiser's gradients are all-reduced before its step: the sum over ranks of
  ``(n_r / N) * grad_r``, which is exactly the gradient of the global batch for losses that are means over the
  batch (BPR, the batch-normalised L2 terms) or do not depend on it (weight decay). The same optimiser state on
  every rank keeps the replicas identical. This is DDP's gradient all-reduce done at the optimiser (a step
  pre-hook, registered with torch's ``Optimizer.register_step_pre_hook``), because models own their
  ``train_step`` and call their own ``forward``: wrapping them in ``DistributedDataParallel`` would bypass it;
* the full-graph propagation (``forward``) is **replicated** on every rank: each rank holds the whole model,
  graphs and features and computes all user/item embeddings each step. Data parallelism divides the loss and
  backward work over the batch, not the propagation;
* rank 0 evaluates (the others receive its result, so early stopping agrees) and writes the run folder; the other
  ranks run without the logging and run-folder callbacks, so they write nothing (their ``RunResult`` has
  ``primary=False``, and the command line prints its report on rank 0 only; errors still reach stderr).
  ``--resume`` works on all ranks: they read rank 0's ``last.pt`` (the run folder must be on a file system all
  ranks see);
* logged loss terms are the global-batch values (shard values weighted by ``n_r / N`` and summed).

Deviations from a single process with the same global batch: ``train.grad_clip`` clips each rank's shard
gradient before the all-reduce (not the global one); losses that contrast within the batch (in-batch negatives)
see only the rank's shard; floating-point sums run in another order (differences ~1e-6 per step).

Backend: gloo on CPU, nccl when the run's device is CUDA (each rank uses ``cuda:LOCAL_RANK``; untested here).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist

from modalrec.callbacks import Callback, Metrics, RunResult, TrainerView
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


def world_of_this_process() -> tuple[int, int, int]:
    """(rank, world size, local rank): an existing process group's, else torchrun's environment's."""
    rank, world, local_rank = env_world()
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), local_rank
    return rank, world, local_rank


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """[lo, hi) of rank's contiguous shard of n items (sizes differ by at most one)."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def allreduce_grads(opt: Adam, weight: float) -> None:
    """Replace each parameter's gradient by sum_r w_r grad_r (params with no grad on any rank stay None)."""
    params = [p for group in opt.param_groups for p in group["params"]]
    if not params:
        return
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=params[0].device)
    dist.all_reduce(has)
    live = [p for p, h in zip(params, has.tolist(), strict=True) if h > 0]
    if not live:
        return
    grads = []
    for p in live:
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        if g.is_sparse:
            g = g.to_dense()
        grads.append(g.reshape(-1) * weight)
    flat = torch.cat(grads)
    dist.all_reduce(flat)
    offset = 0
    for p in live:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


class DistributedSync(Callback):
    """One rank of a data-parallel run: shards each global batch, all-reduces gradients before every optimiser
    step and the logged loss terms after it, broadcasts rank 0's evaluations.

    ``rank`` and ``world`` are read from the process group in ``on_fit_start`` (which creates the group, gloo on
    CPU or nccl on CUDA, unless it exists); they can be given for use without a group (tests).
    """

    def __init__(self, rank: int = 0, world: int = 1) -> None:
        self.rank, self.world = rank, world
        self.weight = 1.0 / world  # n_r / N of the current step
        self.created = False

    def on_fit_start(self, trainer: TrainerView) -> None:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if trainer.device.type == "cuda" else "gloo")
            self.created = True
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if trainer.device.type == "cuda":  # pragma: no cover - no GPU here
            torch.cuda.set_device(trainer.device)
        if trainer.cfg.train.grad_clip and self.rank == 0:
            log.warning("distributed: train.grad_clip clips each rank's shard gradient before the all-reduce")
        with torch.no_grad():
            for tensor in trainer.model.state_dict().values():
                dense = not tensor.is_sparse and tensor.layout == torch.strided
                if dense and (
                    tensor.is_floating_point() or tensor.dtype in (torch.int64, torch.int32, torch.bool)
                ):
                    dist.broadcast(tensor, 0)
        for opt in trainer.state.optimizers:  # this fit's optimisers: the hooks end with them
            opt.register_step_pre_hook(self._before_step)
        log.info("distributed: rank %d of %d (%s)", self.rank, self.world, dist.get_backend())

    def _before_step(self, opt: Any, args: Any, kwargs: Any) -> None:
        allreduce_grads(opt, self.weight)

    def on_batch(self, trainer: TrainerView, batch: Batch) -> Batch:
        n = len(batch.users)
        lo, hi = shard_bounds(n, self.rank, self.world)
        if hi <= lo:  # fewer triples than ranks: compute on the whole batch, contribute nothing
            self.weight = 0.0
            return batch
        self.weight = (hi - lo) / n
        return Batch(batch.users[lo:hi], batch.pos[lo:hi], batch.neg[lo:hi])

    def on_step_end(self, trainer: TrainerView, terms: dict[str, float]) -> None:
        keys = list(terms)
        vals = torch.tensor(
            [self.weight * terms[k] for k in keys], dtype=torch.float64, device=trainer.device
        )
        dist.all_reduce(vals)
        terms.update(zip(keys, vals.tolist(), strict=True))

    def around_evaluation(self, trainer: TrainerView, run: Callable[[], Metrics]) -> Metrics:
        box: list[Metrics | None] = [run() if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        assert box[0] is not None
        return box[0]

    def on_fit_end(self, trainer: TrainerView, result: RunResult | None) -> None:
        if self.created:
            dist.destroy_process_group()
            self.created = False


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
