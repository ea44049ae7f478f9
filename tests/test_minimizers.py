"""Minimizers (SAM, ASAM, AWP) against float64 transcriptions of their published procedures; composition."""

import copy
import hashlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.func import functional_call

from helpers.tiny import batch, tiny_model
from taylorat.objectives import ASAM, AWP, SAM, AWPMinimizer, Method, PairForward, frozen_bn_stats
from taylorat.train import from_dict, train
from taylorat.train.config import ConfigError
from taylorat.train.step import train_step

RHO, LR = 0.05, 0.1


METHOD = Method(base="trades", eta=0.2, eta2=None, noise_std=0.0)  # TRADES+1st+2nd: the Taylor terms enter


def our_step(model, minimizer, x, x_adv, y, method=METHOD):
    """One minimizer step through the same ``outer``/``backward`` the trainer uses; returns the gradient
    left for the optimizer and checks that the weights came back bit-exactly."""
    pair = PairForward(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = list(model.parameters())

    def outer():
        return method.loss_from_outputs(pair(x, x_adv), y)

    def backward(parts):
        for p in params:
            p.grad = None
        parts.loss.backward()

    minimizer.step(model, outer, backward, base_loss=lambda m: method.loss(m, x, x_adv, y, taylor=False).loss)
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], before[n]) for n in before), "w was not restored bit-exactly"
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def loss_at(model, params, buffers, x, x_adv, y, method=METHOD):
    """The step's loss (base + Taylor terms, statistics from these same passes) at ``params``."""
    pair = PairForward(model)
    state = {f"model.{k}": v for k, v in {**params, **buffers}.items()}
    return method.loss_from_outputs(functional_call(pair, state, (x, x_adv)), y).loss


def sam_family_transcription(model, x, x_adv, y, rho, adaptive_eta=None):
    """Foret et al. 2021 (Alg. 1) and Kwon et al. 2021 (the authors' ``ascent_step``) in float64:
    ``g = ∇L(w)``; SAM ``e = ρ g/‖g‖``; ASAM ``T = |w| + η`` on parameters named weight,
    ``e = ρ T²g/‖T g‖``; the update direction is ``∇L(w + e)``. Returns (e, that gradient, BN buffers
    after the first pass)."""
    w = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    bufs = {n: b.detach().clone() for n, b in model.named_buffers()}
    g = dict(zip(w, torch.autograd.grad(loss_at(model, w, bufs, x, x_adv, y), list(w.values()))))
    t = {n: (w[n].detach().abs() + adaptive_eta if adaptive_eta is not None and "weight" in n
             else torch.ones_like(w[n])) for n in w}
    tg = {n: t[n] * g[n] for n in w}
    norm = torch.sqrt(sum((v ** 2).sum() for v in tg.values()))
    e = {n: rho * t[n] * tg[n] / norm for n in w}
    w2 = {n: (w[n].detach() + e[n]).requires_grad_() for n in w}
    bufs2 = {n: b.clone() for n, b in bufs.items()}
    g2 = dict(zip(w2, torch.autograd.grad(loss_at(model, w2, bufs2, x, x_adv, y), list(w2.values()))))
    return e, g2, bufs


@pytest.mark.parametrize("kind", ["sam", "asam"])
def test_sam_and_asam_equal_their_published_procedure(kind):
    model = tiny_model()
    x, x_adv, y = batch()
    ref_model = copy.deepcopy(model)
    eta = 0.01 if kind == "asam" else None
    e_ref, g_ref, bufs_ref = sam_family_transcription(ref_model, x, x_adv, y, RHO, eta)
    m = SAM(model, rho=RHO) if kind == "sam" else ASAM(model, rho=RHO, eta=0.01)
    # the perturbation from the gradient at w
    pair = PairForward(model)
    METHOD.loss_from_outputs(pair(x, x_adv), y).loss.backward()
    params, e = m.perturbation(model)
    names = [n for n, _ in model.named_parameters()]
    for n, d in zip(names, e):
        assert torch.allclose(d, e_ref[n], rtol=1e-10, atol=1e-14), n
    # the whole step: the gradient at w + e, applied to w; BatchNorm statistics as after the first pass only
    model = copy.deepcopy(ref_model)
    grads = our_step(model, SAM(model, rho=RHO) if kind == "sam" else ASAM(model, rho=RHO, eta=0.01), x, x_adv, y)
    num = torch.sqrt(sum(((grads[n] - g_ref[n]) ** 2).sum() for n in names))
    den = torch.sqrt(sum((g_ref[n] ** 2).sum() for n in names))
    assert num / den < 1e-10
    for n, b in model.named_buffers():
        if b.is_floating_point():
            assert torch.allclose(b, bufs_ref[n], rtol=1e-12, atol=1e-15), f"{n}: the second pass moved BN stats"
    # and the loss really was taken at w + e: it differs from the gradient at w
    g_w = torch.autograd.grad(loss_at(ref_model, dict(ref_model.named_parameters()),
                                      {k: v.clone() for k, v in ref_model.named_buffers()}, x, x_adv, y),
                              list(ref_model.parameters()))
    assert sum(((a - grads[n]) ** 2).sum() for a, n in zip(g_w, names)) > 1e-12


