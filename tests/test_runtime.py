"""``runtime.training_phase``: the training-only mmap threshold is raised on entry and always restored on exit."""

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
