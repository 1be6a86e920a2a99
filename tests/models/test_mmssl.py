"""MMSSL: each piece on tiny inputs, the generated graphs, Algorithm 1's alternation and a planted signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modalrec.config import load_config
from modalrec.data import Dataset
from modalrec.data.sampling import BPRSampler
from modalrec.errors import ConfigError
from modalrec.evaluate import EvalConfig, evaluate
from modalrec.losses import gradient_penalty, info_nce
from modalrec.models.base import TrainSettings
from modalrec.models.mf import MF
from modalrec.models.mmssl import MMSSL
from modalrec.models.mmssl_parts import (
    Discriminator,
    ModalityAttention,
    gumbel_transform,
    interaction_block,
    topk_relations,
)
from modalrec.train import train


def _fit(
    model: torch.nn.Module, data: Dataset, epochs: int, batch_size: int = 256, mode: str = "users"
) -> None:
    opts = model.configure_optimizers(TrainSettings(lr=1e-2))  # type: ignore[operator]
    sampler = BPRSampler(data.train, batch_size, seed=0, mode=mode)
    for epoch in range(epochs):
        model.train()
        model.on_epoch_start(epoch)  # type: ignore[operator]
        for batch in sampler.epoch(epoch):
            model.train_step(batch, opts)  # type: ignore[operator]


# ---- pieces ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["paper", "code"])
def test_gumbel_rows_sum_to_one_and_favour_observed(form: str) -> None:
    a = torch.zeros(64, 50)
    a[:, :5] = 1.0
    out = gumbel_transform(a, tau=0.5, form=form)
    assert out.shape == a.shape
    torch.testing.assert_close(out.sum(dim=1), torch.ones(64))
    assert (out >= 0).all()
    # observed columns carry more mass per column than unobserved ones on average
    assert out[:, :5].mean() > out[:, 5:].mean()


def test_gumbel_paper_form_divides_the_whole_logit() -> None:
    a = torch.tensor([[1.0, 0.0, 0.0]])
    torch.manual_seed(3)
    paper = gumbel_transform(a, tau=0.1, noise_scale=0.0, form="paper")
    code = gumbel_transform(a, tau=0.1, noise_scale=0.0, form="code")
    torch.testing.assert_close(paper, torch.softmax(a / 0.1, dim=1))
    torch.testing.assert_close(code, torch.softmax(a, dim=1))


def test_gradient_penalty_matches_autograd_on_a_linear_critic() -> None:
    torch.manual_seed(0)
    w = torch.tensor([[0.3, -1.2, 2.0]])
    critic = lambda x: (x @ w.T).squeeze(1)  # noqa: E731 - ∇_x D = w everywhere
    real, fake = torch.randn(5, 3), torch.randn(5, 3)
    expected = (w.norm() - 1) ** 2
    torch.testing.assert_close(gradient_penalty(critic, real, fake), expected)


def test_gradient_penalty_matches_manual_autograd_on_a_nonlinear_critic() -> None:
    torch.manual_seed(0)
    d = Discriminator(16, dropouts=(0.0, 0.0)).eval()
    real, fake = torch.rand(6, 16), torch.rand(6, 16)
    torch.manual_seed(1)
    gp = gradient_penalty(d, real, fake)
    torch.manual_seed(1)
    alpha = torch.rand(6, 1)
    x = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    manual = 0.0
    for r in range(6):  # one row at a time: the per-row gradient norm by plain autograd
        (g,) = torch.autograd.grad(d(x)[r], x)
        manual += (g[r].norm() - 1) ** 2
    torch.testing.assert_close(gp, torch.as_tensor(manual / 6))


def test_discriminator_shapes_and_slope_option() -> None:
    d = Discriminator(64)
    assert d(torch.rand(8, 64)).shape == (8,)
    assert d.linears[0].out_features == 16 and d.linears[1].out_features == 8
    assert d.acts[0].negative_slope == pytest.approx(0.2)
    assert Discriminator(64, slope=1.0).acts[0].negative_slope == 1.0  # the official code's (linear) D
    out = Discriminator(64, output_scale=100.0).eval()(torch.rand(4, 64))
    assert ((out > 0) & (out < 100)).all()


def test_attention_shapes_keys_differ_from_queries_and_values_are_used() -> None:
    torch.manual_seed(0)
    att = ModalityAttention(16, n_heads=4)
    assert att.w_v is not None and att.w_o is not None
    x = torch.randn(7, 3, 16)
    out = att(x)
    assert out.shape == (7, 3, 16)
    assert not torch.equal(att.w_q.weight, att.w_k.weight)
    weights = att.attention(x)
    assert weights.shape == (7, 3, 3, 4)
    torch.testing.assert_close(weights.sum(dim=2), torch.ones(7, 3, 4))
    # queries and keys are separate maps: the score matrix is not symmetric as with K = Q
    n, m = 7, 3
    q = att.w_q(x).view(n, m, 4, 4)
    k = att.w_k(x).view(n, m, 4, 4)
    scores = torch.einsum("nahd,nbhd->nhab", q, k)
    assert not torch.allclose(scores, scores.transpose(-1, -2))
    # changing the value projection changes the output (the code never used it)
    with torch.no_grad():
        att.w_v.weight.mul_(2.0)
    assert not torch.allclose(att(x), out)
    # against a hand computation for one node and one head
    with torch.no_grad():
        att.w_v.weight.div_(2.0)
    v = att.w_v(x).view(n, m, 4, 4)
    head0 = torch.softmax(scores[0, 0] / 2.0, dim=-1) @ v[0, :, 0]
    concat = torch.einsum("abh,bhd->ahd", weights[0], v[0]).reshape(m, 16)
    torch.testing.assert_close(concat[:, :4], head0)
    torch.testing.assert_close(out[0], att.w_o(concat))


def test_single_modality_attention_is_value_output_map() -> None:
    att = ModalityAttention(8, n_heads=2)
    assert att.w_v is not None and att.w_o is not None
    x = torch.randn(5, 1, 8)
    torch.testing.assert_close(att(x), att.w_o(att.w_v(x)))


@pytest.mark.parametrize("chunk", [1, 3, 7, 100])
def test_chunked_info_nce_equals_unchunked(chunk: int) -> None:
    torch.manual_seed(0)
    a, b = torch.randn(20, 8), torch.randn(20, 8)
    full = info_nce(a, b, 0.085, chunk_size=10_000)
    naive = -torch.log_softmax(F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / 0.085, dim=1).diag().mean()
    torch.testing.assert_close(full, naive)
    torch.testing.assert_close(info_nce(a, b, 0.085, chunk_size=chunk), full)


def test_interaction_block_restricts_to_sampled_columns() -> None:
    indptr = torch.tensor([0, 2, 2, 5])
    indices = torch.tensor([1, 4, 0, 2, 4])
    users = torch.tensor([2, 0, 1, 0])
    full = interaction_block(indptr, indices, users, None, 5)
    expected = torch.tensor(
        [[1, 0, 1, 0, 1], [0, 1, 0, 0, 1], [0, 0, 0, 0, 0], [0, 1, 0, 0, 1]], dtype=torch.float32
    )
    torch.testing.assert_close(full, expected)
    cols = torch.tensor([1, 4])
    pos = torch.full((5,), -1)
    pos[cols] = torch.arange(2)
    torch.testing.assert_close(interaction_block(indptr, indices, users, pos, 2), expected[:, cols])


def test_topk_relations_are_each_users_own_topk() -> None:
    torch.manual_seed(0)
    fu, fi = torch.randn(37, 6), torch.randn(23, 6)
    indptr = torch.tensor([0, *np.cumsum([i % 3 for i in range(37)]).tolist()])
    indices = torch.cat([torch.randperm(23)[: i % 3] for i in range(37)])
    top = topk_relations(fu, fi, 4, indptr, indices, chunk_size=5)
    sims = F.normalize(fu, dim=1) @ F.normalize(fi, dim=1).T
    for u in range(37):
        seen = set(indices[indptr[u] : indptr[u + 1]].tolist())
        ranked = [i for i in torch.argsort(sims[u], descending=True).tolist() if i not in seen]
        assert top[u].tolist() == ranked[:4]
    with pytest.raises(ValueError):
        topk_relations(fu, fi, 0)


# ---- the model ------------------------------------------------------------------------------------------
def test_generated_graphs_nonempty_and_per_user_correct(tiny: Dataset) -> None:
    torch.manual_seed(0)
    model = MMSSL(tiny, MMSSL.Config(view_topk=5))
    _fit(model, tiny, epochs=1, batch_size=1024)
    model.rebuild_views()
    fu, fi = model.modality_features(dropout=False)
    assert model.view_items.shape == (2, tiny.n_users, 5)
    for m in range(2):
        ui = model._view_graphs()[m][0]
        assert ui._nnz() == tiny.n_users * 5  # every user has k >= 1 edges
        sims = F.normalize(fu[m], dim=1) @ F.normalize(fi[m], dim=1).T
        for u in range(0, tiny.n_users, 17):
            seen = set(tiny.train[u].indices.tolist())
            ranked = [i for i in torch.argsort(sims[u], descending=True).tolist() if i not in seen][:5]
            row = ui.crow_indices()
            assert sorted(ui.col_indices()[row[u] : row[u + 1]].tolist()) == sorted(ranked)
        # the Eq. 8 view of user u is the normalised sum of its own neighbours' ID embeddings
        views, _ = model.modality_views()
        u = 3
        expected = model.item_emb[model.view_items[m, u]].sum(0) / 5**0.5
        torch.testing.assert_close(views[m][u], expected)


def test_k_is_at_least_one(tiny: Dataset) -> None:
    with pytest.raises(ConfigError, match="view_topk"):
        MMSSL(tiny, MMSSL.Config(view_topk=0))
    # k is clipped so every user keeps at least one unobserved candidate, never to zero
    model = MMSSL(tiny, MMSSL.Config(view_topk=10_000))
    assert 1 <= model.view_k <= tiny.n_items - int(np.diff(tiny.train.indptr).max())


def test_any_number_of_modalities(tiny: Dataset) -> None:
    one = tiny.select_modalities(["visual"])
    three = Dataset(
        tiny.name,
        tiny.user_ids,
        tiny.item_ids,
        tiny.train,
        tiny.val,
        tiny.test,
        {
            **tiny.features,
            "audio": np.random.default_rng(0).normal(size=(tiny.n_items, 5)).astype(np.float32),
        },
    )
    for data in (one, three):
        model = MMSSL(data, MMSSL.Config(embed_dim=16, n_heads=2))
        emb = model()
        assert emb.users.shape == (data.n_users, 16) and emb.items.shape == (data.n_items, 16)
        assert model.view_items.shape[0] == len(data.modalities)


def test_train_step_alternates_d_and_g_and_reports_named_terms(tiny: Dataset) -> None:
    torch.manual_seed(0)
    model = MMSSL(tiny, MMSSL.Config(d_columns=64, d_steps=2, param_l2=0.014))
    g_opt, d_opt = model.configure_optimizers(TrainSettings())
    assert g_opt.decoupled and not d_opt.decoupled  # AdamW for the model, Adam for D (paper Sec. 4.1.4)
    assert d_opt.defaults["betas"] == (0.5, 0.9)
    d_ids = {id(p) for p in model.discriminator.parameters()}  # type: ignore[union-attr]
    assert not any(id(p) in d_ids for g in g_opt.param_groups for p in g["params"])
    assert model.discriminator.linears[0].in_features == 64  # type: ignore[union-attr]
    batch = next(iter(BPRSampler(tiny.train, 128, seed=0, mode="users").epoch(0)))
    d_before = [p.detach().clone() for p in model.discriminator.parameters()]  # type: ignore[union-attr]
    e_before = model.user_emb.detach().clone()
    out = model.train_step(batch, [g_opt, d_opt])
    assert set(out) == {"bpr", "reg", "l2", "cl", "adv_g", "adv_d"}
    assert all(np.isfinite(v) for v in out.values())
    assert any(not torch.equal(a, b) for a, b in zip(d_before, model.discriminator.parameters(), strict=True))  # type: ignore[union-attr]
    assert not torch.equal(e_before, model.user_emb)
    assert d_opt.state[0]["step"] == 2  # two D steps (state is keyed by parameter index)


def test_param_l2_is_lambda4_times_squared_norm_of_the_whole_id_tables(tiny: Dataset) -> None:
    torch.manual_seed(0)
    model = MMSSL(tiny, MMSSL.Config(param_l2=1e-3))
    batch = next(iter(BPRSampler(tiny.train, 64, seed=0, mode="users").epoch(0)))
    terms = model.loss(batch, model.forward())
    expected = 1e-3 * (model.user_emb.pow(2).sum() + model.item_emb.pow(2).sum())
    torch.testing.assert_close(terms["l2"], expected)
    assert "l2" not in MMSSL(tiny, MMSSL.Config(param_l2=0.0)).loss(batch, model.forward())


def test_embedding_parts_sum_to_the_final_embedding(tiny: Dataset) -> None:
    """id + attention + content equals forward() in eval mode (Eqs. 10 and 12 are linear in the three parts)."""
    torch.manual_seed(0)
    model = MMSSL(tiny, MMSSL.Config(omega=0.3, eta=0.5))
    _fit(model, tiny, epochs=1)
    model.eval()
    with torch.no_grad():
        full = model.forward()
    parts = model.embedding_parts()
    assert set(parts) == {"id", "attention", "content"}
    torch.testing.assert_close(sum(p[0] for p in parts.values()), full.users, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sum(p[1] for p in parts.values()), full.items, atol=1e-5, rtol=1e-5)
    # the content part of a user is ω times a sum of M unit rows
    assert float(parts["content"][0].norm(dim=1).max()) <= len(model.transforms) * 0.3 + 1e-5
    assert float(parts["attention"][0].abs().sum()) > 0 and float(parts["id"][1].abs().sum()) > 0


@pytest.mark.parametrize(
    ("variant", "terms"),
    [
        ("wo_asl", {"bpr", "reg", "l2", "cl"}),
        ("wo_cl", {"bpr", "reg", "l2", "adv_g", "adv_d"}),
        ("wo_gt", {"bpr", "reg", "l2", "cl", "adv_g", "adv_d"}),
        ("rp_gae", {"bpr", "reg", "l2", "cl", "gae"}),
    ],
)
def test_variants_switch_terms(tiny: Dataset, variant: str, terms: set[str]) -> None:
    assert {"variant": variant} in MMSSL.variants.values()
    model = MMSSL(tiny, MMSSL.Config(variant=variant, param_l2=0.014))
    opts = model.configure_optimizers(TrainSettings())
    assert len(opts) == (2 if "adv_d" in terms else 1)
    batch = next(iter(BPRSampler(tiny.train, 64, seed=0, mode="users").epoch(0)))
    assert set(model.train_step(batch, opts)) == terms


def test_checkpoint_round_trip_restores_generated_graphs(tiny: Dataset) -> None:
    torch.manual_seed(0)
    model = MMSSL(tiny, MMSSL.Config())
    _fit(model, tiny, epochs=1, batch_size=1024)
    model.rebuild_views()
    model.eval()
    scores = model.score(model(), torch.arange(10))
    torch.manual_seed(123)
    fresh = MMSSL(tiny, MMSSL.Config())
    fresh.load_state_dict(model.state_dict())
    fresh.eval()
    torch.testing.assert_close(fresh.score(fresh(), torch.arange(10)), scores)


def test_mmssl_beats_mf_on_planted_signal(tiny: Dataset) -> None:
    ev = EvalConfig(protocol="paper")
    torch.manual_seed(0)
    mf = MF(tiny, MF.Config())
    _fit(mf, tiny, epochs=8, mode="interactions")
    torch.manual_seed(0)
    mmssl = MMSSL(tiny, MMSSL.Config())
    _fit(mmssl, tiny, epochs=8)
    r_mf = float(evaluate(mf, tiny, "test", ev)["recall@20"])  # type: ignore[arg-type]
    r_mmssl = float(evaluate(mmssl, tiny, "test", ev)["recall@20"])  # type: ignore[arg-type]
    assert r_mmssl > r_mf, (r_mmssl, r_mf)


# ---- memory: nothing |U| x |I| ----------------------------------------------------------------------------
_MEMORY_PROBE = """
import resource, sys, torch
from modalrec.data import SyntheticConfig, make_synthetic
from modalrec.data.sampling import BPRSampler
from modalrec.models.base import TrainSettings
from modalrec.models.mmssl import MMSSL
torch.set_num_threads(1)
data = make_synthetic(SyntheticConfig(n_users=40000, n_items=25000, n_interactions=120000, candidates=500,
                                      modality_dims={"visual": 32, "acoustic": 16}, seed=0))
