"""The method's math against plain float64 autograd transcriptions of docs/method.md §3–§5 and TRADES."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from taylorat import models
from taylorat.objectives import (
    Method,
    Threat,
    default_c,
    head_grad_rowsums,
    noise_parameters,
    randomized_weights,
    soft_targets,
    taylor_terms,
    trades_taylor_loss,
)


def tiny_model(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    m = models.create("small_cnn", num_classes=10, in_channels=1, image_size=8).to(dtype)
    m.train()
    return m


def batch(n=12, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g, dtype=dtype)
    x_adv = (x + 0.1 * (2 * torch.rand(x.shape, generator=g, dtype=dtype) - 1)).clamp(0, 1)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, x_adv, y


def rel_err(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


# ------------------------------------------------------------------ head statistics


def test_head_rowsums_equal_autograd_float64():
    torch.manual_seed(0)
    B, D, C = 32, 17, 10
    h = torch.randn(B, D, dtype=torch.float64)
    W = torch.randn(C, D, dtype=torch.float64, requires_grad=True)
    b = torch.randn(C, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, C, (B,))
    z = h @ W.T + b
    (gW,) = torch.autograd.grad(F.cross_entropy(z, y), [W])
    g = head_grad_rowsums(F.softmax(z, dim=1), h, y)
    assert rel_err(g, gW.sum(dim=1)) < 1e-10


def test_head_rowsums_through_a_model_equal_autograd():
    model = tiny_model()
    x, _, y = batch()
    h = model.forward_features(x)
    z = model.head(h)
    (gW,) = torch.autograd.grad(F.cross_entropy(z, y), [model.head.weight])
    g = head_grad_rowsums(F.softmax(z, dim=1).detach(), h.detach(), y)
    assert rel_err(g, gW.sum(dim=1)) < 1e-10


# ------------------------------------------------------------------ soft targets


def soft_reference(v, c):
    """The authors' loop construction (reg_gap), transcribed in float64."""
    v = v - v.min()
    v = v / v.sum()
    n = len(v)
    tt = torch.zeros(n, n, dtype=v.dtype)
    for i in range(n):
        tt[i] = v
    for i in range(n):
        tt[i, i] = 0.0
    tt = c * tt / tt.sum(1).reshape(-1, 1)
    for i in range(n):
        tt[i, i] = 1 - c
    return tt


@pytest.mark.parametrize("C", [10, 100])
def test_soft_targets_match_reference_loop(C):
    torch.manual_seed(C)
    v = torch.randn(C, dtype=torch.float64)
    ours = soft_targets(v)
    assert torch.allclose(ours, soft_reference(v, default_c(C)), rtol=0, atol=1e-14)
    assert torch.allclose(ours.sum(1), torch.ones(C, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(ours.diagonal(), torch.full((C,), 1 - default_c(C), dtype=torch.float64))


def test_default_c_matches_reference_constants():
    assert default_c(10) == pytest.approx(0.8)
    assert default_c(100) == pytest.approx(0.98)


@pytest.mark.parametrize("v", [torch.zeros(10), torch.full((10,), 3.5), torch.eye(10)[4], -torch.eye(10)[2]])
def test_soft_targets_degenerate_inputs_never_nan(v):
    t = soft_targets(v.double())
    assert torch.isfinite(t).all()
    assert torch.allclose(t.sum(1), torch.ones(10, dtype=torch.float64))
    assert torch.allclose(t.diagonal(), torch.full((10,), 0.2, dtype=torch.float64))
    assert (t >= 0).all()


@pytest.mark.parametrize("C", [10, 100])
def test_soft_targets_of_a_stack_equal_one_vector_at_a_time(C):
    """The Taylor terms build their four matrices in one call: bit for bit the matrices of single calls."""
    g = torch.Generator().manual_seed(C)
    for scale in (1e-6, 1e-3, 1.0, 30.0):
        v = torch.randn(4, C, generator=g) * scale
        v[3] = 0.5  # a constant vector: the uniform branch
        assert torch.equal(soft_targets(v), torch.stack([soft_targets(row) for row in v]))


def test_soft_targets_constant_input_is_uniform_off_diagonal():
    t = soft_targets(torch.full((10,), 2.0, dtype=torch.float64))
    off = t[~torch.eye(10, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, 0.8 / 9))


# ------------------------------------------------------------------ full loss vs transcriptions


def kl_div_sum(log_q, p):
    """nn.KLDivLoss(size_average=False)(log_q, p) = Σ p (log p − log q), with 0·log 0 = 0."""
    return torch.where(p > 0, p * (torch.log(p.clamp_min(1e-300)) - log_q), torch.zeros_like(p)).sum()


def reference_loss(model, x, x_adv, y, beta, alpha, symmetric):
    """The authors' trades_loss outer step, transcribed with real backward passes (float64)."""
    B = len(x)
    loss_natural = F.cross_entropy(model(x), y)
    (gn,) = torch.autograd.grad(loss_natural, [model.head.weight], retain_graph=True)
    (ga,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), [model.head.weight])
    t1n, t2n = gn.sum(1).abs(), gn.sum(1) ** 2
    t1a, t2a = ga.sum(1).abs(), ga.sum(1) ** 2
    c = default_c(gn.shape[0])
    y1 = soft_reference(t1n - t1a, c)[y]
    y2 = soft_reference(t1a - t1n, c)[y]
    yy2 = soft_reference(t2a - t2n, c)[y]
    yy1 = soft_reference(t2n - t2a, c)[y] if symmetric else yy2
    lp_adv = F.log_softmax(model(x_adv), dim=1)
    lp_nat = F.log_softmax(model(x), dim=1)
    loss_robust = kl_div_sum(lp_adv, F.softmax(model(x), dim=1)) / B
    first = 0.5 * (kl_div_sum(lp_adv, y1) / B + kl_div_sum(lp_nat, y2) / B)
    second = 0.5 * (kl_div_sum(lp_adv, yy1) / B + kl_div_sum(lp_nat, yy2) / B)
    return loss_natural * (1 - alpha) + alpha * first + 0.5 * alpha * second + beta * loss_robust


def grads(model, loss):
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(model.parameters()))])


