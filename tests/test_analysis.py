"""Analysis: input landscapes, weight-space flatness, cost table (tiny models, CPU, seconds)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from taylorat import models
from taylorat.analysis import (
    PANEL_SIZE,
    cost_table,
    filter_normalized_direction,
    flatness_report,
    input_landscape,
    landscape_report,
    load_jsonl,
    pgd_attack,
    rademacher,
    weight_flatness,
)
from taylorat.analysis.landscape import DPI


def small_model(seed=0):
    torch.manual_seed(seed)
    return models.create("small_cnn", num_classes=10, in_channels=1, image_size=8)


def data(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(model, snap):
    state = model.state_dict()
    return state.keys() == snap.keys() and all(torch.equal(state[k], snap[k]) for k in snap)


# ---------------------------------------------------------------- landscape

def test_landscape_values_centre_and_model_untouched():
    model, (x, y) = small_model().train(), data()
    snap = snapshot(model)
    ls = input_landscape(model, x, y, radius=0.1, steps=7, seed=0, batch_size=40)
    assert model.training and same_state(model, snap)
    assert ls.loss.shape == ls.acc.shape == (3, 7, 7) and ls.loss.dtype == np.float64
    assert ls.acc.dtype == bool and np.isfinite(ls.loss).all()
    assert ls.a[3] == 0.0 and ls.b[3] == 0.0 and np.allclose(ls.a, np.linspace(-0.1, 0.1, 7))
    model.eval()
    with torch.no_grad():
        logits = model(x)
    clean = F.cross_entropy(logits, y, reduction="none").double().numpy()
    np.testing.assert_allclose(ls.loss[:, 3, 3], clean, atol=1e-5, rtol=0)
    np.testing.assert_allclose(ls.clean_loss, clean, atol=1e-5, rtol=0)
    assert (ls.acc[:, 3, 3] == (logits.argmax(1) == y).numpy()).all()


def test_landscape_seeds():
    model, (x, y) = small_model().eval(), data()
    one = input_landscape(model, x, y, 0.1, steps=5, seed=3)
    two = input_landscape(model, x, y, 0.1, steps=5, seed=3)
    other = input_landscape(model, x, y, 0.1, steps=5, seed=4)
    assert np.array_equal(one.loss, two.loss) and np.array_equal(one.acc, two.acc)
    assert not np.array_equal(one.loss, other.loss)
    d = rademacher((3, 1, 8, 8), 3)
    assert torch.equal(d, rademacher((3, 1, 8, 8), 3)) and not torch.equal(d, rademacher((3, 1, 8, 8), 4))
    assert set(d.unique().tolist()) == {-1.0, 1.0}
    # along a (the sign-gradient axis) the loss rises first-order at the centre
    assert (one.loss[:, 3, 2] >= one.loss[:, 2, 2] - 1e-6).all()


def test_landscape_report_files(tmp_path):
    import matplotlib.image as mpimg

    x, y = data(n=2)
    rep = landscape_report({"a": small_model(0).eval(), "b": small_model(1).eval()}, x, y, radius=0.1, steps=5,
                           seed=0, out_dir=tmp_path, progress=False)
    img = mpimg.imread(tmp_path / "landscape.png")
    rows, cols = 2, 2
    assert img.shape[:2] == (round(rows * PANEL_SIZE[1] * DPI), round(cols * PANEL_SIZE[0] * DPI))
    with np.load(tmp_path / "landscapes.npz") as z:
        assert {"a", "b", "y", "labels", "a/loss", "a/acc", "a/clean_loss", "b/loss"} <= set(z.files)
        assert z["a/loss"].shape == (2, 5, 5) and list(z["labels"]) == ["a", "b"]
        np.testing.assert_array_equal(z["b/loss"], rep["landscapes"]["b"].loss)
    js = json.loads((tmp_path / "landscape.json").read_text())
    assert {"kind", "settings", "models", "files"} <= set(js)
    assert {"radius", "steps", "seed", "clip", "n_images"} <= set(js["settings"])
    im = js["models"]["a"]["images"][0]
    assert {"centre_loss", "max_loss", "mean_loss", "flatness", "grid_accuracy"} <= set(im)
    assert im["max_loss"] >= im["mean_loss"] and im["max_loss"] >= im["centre_loss"] and im["flatness"] >= 0


# ---------------------------------------------------------------- flatness

class Scaled(nn.Module):
    """Two-class linear model with identical rows: zero margin, so CE is locally quadratic in
    the weights with curvature ∝ scale² along any filter-normalized direction."""

    def __init__(self, scale, d=16):
        super().__init__()
        self.scale = scale
        self.lin = nn.Linear(d, 2, bias=False)
        with torch.no_grad():
            row = torch.randn(d, generator=torch.Generator().manual_seed(0))
            self.lin.weight.copy_(torch.stack([row, row]))

    def forward(self, x):
        return self.scale * self.lin(x.flatten(1))


def toy_data(n=32):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, 2, (n,), generator=g)


def test_flat_model_scores_lower():
    x, y = toy_data()
    flat = weight_flatness(Scaled(0.5), x, y, alphas=[0, 0.1, 0.2], draws=4, seed=0)
    sharp = weight_flatness(Scaled(5.0), x, y, alphas=[0, 0.1, 0.2], draws=4, seed=0)
    assert flat.loss[0, 0] == sharp.loss[0, 0] == pytest.approx(np.log(2))
    assert 0 < flat.score < sharp.score / 10
    assert flat.summary()["loss_increase"] == flat.score and flat.score_std >= 0


def test_flatness_alpha0_exact_restore_and_seeds():
    model, (x, y) = small_model(), data(n=4)
    model.train()
    snap = snapshot(model)  # includes BatchNorm running statistics
    res = weight_flatness(model, x, y, alphas=[0.05, 0.3], draws=2, seed=7)
    assert model.training and same_state(model, snap)
    assert list(res.alphas) == [0.0, 0.05, 0.1, 0.3]  # 0 and the score alpha are always included
    model.eval()
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y, reduction="none").double().mean().item()
    assert res.loss[:, 0] == pytest.approx([clean, clean], abs=1e-12)
    assert (res.loss[:, 1:] != res.loss[:, :1]).all() and res.adv_loss is None
    again = weight_flatness(model, x, y, alphas=[0.05, 0.3], draws=2, seed=7)
    assert np.array_equal(res.loss, again.loss) and np.array_equal(res.acc, again.acc)
    other = weight_flatness(model, x, y, alphas=[0.05, 0.3], draws=2, seed=8)
    assert not np.array_equal(res.loss, other.loss)
    assert same_state(model, snap)


def test_filter_normalized_direction():
    model = small_model()
    d = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    for name, p in model.named_parameters():
        if p.dim() <= 1:
            assert not d[name].any(), name
        else:
            torch.testing.assert_close(d[name].flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1))


def test_flatness_report_with_attack(tmp_path):
    import matplotlib.image as mpimg

    x, y = data(n=4)
    model = small_model().eval()
    snap = snapshot(model)
    rep = flatness_report({"m": model}, x, y, alphas=[0, 0.1], draws=2, seed=0, out_dir=tmp_path,
                          attack=pgd_attack(eps=0.1, step=0.05, steps=2), progress=False)
    assert same_state(model, snap)
    r = rep["results"]["m"]
    assert r.adv_loss.shape == (2, 2) and (r.adv_loss >= r.loss - 1e-6).all()
    js = json.loads((tmp_path / "flatness.json").read_text())
    s = js["models"]["m"]
    assert {"loss_increase", "loss_increase_std", "adv_loss_increase", "loss", "acc", "adv_acc"} <= set(s)
    assert js["settings"]["attack"]["name"] == "pgd" and js["settings"]["score_alpha"] == 0.1
    assert mpimg.imread(tmp_path / "flatness.png").ndim == 3


# ---------------------------------------------------------------- cost table

def test_cost_table_ratios_and_missing(tmp_path):
    lines = [
        {"model": "wrn", "method": "trades", "precision": "bf16", "device": "H100", "batch_size": 128,
         "ms_per_iter": 100.0, "peak_mib": 4000.0, "iters_per_epoch": 391},
        {"model": "wrn", "method": "trades+1st+2nd", "precision": "bf16", "device": "H100", "batch_size": 128,
         "ms_per_iter": 150.0, "peak_mib": 5000.0, "iters_per_epoch": 391},
        {"model": "wrn", "method": "trades+1st", "precision": "fp32", "ms_per_iter": 300.0},  # no fp32 baseline
        {"model": "wrn", "method": "trades+1st", "precision": "bf16", "device": "H100", "batch_size": 128,
         "peak_mib": 4400.0},
    ]
    path = tmp_path / "bench.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n\n# comment\n")
    assert load_jsonl(path) == lines
    table = cost_table(load_jsonl(path))
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines() if line.startswith("|")]
    assert rows[0][:3] == ["model", "method", "precision"] and len(rows) == 2 + 4
    base, taylor, fp32, partial = rows[2:]
    assert base[3:] == ["100.0", "0.65", "4000", "1.00×", "1.00×"]  # 100 ms × 391 / 60000 = 0.65 min
    assert taylor[3:] == ["150.0", "0.98", "5000", "1.50×", "1.25×"]
    assert fp32[3:] == ["300.0", "–", "–", "–", "–"]
    assert partial[3:] == ["–", "–", "4400", "–", "1.10×"]
    assert "H100" in table and "128" in table
    assert cost_table([{}]).splitlines()[2] == "| " + " | ".join(["–"] * 8) + " |"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n[1]\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        load_jsonl(bad)
