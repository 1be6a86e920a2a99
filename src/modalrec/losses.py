"""Loss functions shared by the models: BPR, L2 regularisation, chunked InfoNCE, WGAN-GP gradient penalty."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from modalrec.dispatch import use_fast_path


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """Bayesian personalised ranking: mean of -log σ(s_ui - s_uj) over the batch. Inputs [B]."""
    return F.softplus(neg_scores - pos_scores).mean()


def l2_reg(*tensors: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """½ Σ ||t||² over the given tensors, divided by ``batch_size`` when given (LightGCN convention)."""
    total = sum(t.pow(2).sum() for t in tensors) * 0.5
    if batch_size:
        total = total / batch_size
    return torch.as_tensor(total)


def info_nce(
    anchors: torch.Tensor,
    candidates: torch.Tensor,
    temperature: float,
    chunk_size: int = 4096,
    normalize: bool = True,
) -> torch.Tensor:
    """InfoNCE with in-batch negatives: row i of ``anchors`` is positive with row i of ``candidates``.

    loss = mean_i [ -s_ii/τ + log Σ_j exp(s_ij/τ) ], s = cosine (normalize=True) or dot product.
    Computed in row chunks of [chunk, N] so memory stays O(chunk·N); the result equals the unchunked one.

    Args:
        anchors: [N, d]; candidates: [N, d] (or [M, d] with M >= N, extra rows act as negatives only).
    """
    if normalize:
        anchors = F.normalize(anchors, dim=1)
        candidates = F.normalize(candidates, dim=1)
    n = anchors.shape[0]
    total = anchors.new_zeros(())
    for start in range(0, n, chunk_size):
        a = anchors[start : start + chunk_size]
        positives = candidates[start : start + a.shape[0]]
        total = total + nce_block(a, positives, candidates, temperature, normalize)
    return total / n


def nce_block(
    a: torch.Tensor,
    positives: torch.Tensor,
    candidates: torch.Tensor,
    temperature: float,
    unit_rows: bool = False,
) -> torch.Tensor:
    """Σ over the block's rows of logsumexp_j(a·c_j/τ) - a·p/τ; a, positives [c, d], candidates [N, d].

    Differentiable in all three inputs with O(c·N) memory: the [c, N] logits are not kept for backward but
    recomputed there once, and turned into the softmax in place (see :class:`_NceBlock`). ``unit_rows`` promises
    that a and candidates have unit-norm rows (cosine similarities), which allows a faster logsumexp.
    """
    if not use_fast_path(a, positives, candidates):
        return recompute_in_backward(
            functools.partial(_nce_block_reference, temperature), a, positives, candidates
        )
    return _NceBlock.apply(a, positives, candidates, temperature, unit_rows)


def _nce_block_reference(
    temperature: float, a: torch.Tensor, positives: torch.Tensor, candidates: torch.Tensor
) -> torch.Tensor:
    """The reference path of :func:`nce_block`: the same sum through ``logsumexp``, differentiated by autograd."""
    logits = torch.mm(a, candidates.T) / temperature
    return (torch.logsumexp(logits, dim=1) - (a * positives).sum(dim=1) / temperature).sum()


# With unit rows every logit lies in [-1/τ, 1/τ]; for 1/τ <= 30 exp() of it neither overflows nor underflows in
# float32 (e^30 ~ 1e13, and a row sum over even 1e7 candidates stays below 1e21), so no row maximum is needed.
MAX_UNSHIFTED_LOGIT = 30.0


class _NceBlock(torch.autograd.Function):
    """One InfoNCE block with a hand-written backward.

    Gradients, with P = softmax_j(a·c_j/τ) ([c, N]):  ∂/∂a = (P c - p)/τ,  ∂/∂c = Pᵀ a/τ,  ∂/∂p = -a/τ.
    With unit rows (bounded logits) the block is exponentiated straight after the matrix product, and the
    softmax's row normalisation 1/Σ_j exp(l_ij) is applied to the [c, d] operands and results of the gradient
    products instead of to the [c, N] block; otherwise the row maximum / logsumexp is subtracted first.
    Against autograd through ``logsumexp`` with activation checkpointing (the previous implementation) this
    saves an exp pass and several [c, N] temporaries; timings in docs/performance.md.
    """

    @staticmethod
    def forward(ctx, a, positives, candidates, temperature, unit_rows):
        inv_tau = 1.0 / temperature
        ctx.bounded = unit_rows and inv_tau <= MAX_UNSHIFTED_LOGIT
        logits = torch.mm(a * inv_tau, candidates.T)
        # bounded: exp in place, no row maximum needed; otherwise the stable logsumexp
        lse = logits.exp_().sum(dim=1).log_() if ctx.bounded else torch.logsumexp(logits, dim=1)
        del logits
        pos = (a * positives).sum(dim=1).mul_(inv_tau)
        ctx.save_for_backward(a, positives, candidates, lse)
        ctx.inv_tau = inv_tau
        return (lse - pos).sum()

    @staticmethod
    def backward(ctx, grad):
        a, positives, candidates, lse = ctx.saved_tensors
        scale = grad * ctx.inv_tau
        need_a, need_p, need_c = ctx.needs_input_grad[:3]
        grad_a = grad_p = grad_c = None
        if need_a or need_c:
            block = torch.mm(a * ctx.inv_tau, candidates.T)
            if ctx.bounded:
                weights = torch.exp(-lse).unsqueeze(1)  # [c, 1]: softmax row normalisation, applied outside
                block.exp_()
            else:
                weights = None
                block.sub_(lse.unsqueeze(1)).exp_()  # the softmax itself
            if need_a:
                grad_a = torch.mm(block, candidates)
                grad_a = (grad_a if weights is None else grad_a.mul_(weights)).sub_(positives).mul_(scale)
            if need_c:
                grad_c = torch.mm(block.T, a if weights is None else a * weights).mul_(scale)
        if need_p:
            grad_p = a * -scale
        return grad_a, grad_p, grad_c, None, None


def recompute_in_backward(fn: Callable[..., torch.Tensor], *args: object) -> torch.Tensor:
    """fn(*args), recomputed during the backward pass instead of keeping its [chunk, N] intermediates.

    A chunked loss otherwise keeps every chunk's logits alive until backward, so its memory is O(N²) after all
    (MICRO's all-items L_C on Tiktok peaked at 4.6 GB). With activation checkpointing only the inputs are kept
    and one chunk's block exists at a time: memory O(chunk·N) for about one extra block product per chunk.
    Results and gradients equal the plain computation.
    """
    needs_grad = torch.is_grad_enabled() and any(
        isinstance(a, torch.Tensor) and a.requires_grad for a in args
    )
    if not needs_grad:
        return fn(*args)
    from torch.utils.checkpoint import checkpoint

    return checkpoint(fn, *args, use_reentrant=False)


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WGAN-GP penalty E[(||∇_x̂ D(x̂)||₂ - 1)²] on random interpolates x̂ (Gulrajani et al. 2017).

    Shapes: real, fake [B, n]; the interpolation weight is drawn per row, from ``generator`` when given (so a
    caller can keep its draws off the global random stream).
    """
    alpha = torch.rand(real.shape[0], 1, generator=generator, device=real.device, dtype=real.dtype)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = critic(mixed)
    (grad,) = torch.autograd.grad(out.sum(), mixed, create_graph=True)
    return ((grad.norm(2, dim=1) - 1) ** 2).mean()


def info_nce_all(
    view_a: torch.Tensor,
    view_b: torch.Tensor,
    index: torch.Tensor,
    temperature: float,
    chunk_size: int = 4096,
    normalize: bool = True,
) -> torch.Tensor:
    """InfoNCE of the selected rows of ``view_a`` against *every* row of ``view_b`` (NCL/HCCF/SGL-code style).

    loss = mean_{i in index} [ -s(a_i, b_i)/τ + log Σ_j exp(s(a_i, b_j)/τ) ], j over all N rows of view_b.

    Args:
        view_a, view_b: [N, d] two views of the same N nodes (row i of both is node i).
        index: [B] node indices of the anchors.
    """
    if normalize:
        view_a = F.normalize(view_a, dim=1)
        view_b = F.normalize(view_b, dim=1)
    total = view_a.new_zeros(())
    for start in range(0, index.shape[0], chunk_size):
        idx = index[start : start + chunk_size]
        total = total + nce_block(view_a[idx], view_b[idx], view_b, temperature, normalize)
    return total / max(index.shape[0], 1)
