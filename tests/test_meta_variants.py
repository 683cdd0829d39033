"""The meta-gradient variants: a fixed-length step, a held-out meta objective, where the
correction enters MetaFixMatch, Meta Pseudo Labels; and the defaults are the paper's step, draw for draw."""
import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metassl.algorithms import build_algorithm
from metassl.algorithms.fixmatch import FixMatch
from metassl.algorithms.flexmatch import FlexMatch
from metassl.algorithms.meta_gradient import correct_pseudo_labels, meta_gradient, project_to_simplex
from metassl.algorithms.metafixmatch import MetaFixMatch
from metassl.algorithms.metaflexmatch import MetaFlexMatch
from metassl.config import Config
from metassl.errors import UserError
from metassl.schedule import meta_step_size_at, lr_at

from .conftest import make_tiny_data, tiny_batch, tiny_context, tiny_net

EPS = Config.eps_scale


def meta_grad(model, batch):
    with torch.no_grad():
        y_tilde = F.softmax(model.eval()(batch.x_ulb[0]), 1)
    g = meta_gradient(model, batch.x_lb, batch.y_lb, batch.x_ulb[0], y_tilde, method="fd", eps_scale=EPS)
    return y_tilde, g


# ------------------------------------------------------------------ meta_step=normalised
@pytest.mark.parametrize("rho", [0.01, 0.05])
def test_normalised_step_has_rms_row_length_rho_whatever_the_gradient_scale(rho):
    torch.manual_seed(0)
    model, batch = tiny_net(), tiny_batch(FixMatch())
    y_tilde, g = meta_grad(model, batch)
    y_tilde = 0.5 * y_tilde + 0.5 / y_tilde.shape[1]        # inside the simplex: the projection is the identity
    for scale in (1.0, 1e-4):                              # ||g_l|| fading: the step does not
        y_hat = correct_pseudo_labels(y_tilde, scale * g, rho, "relu", "normalised")
        step = y_hat - y_tilde
        torch.testing.assert_close(step.pow(2).sum(1).mean().sqrt(), torch.tensor(rho), rtol=1e-4, atol=0)
        cos = F.cosine_similarity(step.flatten(), -g.flatten(), dim=0)
        assert cos > 0.9999                                # the meta-gradient's direction, rows in proportion
    plain = correct_pseudo_labels(y_tilde, 1e-4 * g, rho, "relu", "lr")
    assert (plain - y_tilde).abs().max() < 0.01 * (y_hat - y_tilde).abs().max()   # the paper's step fades


def test_lr_step_is_eq6_and_rho_follows_the_beta_schedule():
    y, g = F.softmax(torch.randn(5, 4), 1), torch.randn(5, 4)
    torch.testing.assert_close(correct_pseudo_labels(y, g, 0.3), project_to_simplex(y - 0.3 * g, "relu"))
    cfg = dataclasses.replace(Config(), meta_step="normalised", meta_rho=0.2, iterations=100, warmup=10)
    for it in (0, 5, 50, 99):
        assert meta_step_size_at(it, cfg) == pytest.approx(0.2 * lr_at(it, cfg) / cfg.lr)
        assert meta_step_size_at(it, dataclasses.replace(cfg, beta_schedule="constant")) == 0.2
        assert meta_step_size_at(it, dataclasses.replace(cfg, meta_step="lr")) == pytest.approx(lr_at(it, cfg))  # today's
    with pytest.raises(UserError, match="meta_rho=0.0 is out of range"):
        dataclasses.replace(Config(), meta_rho=0.0).resolved()
    with pytest.raises(UserError, match="meta_step='big' is not allowed"):
        dataclasses.replace(Config(), meta_step="big").resolved()


