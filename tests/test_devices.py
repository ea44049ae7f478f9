"""What must hold on every device a user trains on: each test runs on the CPU and, where one is visible, on
a CUDA GPU (marked ``cuda``: ``benchmarks/gpu_check.sh`` runs ``pytest -m cuda`` there).

PGD stays in the threat set; randomized weights come back bit for bit; the closed-form head statistics
equal autograd; bf16 autocast, channels_last, torch.compile and fused SGD agree with fp32 eager; the
device-resident loader replays an epoch exactly; a stopped and resumed 2-epoch run ends with the weights
of an uninterrupted one.
"""

import os

import pytest
import torch
import torch.nn.functional as F

from taylorat import models
from taylorat.attacks import pgd
from taylorat.data import DeviceLoader
from taylorat.objectives import head_grad_rowsums, randomized_weights, trades_taylor_loss

# CUDA cases exist where a GPU is visible (or, to list them on a CPU for the GPU check's dry run, when
# TAYLORAT_LIST_CUDA_TESTS=1); a CPU-only run neither collects nor skips them.
CUDA = torch.cuda.is_available() or os.environ.get("TAYLORAT_LIST_CUDA_TESTS") == "1"
DEVICES = ["cpu"] + ([pytest.param("cuda", marks=pytest.mark.cuda)] if CUDA else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


def small(device, dtype=torch.float32, channels=3, size=16):
    torch.manual_seed(0)
    return models.create("small_cnn", num_classes=10, in_channels=channels, image_size=size).to(device, dtype)


def test_pgd_stays_in_the_threat_set(device):
    model = small(device).eval()
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(16, 3, 16, 16, device=device, generator=g)
    y = torch.randint(0, 10, (16,), device=device, generator=g)
    for norm, eps in (("linf", 8 / 255), ("l2", 0.5)):
        for loss in ("ce", "kl", "cw"):
            xa = pgd(model, x, y, eps=eps, step=eps / 4, steps=5, norm=norm, loss=loss, generator=g)
            size = (xa - x).flatten(1).abs().amax(1) if norm == "linf" else (xa - x).flatten(1).norm(dim=1)
            assert xa.min() >= 0 and xa.max() <= 1 and (size <= eps * (1 + 1e-5)).all(), (norm, loss)


def test_randomized_weights_restore_bit_exactly(device):
    model = small(device)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator(device=device).manual_seed(1)
    with randomized_weights(model, 0.01, "all", g):
        assert not torch.equal(next(model.parameters()), before[next(iter(model.state_dict()))])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_closed_form_statistics_equal_autograd(device):
    torch.manual_seed(0)
    h = torch.randn(32, 17, dtype=torch.float64, device=device)
    W = torch.randn(10, 17, dtype=torch.float64, device=device, requires_grad=True)
    y = torch.randint(0, 10, (32,), device=device)
    z = h @ W.T
    (gW,) = torch.autograd.grad(F.cross_entropy(z, y), [W])
    g = head_grad_rowsums(F.softmax(z, dim=1), h, y)
    assert ((g - gW.sum(1)).norm() / gW.sum(1).norm()).item() < 1e-10


@pytest.fixture
def true_fp32():
    """fp32 means fp32 here: on CUDA, cuDNN runs fp32 convolutions in TF32 (10-bit mantissa) by default,
    and two layouts pick different TF32 algorithms, so the reference would itself be off by ~1e-2."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.parametrize("fast", ["bf16", "channels_last", pytest.param("compile", marks=pytest.mark.slow),
                                  "fused_sgd"])
def test_fast_paths_agree_with_fp32_eager(device, fast, true_fp32):
    g = torch.Generator(device=device).manual_seed(2)
    x = torch.rand(16, 3, 16, 16, device=device, generator=g)
    x_adv = (x + 0.03 * torch.randn(x.shape, device=device, generator=g)).clamp(0, 1)
    y = torch.randint(0, 10, (16,), device=device, generator=g)
    ref_model = small(device)
    ref = trades_taylor_loss(ref_model, x, x_adv, y)
    ref.backward()
    model = small(device)
    if fast == "fused_sgd":  # one optimizer step from the same gradients, fused kernel vs the default one
        for p, q in zip(model.parameters(), ref_model.parameters()):
            p.grad = q.grad.clone()
        a = torch.optim.SGD(ref_model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        b = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, fused=True)
        a.step(), b.step()
        for p, q in zip(model.parameters(), ref_model.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
        return
    tol = 3e-2 if fast == "bf16" else 1e-4
    if fast == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x, x_adv = x.contiguous(memory_format=torch.channels_last), x_adv.contiguous(memory_format=torch.channels_last)
    if fast == "compile":
        model.forward_features = torch.compile(model.forward_features)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast == "bf16"):
        loss = trades_taylor_loss(model, x, x_adv, y)
    loss.backward()
    assert loss.dtype == torch.float32 and abs(loss.item() - ref.item()) / ref.item() < tol
    ga = torch.cat([p.grad.flatten() for p in model.parameters()])
    gb = torch.cat([p.grad.flatten() for p in ref_model.parameters()])
    assert ((ga - gb).norm() / gb.norm()).item() < 10 * tol


def test_loader_replays_an_epoch_exactly(device):
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (70, 3, 16, 16), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (70,), generator=g)
    loader = DeviceLoader(images, labels, 16, device, crop=True, flip=True, pad=2, seed=5)
    a = [(x.clone(), y.clone()) for x, y in loader.batches(3)]
    b = list(loader.batches(3))
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert all(x.device.type == device.type for x, _ in a)
    assert not all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, loader.batches(4)))


def test_stopped_and_resumed_run_ends_with_the_same_weights(device, tmp_path):
    from safetensors.torch import load_file

    from taylorat.train import from_dict, train

    def cfg(out):
        return from_dict({"out_dir": str(out), "device": str(device), "progress": False, "checkpoints": "none",
                          "curves": False, "model": {"name": "small_cnn"},
                          "data": {"dataset": "synthetic", "holdout": 10,
                                   "options": {"n_train": 74, "n_test": 10, "channels": 3, "image_size": 16}},
                          "method": {"name": "trades+1st+2nd", "noise_std": 0.01},
                          "attack": {"eps": 0.1, "step": 0.03, "steps": 2}, "optim": {"epochs": 2, "batch_size": 16},
                          "eval": {"n": 10, "eps": 0.1, "step": 0.03, "steps": 2}})

    train(cfg(tmp_path / "full"), log=lambda e: None)
    part = cfg(tmp_path / "part")
    train(part, stop_after=1, log=lambda e: None)
    train(part, resume=True, log=lambda e: None)
    a, b = (load_file(str(tmp_path / d / "last.safetensors")) for d in ("full", "part"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["trades+1st+2nd", "mart+1st+2nd"])
def test_compiled_loss_agrees_with_float64_autograd(device, name, true_fp32):
    """``compile`` also compiles the loss from the two passes (base loss + Taylor terms): its value and the
    gradients through it equal a plain float64 eager computation."""
    from taylorat.objectives import PairForward
    from taylorat.train import from_dict
    from taylorat.train.step import compiled_loss
    from taylorat.train.trainer import build_method

    method = build_method(from_dict({"method": {"name": name}}))
    g = torch.Generator(device=device).manual_seed(4)
    x = torch.rand(16, 3, 16, 16, device=device, generator=g)
    x_adv = (x + 0.03 * torch.randn(x.shape, device=device, generator=g)).clamp(0, 1)
    y = torch.randint(0, 10, (16,), device=device, generator=g)
    results = []
    cases = ((torch.float64, method.loss_from_outputs), (torch.float32, compiled_loss(method, "default")))
    for dtype, loss_fn in cases:
        model = small(device, dtype)
        parts = loss_fn(PairForward(model, True, None)(x.to(dtype), x_adv.to(dtype)), y)
        grads = torch.autograd.grad(parts.loss, list(model.parameters()))
        results.append((parts, torch.cat([gr.flatten().double() for gr in grads])))
    (ref, g64), (fast, g32) = results
    assert fast.loss.dtype == torch.float32 and fast.first.item() > 0 and fast.second.item() > 0
    for k in ("loss", "first", "second"):
        assert abs(getattr(fast, k).item() - getattr(ref, k).item()) <= 1e-5 * max(1.0, abs(getattr(ref, k).item())), k
    assert ((g32 - g64).norm() / g64.norm()).item() < 1e-4


def test_in_layout_gives_the_exact_strides_of_the_layout(device):
    from taylorat.train.speed import in_layout

    x = torch.rand(4, 1, 8, 8, device=device, requires_grad=True)  # 1 channel: contiguous in both layouts
    assert x.is_contiguous(memory_format=torch.channels_last) and x.stride() == (64, 64, 8, 1)
    last = in_layout(x, torch.channels_last)
    assert last.stride() == (64, 1, 8, 1) and torch.equal(last, x)
    assert in_layout(last, torch.channels_last) is last and in_layout(x, torch.contiguous_format) is x
    assert in_layout(last, torch.contiguous_format).stride() == (64, 64, 8, 1)
    (last * 2).sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 2.0))  # the copy stays on the tape
    rgb = torch.rand(2, 3, 4, 4, device=device)
    assert in_layout(rgb, torch.channels_last).stride() == (48, 1, 12, 3)
    image = rgb[0]
    assert in_layout(image, torch.channels_last) is image  # not a batch: passed through as it is


def test_a_compiled_run_keeps_every_graph_it_needs(device, tmp_path, monkeypatch):
    """``compile``: the attack, the no-grad passes and the training pass, each again for a short last batch, on
    1-channel images in channels_last, all stay compiled: fewer graphs than the limit (past it torch runs the
    function eager); the per-epoch check runs eager and adds none. Traced with dynamo's eager backend, which guards
    as inductor does."""
    import torch._dynamo
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    from taylorat.models.small_cnn import SmallCNN
    from taylorat.train import from_dict, train
    from taylorat.train.step import RECOMPILE_LIMIT

    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None: real(fn, backend="eager"))
    torch._dynamo.reset()
    cfg = from_dict({"out_dir": str(tmp_path / "run"), "device": str(device), "progress": False,
                     "checkpoints": "none", "curves": False, "model": {"name": "small_cnn"},
                     "precision": "bf16", "channels_last": "true", "compile": "default",
                     "data": {"dataset": "synthetic", "holdout": 10,
                              "options": {"n_train": 50, "n_test": 10, "channels": 1, "image_size": 8}},
                     "method": {"name": "trades+1st+2nd", "noise_std": 0.01},
                     "attack": {"eps": 0.1, "step": 0.03, "steps": 2}, "optim": {"epochs": 2, "batch_size": 16},
                     "eval": {"n": 10, "eps": 0.1, "step": 0.03, "steps": 2}})
    train(cfg, log=lambda e: None)  # 40 images in batches of 16: a short last batch of 8
    graphs = len(_debug_get_cache_entry_list(SmallCNN.forward_features.__code__))
    torch._dynamo.reset()
    assert 3 <= graphs <= 6 < RECOMPILE_LIMIT  # 3 settings of the step, each dynamic again for the last batch
    config = torch._dynamo.config
    assert getattr(config, "recompile_limit", getattr(config, "cache_size_limit", 0)) >= RECOMPILE_LIMIT


def test_eager_features_swaps_the_compiled_features_out_and_back(monkeypatch):
    from taylorat.train.step import compile_for_training, eager_features

    model = small(torch.device("cpu"))
    plain = model.forward_features
    with eager_features(model):  # nothing compiled: nothing to swap
        assert model.forward_features == plain
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None: real(fn, backend="eager"))
    from taylorat.objectives import Method

    compile_for_training(model, Method(), "default", torch.contiguous_format)
    compiled = model.forward_features
    assert compiled.eager == plain
    with eager_features(model):
        assert model.forward_features == plain
    assert model.forward_features is compiled
    with pytest.raises(RuntimeError), eager_features(model):
        raise RuntimeError("inside the check")
    assert model.forward_features is compiled  # restored on errors too
