"""modalrec.optim: Adam/AdamW against torch.optim on the same gradients, state round trip, LR schedules."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from modalrec.optim import Adam, AdamW, LRSchedule


def _run(make, fused: bool, steps: int = 6) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    params = [
        torch.randn(7, 3, generator=gen).requires_grad_(),
        torch.randn(5, generator=gen).requires_grad_(),
    ]
    opt = make(params)
    if hasattr(opt, "_use_fused"):
        opt._use_fused = fused
    for _ in range(steps):
        opt.zero_grad()
        loss = sum((p**3).sum() + (p * torch.randn(p.shape, generator=gen)).sum() for p in params)
        loss.backward()
        opt.step()
    return [p.detach().clone() for p in params]


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_matches_torch(fused: bool, weight_decay: float) -> None:
    kw = {"lr": 0.05, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": weight_decay}
    ours = _run(lambda ps: Adam(ps, **kw), fused)
    ref = _run(lambda ps: torch.optim.Adam(ps, **kw), fused=False)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fused", [True, False])
def test_adamw_matches_torch(fused: bool) -> None:
    kw = {"lr": 0.05, "weight_decay": 0.3}
    ours = _run(lambda ps: AdamW(ps, **kw), fused)
    ref = _run(lambda ps: torch.optim.AdamW(ps, **kw), fused=False)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_state_dict_round_trip_continues_identically() -> None:
    p1 = torch.ones(4, requires_grad=True)
    opt = Adam([p1], lr=0.1)
    for _ in range(3):
        p1.grad = torch.arange(4.0)
        opt.step()
    saved = opt.state_dict()
    p2 = p1.detach().clone().requires_grad_()
    resumed = Adam([p2], lr=0.5)  # hyper-parameters come back from the saved state too
    resumed.load_state_dict(saved)
    assert resumed.param_groups[0]["lr"] == 0.1 and float(resumed.state[0]["step"]) == 3
    for o, p in ((opt, p1), (resumed, p2)):
        p.grad = torch.full((4,), 0.5)
        o.step()
    torch.testing.assert_close(p1, p2)


def test_loads_a_torch_optim_checkpoint() -> None:
    p = torch.ones(3, requires_grad=True)
    ref = torch.optim.Adam([p], lr=0.2)
    p.grad = torch.ones(3)
    ref.step()
    ours = Adam([p.detach().clone().requires_grad_()], lr=0.01)
    ours.load_state_dict(ref.state_dict())
    assert ours.param_groups[0]["lr"] == 0.2
    torch.testing.assert_close(ours.state[0]["exp_avg"], ref.state[p]["exp_avg"])


def test_params_without_gradient_are_left_alone_and_hooks_run() -> None:
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = Adam([a, b], lr=0.1)
    calls: list[int] = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append(1))
    a.grad = torch.ones(2)
    opt.step()
    assert calls == [1] and b.abs().sum() == 0 and 1 not in opt.state
    torch.testing.assert_close(a, torch.full((2,), -0.1))  # first Adam step moves by lr·sign(g)


def test_invalid_settings_and_empty_lists_are_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        Adam([])
    with pytest.raises(ValueError, match="invalid"):
        Adam([torch.zeros(1, requires_grad=True)], lr=-1.0)


@pytest.mark.parametrize("kind", ["step", "cosine"])
def test_schedules_match_torch(kind: str) -> None:
    p = torch.zeros(1, requires_grad=True)
    ours, ref_opt = Adam([p], lr=0.1), torch.optim.Adam([p], lr=0.1)
    sched = LRSchedule(ours, kind, step_size=3, gamma=0.5, t_max=10)
    ref = (
        torch.optim.lr_scheduler.StepLR(ref_opt, 3, 0.5)
        if kind == "step"
        else torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, 10)
    )
    for _ in range(10):
        ref_opt.step()
        ref.step()
        sched.step()
        assert ours.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-9, abs=1e-12)
    again = LRSchedule(Adam([p], lr=0.1), kind, step_size=3, gamma=0.5, t_max=10)
    again.load_state_dict(sched.state_dict())
    assert again.optimizer.param_groups[0]["lr"] == pytest.approx(ours.param_groups[0]["lr"])


def test_training_does_not_import_the_torch_compiler() -> None:
    """The point of this module: a whole training run never imports torch._dynamo (~4 s, ~70 MiB)."""
    code = (
        "import sys\n"
        "from modalrec.config import load_config\n"
        "from modalrec.data.synthetic import make_synthetic\n"
        "from modalrec.train import Trainer\n"
        "cfg = load_config(None, ['train.epochs=1', 'train.lr_schedule=step'], model_name='lightgcn')\n"
        "Trainer(cfg, data=make_synthetic()).fit()\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "False"
