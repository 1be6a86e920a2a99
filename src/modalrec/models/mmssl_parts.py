"""Building blocks of MMSSL (Wei et al., "Multi-Modal Self-Supervised Learning for Recommendation", WWW 2023).

Kept apart from ``mmssl.py`` so each piece can be tested on tiny inputs:

* :func:`gumbel_transform` - the Gumbel-based transformation of observed interaction rows (Eq. 5, first term).
* :class:`Discriminator` - D of Eq. 4: two Linear-LeakyReLU-Norm-Dropout blocks and a sigmoid output, whose
  random draws (dropout) come from a caller's ``torch.Generator`` so they never touch the global stream.
* :class:`ModalityAttention` - the modality-wise dependency encoder (Eq. 9): multi-head self-attention across
  modalities with separate query, key and value projections.
* :func:`topk_relations` - the neighbour rule that turns the generated relations Â^m (Eq. 3) into the
  modality-aware graphs of Eq. 8, computed in [chunk, I] blocks (never a full [U, I] matrix).
* :func:`interaction_block` - a user's interaction row restricted to a set of item columns, as a dense [B, c]
  block built from the CSR arrays (never a full [U, I] matrix).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from modalrec.runtime import fit_chunk


def gumbel_transform(
    a: torch.Tensor,
    tau: float,
    noise_scale: float = 1.0,
    form: str = "paper",
    eps: float = 1e-10,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Gumbel-softmax projection of binary interaction rows onto dense row distributions (Eq. 5, 1st term).

    Args:
        a: [B, n] interaction rows (1 = observed, 0 = not), over all items or a sampled column subset.
        tau: temperature τ.
        noise_scale: multiplier s of the Gumbel(0, 1) noise g (official code: 1e-5; paper: 1).
        form: ``"paper"`` computes softmax((A + s·g) / τ) as printed in Eq. 5; ``"code"`` is the official
            code's current operator precedence, softmax(A + s·g / τ), where τ divides only the noise.
        generator: source of the uniform draws (None: the global stream).

    Returns:
        [B, n] rows that each sum to one.
    """
    u = torch.rand(a.shape, generator=generator, device=a.device, dtype=a.dtype)
    g = -torch.log(-torch.log(u + eps) + eps)
    if form == "paper":
        logits = (a + noise_scale * g) / tau
    elif form == "code":
        logits = a + noise_scale * g / tau
    else:
        raise ValueError(f"gumbel form must be 'paper' or 'code', not {form!r}")
    return torch.softmax(logits, dim=1)


D_NORMS = ("joint_batch", "separate_batch", "layer", "none")


