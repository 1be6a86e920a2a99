"""DiffMM's cross-modal InfoNCE (Jiang et al., MM 2024, Sec. 3.4; the official ``contrastLoss``) over a batch.

For rows ``nodes`` of two [N, d] embeddings a and b, rows unit-normalised and all N rows of b as candidates:

    L = (1/|nodes|) Σ_{i ∈ nodes} [ log Σ_j exp(â_i·b̂_j/τ) - â_i·b̂_i/τ ].

A batch of interactions repeats users (on Tiktok about 60 % of a 1,024-pair batch's user slots are repeats) and
popular items; a repeated node adds the very same term again, so the sum is taken once per distinct node,
weighted by its multiplicity. The [c, N] block of exponentiated logits is used for both gradient products while
it exists (three products of that size, one exp), and only their [c, d] and [N, d] results are kept for the
backward pass, never the block. Same value and gradients as ``losses.nce_block`` over the repeated rows, float32
rounding aside (tests/models/test_diffmm_speed.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from modalrec.losses import MAX_UNSHIFTED_LOGIT, nce_block


class _WeightedUnitNce(torch.autograd.Function):
    """Σ_i w_i [log Σ_j exp(a_i·c_j/τ) - a_i·p_i/τ] for unit rows, gradients formed in the forward pass.

    With P = softmax_j(a·c_j/τ) [c, N]: ∂/∂a_i = w_i (P_i C - p_i)/τ, ∂/∂C = Pᵀ (w ⊙ a)/τ, ∂/∂p_i = -w_i a_i/τ.
    Unit rows bound every logit by 1/τ <= MAX_UNSHIFTED_LOGIT, so exp needs no row maximum.
    """

    @staticmethod
    def forward(ctx, a, positives, candidates, counts, inv_tau):
        block = torch.mm(a * inv_tau, candidates.T).exp_()  # [c, N]
        lse = block.sum(dim=1).log_()
        pos = (a * positives).sum(dim=1).mul_(inv_tau)
        need_a, need_p, need_c = ctx.needs_input_grad[:3]
        weights = torch.exp(-lse).mul_(counts).unsqueeze(1)  # [c, 1]: w_i / Σ_j exp(l_ij)
        grad_a = grad_c = None
        if need_a:
            grad_a = torch.mm(block, candidates).mul_(weights).sub_(positives * counts.unsqueeze(1))
        if need_c:
            grad_c = torch.mm(block.T, a * weights)
        del block
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
    if 1.0 / temperature > MAX_UNSHIFTED_LOGIT:  # logits could overflow exp: the shifted general path
        a_n = F.normalize(a.index_select(0, nodes), dim=1)
        return nce_block(a_n, b_n.index_select(0, nodes), b_n, temperature, True) / max(1, len(nodes))
    uniq, counts = torch.unique(nodes, return_counts=True)
    a_n = F.normalize(a.index_select(0, uniq), dim=1)  # row-wise: the same rows as normalize(a)[uniq]
    total = _WeightedUnitNce.apply(a_n, b_n.index_select(0, uniq), b_n, counts.to(a.dtype), 1.0 / temperature)
    return total / max(1, len(nodes))
