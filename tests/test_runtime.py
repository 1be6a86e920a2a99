"""``runtime``: the training-only mmap threshold is raised on entry and always restored on exit; only the command
line tunes the allocator."""

from __future__ import annotations

import pytest

from modalrec import runtime


class RecordingLibc:
    """Stands in for glibc: records the mallopt / malloc_trim calls the context manager makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int] | tuple[str, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", pad))
        return 1


def test_training_phase_raises_then_restores_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    libc = RecordingLibc()
    monkeypatch.setattr(runtime, "_libc", libc)
    with runtime.training_phase():
        assert libc.calls == [("mallopt", -3, 32 << 20)]
    assert libc.calls[1:] == [("mallopt", -3, 8 << 20), ("malloc_trim", 0)]


def test_training_phase_restores_after_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    libc = RecordingLibc()
    monkeypatch.setattr(runtime, "_libc", libc)
    with pytest.raises(RuntimeError), runtime.training_phase():
        raise RuntimeError("loss became nan")
    assert libc.calls[-2:] == [("mallopt", -3, 8 << 20), ("malloc_trim", 0)]


def test_training_phase_is_a_no_op_without_tuning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_libc", None)  # MODALREC_MALLOC_TUNING=0, or not glibc
    with runtime.training_phase():
        pass


def test_real_glibc_accepts_the_training_threshold() -> None:
    """On glibc the real calls succeed with the training threshold."""
    if not runtime.tune_allocator():
        pytest.skip("allocator tuning does not apply here (not glibc, or MODALREC_MALLOC_TUNING=0)")
    assert runtime._libc is not None
    assert runtime._libc.mallopt(-3, runtime._TRAIN_MMAP_BYTES) == 1
    with runtime.training_phase():
        pass


SCRIPT = """
import contextlib, io
from modalrec import runtime
from modalrec.config import load_config
from modalrec.data import SyntheticConfig, make_synthetic
from modalrec.train import Trainer
data = make_synthetic(SyntheticConfig(n_users=40, n_items=30, n_interactions=300, modality_dims={}))
Trainer(load_config(None, ["train.threads=1", "eval.ks=[10,20]"], model_name="mf"), data=data)
print("after Trainer:", runtime._libc is not None)
from modalrec.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    main(["models"])
print("after CLI:", runtime._libc is not None)
"""


@pytest.mark.parametrize("opt_out", [False, True])
def test_only_the_command_line_tunes_the_allocator(opt_out: bool) -> None:
    """Building a Trainer leaves the process's allocator alone; the CLI tunes it unless opted out."""
    import os
    import subprocess
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("allocator tuning is glibc only")
    env = {**os.environ, "MODALREC_MALLOC_TUNING": "0" if opt_out else "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "after Trainer: False" in proc.stdout
    assert f"after CLI: {not opt_out}" in proc.stdout