@pytest.mark.parametrize("compat", ["reference", "symmetric"])
def test_loss_equals_float64_transcription_with_real_backward(compat):
    model = tiny_model()
    x, x_adv, y = batch()
    ref = reference_loss(model, x, x_adv, y, beta=6.0, alpha=0.2, symmetric=compat == "symmetric")
    ref_g = grads(model, ref)
    ours = trades_taylor_loss(model, x, x_adv, y, beta=6.0, eta=0.2, compat=compat)
    ours_g = grads(model, ours)
    assert abs(ours.item() - ref.item()) / abs(ref.item()) < 1e-6
    assert rel_err(ours_g, ref_g) < 1e-6


def test_compat_modes_differ():
    model = tiny_model()
    x, x_adv, y = batch()
    a = trades_taylor_loss(model, x, x_adv, y, compat="reference")
    b = trades_taylor_loss(model, x, x_adv, y, compat="symmetric")
    assert a.item() != b.item()


def test_eta_zero_is_plain_trades():
    model = tiny_model()
    x, x_adv, y = batch()
    z, za = model(x), model(x_adv)
    trades = F.cross_entropy(z, y) + 6.0 * kl_div_sum(F.log_softmax(za, dim=1), F.softmax(z, dim=1)) / len(x)
    ours, parts = trades_taylor_loss(model, x, x_adv, y, beta=6.0, eta=0.0, return_parts=True)
    assert parts.first.item() == 0 and parts.second.item() == 0
    assert abs(ours.item() - trades.item()) < 1e-12
    assert rel_err(grads(model, ours), grads(model, trades)) < 1e-10


def test_taylor_targets_carry_no_gradient():
    """Targets are constants: d(first)/d(logits) is the KL gradient w.r.t. log p only."""
    torch.manual_seed(3)
    B, D, C = 8, 5, 10
    h, ha = torch.randn(B, D, dtype=torch.float64), torch.randn(B, D, dtype=torch.float64)
    z = torch.randn(B, C, dtype=torch.float64, requires_grad=True)
    za = torch.randn(B, C, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, C, (B,))
    t = taylor_terms(z, h, za, ha, y)
    gz, gza = torch.autograd.grad(t.first, [z, za])
    y1 = soft_targets(t.g_nat.abs() - t.g_adv.abs())[y]
    y2 = soft_targets(t.g_adv.abs() - t.g_nat.abs())[y]
    # d/dz of ½ KLt(y2 ‖ softmax z) = ½ (softmax z − y2) / B
    assert torch.allclose(gz, 0.5 * (F.softmax(z, 1) - y2) / B, atol=1e-14)
    assert torch.allclose(gza, 0.5 * (F.softmax(za, 1) - y1) / B, atol=1e-14)


