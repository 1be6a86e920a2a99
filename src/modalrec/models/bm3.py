"""BM3: Bootstrap Latent Representations for Multi-modal Recommendation (Zhou et al., WWW 2023).

No negative sampling and no separate target encoder: the target view is the online representation itself
passed through dropout under a stop-gradient (paper Sec. 3.2, "latent embedding dropout"), and the online view
goes through a shared linear predictor f_p.

* Encoders (Sec. 3.1): h_u, h_i = LightGCN layer mean over the user-item graph (L layers), with the item's ID
  embedding added back (h_i += e_i, the official code's residual); per modality h_i^m = W_m x_i^m + b_m.
* Views (Sec. 3.2): online ĥ = f_p(h); target h̃ = sg(Dropout_p(h)), for users, items and every modality.
* Losses (Sec. 3.3), with C(a, b) = 1 - cos(a, b) averaged over the batch's (u, i) pairs:
  L_rec   = C(ĥ_u, h̃_i) + C(ĥ_i, h̃_u)                         graph reconstruction, symmetric;
  L_align = Σ_m C(ĥ_i^m, h̃_i)                                 inter-modality alignment with the ID view;
  L_mask  = Σ_m C(ĥ_i^m, h̃_i^m)                               intra-modality masked-feature reconstruction;
  L = L_rec + λ_cl (L_align + L_mask) + λ_reg L_reg.
* Score (Sec. 3.4): ŷ_ui = ĥ_u · ĥ_i (online views, no dropout).

Where it follows the official code (enoche/MMRec ``bm3.py``): L_reg = (||H_U||_F + ||H_I||_F) / |I| on the
propagated tables (unsquared norms, as the code's EmbLoss), raw features fine-tuned (``finetune_features``),
the item residual h_i += e_i. Ablations (paper Sec. 4.3): ``w/o-align``, ``w/o-mask``, ``w/o-MM`` (ID only).

Items lacking a modality: content enters BM3 through L_align and L_mask only, so modality m's two terms run over
the batch's items that have m (there is no content to align with the ID view or to reconstruct otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from modalrec.data.dataset import Dataset
from modalrec.data.sampling import Batch
from modalrec.graph import normalized_adjacency, sparse_mm
from modalrec.models.base import Embeddings, Model
from modalrec.models.missing_content import MissingEmbedding, content_rows, warn_contentless


def cosine_loss(online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """C(a, b) = 1 - mean cos(a_k, b_k) over rows; the target enters as a constant. [B, d] x2 -> scalar."""
    return 1.0 - F.cosine_similarity(online, target.detach(), dim=1).mean()


class BM3(Model):
    """Bootstrapped multi-modal latent views: online predictor vs dropout targets, no negatives."""

    name = "bm3"
    modalities = "any"
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "w/o-align": {"use_align": False},
        "w/o-mask": {"use_mask": False},
        "w/o-MM": {"use_align": False, "use_mask": False},
    }

    @dataclass
    class Config:
        embed_dim: int = 64  # latent size d of IDs and modality projections
        n_layers: int = 1  # LightGCN layers L (official search {1, 2})
        dropout: float = (
            0.3  # p of the latent embedding dropout that makes the target view (search {0.3, 0.5})
        )
        reg_weight: float = 0.1  # λ_reg (official search {0.1, 0.01})
        cl_weight: float = 2.0  # λ_cl on the multi-modal losses (official 2.0)
        use_align: bool = True  # L_align, modality online vs ID target (False: ablation w/o-align)
        use_mask: bool = True  # L_mask, modality online vs its own dropout target (False: w/o-mask)
        finetune_features: bool = True  # train the raw item features too (official code)

    adj: torch.Tensor

    def __init__(self, data: Dataset, cfg: Config) -> None:
        super().__init__(data, cfg)
        d = cfg.embed_dim
        self.modality_names = list(data.modalities)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_users, d)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_items, d)))
        self.predictor = nn.Linear(d, d)
        nn.init.xavier_normal_(self.predictor.weight)
        self.raw = nn.ParameterList(
            nn.Parameter(torch.from_numpy(content_rows(data, n)).clone(), requires_grad=cfg.finetune_features)
            for n in self.modality_names
        )
        self.transforms = nn.ModuleList(nn.Linear(data.features[n].shape[1], d) for n in self.modality_names)
        for lin in self.transforms:
            nn.init.xavier_normal_(lin.weight)  # type: ignore[arg-type]
        self.missing = MissingEmbedding(data, self.modality_names, None)  # the masks only
        warn_contentless(data, self.modality_names, self.name)
        self.register_buffer("adj", normalized_adjacency(data.train), persistent=False)

    def encode(self) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """h_u [U, d], h_i [I, d] (LightGCN mean + item residual) and h_i^m per modality [I, d]."""
        x = torch.cat([self.user_emb, self.item_emb])
        total, h = x, x
        for _ in range(self.cfg.n_layers):
            h = sparse_mm(self.adj, h)
            total = total + h
        mean = total / (self.cfg.n_layers + 1)
        users, items = mean[: self.n_users], mean[self.n_users :] + self.item_emb
        return users, items, [lin(raw) for lin, raw in zip(self.transforms, self.raw, strict=True)]

    def forward(self) -> Embeddings:
        """Online views ĥ_u [U, d], ĥ_i [I, d] for scoring; extras hold the encoder outputs for the losses."""
        users, items, modal = self.encode()
        extras = {"h_users": users, "h_items": items, "h_modal": modal}
        return Embeddings(self.predictor(users), self.predictor(items), extras)

    def targets(self, h: torch.Tensor) -> torch.Tensor:
        """The target view h̃ = sg(Dropout(h)): a stop-gradient copy of the online encoder's output."""
        with torch.no_grad():
            return F.dropout(h.detach(), self.cfg.dropout, training=self.training)

    def loss(self, batch: Batch, emb: Embeddings) -> dict[str, torch.Tensor]:
        """rec, reg and, with modalities on, mm = λ_cl (L_align + L_mask); negatives are not used."""
        cfg = self.cfg
        assert emb.extras is not None
        users, items = batch.users, batch.pos
        h_u, h_i = emb.extras["h_users"], emb.extras["h_items"]
        t_u, t_i = self.targets(h_u.index_select(0, users)), self.targets(h_i.index_select(0, items))
        o_u, o_i = emb.users.index_select(0, users), emb.items.index_select(0, items)
        terms = {
            "rec": cosine_loss(o_u, t_i) + cosine_loss(o_i, t_u),
            "reg": cfg.reg_weight * (h_u.norm() + h_i.norm()) / self.n_items,
        }
        if cfg.cl_weight > 0 and (cfg.use_align or cfg.use_mask):
            mm = h_u.new_zeros(())
            for m, h_m in enumerate(emb.extras["h_modal"]):
                present = self.missing.present(m)
                own, target = items, t_i
                if present is not None:  # the batch's items that have modality m
                    keep = present.index_select(0, items)
                    if not bool(keep.any()):
                        continue
                    own, target = items[keep], t_i[keep]
                rows = h_m.index_select(0, own)
                online = self.predictor(rows)
                if cfg.use_align:
                    mm = mm + cosine_loss(online, target)
                if cfg.use_mask:
                    mm = mm + cosine_loss(online, self.targets(rows))
            terms["mm"] = cfg.cl_weight * mm
        return terms