def awp_reference_step(model, x, x_adv, y, beta, gamma, lr):
    """The AWP authors' TRADES-AWP step (utils_awp.py ``TradesAWP`` and its training loop) in float64:
    a proxy takes one SGD step (lr 0.01) on −(CE + β·KL); ``diff = ‖w‖/(‖Δ‖+1e-20)·Δ`` per weight with
    more than one dimension; weights += γ·diff; TRADES+Taylor loss, SGD step; weights −= γ·diff."""
    proxy = copy.deepcopy(model)
    proxy.load_state_dict(model.state_dict())
    proxy.train()
    popt = torch.optim.SGD(proxy.parameters(), lr=0.01)
    nat = F.cross_entropy(proxy(x), y)
    rob = F.kl_div(F.log_softmax(proxy(x_adv), dim=1), F.softmax(proxy(x), dim=1), reduction="batchmean")
    popt.zero_grad()
    (-1.0 * (nat + beta * rob)).backward()
    popt.step()
    diff = {}
    for (k, old), (_, new) in zip(model.state_dict().items(), proxy.state_dict().items()):
        if old.dim() > 1 and "weight" in k:
            d = new - old
            diff[k] = old.norm() / (d.norm() + 1e-20) * d
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, d in diff.items():
            params[k].add_(gamma * d)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    opt.zero_grad()
    METHOD.loss_from_outputs(PairForward(model)(x, x_adv), y).loss.backward()
    opt.step()
    with torch.no_grad():
        for k, d in diff.items():
            params[k].add_(-gamma * d)
    return diff


def test_awp_equals_the_authors_procedure():
    model = tiny_model()
    x, x_adv, y = batch()
    ref = copy.deepcopy(model)
    diff = awp_reference_step(ref, x, x_adv, y, beta=6.0, gamma=0.01, lr=LR)
    m = AWPMinimizer(model, gamma=0.01, warmup=0)
    v = m.awp.perturbation(model, lambda mm: METHOD.loss(mm, x, x_adv, y, taylor=False).loss)
    for k, d in diff.items():
        assert torch.allclose(v[k], 0.01 * d, rtol=1e-9, atol=1e-15), k
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    our_step(model, m, x, x_adv, y)
    opt.step()
    for (n, a), b in zip(model.named_parameters(), ref.parameters()):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-13), n  # the reference's w + v − v: rounding only


def test_frozen_bn_stats_restores_every_buffer_bit_exactly():
    model = tiny_model(torch.float32)
    before = {n: b.clone() for n, b in model.named_buffers()}
    with frozen_bn_stats(model):
        model(torch.rand(8, 1, 8, 8))
        assert any(not torch.equal(b, before[n]) for n, b in model.named_buffers())
    assert all(torch.equal(b, before[n]) for n, b in model.named_buffers())


def legacy_awp_train_step(model, opt, method, x, y, awp, generator):
    """The training step as it was before minimizers existed (AWP as a step hook), for the bit-for-bit check."""
    x_adv = method.perturb(model, x, y, generator=generator)
    v = awp.perturbation(model, lambda m: method.loss(m, x, x_adv, y, taylor=False).loss)
    with AWP.applied(model, v):
        parts = method.loss_from_outputs(PairForward(model, method.needs_clean_pass(), method.bn_passes())(x, x_adv),
                                         y)
        opt.zero_grad(set_to_none=True)
        parts.loss.backward()
    opt.step()


@pytest.mark.parametrize("eta", [0.0, 0.2])
def test_awp_minimizer_reproduces_the_hook_step_bit_for_bit(eta):
    x, _, y = batch(32, torch.float32, seed=5)
    method = Method(base="awp-trades", eta=eta, eta2=None, noise_std=0.0)
    runs = []
    for legacy in (True, False):
        model = tiny_model(torch.float32, seed=2)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        gen = torch.Generator().manual_seed(0)
        m = AWPMinimizer(model, gamma=0.005, warmup=0)
        for _ in range(3):
            if legacy:
                legacy_awp_train_step(model, opt, method, x, y, m.awp, gen)
            else:
                train_step(model, opt, method, x, y, generator=gen, minimizer=m)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def tiny_cfg(tmp_path, method, **minimizer):
    return from_dict({
        "out_dir": str(tmp_path), "device": "cpu", "progress": False, "checkpoints": "none", "seed": 3,
        "data": {"dataset": "synthetic", "holdout": 10,
                 "options": {"n_train": 48, "n_test": 10, "channels": 1, "image_size": 8}},
        "model": {"name": "small_cnn"}, "method": {"name": method}, "minimizer": minimizer,
        "attack": {"eps": 0.1, "step": 0.03, "steps": 2}, "optim": {"epochs": 2, "batch_size": 16},
        "eval": {"n": 10, "eps": 0.1, "step": 0.03, "steps": 2}})


