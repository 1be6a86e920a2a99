"""Process-level settings: torch threads, the glibc allocator, and the memory budget of chunked blocks.

Threads and allocator: these belong to the process owner. The command line applies them; a library user who
builds a ``Trainer`` inside their own program keeps their process as it was.

PyTorch on CPU allocates every intermediate with ``malloc``; glibc serves blocks above 128 KiB with fresh ``mmap``
pages and returns them to the OS on ``free``, so each new [U+I, d] tensor of a training step page-faults again
(on amazon-baby the profiler showed a third of ``torch.sparse.mm`` spent zero-filling such pages). Raising the
mmap and trim thresholds keeps freed blocks inside the process for reuse. Measured on amazon-baby LightGCN,
1 thread: 5.2 s -> 4.3 s per epoch with the same peak RSS (the next step reuses the same sizes).
Set ``MODALREC_MALLOC_TUNING=0`` to leave the allocator alone.

Memory budget: chunked computations (kNN graphs, evaluation score blocks, MMSSL's generated graphs) size their
blocks with :func:`fit_chunk` so that one block fits ``$MODALREC_MEMORY_BUDGET``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from modalrec.errors import ModalrecError

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
# Blocks up to 8 MiB (the [U+I, d] temporaries of a training step up to ~32k nodes at d = 64) come from the heap
# and are reused; larger ones keep glibc's mmap path and return to the OS on free. Larger thresholds were tried
# and dropped: with 1 GiB, ItemKNN's [1024, I] similarity blocks on the 1M-interaction synthetic set piled up in
# the heap (20 GB, OOM-killed); with 32 MiB, the 16 MiB score blocks of an evaluation did (VBPR test evaluation
# there: 18 GB against 0.7 GB untuned). Small long-lived allocations made between two such blocks split the hole
# a freed block leaves, so the next block of the same size no longer fits and the heap grows by one block per
# chunk. 8 MiB keeps every evaluation block (~16 MiB by design, see evaluate.auto_chunk) on the mmap path.
_MMAP_BYTES = 8 << 20
_TRIM_BYTES = 256 << 20  # free memory kept at the top of the heap before glibc returns it
# While training steps run (``training_phase``), blocks up to 32 MiB (the ceiling of glibc's own dynamic
# threshold on 64-bit) come from the heap: every step allocates the same [U+I, d] temporaries again, so freed
# blocks are reused rather than piling up, and graphs up to ~130k nodes at d = 64 stop page-faulting each step
# (NGCF on amazon-sports, 54k nodes, 13.8 MB temporaries: 1.62 -> 0.62 s per step). Evaluation and everything
# else run at 8 MiB.
_TRAIN_MMAP_BYTES = 32 << 20
_libc: ctypes.CDLL | None = None  # set once the tuning applied; None = untuned


def tune_allocator() -> bool:
    """Keep freed large blocks in the process (glibc only; once per process). Returns whether it applied."""
    global _libc
    if _libc is not None:
        return True
    if os.environ.get("MODALREC_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    tuned = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES))
    _libc = libc if tuned else None
    return tuned


@contextmanager
def training_phase() -> Iterator[None]:
    """Raise the mmap threshold to 32 MiB while training steps run; back to 8 MiB (and trim) on exit.

    Does nothing unless ``tune_allocator`` applied. On exit the heap's free pages are handed back to the OS
    (``malloc_trim``), so the blocks a training phase kept never outlive it: an evaluation that follows starts
    from the same footprint as with the plain 8 MiB tuning.
    """
    libc = _libc
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_THRESHOLD, _TRAIN_MMAP_BYTES)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_BYTES)
        libc.malloc_trim(0)


def set_threads(n: int) -> None:
    """Use ``n`` torch threads (0 = every core this process may use)."""
    if n <= 0:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, n))


# ---- memory budget for chunked blocks ---------------------------------------------------------------------------

MEMORY_ENV = "MODALREC_MEMORY_BUDGET"


def memory_budget() -> int:
    """Bytes one chunked block may use: $MODALREC_MEMORY_BUDGET (e.g. "512M", "2G", "1500000"), else half of
    the memory the OS reports available (2 GiB when unknown)."""
    raw = os.environ.get(MEMORY_ENV, "").strip()
    if raw:
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
        text = raw.upper().removesuffix("B").removesuffix("I")
        try:
            if text and text[-1] in units:
                return max(1, int(float(text[:-1]) * units[text[-1]]))
            return max(1, int(float(text)))
        except ValueError:
            raise ModalrecError(f"{MEMORY_ENV}={raw!r} is not a size such as 512M or 2G") from None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    return 2 << 30


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def fit_chunk(row_bytes: int, wanted: int, what: str, setting: str) -> int:
    """Rows per block so that ``rows * row_bytes`` fits the memory budget, at most ``wanted``.

    Fails early (before allocating) when not even one row fits, naming the setting to change.

    Args:
        row_bytes: estimated bytes one row of the block needs (including temporaries).
        wanted: the requested or default number of rows per block.
        what: what is being computed, for the message.
        setting: the configuration field that sets the chunk size, for the message.
    """
    budget = memory_budget()
    if row_bytes > budget:
        raise ModalrecError(
            f"{what} needs about {_size(row_bytes)} per row but the memory budget is "
            f"{_size(budget)}; raise {MEMORY_ENV} (e.g. {MEMORY_ENV}=4G) or use a smaller catalogue"
        )
    fitted = max(1, min(int(wanted), budget // max(1, row_bytes)))
    if setting and fitted < wanted:
        logging.getLogger(__name__).debug(
            "%s: %s=%d does not fit %s=%d bytes; using %d", what, setting, wanted, MEMORY_ENV, budget, fitted
        )
    return fitted
