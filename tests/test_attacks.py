"""The PGD core: stays in the threat set, finds known worst cases, leaves the model alone."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from taylorat import models
from taylorat.attacks import CW, PGD, accuracy, attack_loss, correct_mask, pgd


class Linear2(nn.Module):
    """A two-class linear model on flattened images: its worst case is known in closed form."""

    def __init__(self, d, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = nn.Linear(d, 2)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(2, d, generator=g))
            self.lin.bias.zero_()

    def forward(self, x):
        return self.lin(x.flatten(1))


def small_model():
    torch.manual_seed(0)
    return models.create("small_cnn", num_classes=10, in_channels=1, image_size=8).eval()


def data(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("norm,eps,step", [("linf", 0.05, 0.02), ("l2", 0.5, 0.2)])
@pytest.mark.parametrize("loss", ["ce", "kl", "cw"])
@pytest.mark.parametrize("start", ["uniform", "normal", "none"])
def test_pgd_stays_in_ball_and_box(norm, eps, step, loss, start):
    model = small_model()
    x, y = data()
    x_adv = pgd(model, x, y, eps=eps, step=step, steps=5, norm=norm, loss=loss, start=start,
                generator=torch.Generator().manual_seed(1))
    d = (x_adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert (size <= eps + 1e-5).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not x_adv.requires_grad


def linear_worst_margin_linf(model, x, y, eps):
    """min over the l_inf box ∩ [0,1] of (z_y − z_other), exact for a linear two-class model."""
    w = model.lin.weight
    s = w[1 - y] - w[y]  # direction that decreases the margin, per example (B, d)
    xf = x.flatten(1)
    hi, lo = torch.minimum(xf + eps, torch.ones_like(xf)), torch.maximum(xf - eps, torch.zeros_like(xf))
    worst = torch.where(s > 0, hi, lo)  # push each pixel to its bound along s
    z = model(worst.view_as(x))
    return z.gather(1, y[:, None]).squeeze(1) - z.gather(1, (1 - y)[:, None]).squeeze(1)


def test_pgd_finds_exact_linf_worst_case_of_linear_model():
    torch.manual_seed(0)
    d, eps = 64, 0.03
    model = Linear2(d)
    x = torch.rand(400, 1, 8, 8)
    y = model(x).argmax(1)  # all clean-correct
    analytic = 100 * (linear_worst_margin_linf(model, x, y, eps) > 0).float().mean().item()
    assert 5 < analytic < 95  # the test is informative
    attack = PGD(model, eps=eps, step=eps / 4, steps=10, norm="linf")
    assert accuracy(model, x, y, attack) == pytest.approx(analytic, abs=1e-9)
    assert accuracy(model, x, y) == 100.0


def test_pgd_finds_exact_l2_worst_case_of_linear_model():
    torch.manual_seed(1)
    d, eps = 64, 0.15
    model = Linear2(d)
    x = 0.4 + 0.2 * torch.rand(400, 1, 8, 8)  # far enough from 0 and 1 that the box is inactive
    y = model(x).argmax(1)
    z = model(x)
    margin = z.gather(1, y[:, None]).squeeze(1) - z.gather(1, (1 - y)[:, None]).squeeze(1)
    w = model.lin.weight
    analytic = 100 * (margin - eps * (w[1 - y] - w[y]).norm(dim=1) > 0).float().mean().item()
    assert 5 < analytic < 95
    attack = PGD(model, eps=eps, step=eps / 2, steps=20, norm="l2", start="none")
    assert accuracy(model, x, y, attack) == pytest.approx(analytic, abs=0.5)  # at most 2 borderline examples


def test_cw_loss_formula():
    z = torch.tensor([[3.0, 1.0, 2.5], [0.0, 5.0, 1.0]])
    y = torch.tensor([0, 2])
    # example 0: margin 3 − 2.5 = 0.5 → −(0.5 + 50); example 1: 1 − 5 = −4 → −(46)
    assert attack_loss(z, y, "cw", kappa=50.0).item() == pytest.approx(-(50.5 + 46.0))
    assert attack_loss(z, y, "cw", kappa=0.0).item() == pytest.approx(-0.5)


def test_kl_loss_is_trades_kl():
    g = torch.Generator().manual_seed(0)
    z, z0 = torch.randn(4, 10, generator=g), torch.randn(4, 10, generator=g)
    p = F.softmax(z0, 1)
    want = (p * (p.log() - F.log_softmax(z, 1))).sum()
    assert attack_loss(z, None, "kl", target_probs=p).item() == pytest.approx(want.item(), rel=1e-6)


class ModeRecorder(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.modes = []

    def forward(self, x):
        self.modes.append(self.training)
        return self.inner(x)


@pytest.mark.parametrize("cls", [PGD, CW])
def test_attack_classes_use_eval_mode_and_restore(cls):
    model = ModeRecorder(small_model())
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = data()
    x_adv = cls(model, eps=0.05, step=0.01, steps=3)(x, y)
    assert model.training  # restored
    assert model.modes and not any(model.modes)  # every forward in eval mode
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())  # no parameter gradients accumulated
    assert x_adv.shape == x.shape


def test_attack_is_seeded_and_works_under_no_grad():
    model = small_model()
    x, y = data()
    a = PGD(model, eps=0.05, step=0.01, steps=3, seed=5)
    with torch.no_grad():
        r1 = a(x, y)
    assert torch.equal(r1, a(x, y))
    assert not torch.equal(r1, PGD(model, eps=0.05, step=0.01, steps=3, seed=6)(x, y))


def test_robust_accuracy_not_above_clean():
    model = small_model()
    x, y = data(64)
    clean = correct_mask(model, x, y)
    adv = correct_mask(model, x, y, PGD(model, eps=0.1, step=0.02, steps=5))
    assert adv.sum() <= clean.sum()


def test_uint8_images_are_accepted_by_accuracy():
    model = small_model()
    x, y = data(8)
    xu = (x * 255).round().to(torch.uint8)
    assert accuracy(model, xu, y) == accuracy(model, xu.float() / 255, y)


@pytest.mark.parametrize("kwargs,match", [
    (dict(eps=-0.1, step=0.01, steps=5), "eps must be"),
    (dict(eps=2.0, step=0.01, steps=5), "exceeds the"),
    (dict(eps=0.1, step=0.0, steps=5), "step must be"),
    (dict(eps=0.1, step=0.01, steps=-1), "steps must be"),
    (dict(eps=0.1, step=0.01, steps=5, norm="l1"), "unknown norm"),
    (dict(eps=0.1, step=0.01, steps=5, loss="hinge"), "unknown attack loss"),
])
def test_pgd_rejects_bad_settings(kwargs, match):
    model = small_model()
    x, y = data(2)
    with pytest.raises(ValueError, match=match):
        pgd(model, x, y, **kwargs)


@pytest.mark.parametrize("start,norm", [("normal", "linf"), ("uniform", "linf"), ("uniform", "l2")])
def test_sharded_random_start_equals_the_slice_of_the_whole_batch(start, norm):
    from taylorat.attacks import random_start

    x = torch.rand(10, 1, 8, 8)
    whole = random_start(x, 0.1, norm, start, 0.001, torch.Generator().manual_seed(3))
    parts = [random_start(x[a:b], 0.1, norm, start, 0.001, torch.Generator().manual_seed(3), rows=(a, b, 10))
             for a, b in ((0, 5), (5, 10))]
    assert torch.equal(torch.cat(parts), whole)


def test_box_then_ball_projection_as_trades_l2_code():
    """TRADES' l2 attack clips to [0,1] before rescaling into the ball: still in S, a different point."""
    from taylorat.attacks.pgd import project

    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 4, 4, generator=g)
    far = x + 2 * torch.randn(x.shape, generator=g)
    a, b = project(far, x, 0.5, "l2"), project(far, x, 0.5, "l2", "box_then_ball")
    for p in (a, b):
        assert p.min() >= 0 and p.max() <= 1 and ((p - x).flatten(1).norm(dim=1) <= 0.5 + 1e-6).all()
    assert not torch.allclose(a, b)
    assert torch.equal(project(far, x, 0.1, "linf"), project(far, x, 0.1, "linf", "box_then_ball"))
    with pytest.raises(ValueError, match="unknown projection"):
        project(far, x, 0.1, "linf", "sideways")


def test_train_mode_attack_moves_batchnorm_as_the_at_reference():
    from taylorat import models
    from taylorat.objectives import Method, Threat

    torch.manual_seed(0)
    model = models.create("small_cnn", num_classes=10, in_channels=1, image_size=8).train()
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    for mode, moves in (("eval", False), ("train", True)):
        before = bn.running_mean.clone()
        m = Method(base="at", threat=Threat(eps=0.1, step=0.03, steps=3, mode=mode), eta=0.0, noise_std=0.0)
        x_adv = m.perturb(model, x, y)
        assert model.training and (x_adv - x).abs().max() <= 0.1 + 1e-6
        assert (not torch.equal(bn.running_mean, before)) == moves
    with pytest.raises(ValueError, match="attack mode"):
        Threat(mode="sometimes")