def digest(path):
    t = load_file(str(path))
    h = hashlib.sha256()
    for k in sorted(t):
        h.update(k.encode() + t[k].numpy().tobytes())
    return h.hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("order", ["", "+1st+2nd"])
def test_awp_trades_is_trades_with_the_awp_minimizer(tmp_path, order):
    a = train(tiny_cfg(tmp_path / "a", "awp-trades" + order, warmup=1), log=lambda e: None)
    b = train(from_dict({**tiny_cfg(tmp_path / "b", "trades" + order, name="awp", warmup=1).to_dict(),
                         "method": {"name": "trades" + order, "noise_std": 0.0}}), log=lambda e: None)
    assert a.history[-1]["train_loss"] == b.history[-1]["train_loss"]
    assert digest(tmp_path / "a" / "last.safetensors") == digest(tmp_path / "b" / "last.safetensors")


@pytest.mark.parametrize("base", ["trades", "at", "mart"])
@pytest.mark.parametrize("order", ["", "+1st", "+1st+2nd"])
@pytest.mark.parametrize("minimizer", ["sam", "asam", "awp"])
def test_every_minimizer_is_accepted_with_every_base_and_order(tmp_path, base, order, minimizer):
    from taylorat.train.trainer import build_minimizer

    cfg = tiny_cfg(tmp_path, base + order, name=minimizer)
    assert cfg.resolved_minimizer()["name"] == minimizer
    assert type(build_minimizer(cfg, tiny_model(torch.float32))).name == minimizer


@pytest.mark.slow
@pytest.mark.parametrize("method,minimizer", [("trades", "sam"), ("at+1st", "asam"), ("mart+1st+2nd", "awp"),
                                              ("trades+1st+2nd", "sam")])
def test_minimizers_train_with_the_bases_and_orders(tmp_path, method, minimizer):
    res = train(tiny_cfg(tmp_path, method, name=minimizer, warmup=1), log=lambda e: None)
    h = res.history[-1]
    assert h["train_loss"] == h["train_loss"]
    assert (h["train_first"] > 0) == ("+" in method)
    assert (tmp_path / "last.safetensors").exists()


def test_minimizer_config_is_checked():
    def cfg(**mz):
        return from_dict({"method": {"name": "trades+1st+2nd"}, "minimizer": mz, "data": {"dataset": "digits"}})

    assert cfg().resolved_minimizer() == {"name": "none", "warmup": 0}
    assert cfg(name="sam").resolved_minimizer() == {"name": "sam", "rho": 0.05, "warmup": 0}
    assert cfg(name="asam").resolved_minimizer() == {"name": "asam", "rho": 0.5, "eta": 0.01, "warmup": 0}
    assert cfg(name="awp").resolved_minimizer() == {"name": "awp", "gamma": 0.005, "warmup": 10}
    awp = from_dict({"method": {"name": "awp-trades+1st"}, "data": {"dataset": "digits"}})
    assert awp.resolved_minimizer() == {"name": "awp", "gamma": 0.005, "warmup": 10}
    with pytest.raises(ConfigError, match="did you mean 'sam'"):
        cfg(name="sma")
    with pytest.raises(ConfigError, match=r"minimizer.gamma is not an option of minimizer.name=sam"):
        cfg(name="sam", gamma=0.01)
    with pytest.raises(ConfigError, match=r"minimizer.rho must be > 0"):
        cfg(name="sam", rho=0)
    with pytest.raises(ConfigError, match=r"for minimizer.name=sam use method.name=trades\+1st"):
        from_dict({"method": {"name": "awp-trades+1st"}, "minimizer": {"name": "sam"}, "data": {"dataset": "digits"}})
    with pytest.raises(ConfigError, match=r"'method.awp_gamma' is now 'minimizer.gamma'"):
        from_dict({"method": {"name": "awp-trades", "awp_gamma": 0.01}})


@pytest.mark.slow
def test_a_one_epoch_sam_taylor_run_on_digits_trains_from_the_command_line(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "sam"
    cfg = "configs/digits_small_cnn_trades_1st_2nd.yaml"
    r = subprocess.run([sys.executable, "-m", "taylorat", "train", "--config", cfg,
                        f"out_dir={out}", "minimizer.name=sam", "optim.epochs=1", "data.train_subset=256",
                        "eval.n=50", "progress=false", "device=cpu"],
                       capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parent.parent)
    assert r.returncode == 0, r.stderr[-2000:]
    meta = json.loads((out / "summary.json").read_text())
    assert meta["minimizer"] == {"name": "sam", "rho": 0.05, "warmup": 0}
    assert meta["method"]["eta"] > 0 and meta["epochs"] == 1