model = MMSSL(data, MMSSL.Config(embed_dim=32, d_columns=256, view_topk=5))
opts = model.configure_optimizers(TrainSettings(lr=1e-3))
model.train()
model.on_epoch_start(0)  # builds the Eq. 8 graphs over all 40,000 users in [chunk, I] blocks
batch = next(iter(BPRSampler(data.train, 1024, seed=0, mode="users").epoch(0)))
model.train_step(batch, opts)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def test_mmssl_peak_memory_stays_far_below_a_dense_user_item_matrix() -> None:
    """40,000 x 25,000: a dense float32 |U| x |I| alone is 3,815 MiB; a full MMSSL step stays far below it."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _MEMORY_PROBE], capture_output=True, text=True, check=True)
    peak_mib = int(proc.stdout.strip().splitlines()[-1])
    dense_mib = 40000 * 25000 * 4 / 2**20
    assert peak_mib < dense_mib / 3, f"peak {peak_mib} MiB vs dense |U|x|I| {dense_mib:.0f} MiB"


# ---- the adversarial part acts (critic, Gumbel term, row subsets, paired random streams) --------------------
def _wgan_gp_steps(d: Discriminator, real: torch.Tensor, fake: torch.Tensor, steps: int) -> None:
    opt = torch.optim.Adam(d.parameters(), lr=5e-3, betas=(0.5, 0.9))
    for _ in range(steps):
        loss = -d(real).mean() + d(fake).mean() + gradient_penalty(d, real, fake)
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_critic_separates_an_obviously_different_fake_batch_after_a_few_steps() -> None:
    torch.manual_seed(0)
    real = torch.zeros(32, 64)
    real[torch.arange(32), torch.randint(0, 10, (32,))] = 1.0  # real rows: a spike among the first 10 items
    fake = torch.nn.functional.normalize(torch.rand(32, 64), dim=1)  # fake rows: spread over all items
    d = Discriminator(64, dropouts=(0.0, 0.0), norm="none")
    with torch.no_grad():
        before = float(d(real).mean() - d(fake).mean())
    _wgan_gp_steps(d, real, fake, 60)
    with torch.no_grad():
        after = float(d(real).mean() - d(fake).mean())
    assert after > 0.3 and after > before + 0.3, (before, after)


def test_one_batchnorm_call_keeps_the_gap_that_two_calls_erase() -> None:
    torch.manual_seed(0)
    d = Discriminator(32, dropouts=(0.0, 0.0), norm="joint_batch").train().requires_grad_(False)
    real, fake = torch.rand(16, 32) + 1.0, torch.rand(16, 32)
    bias = float(d.linears[-1].bias.detach())
    # two calls: BatchNorm centres each batch, so each batch's mean logit is the final bias whatever its rows
    assert float(d.logits(real).mean()) == pytest.approx(bias, abs=1e-5)
    assert float(d.logits(fake).mean()) == pytest.approx(bias, abs=1e-5)
    joint = d.logits(torch.cat([real, fake]))
    assert abs(float(joint[:16].mean() - joint[16:].mean())) > 0.1


def test_untrained_critic_control_d_steps_0(tiny: Dataset) -> None:
    """`--set model.d_steps=0` (the ablation's untrained-D control) is accepted: D keeps its initial weights while
    the generator still trains against it; a negative count is refused with the key named."""
    cfg = load_config(None, ["model.d_steps=0", "model.d_columns=0"], model_name="mmssl")
    assert cfg.model["d_steps"] == 0 and cfg.model["d_columns"] == 0
    with pytest.raises(ConfigError, match=r"model\.d_steps must be an integer >= 0, got -1"):
        load_config(None, ["model.d_steps=-1"], model_name="mmssl")
    torch.manual_seed(0)
    model = MMSSL(tiny, MMSSL.Config(d_steps=0))
    opts = model.configure_optimizers(TrainSettings())
    batch = next(iter(BPRSampler(tiny.train, 128, seed=0, mode="users").epoch(0)))
    d_before = [p.detach().clone() for p in model.discriminator.parameters()]  # type: ignore[union-attr]
    e_before = model.user_emb.detach().clone()
    out = model.train_step(batch, opts)
    assert out["adv_g"] != 0.0  # L_G still reaches the generator
    assert all(torch.equal(a, b) for a, b in zip(d_before, model.discriminator.parameters(), strict=True))  # type: ignore[union-attr]
    assert not torch.equal(e_before, model.user_emb)


def test_mmssl_critic_gap_turns_positive_with_d_steps(tiny: Dataset) -> None:
    torch.manual_seed(0)
    model = MMSSL(tiny, MMSSL.Config(d_lr=3e-3))
    _, d_opt = model.configure_optimizers(TrainSettings())
    model.train()
    model.on_epoch_start(0)
    batch = next(iter(BPRSampler(tiny.train, 128, seed=0, mode="users").epoch(0)))
    emb = model.forward()
    assert abs(model.epoch_diagnostics()["critic_gap"]) < 0.1  # an untrained critic cannot tell them apart
    for _ in range(40):
        model.discriminator_step(batch, emb, d_opt, None, None)
    diag = model.epoch_diagnostics()
    assert diag["critic_gap"] > 0.2, diag
    assert diag["w_estimate"] > 0.0 and diag["grad_ratio"] > 0.0
    assert diag["view_new_share"] == pytest.approx(1.0)  # Eq. 8 links users to items they have not seen


def test_gumbel_term_keeps_a_share_of_the_real_row_with_the_default_scaling(tiny: Dataset) -> None:
    torch.manual_seed(0)
    users = torch.arange(0, tiny.n_users, 3)

    def share(**kw: object) -> float:
        model = MMSSL(tiny, MMSSL.Config(**kw))  # type: ignore[arg-type]
        a = interaction_block(model.indptr, model.indices, users, None, tiny.n_items)
        base, aug = model.real_parts(model.forward(), users, None, a, torch.Generator().manual_seed(0))
        return float((base.norm(dim=1) / (base.norm(dim=1) + aug.norm(dim=1))).mean())

    assert share() > 0.2
    # Eq. 5 as printed with the official code's ζ = 100 and a τ = 1 Gumbel softmax: the first term vanishes
    assert share(aug_form="literal", zeta=100.0, gumbel_tau=1.0, gumbel_noise_scale=1.0) < 0.01


def test_d_rows_equal_to_the_batch_is_the_full_row_discriminator(tiny: Dataset) -> None:
    batch = next(iter(BPRSampler(tiny.train, 64, seed=0, mode="users").epoch(0)))
    states = []
    for rows in (0, 64):
        torch.manual_seed(0)
        model = MMSSL(tiny, MMSSL.Config(d_rows=rows))
        opts = model.configure_optimizers(TrainSettings())
        model.train()
        model.on_epoch_start(0)
        model.train_step(batch, opts)
        states.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*states, strict=True):
        torch.testing.assert_close(a, b)
    model = MMSSL(tiny, MMSSL.Config(d_rows=16))
    assert len(model.d_users(batch.users)) == 16 and set(model.d_users(batch.users).tolist()) <= set(
        batch.users.tolist()
    )


def test_variants_are_paired_the_adversarial_part_never_draws_from_the_global_stream(tiny: Dataset) -> None:
    batch = next(iter(BPRSampler(tiny.train, 64, seed=0, mode="users").epoch(0)))
    states, first_bpr = [], []
    for variant in ("full", "wo_asl", "wo_gt"):
        torch.manual_seed(0)
        model = MMSSL(tiny, MMSSL.Config(variant=variant, d_columns=50))
        after_init = torch.get_rng_state()
        opts = model.configure_optimizers(TrainSettings())
        torch.manual_seed(5)
        model.train()
        model.on_epoch_start(0)
        first_bpr.append(model.train_step(batch, opts)["bpr"])
        model.epoch_diagnostics()
        states.append((after_init, torch.get_rng_state(), model.user_emb.detach().clone()))
    for init, after_step, _ in states[1:]:
        assert torch.equal(init, states[0][0])  # D's initialisation left the global stream alone
        assert torch.equal(after_step, states[0][1])  # so did D's step, the Gumbel noise and the diagnostics
    assert first_bpr[0] == first_bpr[1] == first_bpr[2]  # same initial weights, batch and dropout masks


def test_trainer_logs_the_diagnostics_per_epoch(tiny: Dataset, tmp_path: Path) -> None:
    cfg = load_config(
        None,
        ["train.epochs=2", "train.batch_size=256", "train.progress=false", "train.threads=1"],
        model_name="mmssl",
    )
    train(cfg, data=tiny, out=tmp_path / "run")
    header = (tmp_path / "run" / "history.csv").read_text().splitlines()[0].split(",")
    for key in ("critic_gap", "w_estimate", "grad_ratio", "gumbel_share", "view_new_share"):
        assert f"diag_{key}" in header
