"""RayS: exact on a linear model, hard-label only, in the threat set, within its query budget."""

import pytest
import torch
from torch import nn

from taylorat import models
from taylorat.attacks import RayS, RaySResult
from taylorat.attacks.rays import adbd


class Linear2(nn.Module):
    """Two-class linear model centred at 0.5: boundary distances are small, the box stays inactive."""

    def __init__(self, d=64, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = nn.Linear(d, 2)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(2, d, generator=g))
            self.lin.bias.copy_(-0.5 * self.lin.weight.sum(1))

    def forward(self, x):
        return self.lin(x.flatten(1))


class Recorder(nn.Module):
    """Records whether forward ever ran with gradients enabled; optional monotone logit transform."""

    def __init__(self, model, scale=1.0, shift=0.0):
        super().__init__()
        self.model, self.scale, self.shift = model, scale, shift
        self.grad_calls = self.calls = 0

    def forward(self, x):
        self.calls += 1
        self.grad_calls += torch.is_grad_enabled()
        return self.model(x) * self.scale + self.shift


def linear_data(n=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    return 0.5 + 0.1 * (2 * torch.rand(n, 1, 8, 8, generator=g) - 1)


def exact_linear_dist(model, x, y):
    w = model.lin.weight
    wd = w[y] - w[1 - y]  # (B, D)
    margin = (model(x).gather(1, y[:, None]) - model(x).gather(1, (1 - y)[:, None])).squeeze(1)
    return margin / wd.abs().sum(1)


def small_model():
    torch.manual_seed(0)
    return models.create("small_cnn", num_classes=10, in_channels=1, image_size=8).eval()


def cnn_data(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def check_threat_set(res: RaySResult, model, x, y, eps):
    d = (res.x_adv - x).flatten(1).abs().amax(1)
    assert (d <= eps + 1e-6).all()
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert (pred[res.robust] == y[res.robust]).all()
    assert (pred[~res.robust] != y[~res.robust]).all()
    assert torch.equal(res.robust, res.clean_correct & (res.dist > eps))


@pytest.mark.parametrize("seed", [None, 0])
def test_linear_model_exact_distance(seed):
    model = Linear2()
    x = linear_data()
    with torch.no_grad():
        y = model(x).argmax(1)
    res = RayS(model, eps=0.01, queries=3000, early_stop=False, seed=seed).run(x, y)
    exact = exact_linear_dist(model, x, y)
    assert (exact > 0).all() and (exact < 0.1).all()
    assert res.clean_correct.all()
    assert (res.dist >= exact * (1 - 1e-5)).all()  # a real misclassified point: never below the boundary
    assert ((res.dist - exact) / exact).abs().max() < 1e-2
    assert res.adbd == pytest.approx(exact.mean().item(), rel=1e-2)
    assert (res.queries == 3000).all()  # early_stop=False spends the whole budget
    check_threat_set(res, model, x, y, 0.01)


def test_early_stop_and_threat_set_on_cnn():
    model = small_model()
    x, y = cnn_data(24)
    eps = 0.1
    res = RayS(model, eps=eps, queries=400).run(x, y)
    check_threat_set(res, model, x, y, eps)
    succ = res.clean_correct & ~res.robust
    assert succ.any()
    assert (res.dist[succ] <= eps + 1e-6).all()
    assert (res.queries <= 400).all()
    assert (res.queries[res.robust] == 400).all()  # robust ones used the whole budget
    x_adv = RayS(model, eps=eps, queries=400)(x, y)  # __call__ gives the same images
    assert torch.equal(x_adv, res.x_adv)


@pytest.mark.parametrize("budget", [1, 2, 7, 50, 333])
def test_query_budget_exact(budget):
    model = small_model()
    x, y = cnn_data(8)
    res = RayS(model, eps=0.0, queries=budget, early_stop=False).run(x, y)
    assert (res.queries <= budget).all()
    assert (res.queries[res.clean_correct] == budget).all()
    assert (res.queries[~res.clean_correct] == 1).all()


def test_hard_label_and_no_grad():
    base = Linear2()
    x = linear_data(6)
    with torch.no_grad():
        y = base(x).argmax(1)
    y[0] = 1 - y[0]  # one misclassified example
    rec = Recorder(base)
    res = RayS(rec, eps=0.02, queries=500, early_stop=False).run(x, y)
    assert rec.calls > 0 and rec.grad_calls == 0
    mono = RayS(Recorder(base, scale=3.0, shift=1.0), eps=0.02, queries=500, early_stop=False).run(x, y)
    for f in ("x_adv", "dist", "queries", "robust"):
        assert torch.equal(getattr(res, f), getattr(mono, f))


def test_initially_misclassified():
    model = small_model()
    x, y = cnn_data(16)
    with torch.no_grad():
        wrong = model(x).argmax(1) != y
    assert wrong.any() and (~wrong).any()
    res = RayS(model, eps=0.05, queries=100).run(x, y)
    assert torch.equal(res.clean_correct, ~wrong)
    assert (res.dist[wrong] == 0).all()
    assert not res.robust[wrong].any()
    assert torch.equal(res.x_adv[wrong], x[wrong])
    assert (res.queries[wrong] == 1).all()
    assert adbd(res) == pytest.approx(res.dist[~wrong].mean().item())


def test_deterministic_mode_restored_weights_unchanged():
    model = small_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = cnn_data(8)
    a = RayS(model, eps=0.05, queries=200, seed=3).run(x, y)
    assert model.training
    b = RayS(model, eps=0.05, queries=200, seed=3).run(x, y)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for f in ("x_adv", "dist", "queries", "robust"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    RayS(model, eps=0.05, queries=50)(x, y)
    assert model.training


def test_settings_and_validation():
    model = small_model()
    s = RayS(model, eps=0.03, queries=123, early_stop=False, seed=None, tol=1e-2).settings()
    assert s == {"name": "rays", "eps": 0.03, "queries": 123, "early_stop": False, "seed": None,
                 "tol": 1e-2, "atol": 0.0}
    for bad in ({"eps": -1}, {"eps": 2.0}, {"queries": 0}, {"tol": 1.5}, {"tol": 0.0}):
        with pytest.raises(ValueError):
            RayS(model, **bad)
