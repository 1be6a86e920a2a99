"""DiffMM's cross-modal InfoNCE (Jiang et al., MM 2024, Sec. 3.4; the official ``contrastLoss``) over a batch.

For rows ``nodes`` of two [N, d] embeddings a and b, rows unit-normalised and all N rows of b as candidates:

    L = (1/|nodes|) Σ_{i ∈ nodes} [ log Σ_j exp(â_i·b̂_j/τ) - â_i·b̂_i/τ ].

A batch of interactions repeats users (on Tiktok about 60 % of a 1,024-pair batch's user slots are repeats) and
popular items; a repeated node adds the very same term again, so the sum is taken once per distinct node,
weighted by its multiplicity. Each block of exponentiated logits (at most ``BLOCK_ELEMENTS``, anchors in row
blocks) is used for both gradient products while it exists (three products of its size, one exp), and only their
[c, d] and [N, d] results are kept for the backward pass, never a block. Same value and gradients as
``losses.nce_block`` over the repeated rows, float32 rounding aside (tests/models/test_diffmm_speed.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from modalrec.dispatch import use_fast_path
from modalrec.losses import MAX_UNSHIFTED_LOGIT, nce_block

# Elements of one block of exponentiated logits (64 MiB in float32): anchors are taken in row blocks of this size,
# so a catalogue of 100k users costs ~160 anchors per block rather than one [batch, N] block.
BLOCK_ELEMENTS = 1 << 24


class _WeightedUnitNce(torch.autograd.Function):
    """Σ_i w_i [log Σ_j exp(a_i·c_j/τ) - a_i·p_i/τ] for unit rows, gradients formed in the forward pass.

    With P = softmax_j(a·c_j/τ) [c, N]: ∂/∂a_i = w_i (P_i C - p_i)/τ, ∂/∂C = Pᵀ (w ⊙ a)/τ, ∂/∂p_i = -w_i a_i/τ.
    Unit rows bound every logit by 1/τ <= MAX_UNSHIFTED_LOGIT, so exp needs no row maximum.
    """

    @staticmethod
    def forward(ctx, a, positives, candidates, counts, inv_tau):
        need_a, need_p, need_c = ctx.needs_input_grad[:3]
        rows = max(1, BLOCK_ELEMENTS // max(1, candidates.shape[0]))  # anchors per [rows, N] block
        lse = a.new_empty(a.shape[0])
        grad_a = torch.empty_like(a) if need_a else None
        grad_c = torch.zeros_like(candidates) if need_c else None
        for start in range(0, a.shape[0], rows):
            end = min(start + rows, a.shape[0])
            a_blk, n_blk = a[start:end], counts[start:end].unsqueeze(1)
            block = torch.mm(a_blk * inv_tau, candidates.T).exp_()  # [rows, N]
            lse[start:end] = block.sum(dim=1).log_()
            weights = torch.exp(-lse[start:end]).unsqueeze(1).mul_(n_blk)  # w_i / Σ_j exp(l_ij)
            if grad_a is not None:
                grad_a[start:end] = (
                    torch.mm(block, candidates).mul_(weights).sub_(positives[start:end] * n_blk)
                )
            if grad_c is not None:
                grad_c.addmm_(block.T, a_blk * weights)
            del block
        pos = (a * positives).sum(dim=1).mul_(inv_tau)
        ctx.save_for_backward(grad_a, grad_c, a * counts.unsqueeze(1) if need_p else None)
        ctx.inv_tau = inv_tau
        return ((lse - pos) * counts).sum()

    @staticmethod
    def backward(ctx, grad):
        grad_a, grad_c, weighted_a = ctx.saved_tensors
        scale = grad * ctx.inv_tau
        return (
            None if grad_a is None else grad_a * scale,
            None if weighted_a is None else weighted_a * -scale,
            None if grad_c is None else grad_c * scale,
            None,
            None,
        )


def contrast(a: torch.Tensor, b: torch.Tensor, nodes: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE of rows ``nodes`` [B] (repeats allowed) of a [N, d] against the same rows of b [N, d], all N rows
    of b as candidates, cosine similarities; the mean over the B entries of ``nodes``."""
    b_n = F.normalize(b, dim=1)
    # the general path: off the CPU or with the reference kernels forced (plain autograd inside nce_block), and
    # where the logits could overflow exp (it shifts by the row maximum)
    if 1.0 / temperature > MAX_UNSHIFTED_LOGIT or not use_fast_path(a, b):
        a_n = F.normalize(a.index_select(0, nodes), dim=1)
        return nce_block(a_n, b_n.index_select(0, nodes), b_n, temperature, True) / max(1, len(nodes))
    uniq, counts = torch.unique(nodes, return_counts=True)
    a_n = F.normalize(a.index_select(0, uniq), dim=1)  # row-wise: the same rows as normalize(a)[uniq]
    total = _WeightedUnitNce.apply(a_n, b_n.index_select(0, uniq), b_n, counts.to(a.dtype), 1.0 / temperature)
    return total / max(1, len(nodes))