def test_loss_rejects_bad_weights():
    model = tiny_model()
    x, x_adv, y = batch()
    with pytest.raises(ValueError, match="eta must be in"):
        trades_taylor_loss(model, x, x_adv, y, eta=1.5)
    with pytest.raises(ValueError, match="unknown compat"):
        trades_taylor_loss(model, x, x_adv, y, compat="paper")


# ------------------------------------------------------------------ randomized weights


def test_randomized_weights_restore_bit_exactly():
    model = tiny_model(torch.float32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    conv_ids = {id(p) for p in noise_parameters(model, "conv")}
    conv_names = {k for k, p in model.named_parameters() if id(p) in conv_ids}
    with randomized_weights(model, 0.01, "conv", gen):
        changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
        assert changed == conv_names and len(conv_names) == 4
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_randomized_weights_equal_the_per_weight_formula(dtype):
    """The multi-tensor version gives exactly what the per-weight loop ``w.add_(randn(w.shape), alpha=σ)`` gives."""
    model = tiny_model(torch.float32).to(dtype)
    ref = torch.Generator().manual_seed(3)
    expected = {id(p): p.detach().clone().add_(torch.randn(p.shape, generator=ref, dtype=dtype), alpha=0.01)
                for p in noise_parameters(model, "all")}
    with randomized_weights(model, 0.01, "all", torch.Generator().manual_seed(3)):
        assert all(torch.equal(p, expected[id(p)]) for p in noise_parameters(model, "all"))


def test_noise_scopes():
    model = tiny_model(torch.float32)
    conv = noise_parameters(model, "conv")
    weights = noise_parameters(model, "weights")
    assert conv and all(p.dim() == 4 for p in conv)
    assert len(weights) == len(conv) + sum(isinstance(m, nn.Linear) for m in model.modules())
    assert len(noise_parameters(model, "all")) == len(list(model.parameters()))
    assert noise_parameters(model, "none") == []
    with pytest.raises(ValueError, match="unknown noise_scope"):
        noise_parameters(model, "bn")


def test_randomized_weights_restore_after_exception():
    model = tiny_model(torch.float32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError):
        with randomized_weights(model, 1.0, "all"):
            raise RuntimeError("boom")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_method_perturb_stays_in_ball_restores_weights_and_mode():
    model = tiny_model(torch.float32)
    model.train()
    x, _, y = batch(dtype=torch.float32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    method = Method(threat=Threat(eps=0.1, step=0.02, steps=5), noise_std=0.01, noise_scope="conv")
    x_adv = method.perturb(model, x, generator=torch.Generator().manual_seed(0))
    assert model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # BN stats untouched too
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() > 0.05  # the attack moved


def test_method_perturb_uses_the_noisy_weights():
    """The same attack seed gives a different x' with σ > 0 than with σ = 0."""
    model = tiny_model(torch.float32)
    x, _, _ = batch(dtype=torch.float32)
    t = Threat(eps=0.1, step=0.02, steps=3)
    a = Method(threat=t, noise_std=0.0).perturb(model, x, generator=torch.Generator().manual_seed(0))
    b = Method(threat=t, noise_std=0.05).perturb(model, x, generator=torch.Generator().manual_seed(0))
    c = Method(threat=t, noise_std=0.05).perturb(model, x, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(a, b)
    assert torch.equal(b, c)


@pytest.mark.parametrize("fast", ["channels_last", "bf16", "compile"])
def test_fast_paths_match_fp32_loss_and_gradients(fast):
    model64 = tiny_model(torch.float64)
    x, x_adv, y = batch(n=32)
    ref = trades_taylor_loss(model64, x, x_adv, y)
    ref_g = grads(model64, ref)
    model = tiny_model(torch.float32)
    xf, xaf = x.float(), x_adv.float()
    if fast == "compile":
        model.forward_features = torch.compile(model.forward_features)
        loss = trades_taylor_loss(model, xf, xaf, y)
        tol = 1e-5
    elif fast == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        xf, xaf = xf.contiguous(memory_format=torch.channels_last), xaf.contiguous(memory_format=torch.channels_last)
        loss = trades_taylor_loss(model, xf, xaf, y)
        tol = 1e-5
    else:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = trades_taylor_loss(model, xf, xaf, y)
        tol = 3e-2
    assert loss.dtype == torch.float32
    assert abs(loss.item() - ref.item()) / ref.item() < tol
    assert rel_err(grads(model, loss).double(), ref_g) < 10 * tol
