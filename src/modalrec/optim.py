"""Adam / AdamW and the two learning-rate schedules the trainer offers, without ``torch.optim``.

Why not ``torch.optim``: in torch 2.x every ``torch.optim.Optimizer`` imports ``torch._dynamo`` (the compiler
stack) when a parameter group is added and again inside every ``step`` (a decorator does it unconditionally).
modalrec compiles nothing, yet that import costs about 4 s of start-up and 70 MiB of resident memory in every
process — a sixth of LightGCN's whole footprint on amazon-baby (docs/performance.md).

The update rule is the usual one: Adam (Kingma & Ba, ICLR 2015, Algorithm 1, with the L2 term added to the
gradient when ``weight_decay`` > 0) and AdamW (Loshchilov & Hutter, ICLR 2019: decay decoupled from the gradient,
p <- p·(1 - lr·wd) before the Adam step). Tensors of one device and dtype go through torch's fused kernel
(``torch._fused_adam_`` / ``torch._fused_adamw_``, one sweep per tensor) when it exists, otherwise through the same
equations written out. Both match ``torch.optim.Adam``/``AdamW`` (tests/test_optim.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

StepHook = Callable[["Adam", tuple[Any, ...], dict[str, Any]], None]


class Adam:
    """Adam over one parameter group; ``decoupled=True`` makes it AdamW.

    Exposes the parts of the ``torch.optim`` interface the project uses: ``param_groups`` (a list with one dict
    holding ``params``, ``lr``, ``betas``, ``eps``, ``weight_decay``), ``defaults``, ``state``, ``zero_grad``,
    ``step``, ``state_dict``/``load_state_dict`` (same layout as torch's, so older checkpoints resume) and
    ``register_step_pre_hook``.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled: bool = False,
    ) -> None:
        params = list(params)
        if not params:
            raise ValueError("the optimiser got an empty parameter list")
        if not (lr > 0 and eps >= 0 and weight_decay >= 0 and 0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(
                f"invalid Adam settings: lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}"
            )
        self.decoupled = decoupled
        self.defaults: dict[str, Any] = {
            "lr": lr,
            "betas": (float(betas[0]), float(betas[1])),
            "eps": eps,
            "weight_decay": weight_decay,
        }
        self.param_groups: list[dict[str, Any]] = [{"params": params, **self.defaults, "initial_lr": lr}]
        self.state: dict[int, dict[str, torch.Tensor]] = {}  # parameter index -> step, exp_avg, exp_avg_sq
        self._pre_hooks: list[StepHook] = []
        self._use_fused = True  # switched off for good after the fused kernel refuses these tensors once

    @property
    def params(self) -> list[torch.Tensor]:
        return self.param_groups[0]["params"]

    def register_step_pre_hook(self, hook: StepHook) -> None:
        """Call ``hook(optimizer, (), {})`` before every step (as torch's optimisers do)."""
        self._pre_hooks.append(hook)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def _slots(self, index: int, p: torch.Tensor) -> dict[str, torch.Tensor]:
        slot = self.state.get(index)
        if slot is None:
            slot = {
                "step": torch.zeros((), dtype=torch.float32, device=p.device),
                "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
            }
            self.state[index] = slot
        return slot

    @torch.no_grad()
    def step(self) -> None:
        """One Adam(W) update of every parameter that has a gradient."""
        for hook in self._pre_hooks:
            hook(self, (), {})
        group = self.param_groups[0]
        live = [(i, p) for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        for _, p in live:
            if p.grad is not None and p.grad.is_sparse:
                raise RuntimeError("Adam does not support sparse gradients")
        slots = [self._slots(i, p) for i, p in live]
        params = [p for _, p in live]
        grads = [p.grad for _, p in live]
        exp_avgs = [s["exp_avg"] for s in slots]
        exp_avg_sqs = [s["exp_avg_sq"] for s in slots]
        steps = [s["step"] for s in slots]
        for t in steps:
            t.add_(1)
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if self._use_fused and self._fused(
            params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, wd, eps
        ):
            return
        for p, g, m, v, t in zip(params, grads, exp_avgs, exp_avg_sqs, steps, strict=True):
            assert g is not None
            if wd:
                if self.decoupled:  # AdamW: shrink the weights, not the gradient
                    p.mul_(1 - lr * wd)
                else:  # Adam with L2: the penalty's gradient joins the gradient
                    g = g.add(p, alpha=wd)
            m.lerp_(g, 1 - beta1)  # m <- β1 m + (1 - β1) g
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)  # v <- β2 v + (1 - β2) g²
            n = float(t)
            denom = (v.sqrt() / math.sqrt(1 - beta2**n)).add_(eps)
            p.addcdiv_(m, denom, value=-lr / (1 - beta1**n))  # bias-corrected step

    def _fused(
        self,
        params: list[torch.Tensor],
        grads: list[Any],
        exp_avgs: list[torch.Tensor],
        exp_avg_sqs: list[torch.Tensor],
        steps: list[torch.Tensor],
        lr: float,
        beta1: float,
        beta2: float,
        wd: float,
        eps: float,
    ) -> bool:
        kernel = getattr(torch, "_fused_adamw_" if self.decoupled else "_fused_adam_", None)
        same = len({(p.device, p.dtype) for p in params}) == 1
        if kernel is None or not same or not params[0].is_floating_point():
            self._use_fused = False
            return False
        try:
            kernel(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                [],
                steps,
                lr=lr,
                beta1=beta1,
                beta2=beta2,
                weight_decay=wd,
                eps=eps,
                amsgrad=False,
                maximize=False,
            )
        except (
            RuntimeError,
            TypeError,
            NotImplementedError,
        ):  # no kernel for this device/dtype in this torch
            self._use_fused = False
            return False
        return True

    def state_dict(self) -> dict[str, Any]:
        """{"state": {index: {step, exp_avg, exp_avg_sq}}, "param_groups": [hyper-parameters + indices]}."""
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        group["params"] = list(range(len(self.params)))
        state = {i: {k: v.clone() for k, v in s.items()} for i, s in self.state.items()}
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restore moments, step counts and hyper-parameters (also from a ``torch.optim.Adam`` checkpoint)."""
        groups = saved.get("param_groups", [])
        if len(groups) != 1 or len(groups[0].get("params", [])) != len(self.params):
            raise ValueError("the saved optimiser state does not match this model's parameters")
        for key in ("lr", "betas", "eps", "weight_decay", "initial_lr"):
            if key in groups[0]:
                self.param_groups[0][key] = tuple(groups[0][key]) if key == "betas" else groups[0][key]
        self.state = {}
        for index, slot in saved.get("state", {}).items():
            p = self.params[int(index)]
            self.state[int(index)] = {
                "step": torch.as_tensor(slot["step"], dtype=torch.float32).to(p.device).reshape(()),
                "exp_avg": slot["exp_avg"].to(device=p.device, dtype=p.dtype).clone(),
                "exp_avg_sq": slot["exp_avg_sq"].to(device=p.device, dtype=p.dtype).clone(),
            }


def AdamW(params: Iterable[torch.Tensor], **kwargs: Any) -> Adam:
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019)."""
    return Adam(params, decoupled=True, **kwargs)


class LRSchedule:
    """Per-epoch learning rate lr(e) = initial_lr · factor(e), set on every group after each epoch.

    ``kind="step"``: factor = gamma^(e // step_size) (torch's StepLR); ``kind="cosine"``:
    factor = (1 + cos(π e / t_max)) / 2 (torch's CosineAnnealingLR with eta_min = 0).
    """

    def __init__(
        self, optimizer: Adam, kind: str, step_size: int = 1, gamma: float = 0.1, t_max: int = 1
    ) -> None:
        if kind not in ("step", "cosine"):
            raise ValueError(f"schedule must be 'step' or 'cosine', not {kind!r}")
        self.optimizer, self.kind = optimizer, kind
        self.step_size, self.gamma, self.t_max = max(1, step_size), gamma, max(1, t_max)
        self.last_epoch = 0

    def factor(self, epoch: int) -> float:
        if self.kind == "step":
            return float(self.gamma ** (epoch // self.step_size))
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch, self.t_max) / self.t_max))

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * self.factor(self.last_epoch)

    def step(self) -> None:
        self.last_epoch += 1
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.last_epoch = int(saved["last_epoch"])
        self._apply()