def dropout_with(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Inverted dropout whose mask is drawn from ``generator`` (None: the global stream): [R, h] -> [R, h]."""
    if p <= 0.0:
        return x
    keep = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) >= p
    return x * keep / (1.0 - p)


class Discriminator(nn.Module):
    """D(a) = δ(Γ²(a)), Γ(a) = Drop(Norm(LeakyReLU(Linear(a)))) (Eq. 4), widths n -> h -> h/2 -> 1.

    The official code uses h = n/4; ``hidden`` caps h (the paper does not fix the widths), which keeps the cost
    of a full-width row linear in n instead of quadratic.

    Eq. 4 normalises with BatchNorm. A BatchNorm call on a batch of only real (or only fake) rows removes that
    batch's mean from every hidden unit, so the mean output of either batch is nearly the final bias whatever the
    rows are: the critic cannot rank the two batches. ``norm`` chooses:

    * ``"joint_batch"`` (and ``"separate_batch"``): BatchNorm, Eq. 4 as printed. The caller decides whether
      real and fake rows go through one call (one set of batch statistics: the critic can separate them) or
      through two calls (the official code's form, kept to reproduce it); see ``MMSSL.Config.d_norm``.
    * ``"layer"``: LayerNorm per row, the usual WGAN-GP practice (the gradient penalty is per sample).
    * ``"none"``: no normalisation.

    Args:
        n_inputs: width of an input row (|I|, or the number of sampled item columns).
        dropouts: dropout rate of the two blocks (official code: 0.31, 0.5).
        slope: LeakyReLU negative slope. The official code passes ``True`` as the slope, i.e. 1.0, which makes
            the activation the identity and D a linear map followed by BatchNorm; pass 1.0 to reproduce that.
        output_scale: multiplier of the sigmoid output (paper: 1; official code: 100).
        norm: one of :data:`D_NORMS`.
        hidden: cap on the first hidden width h (0: no cap, h = n/4 as in the official code).
    """

    def __init__(
        self,
        n_inputs: int,
        dropouts: tuple[float, float] = (0.31, 0.5),
        slope: float = 0.2,
        output_scale: float = 1.0,
        norm: str = "joint_batch",
        hidden: int = 0,
    ) -> None:
        super().__init__()
        if norm not in D_NORMS:
            raise ValueError(f"discriminator norm must be one of {', '.join(D_NORMS)}, not {norm!r}")
        h1 = max(1, n_inputs // 4 if hidden <= 0 else min(hidden, n_inputs // 4))
        h2 = max(1, h1 // 2)
        self.linears = nn.ModuleList([nn.Linear(n_inputs, h1), nn.Linear(h1, h2), nn.Linear(h2, 1)])
        self.acts = nn.ModuleList([nn.LeakyReLU(slope), nn.LeakyReLU(slope)])
        self.norms = nn.ModuleList(_norm_layer(norm, h) for h in (h1, h2))
        self.dropouts = tuple(float(p) for p in dropouts)
        self.output_scale = output_scale
        for lin in self.linears:
            nn.init.kaiming_normal_(lin.weight)  # type: ignore[arg-type]
            nn.init.zeros_(lin.bias)  # type: ignore[arg-type]

    def logits(self, rows: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Γ²(a) before the sigmoid: [R, n] -> [R]. Dropout masks come from ``generator``."""
        x = rows
        for lin, act, norm, p in zip(self.linears, self.acts, self.norms, self.dropouts, strict=False):
            x = norm(act(lin(x)))
            if self.training:
                x = dropout_with(x, p, generator)
        return self.linears[-1](x).squeeze(1)

    def forward(self, rows: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Scores in (0, output_scale) of each row: [R, n] -> [R]. Dropout masks come from ``generator``."""
        return self.output_scale * torch.sigmoid(self.logits(rows, generator))


def _norm_layer(norm: str, width: int) -> nn.Module:
    if norm in ("joint_batch", "separate_batch"):
        return nn.BatchNorm1d(width)
    if norm == "layer":
        return nn.LayerNorm(width)
    return nn.Identity()


class ModalityAttention(nn.Module):
    """Multi-head self-attention across the |M| modality views of each node (Eq. 9).

    For node x with views e^1..e^M, head h computes
    α_h(m, m') = softmax_{m'}((e^m W_h^Q)·(e^{m'} W_h^K) / √(d/H)) and ẽ^m_h = Σ_{m'} α_h(m, m') e^{m'} W_h^V;
    heads are concatenated and projected by W^O. The official code reuses the query as key and never applies
    its value projection; here Q, K and V are separate.

    Args:
        dim: embedding size d (divisible by ``n_heads``).
        n_heads: number of heads H.
        value_proj: use learned value/output projections; False uses the raw views as values (Eq. 9 as
            printed; the heads then average their attention over the same e^{m'}).
    """

    def __init__(self, dim: int, n_heads: int = 4, value_proj: bool = True) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.w_q = nn.Linear(dim, dim, bias=False)
        self.w_k = nn.Linear(dim, dim, bias=False)
        self.w_v = nn.Linear(dim, dim, bias=False) if value_proj else None
        self.w_o = nn.Linear(dim, dim, bias=False) if value_proj else None
        for lin in (self.w_q, self.w_k, self.w_v, self.w_o):
            if lin is not None:
                nn.init.xavier_uniform_(lin.weight)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights [N, M, M', H] (softmax over m')."""
        n, m, _ = x.shape
        q = self.w_q(x).view(n, m, 1, self.n_heads, self.head_dim)
        k = self.w_k(x).view(n, 1, m, self.n_heads, self.head_dim)
        # M is tiny (2-3), so broadcasting beats batched matmuls of [M, d_h] blocks.
        return torch.softmax((q * k).sum(-1) / math.sqrt(self.head_dim), dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, M, d] modality views -> [N, M, d] refined views ẽ^m."""
        n, m, d = x.shape
        att = self.attention(x).unsqueeze(-1)  # [N, M, M', H, 1]
        if self.w_v is None or self.w_o is None:
            return (att.mean(dim=3) * x.unsqueeze(1)).sum(dim=2)
        v = self.w_v(x).view(n, 1, m, self.n_heads, self.head_dim)
        out = (att * v).sum(dim=2).reshape(n, m, d)
        return self.w_o(out)


def interaction_block(
    indptr: torch.Tensor,
    indices: torch.Tensor,
    users: torch.Tensor,
    col_pos: torch.Tensor | None,
    n_cols: int,
) -> torch.Tensor:
    """Dense 0/1 block A[users, S] of the training matrix for a column subset S.

    Args:
        indptr, indices: CSR arrays of the [U, I] training matrix (int64).
        users: [B] user indices (repeats allowed).
        col_pos: [I] position of each item in S, or -1 when not sampled; None means S = all items.
        n_cols: |S|.

    Returns:
        [B, n_cols] float block.
    """
    start, end = indptr[users], indptr[users + 1]
    deg = end - start
    rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), deg)
    offsets = torch.arange(int(deg.sum()), device=users.device) - torch.repeat_interleave(
        torch.cumsum(deg, 0) - deg, deg
    )
    items = indices[torch.repeat_interleave(start, deg) + offsets]
    cols = items if col_pos is None else col_pos[items]
    keep = cols >= 0
    out = torch.zeros(len(users), n_cols, device=users.device)
    out[rows[keep], cols[keep]] = 1.0
    return out


def topk_relations(
    user_vecs: torch.Tensor,
    item_vecs: torch.Tensor,
    k: int,
    indptr: torch.Tensor | None = None,
    indices: torch.Tensor | None = None,
    chunk_size: int = 512,
) -> torch.Tensor:
    """Each user's top-k items under the generated relation Â^m[u, i] = cos(f_u^m, f_i^m) (Eq. 3).

    The relation matrix is computed in [chunk, I] blocks. When the CSR arrays of the training matrix are
    given, the user's observed items are excluded (official code: the generated graph links users to *new*
    items).

    Args:
        user_vecs: [U, d] modality-aware user representations f_u^m.
        item_vecs: [I, d] modality-aware item representations f_i^m.
        k: neighbours per user; must be >= 1 and small enough to leave k candidates for every user.
        indptr, indices: optional CSR arrays of the [U, I] training matrix.
        chunk_size: users per block.

    Returns:
        [U, k] item indices; row u holds user u's own top-k (descending relation).
    """
    if k < 1:
        raise ValueError(f"top-k neighbour count must be >= 1, got {k}")
    n_users, n_items = user_vecs.shape[0], item_vecs.shape[0]
    # one block row: the [I] relation row, the top-k workspace (float32 + int64) and the masked copy
    chunk_size = fit_chunk(
        n_items * 4 * 2 + k * 12, chunk_size, f"MMSSL's generated graphs over {n_items} items", ""
    )
    unit_u = F.normalize(user_vecs, dim=1)
    unit_i = F.normalize(item_vecs, dim=1)
    out = []
    for start in range(0, n_users, chunk_size):
        stop = min(start + chunk_size, n_users)
        block = unit_u[start:stop] @ unit_i.T
        if indptr is not None and indices is not None:
            users = torch.arange(start, stop, device=block.device)
            lo, hi = indptr[start], indptr[stop]
            rows = torch.repeat_interleave(users - start, indptr[start + 1 : stop + 1] - indptr[start:stop])
            block[rows, indices[lo:hi]] = float("-inf")
        out.append(torch.topk(block, k, dim=1).indices)
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long, device=user_vecs.device)
