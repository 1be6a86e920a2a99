"""Device-safe kernels: every custom autograd Function has a plain-PyTorch reference path, and forcing that path
on CPU gives the same losses, gradients and scores as the fast path for every registered model."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from typing import Any

import pytest
import torch

import modalrec
from modalrec.config import load_config
from modalrec.data import Dataset
from modalrec.data.sampling import BPRSampler
from modalrec.dispatch import REFERENCE_ENV, reference_kernels, use_fast_path
from modalrec.models import MODELS, build_model


def custom_functions() -> list[type[torch.autograd.Function]]:
    """Every torch.autograd.Function subclass defined in the package (all modules imported first)."""
    for info in pkgutil.walk_packages(modalrec.__path__, "modalrec."):
        if info.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(info.name)
        except ImportError:  # a module needing an optional dependency that is not installed holds no kernel
            continue
    found, todo = [], list(torch.autograd.Function.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.__module__.startswith("modalrec."):
            found.append(cls)
    return sorted(found, key=lambda c: c.__qualname__)


FUNCTIONS = custom_functions()


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Counts the forward calls of every custom Function while the test runs."""
    counts: dict[str, int] = {}
    for cls in FUNCTIONS:
        original = cls.forward

        def counted(
            *args: Any, _original: Any = original, _name: str = cls.__qualname__, **kwargs: Any
        ) -> Any:
            counts[_name] = counts.get(_name, 0) + 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, "forward", staticmethod(counted))
    yield counts


def test_the_package_has_the_known_custom_functions() -> None:
    names = {c.__qualname__ for c in FUNCTIONS}
    assert {"_FixedSparseMatmul", "_BipartiteLayerMean", "_EdgeSpmm", "_BatchRowsLayerMean", "_PatternSpmm",
            "_PatternDot", "_NceBlock", "_TwoSetNceBlock"} <= names  # fmt: skip


def test_switch_by_context_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.zeros(1)
    assert use_fast_path(cpu)
    with reference_kernels():
        assert not use_fast_path(cpu)
        with reference_kernels(False):
            assert use_fast_path(cpu)
    monkeypatch.setenv(REFERENCE_ENV, "1")
    assert not use_fast_path(cpu)
    monkeypatch.setenv(REFERENCE_ENV, "0")
    assert use_fast_path(cpu) and not use_fast_path(cpu, torch.zeros(1, device="meta"))


def one_step(name: str, data: Dataset) -> dict[str, torch.Tensor]:
    """Loss terms, parameter gradients and eval-mode scores of one training batch, from a fixed start."""
    cfg = load_config(None, ["train.threads=1"], model_name=name, seed=3)
    model = build_model(cfg, data, torch.device("cpu"))
    batch = next(iter(BPRSampler(data.train, 128, seed=0).epoch(0)))
    out: dict[str, torch.Tensor] = {}
    model.train()
    torch.manual_seed(11)  # the same dropout / augmentation draws on both paths
    model.on_epoch_start(0)
    if model.trainable:
        terms = model.batch_loss(batch)
        torch.stack(list(terms.values())).sum().backward()
        out.update({f"loss {k}": v.detach() for k, v in terms.items()})
        out.update({f"grad {k}": p.grad for k, p in model.named_parameters() if p.grad is not None})
    model.eval()
    with torch.no_grad():
        out["scores"] = model.score(model(), torch.arange(0, data.n_users, 7))
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_reference_path_matches_fast_path(name: str, tiny: Dataset, calls: dict[str, int]) -> None:
    fast = one_step(name, tiny)
    used = dict(calls)
    calls.clear()
    with reference_kernels():
        reference = one_step(name, tiny)
    assert not calls, f"{name} reached custom kernels on the reference path: {calls}"
    assert fast.keys() == reference.keys()
    for key, value in fast.items():
        torch.testing.assert_close(
            reference[key], value, rtol=1e-4, atol=1e-5, msg=f"{name}: {key} (fast {used})"
        )


def test_every_custom_function_is_exercised_by_some_model(tiny: Dataset, calls: dict[str, int]) -> None:
    for name in ("lightgcn", "sgl", "ngcf", "grcn", "micro", "mmgcl", "diffmm", "mentor"):
        one_step(name, tiny)
    missing = {c.__qualname__ for c in FUNCTIONS} - set(calls)
    assert not missing, f"custom Functions no model test reaches: {missing}"
