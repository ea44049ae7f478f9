"""Weight-space flatness of a study run's ``last`` checkpoint (``evaluate.flatness`` of a study file).

For each relative size α in ``alphas`` the mean over ``draws`` filter-normalized random directions
``d`` of ``L(w + α·d) − L(w)``, on the first ``n`` test images: clean cross-entropy, and the
cross-entropy of PGD-``steps`` examples made against each perturbed model at the study's ε
(:func:`taylorat.analysis.weight_flatness`, Li et al. 2018); smaller means flatter. Cached in the
run folder as ``flatness.json`` and reused while its settings are unchanged.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .. import checkpoint as ckpt
from .. import data as datasets
from ..analysis import pgd_attack, weight_flatness
from ..common import as_float_images, atomic_write_text, read_json
from ..train import Config


def flatness_settings(spec: dict[str, Any], eval_settings: dict[str, Any]) -> dict[str, Any]:
    """What the measurement does: the study's flatness options and the attack's threat."""
    return {**spec, "alphas": [float(a) for a in spec["alphas"]], "eps": eval_settings["eps"],
            "step": eval_settings["step"], "norm": eval_settings["norm"], "checkpoint": "last"}


def flatness_of_last(cfg: Config, settings: dict[str, Any], device, progress: bool = False) -> dict[str, Any]:
    """``{"alphas", "clean", "clean_std", "pgd", "pgd_std", "settings", "seconds"}`` for ``cfg``'s run."""

    out = Path(cfg.out_dir)
    cached = out / "flatness.json"
    if cached.exists():
        prev = read_json(cached, "flatness record", "delete it to measure again")
        if prev.get("settings") == settings:
            return prev
    t = time.time()
    model, _ = ckpt.load_model(out / "last.safetensors", device)
    d = cfg.data
    ds = datasets.load(d.dataset, d.data_dir, download=False, **d.options)
    x = as_float_images(ds.test_x[: settings["n"]], device)
    y = ds.test_y[: settings["n"]].to(device)
    attack = pgd_attack(eps=settings["eps"], step=settings["step"], steps=settings["steps"], norm=settings["norm"],
                        seed=settings["seed"])
    fl = weight_flatness(model, x, y, alphas=settings["alphas"], draws=settings["draws"], seed=settings["seed"],
                         attack=attack, score_alpha=settings["alphas"][0], progress=progress)
    j = [int(list(fl.alphas).index(a)) for a in settings["alphas"]]
    base = list(fl.alphas).index(0.0)
    clean = fl.loss - fl.loss[:, [base]]
    adv = fl.adv_loss - fl.adv_loss[:, [base]]
    rec = {"alphas": settings["alphas"],
           "clean": [round(float(clean[:, i].mean()), 5) for i in j],
           "clean_std": [round(float(clean[:, i].std()), 5) for i in j],
           "pgd": [round(float(adv[:, i].mean()), 5) for i in j],
           "pgd_std": [round(float(adv[:, i].std()), 5) for i in j],
           "loss_at_w": {"clean": round(float(fl.loss[0, base]), 5), "pgd": round(float(fl.adv_loss[0, base]), 5)},
           "settings": settings, "seconds": round(time.time() - t, 1)}
    atomic_write_text(cached, json.dumps(rec, indent=2) + "\n")
    return rec
