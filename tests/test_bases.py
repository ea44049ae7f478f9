"""The other bases (AT, MART, AWP-TRADES) with the Taylor terms: formulas, exact reductions, the matrix."""

import copy

import pytest
import torch
import torch.nn.functional as F

from helpers.tiny import batch, tiny_model
from taylorat.objectives import AWP, Method, Threat, mart_taylor_from_outputs
from taylorat.objectives.awp import perturbed_names
from taylorat.train import from_dict, train


def grads(model, loss):
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(model.parameters()), allow_unused=False)])


# ------------------------------------------------------------------ MART


def mart_paper(z, za, y, beta):
    """MART (Wang et al. 2020, Eq. 9) in float64: BCE(p', y) + β·KL(p ‖ p')·(1 − p_y), batch mean."""
    p, pa = F.softmax(z, 1), F.softmax(za, 1)
    B = len(y)
    other = pa.clone()
    other[torch.arange(B), y] = -1.0
    bce = -torch.log(pa[torch.arange(B), y]) - torch.log(1 - other.max(1).values)
    kl = (p * (torch.log(p) - torch.log(pa))).sum(1)
    return (bce + beta * kl * (1 - p[torch.arange(B), y])).mean()


def test_mart_matches_the_papers_formula():
    model = tiny_model()
    x, x_adv, y = batch()
    h, ha = model.forward_features(x), model.forward_features(x_adv)
    ours = mart_taylor_from_outputs(model.head(h), h, model.head(ha), ha, y, beta=6.0, eta=0.0).loss
    ref = mart_paper(model(x), model(x_adv), y, 6.0)
    # the reference code's guards (1.0001, 1e-12) move the value by ~1e-4 relative
    assert abs(ours.item() - ref.item()) / ref.item() < 1e-3
    g1, g2 = grads(model, ours), grads(model, ref)
    assert ((g1 - g2).norm() / g2.norm()).item() < 1e-3


# ------------------------------------------------------------------ η = 0 is the plain base


def test_eta_zero_is_plain_at():
    model = tiny_model()
    x, x_adv, y = batch()
    parts = Method(base="at", eta=0.0, eta2=0.0).loss(model, x, x_adv, y)
    plain = F.cross_entropy(model(x_adv), y)
    assert parts.loss.item() == plain.item()
    assert torch.equal(grads(model, parts.loss), grads(model, plain))
    assert parts.logits_nat is None  # no clean pass, as Madry et al.


def test_eta_zero_is_plain_mart():
    from taylorat.objectives.mart import mart_terms

    model = tiny_model()
    x, x_adv, y = batch()
    parts = Method(base="mart", eta=0.0, eta2=0.0, beta=6.0).loss(model, x, x_adv, y)
    bce, kl = mart_terms(model(x), model(x_adv), y)
    assert abs(parts.loss.item() - (bce + 6.0 * kl).item()) < 1e-12


@pytest.mark.parametrize("base", ["at", "mart", "trades", "awp-trades"])
def test_taylor_terms_add_to_every_base(base):
    model = tiny_model()
    x, x_adv, y = batch()
    plain = Method(base=base, eta=0.0, eta2=0.0).loss(model, x, x_adv, y)
    full = Method(base=base, eta=0.2).loss(model, x, x_adv, y)
    assert full.first.item() > 0 and full.second.item() > 0
    no_taylor = Method(base=base, eta=0.2).loss(model, x, x_adv, y, taylor=False)
    assert no_taylor.loss.item() == plain.loss.item()


# ------------------------------------------------------------------ AWP