# ------------------------------------------------------------------ meta_holdout
def test_holdout_split_is_disjoint_fixed_and_recorded():
    from metassl.data import Split, labeled_split
    y = np.arange(400) % 4
    plain = labeled_split(y, 40, 4, seed=3)
    held = labeled_split(y, 40, 4, seed=3, meta_holdout=0.2)
    assert "meta" not in plain.to_dict() and len(plain.meta) == 0              # split.json as today
    assert len(held.meta) == 8 and len(held.labeled) == 32 and not set(held.meta) & set(held.labeled)
    assert sorted({*held.meta, *held.labeled}) == sorted(plain.labeled)        # the same labels in all
    assert np.array_equal(held.unlabeled, plain.unlabeled)
    assert np.bincount(y[held.meta], minlength=4).tolist() == [2, 2, 2, 2]     # class-balanced
    assert np.array_equal(Split.from_dict(held.to_dict()).meta, held.meta)
    assert np.array_equal(labeled_split(y, 40, 4, seed=3, meta_holdout=0.2).meta, held.meta)   # seeded
    with pytest.raises(UserError, match="meta_holdout=0.01 of 10 labels per class holds out 0"):
        labeled_split(y, 40, 4, seed=3, meta_holdout=0.01)


def test_data_source_draws_the_held_out_batch_from_the_held_out_images_only():
    from metassl.data import labeled_split
    from metassl.data.resident import prepare_data
    from metassl.data.sampling import UnlabeledSchedule
    data = make_tiny_data(n_train=80, size=6)
    split = labeled_split(data.y_train, 16, 4, 0, meta_holdout=0.25)
    dd = prepare_data(data, split, torch.device("cpu"), flip="false", translate=0)
    held = dd.view(dd.x_train[torch.from_numpy(split.meta)], "none").flatten(1)      # (4, 36)
    seen = dd.view(dd.x_train[torch.from_numpy(split.labeled)], "none").flatten(1)
    for batch in dd.batches(0, 3, ("weak",), 8, UnlabeledSchedule(8), seed=0):
        for x in batch.x_meta.flatten(1):
            assert (held - x).abs().sum(1).min() < 1e-5
        for x in batch.x_lb.flatten(1):
            assert (held - x).abs().sum(1).min() > 1e-3 and (seen - x).abs().sum(1).min() < 1e-5
    assert next(prepare_data(data, labeled_split(data.y_train, 16, 4, 0), torch.device("cpu")).batches(
        0, 1, ("weak",), 8, UnlabeledSchedule(8), seed=0)).x_meta is None


@pytest.mark.parametrize("name", ["meta", "metamixup", "metafixmatch", "metaflexmatch"])
def test_held_out_images_reach_the_correction_but_never_the_classification_loss(name):
    algo = build_algorithm(dataclasses.replace(Config(), algorithm=name, meta_method="fd"))
    batch = tiny_batch(algo)
    g = torch.Generator().manual_seed(5)
    out = []
    for shift in (0.0, 1.0):
        b = copy.copy(batch)
        b.x_meta = (torch.randn(8, 1, 6, 6, generator=g) + shift).requires_grad_(True)
        b.y_meta = torch.randint(0, 4, (8,), generator=g)
        torch.manual_seed(0)
        o = algo.step(tiny_net().train(), b, tiny_context(beta=0.5))
        assert torch.autograd.grad(o.loss, b.x_meta, allow_unused=True) == (None,)   # nothing fits them
        out.append(o)
    if name != "metamixup":                     # (metamixup's mixed target holds y^, which depends on them)
        torch.testing.assert_close(out[0].metrics["loss_cls"], out[1].metrics["loss_cls"], rtol=0, atol=0)
    assert (out[0].pseudo_labels[1] - out[1].pseudo_labels[1]).abs().max() > 1e-4
    torch.testing.assert_close(out[0].pseudo_labels[0], out[1].pseudo_labels[0])   # y~ is not theirs either


def test_holdout_is_refused_where_nothing_reads_it(tmp_path):
    from metassl.train import build_data
    cfg = dataclasses.replace(Config(), algorithm="neither", meta_holdout=0.2).resolved()
    with pytest.raises(UserError, match="meta_holdout=0.2 is not read by algorithm=neither, only by meta, "):
        build_algorithm(cfg)
    streamed = dataclasses.replace(cfg, algorithm="meta", stream=True)
    with pytest.raises(UserError, match="meta_holdout=0.2 holds labels out of a resident data set and stream=true"):
        build_data(streamed, build_algorithm(streamed), make_tiny_data(), torch.device("cpu"))


