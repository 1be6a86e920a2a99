"""LGMRec (Guo et al., "LGMRec: Local and Global Graph Learning for Multimodal Recommendation", AAAI 2024).

Local graph embedding (LGE):

* Collaborative graph embedding (CGE): LightGCN over the normalised user-item graph Â from ID embeddings,
  layer mean of K layers: E^c = [E^c_u; E^c_i].
* Modality graph embedding (MGE), per modality m: item features X^m_i = F^m W_m ([I, d], no bias), user
  features X^m_u = mean of X^m_i over each user's items, then L_m propagations over Â without a layer mean:
  E^m = Â^{L_m} [X^m_u; X^m_i]. The local embedding is E^l = E^c + Σ_m normalize(E^m).

Global hypergraph embedding (GHE), per modality m with A learnable hyperedges V_m ([d_m, A]):

* item-hyperedge dependencies H^m_i = GumbelSoftmax(F^m V_m, τ) ([I, A]); user-hyperedge dependencies
  H^m_u = GumbelSoftmax(R F^m V_m, τ) ([U, A], R the binary interaction matrix: a user's logits are the sum
  of its items'); both with dropout (keep rate) in training.
* Hypergraph message passing from the collaborative item embeddings, for each of the H layers:
  Λ = H^m_iᵀ Z_i ([A, d]), Z_i = H^m_i Λ, Z_u = H^m_u Λ; starting from Z_i = E^c_i.
* E^g = Σ_m [Z^m_u; Z^m_i]; final E = E^l + α · normalize(E^g); ŷ_ui = e_uᵀ e_i.

Objective: BPR + λ_1 L_HCL + λ_2 (||e_u|| + ||e_p|| + ||e_n||)/B, with the hypergraph contrastive loss L_HCL
between the global embeddings of two modalities: for the batch's users, -Σ_u log softmax over all users v of
cos(z^m_u, z^{m'}_v)/τ at v = u (and the same for the batch's positive items over all items), summed over the
batch as in the official code (enoche/MMRec ``lgmrec.py``).

Where the paper is silent we follow the code: τ = 0.2 for both the Gumbel-Softmax and L_HCL, the norms (not
squared) in the regulariser, the raw features frozen. Each L_HCL term compares B anchors with all N users
(items), O(B·N·d) per step, which dominates a CPU step at B = 2048; ``cl_anchors`` = b estimates the batch sum
from b random batch rows (unbiased; off by default). With M modalities (the code has exactly image + text)
L_HCL sums over the pairs m < m' with m the anchor (for two modalities: the code's one direction); with one
modality there is no L_HCL. Deviation: the code draws Gumbel noise at evaluation too; here evaluation uses the
noise-free softmax(logits/τ), so scores are deterministic.

Options beyond paper and code (defaults keep the paper's behaviour):

* ``hyper_l2``: the hyperedge logits use the L2-normalised feature rows F^m/||F^m|| instead of the raw F^m. The
  logits F^m V_m scale with the feature norm, and a user's logits with its number of items; at τ = 0.2 large
  raw norms saturate the Gumbel-Softmax. On Tiktok (visual rows of norm ≈ 33) at initialisation 68-99% of the
  items' and 79-99.8% of the users' visual dependency rows have a maximum above 0.99 (two initial draws), so
  each such node sits in one hyperedge, Z^m takes about A distinct values, V_m gets almost no gradient and
  L_HCL settles at a constant; with normalised rows 0% of items and 1.1% of users are that saturated. The
  dependencies are then invariant to a rescaling of the features.
* ``mge_weight`` w: E^l = E^c + w Σ_m normalize(E^m). Each modality term has unit norm while the Xavier-initialised
  collaborative layer mean starts near 0.05 (Tiktok), so the content terms decide the ranking until the ID
  embeddings have grown; w < 1 lowers their weight.

Items lacking a modality: in MGE their X^m_i is a learned vector (``missing_content.MissingEmbedding``); in GHE
they belong to none of modality m's hyperedges (their row of H^m_i is zero and their logits are left out of
their users' sums), so hyperedges gather real content only. An item with no content gets E^g_i = 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch
from modalrec.errors import ConfigError
from modalrec.graph import bipartite_layer_mean, normalized_interactions, scipy_to_torch, sparse_mm
from modalrec.losses import bpr_loss, info_nce_all
from modalrec.models.base import Embeddings, Model
from modalrec.models.missing_content import MissingEmbedding, content_rows, warn_contentless


class LGMRec(Model):
    """Local (collaborative + modality) graph embeddings plus a global modality hypergraph."""

    name = "lgmrec"
    modalities = "any"
    # The paper's ablations: without the modality graph embedding, without the global hypergraph embedding,
    # without the hypergraph contrastive loss.
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "w/o MGE": {"use_mge": False},
        "w/o GHE": {"use_ghe": False},
        "w/o HCL": {"cl_weight": 0.0},
    }
    r_hat: torch.Tensor  # [U, I] normalised interaction block R̂ of Â (CSR)
    r_hat_t: torch.Tensor  # [I, U] R̂ᵀ
    r_bin: torch.Tensor  # [U, I] binary interactions R (CSR)
    r_bin_t: torch.Tensor  # [I, U] Rᵀ
    r_mean: torch.Tensor  # [U, I] R / deg_u (CSR), the users' mean of item features
    r_mean_t: torch.Tensor  # [I, U] its transpose

    @dataclass
    class Config:
        embed_dim: int = 64  # latent dimensionality d (IDs and projected features)
        n_ui_layers: int = 2  # K LightGCN layers of the collaborative graph embedding (official: 2)
        n_mm_layers: int = 2  # L_m propagations of the modality graph embedding (official: 2)
        n_hyper_layers: int = 1  # H hypergraph message-passing layers (official Baby: 1)
        n_hyperedges: int = 4  # A learnable hyperedges per modality (official Baby: 4)
        keep_rate: float = 0.5  # 1 - dropout on the hyperedge dependencies (official Baby: 0.5)
        alpha: float = 0.3  # α weight of the global embedding (official Baby: 0.3)
        tau: float = 0.2  # temperature of the Gumbel-Softmax and of L_HCL (official: 0.2)
        cl_weight: float = 1e-4  # λ_1 of L_HCL (official: 1e-4)
        reg_weight: float = (
            1e-6  # λ_2 of the norm regulariser on the batch's final embeddings (official: 1e-6)
        )
        mge_weight: float = 1.0  # w on the modality term, E^l = E^c + w Σ_m normalize(E^m) (paper, code: 1)
        hyper_l2: bool = False  # True: hyperedge logits from L2-normalised rows F^m/||F^m|| (paper, code:
        # raw F^m; with large-norm features the Gumbel-Softmax saturates, see the module docstring)
        use_mge: bool = True  # False: no modality graph embedding ("w/o MGE")
        use_ghe: bool = True  # False: no global hypergraph embedding nor L_HCL ("w/o GHE")
        cl_anchors: int = 0  # anchors per side in L_HCL: 0 = the whole batch (official), b > 0 = b random
        # batch rows, rescaled to the batch sum (an unbiased estimate at b/B of the cost; for a CPU budget)
        cl_chunk: int = 1024  # anchors per [chunk, N] block of L_HCL

    def __init__(self, data: Dataset, cfg: Config) -> None:
        super().__init__(data, cfg)
        if not 0.0 < cfg.keep_rate <= 1.0:
            raise ConfigError(f"keep_rate must lie in (0, 1], got {cfg.keep_rate}")
        if cfg.mge_weight < 0:
            raise ConfigError(f"mge_weight must be >= 0, got {cfg.mge_weight}")
        if cfg.n_hyperedges < 1 or cfg.n_hyper_layers < 1:
            raise ConfigError("LGMRec needs n_hyperedges >= 1 and n_hyper_layers >= 1")
        d = cfg.embed_dim
        names = list(data.features)
        self.n_modalities = len(names)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_users, d)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_items, d)))
        raw = [torch.from_numpy(np.ascontiguousarray(content_rows(data, m), dtype=np.float32)) for m in names]
        for idx, r in enumerate(raw):
            self.register_buffer(f"raw_{idx}", r, persistent=False)
        self.trs = nn.ParameterList(
            [nn.Parameter(nn.init.xavier_uniform_(torch.empty(r.shape[1], d))) for r in raw]
        )  # W_m
        self.hyper = nn.ParameterList(
            [nn.Parameter(nn.init.xavier_uniform_(torch.empty(r.shape[1], cfg.n_hyperedges))) for r in raw]
        )  # V_m
        self.dropout = nn.Dropout(1.0 - cfg.keep_rate)
        self.missing = MissingEmbedding(data, names, d)
        warn_contentless(data, names, self.name)
        r_hat, r_hat_t = normalized_interactions(data.train)
        self.register_buffer("r_hat", r_hat, persistent=False)
        self.register_buffer("r_hat_t", r_hat_t, persistent=False)
        r = sp.csr_matrix(data.train, dtype=np.float32)
        r.data[:] = 1.0
        deg = np.asarray(r.sum(axis=1)).ravel()
        with np.errstate(divide="ignore"):
            inv = np.where(deg > 0, 1.0 / deg, 0.0).astype(np.float32)
        mean = sp.csr_matrix(sp.diags(inv) @ r)
        for name, mat in (("r_bin", r), ("r_mean", mean)):
            self.register_buffer(name, scipy_to_torch(mat), persistent=False)
            self.register_buffer(f"{name}_t", scipy_to_torch(sp.csr_matrix(mat.T)), persistent=False)

    def raw_features(self, idx: int) -> torch.Tensor:
        """Frozen raw features F^m of modality ``idx``: [I, d_m]."""
        return getattr(self, f"raw_{idx}")

    def modality_graph_embedding(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """E^m = Â^{L_m} [X^m_u; X^m_i]: users [U, d], items [I, d]."""
        items = self.missing(idx, self.raw_features(idx) @ self.trs[idx])
        users = sparse_mm(self.r_mean, items, self.r_mean_t)
        for _ in range(self.cfg.n_mm_layers):
            users, items = (
                sparse_mm(self.r_hat, items, self.r_hat_t),
                sparse_mm(self.r_hat_t, users, self.r_hat),
            )
        return users, items

    def hyperedges(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Dependencies on the A hyperedges of modality ``idx``: users H^m_u [U, A], items H^m_i [I, A].

        Training: Gumbel-Softmax (soft) samples with dropout; evaluation: softmax(logits/τ), no noise.
        """
        feats = self.raw_features(idx)
        if self.cfg.hyper_l2:
            feats = F.normalize(feats, dim=1)
        item_logits = feats @ self.hyper[idx]
        present = self.missing.present(idx)
        keep = None if present is None else present.unsqueeze(1).to(item_logits.dtype)
        if keep is not None:  # absent items add nothing to their users' logits
            item_logits = item_logits * keep
        user_logits = sparse_mm(self.r_bin, item_logits, self.r_bin_t)
        if self.training:
            h_u = F.gumbel_softmax(user_logits, tau=self.cfg.tau, hard=False, dim=1)
            h_i = F.gumbel_softmax(item_logits, tau=self.cfg.tau, hard=False, dim=1)
            h_u, h_i = self.dropout(h_u), self.dropout(h_i)
        else:
            h_u = torch.softmax(user_logits / self.cfg.tau, dim=1)
            h_i = torch.softmax(item_logits / self.cfg.tau, dim=1)
        return h_u, h_i if keep is None else h_i * keep

    def hypergraph_embedding(self, idx: int, cge_items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Z^m_u [U, d], Z^m_i [I, d] by H layers of Λ = H_iᵀ Z_i, Z_i = H_i Λ, Z_u = H_u Λ from E^c_i."""
        h_u, h_i = self.hyperedges(idx)
        z_i, z_u = cge_items, cge_items
        for _ in range(self.cfg.n_hyper_layers):
            lat = h_i.T @ z_i  # [A, d]
            z_i, z_u = h_i @ lat, h_u @ lat
        return z_u, z_i

    def forward(self) -> Embeddings:
        """E = E^c + Σ_m normalize(E^m) + α normalize(Σ_m Z^m): users [U, d], items [I, d]."""
        cge_users, cge_items = bipartite_layer_mean(
            self.r_hat, self.r_hat_t, self.user_emb, self.item_emb, self.cfg.n_ui_layers
        )
        users, items = cge_users, cge_items
        extras: dict[str, Any] = {}
        if self.cfg.use_mge:
            for idx in range(self.n_modalities):
                mu, mi = self.modality_graph_embedding(idx)
                w = self.cfg.mge_weight
                users, items = users + w * F.normalize(mu, dim=1), items + w * F.normalize(mi, dim=1)
        if self.cfg.use_ghe:
            # the hypergraph starts from the collaborative item embeddings E^c_i
            hyper = [self.hypergraph_embedding(idx, cge_items) for idx in range(self.n_modalities)]
            g_u = torch.stack([h[0] for h in hyper]).sum(0)
            g_i = torch.stack([h[1] for h in hyper]).sum(0)
            users = users + self.cfg.alpha * F.normalize(g_u, dim=1)
            items = items + self.cfg.alpha * F.normalize(g_i, dim=1)
            extras["hyper"] = hyper
        return Embeddings(users, items, extras)

    def loss(self, batch: Batch, emb: Embeddings) -> dict[str, torch.Tensor]:
        """BPR, λ_1 L_HCL (summed over the batch), λ_2 (||e_u|| + ||e_p|| + ||e_n||)/B."""
        u = emb.users.index_select(0, batch.users)
        p, n = emb.items.index_select(0, batch.pos), emb.items.index_select(0, batch.neg)
        terms = {
            "bpr": bpr_loss((u * p).sum(1), (u * n).sum(1)),
            "reg": self.cfg.reg_weight * (u.norm() + p.norm() + n.norm()) / len(batch.users),
        }
        hyper = (emb.extras or {}).get("hyper")
        if self.cfg.cl_weight > 0 and hyper and len(hyper) > 1:
            terms["cl"] = self.cfg.cl_weight * self.hypergraph_contrast(hyper, batch)
        return terms

    def hypergraph_contrast(
        self, hyper: list[tuple[torch.Tensor, torch.Tensor]], batch: Batch
    ) -> torch.Tensor:
        """L_HCL: Σ over modality pairs m < m' of the batch-summed InfoNCE of users and of positive items."""
        total = hyper[0][0].new_zeros(())
        n_batch = batch.users.shape[0]
        sides = [(0, batch.users), (1, batch.pos)]
        if 0 < self.cfg.cl_anchors < n_batch:
            pick = torch.randperm(n_batch, device=batch.users.device)[: self.cfg.cl_anchors]
            sides = [(0, batch.users[pick]), (1, batch.pos[pick])]
        for m in range(len(hyper)):
            for m2 in range(m + 1, len(hyper)):
                for side, index in sides:
                    a, b = hyper[m][side], hyper[m2][side]
                    mean = info_nce_all(a, b, index, self.cfg.tau, chunk_size=self.cfg.cl_chunk)
                    total = total + mean * n_batch  # the batch sum (estimated from the anchors' mean)
        return total