def test_awp_perturbation_size_direction_and_exact_restore():
    model = tiny_model()
    x, x_adv, y = batch()
    method = Method(base="awp-trades", eta=0.0, eta2=0.0, noise_std=0.0)
    awp = AWP(model, gamma=0.005, warmup=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    v = awp.perturbation(model, lambda m: method.loss(m, x, x_adv, y, taylor=False).loss)
    params = dict(model.named_parameters())
    assert set(v) == set(perturbed_names(model)) and len(v) == 7  # 4 conv kernels + 3 linear maps
    # float64 transcription: v_l = γ ||w_l|| ∇_l L / ||∇_l L|| with the gradient of the base loss at w
    ref_model = copy.deepcopy(model)
    loss = method.loss(ref_model, x, x_adv, y, taylor=False).loss
    rp = dict(ref_model.named_parameters())
    g = dict(zip(v, torch.autograd.grad(loss, [rp[n] for n in v])))
    for name, d in v.items():
        assert d.norm().item() == pytest.approx(0.005 * params[name].norm().item(), rel=1e-12)
        want = 0.005 * params[name].norm() * g[name] / g[name].norm()
        assert torch.allclose(d, want, rtol=1e-10, atol=1e-14)
    # the model itself (incl. BN running stats) is untouched by computing the perturbation
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in before)
    with AWP.applied(model, v):
        for name, d in v.items():
            assert torch.equal(params[name], before[name] + d)
        inside = method.loss(model, x, x_adv, y).loss
        inside.backward()
    after = {k: val for k, val in model.state_dict().items() if k in dict(model.named_parameters())}
    assert all(torch.equal(after[k], before[k]) for k in after)  # bit-exact restore
    assert all(p.grad is not None for p in model.parameters())  # the gradient taken at w + v is kept


def test_awp_raises_the_loss():
    model = tiny_model()
    x, x_adv, y = batch()
    method = Method(base="awp-trades", eta=0.0, eta2=0.0, noise_std=0.0)
    awp = AWP(model, gamma=0.01, warmup=0)
    base = method.loss(model, x, x_adv, y).loss.item()
    v = awp.perturbation(model, lambda m: method.loss(m, x, x_adv, y, taylor=False).loss)
    with torch.no_grad(), AWP.applied(model, v):
        worse = method.loss(model, x, x_adv, y).loss.item()
    assert worse > base


def test_awp_warmup_follows_the_reference():
    awp = AWP(tiny_model(), gamma=0.005, warmup=10)
    assert not awp.active(9) and awp.active(10)
    assert not AWP(tiny_model(), gamma=0.0, warmup=0).active(5)


# ------------------------------------------------------------------ attacks of the bases


@pytest.mark.parametrize("base", ["at", "mart"])
def test_ce_attacks_stay_in_the_ball(base):
    model = tiny_model(torch.float32)
    x, _, y = batch(dtype=torch.float32)
    m = Method(base=base, threat=Threat(eps=0.1, step=0.03, steps=4), eta=0.0, eta2=0.0, noise_std=0.0)
    x_adv = m.perturb(model, x, y, generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        model.eval()
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)


# ------------------------------------------------------------------ the whole matrix, one short epoch each


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("order", ["", "+1st", "+1st+2nd"])
@pytest.mark.parametrize("base", ["trades", "at", "mart", "awp-trades"])
def test_every_base_order_and_norm_trains_an_epoch(base, order, norm, tmp_path):
    eps, step = (0.1, 0.03) if norm == "linf" else (0.5, 0.15)
    cfg = from_dict({
        "out_dir": str(tmp_path), "device": "cpu", "progress": False, "checkpoints": "none",
        "data": {"dataset": "synthetic", "holdout": 10,
                 "options": {"n_train": 40, "n_test": 10, "channels": 1, "image_size": 8}},
        "model": {"name": "small_cnn"},
        "method": {"name": base + order}, "minimizer": {"warmup": 1} if base == "awp-trades" else {},
        "attack": {"norm": norm, "eps": eps, "step": step, "steps": 2},
        "optim": {"epochs": 1, "batch_size": 20},
        "eval": {"n": 10, "eps": eps, "step": step, "steps": 2},
    })
    res = train(cfg)
    h = res.history[0]
    assert h["train_loss"] == h["train_loss"]  # finite, not NaN
    assert (h["train_first"] > 0) == bool(order)
    assert (h["train_second"] > 0) == (order == "+1st+2nd")
    assert (tmp_path / "best.safetensors").exists()