# ------------------------------------------------------------------ defaults: today's step, draw for draw
@pytest.mark.parametrize("name", ["meta", "metamixup"])
def test_default_step_is_eq6_with_the_classification_batch(name):
    cfg = dataclasses.replace(Config(), algorithm=name, meta_method="jvp")
    algo, batch, model = build_algorithm(cfg), tiny_batch(build_algorithm(cfg)), tiny_net().train()
    assert batch.x_meta is None
    before = copy.deepcopy(model)                    # the step's train-mode forward moves BN's running statistics
    torch.manual_seed(0)
    got = algo.step(model, batch, tiny_context(beta=0.5))
    y_tilde, y_hat = got.pseudo_labels
    g = meta_gradient(before, batch.x_lb, batch.y_lb, batch.x_ulb[0], y_tilde, method="jvp")
    torch.testing.assert_close(y_hat, project_to_simplex(y_tilde - 0.5 * g, "relu"))


# ------------------------------------------------------------------ MetaFixMatch: where the correction enters
def run_metafixmatch(beta, threshold=0.0, **kw):
    algo, batch, model = MetaFixMatch(threshold, eps_scale=EPS, **kw), tiny_batch(FixMatch()), tiny_net().train()
    torch.manual_seed(7)
    return algo.step(model, batch, tiny_context(beta=beta))


def test_soft_target_counts_a_correction_that_flips_no_label_and_hard_does_not():
    small = 1e-3                                                     # moves probability, flips no argmax here
    plain_hard, hard = run_metafixmatch(0.0), run_metafixmatch(small)
    plain_soft, soft = run_metafixmatch(0.0, meta_target="soft"), run_metafixmatch(small, meta_target="soft")
    assert torch.equal(hard.pseudo_labels[0].argmax(1), hard.pseudo_labels[1].argmax(1))
    torch.testing.assert_close(hard.metrics["loss_fm"], plain_hard.metrics["loss_fm"])
    assert (soft.metrics["loss_fm"] - plain_soft.metrics["loss_fm"]).abs() > 1e-7
    assert plain_soft.metrics["loss_fm"] > plain_hard.metrics["loss_fm"]   # CE to a soft y~ exceeds CE to its argmax


def test_threshold_on_plain_keeps_fixmatchs_rows_and_corrected_moves_them():
    fm_mask = {}
    for on in ("corrected", "plain"):
        out = run_metafixmatch(5.0, threshold=0.45, meta_threshold_on=on)
        y_tilde, y_hat = out.pseudo_labels
        fm_mask[on] = out.metrics["mask"]
        expected = (y_tilde if on == "plain" else y_hat).max(1).values.ge(0.45).float().mean()
        torch.testing.assert_close(out.metrics["mask"], expected)
    assert fm_mask["plain"] != fm_mask["corrected"]                 # the big step pushes rows over the threshold
    with pytest.raises(UserError, match="meta_target='x'"):
        MetaFixMatch(eps_scale=EPS, meta_target="x")


def test_metaflexmatch_plain_keeps_flexmatchs_curriculum_and_only_relabels_its_rows():
    batch, out = tiny_batch(FlexMatch()), {}
    for name, algo in (("flex", FlexMatch(0.3)), ("meta", MetaFlexMatch(0.3, eps_scale=EPS, meta_threshold_on="plain"))):
        model = tiny_net().train()
        torch.manual_seed(7)
        steps = [algo.step(model, batch, tiny_context(beta=5.0)) for _ in range(2)]   # the 2nd reads the 1st's status
        out[name] = (steps, algo.selected.clone())
    (flex, flex_status), (meta, meta_status) = out["flex"], out["meta"]
    assert torch.equal(flex_status, meta_status) and (flex_status >= 0).any()
    for f, m in zip(flex, meta):
        torch.testing.assert_close(m.metrics["mask"], f.metrics["mask"])
        torch.testing.assert_close(m.metrics["threshold_mean"], f.metrics["threshold_mean"])
    y_tilde, y_hat = meta[1].pseudo_labels
    assert (y_tilde.argmax(1) != y_hat.argmax(1)).any()                   # the big step relabels some row


# ------------------------------------------------------------------ Meta Pseudo Labels
def mpl_algo(**kw):
    return build_algorithm(dataclasses.replace(Config(), algorithm="mpl", **kw))


def test_mpl_signal_is_positive_when_the_student_step_lowers_its_labeled_loss_and_negative_otherwise():
    from metassl.algorithms.mpl import labeled_loss_change
    model, batch = tiny_net().train(), tiny_batch(FixMatch())
    x, y = batch.x_lb, batch.y_lb
    for labels, sign in ((y, 1), ((y + 1) % 4, -1)):      # the student trained on the true labels, then on wrong ones
        loss_s = F.cross_entropy(model(x), labels)
        h = labeled_loss_change(model, x, y, loss_s, lr=0.1)
        assert sign * h > 1e-4
        loss_s.backward()                                   # its graph is kept for the trainer's backward
        assert model.training and all(torch.isfinite(p.grad).all() for p in model.parameters())
        model.zero_grad(set_to_none=True)


def test_mpl_teacher_moves_towards_its_sampled_labels_when_h_is_positive_and_away_when_negative(monkeypatch):
    import metassl.algorithms.mpl as mpl
    batch, logp = tiny_batch(mpl.MPL), {}
    sampled = []
    multinomial = torch.multinomial

    def record(*a, **k):
        out = multinomial(*a, **k)
        sampled.append(out.squeeze(1))
        return out

    monkeypatch.setattr(torch, "multinomial", record)
    for h in (1.0, 0.0, -1.0):
        monkeypatch.setattr(mpl, "labeled_loss_change", lambda *a, h=h, **k: torch.tensor(h))
        algo, model = mpl_algo(mpl_uda_weight=0.0, weight_decay=0.0), tiny_net().train()
        torch.manual_seed(3)
        out = algo.step(model, batch, tiny_context(lr=0.5))
        assert out.metrics["mpl_h"] == h
        with torch.no_grad():
            lp = F.log_softmax(algo.teacher.eval()(batch.x_ulb[1]), 1)
        logp[h] = lp.gather(1, sampled[-1][:, None]).mean()
    assert torch.equal(sampled[0], sampled[2])
    assert logp[1.0] > logp[0.0] + 1e-3 > logp[-1.0] + 2e-3


def test_mpl_resumes_its_teacher_and_optimiser_exactly():
    batch, ctx = tiny_batch(FixMatch()), tiny_context(lr=0.2)
    algo, model = mpl_algo(), tiny_net().train()
    torch.manual_seed(0)
    algo.step(model, batch, ctx)
    state, rng, model_copy = copy.deepcopy(algo.state_dict()), torch.get_rng_state(), copy.deepcopy(model)
    assert set(state) == {"teacher", "teacher_opt"} and state["teacher_opt"]["state"]   # momentum buffers too
    cont = algo.step(model, batch, ctx)
    resumed = mpl_algo()
    resumed.load_state_dict(state)
    assert resumed.state_dict().keys() == state.keys()     # a checkpoint before the next step keeps it
    torch.set_rng_state(rng)
    again = resumed.step(model_copy, batch, ctx)
    for k in ("loss", "loss_teacher", "mpl_h"):
        torch.testing.assert_close(again.metrics[k], cont.metrics[k], rtol=0, atol=0)
    for (k, a), b in zip(algo.teacher.state_dict().items(), resumed.teacher.state_dict().values()):
        assert torch.equal(a, b), k


# ------------------------------------------------------------------ tuning: the variants' knobs, the same budget
def test_variant_dims_are_searched_only_where_the_variant_is_on():
    from metassl.experiments import suites
    from metassl.experiments.tune import SPACES, points, resolve, space_of
    lr_step = suites.run_config("fmnist-100", "metamixup", 1, {})
    normalised = suites.run_config("fmnist-100", "metamixup", 1, {"meta_step": "normalised"})
    assert "beta" in space_of("metamixup", lr_step) and "meta_rho" not in space_of("metamixup", lr_step)
    assert "meta_rho" in space_of("metamixup", normalised) and "beta" not in space_of("metamixup", normalised)
    assert len(space_of("metamixup", lr_step)) == len(space_of("metamixup", normalised))   # the same budget
    for p in points("metamixup", "fmnist-100", 3, 0, normalised)[1:]:
        assert 0.02 <= p["meta_rho"] <= 1.0
    for p in points("mpl", "fmnist-100", 3, 0, suites.run_config("fmnist-100", "mpl", 1, {})):
        build_algorithm(suites.run_config("fmnist-100", "mpl", 1, resolve(p, SPACES["mpl"], 400)))
