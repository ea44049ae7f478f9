"""The built-in evaluation attacks (registered on import; see :mod:`taylorat.evaluate.registry`).

* ``clean``: accuracy on the unmodified images;
* ``pgd20``: PGD-20 with cross-entropy, uniform random start (reference ℓ∞ settings:
  ε = 0.031, step 0.003; ℓ2: ε = 128/255, step 15/255);
* ``cw20``: the CW margin loss (κ = 50) optimised by the same PGD core;
* ``aa``: AutoAttack through the maintained library, fixed seed, ℓ∞ ε = 8/255: ``standard`` (RobustBench), or
  ``reference`` (``aa_version``: the paper's script, APGD-CE + APGD-T with 2 restarts each);
* ``transfer_pgd20``, ``transfer_cw20`` (alias ``transfer``): PGD-20 / CW-20 examples made on a
  surrogate model, replayed (black box);
* ``rays``: the RayS hard-label attack, and ADBD, the average ℓ∞ distance to the decision
  boundary it finds (paper Table 7);
* ``sweep``: PGD-20 at ε × {0.5, 1, 2, 4} and at the whole [0,1] box, a gradient-masking check.

``ATTACK_OPTIONS`` holds what a study's evaluation knows of an attack besides running it on its
``n`` test images (a subset of them, its own options, extra numbers; :func:`attack_options`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from ..attacks import CW, PGD, AutoAttack
from ..attacks.autoattack import VERSIONS
from ..attacks.rays import RayS
from .registry import AA_EPS, AttackResult, EvalContext, register_alias, register_attack
from .transfer import transfer_examples

SWEEP = (0.5, 1.0, 2.0, 4.0)
AA_GAP_POINTS = 4.0  # PGD-20 more than this above AutoAttack is flagged
AA_VERSIONS = VERSIONS  # what a user chooses: `taylorat eval --aa-version`, a study's evaluate.aa_version
RAYS_QUERIES = 10_000  # RayS' query budget per image unless told otherwise


def _beats_pgd(name: str, what: str):
    """Flag: a black-box or hard-label attack finds more than white-box PGD-20 (gradient masking)."""
    def flags(res) -> list[str]:
        r = res.results
        if name in r and "pgd20" in r and r[name] < r["pgd20"] - 1.0:
            return [f"the {what} attack ({r[name]:.2f}%) beats white-box PGD-20 ({r['pgd20']:.2f}%): "
                    "gradients do not point where the loss rises, a classic sign of gradient masking"]
        return []
    return flags


@register_attack("clean", label="clean", help="accuracy on the unmodified images")
def clean(ctx: EvalContext) -> AttackResult:
    return AttackResult(ctx.masks(None, "clean"), {"name": "clean", "eps": 0.0})


@register_attack("pgd20", label="PGD-20", help="PGD-20, cross-entropy, uniform random start (l_inf 0.031, "
                 "step 0.003, as TRADES' evaluation)")
def pgd20(ctx: EvalContext) -> AttackResult:
    attack = PGD(ctx.model, eps=ctx.eps, step=ctx.step, steps=20, norm=ctx.norm, seed=ctx.seed, eot=ctx.eot)
    return AttackResult(ctx.masks(attack, "pgd20"), attack.settings())


@register_attack("cw20", label="CW-20", help="CW margin loss (kappa 50) optimised by PGD-20")
def cw20(ctx: EvalContext) -> AttackResult:
    attack = CW(ctx.model, eps=ctx.eps, step=ctx.step, steps=20, norm=ctx.norm, seed=ctx.seed, eot=ctx.eot)
    return AttackResult(ctx.masks(attack, "cw20"), attack.settings())


def _aa_flags(res) -> list[str]:
    r = res.results
    if "aa" in r and "pgd20" in r and r["pgd20"] - r["aa"] > AA_GAP_POINTS:
        return [f"PGD-20 ({r['pgd20']:.2f}%) is {r['pgd20'] - r['aa']:.1f} points above AutoAttack "
                f"({r['aa']:.2f}%): PGD-20 overstates robustness here; report AutoAttack, and suspect "
                "gradient masking if the gap is large"]
    return []


@register_attack("aa", label="AutoAttack", default_eps=AA_EPS, flags=_aa_flags, requires=("pyautoattack", "aa"),
                 help="AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square) via pyautoattack, l_inf 8/255")
def autoattack(ctx: EvalContext) -> AttackResult:
    aa = AutoAttack(ctx.model, eps=ctx.eps, norm=ctx.norm, seed=ctx.seed, batch_size=ctx.batch_size,
                    progress=ctx.progress,
                    version="rand" if ctx.eot > 1 else ctx.options.get("aa_version") or "standard")
    if ctx.progress:
        tqdm.write(f"AutoAttack ({aa.version}: {', '.join(a.upper() for a in aa.settings()['attacks'])}; "
                   f"eps={ctx.eps:.4g}) on {len(ctx.y)} images"
                   + ("; Square's 5,000 queries on the robust images take longest" if aa.version == "standard" else ""))
    _, out = aa.run(ctx.images(), ctx.y.to(ctx.device))
    return AttackResult(out.correct.cpu(), aa.settings(), {"aa_per_attack": out.per_attack, "aa_log": out.log},
                        [f"AutoAttack: {w}" for w in out.warnings])


def _transfer(base: str):
    def run(ctx: EvalContext) -> AttackResult:
        o = ctx.options
        xa, info = transfer_examples(o["surrogate"], ctx.x, ctx.y, base, ctx.eps, ctx.step, ctx.norm, ctx.seed,
                                     ctx.batch_size, o.get("cache_dir"), o.get("surrogate_id", ""), ctx.progress)
        return AttackResult(ctx.masks(None, f"transfer_{base}", xa), {**info, "eps": ctx.eps})
    run.__doc__ = f"{base} examples made white-box on --surrogate, replayed (black box, cached)"
    return run


for _base, _label in (("pgd20", "black-box PGD-20"), ("cw20", "black-box CW-20")):
    register_attack(f"transfer_{_base}", label=_label, needs=("surrogate",),
                    flags=_beats_pgd(f"transfer_{_base}", f"black-box {_base}"))(_transfer(_base))
register_alias("transfer", ("transfer_pgd20", "transfer_cw20"))


@register_attack("rays", label="RayS", norms=("linf",), flags=_beats_pgd("rays", "hard-label RayS"),
                 help="RayS hard-label attack (--rays-queries) and ADBD, the mean l_inf distance to the boundary")
def rays(ctx: EvalContext) -> AttackResult:
    attack = RayS(ctx.model, eps=ctx.eps, queries=ctx.options.get("rays_queries", RAYS_QUERIES), early_stop=False,
                  seed=ctx.seed, progress=ctx.progress)
    r = attack.run(ctx.images(), ctx.y.to(ctx.device))
    d = r.dist[r.clean_correct]
    found = torch.isfinite(d)
    # ADBD over initially-correct images (full budget, as paper Table 7); images with no boundary
    # inside the [0,1] box are counted separately instead of making it infinite
    extra = {"rays_adbd": d[found].mean().item() if found.any() else None,
             "rays_no_boundary": int((~found).sum().item())}
    return AttackResult(r.robust.cpu(), attack.settings(), extra)


def _sweep_flags(res) -> list[str]:
    curve, flags = res.extra.get("sweep"), []
    if curve:
        accs = [c["pgd20"] for c in curve]
        if any(b > a + 1.0 for a, b in zip(accs, accs[1:])):
            flags.append("PGD accuracy rises as eps grows (" + ", ".join(f"{c['eps']:.3g}: {c['pgd20']:.1f}%"
                         for c in curve) + "): the attack is failing, suspect gradient masking")
        if accs[-1] > 1.0:
            flags.append(f"PGD over the whole [0,1] box leaves {accs[-1]:.1f}% accuracy (should be ~0): "
                         "the attack is not converging, suspect gradient masking")
    return flags


@register_attack("sweep", label="PGD-20 by eps", row=False, flags=_sweep_flags,
                 help="PGD-20 at eps x {0.5, 1, 2, 4} and over the whole [0,1] box (gradient-masking check)")
def sweep(ctx: EvalContext) -> AttackResult:
    curve = []
    top = 1.0 if ctx.norm == "linf" else float(ctx.x[0].numel()) ** 0.5
    for k, e in [(k, k * ctx.eps) for k in SWEEP] + [("box", top)]:
        a = PGD(ctx.model, eps=e, step=max(e / 10, ctx.step), steps=20, norm=ctx.norm, seed=ctx.seed)
        m = ctx.masks(a, f"sweep eps={e:.3g}")
        curve.append({"eps": e, "scale": k, "pgd20": 100.0 * m.float().mean().item()})
    settings = {"name": "pgd", "steps": 20, "eps": ctx.eps, "eps_curve": [c["eps"] for c in curve],
                "step": "max(eps/10, step)", "seed": ctx.seed}
    return AttackResult(None, settings, {"sweep": curve})


@dataclass(frozen=True)
class AttackOptions:
    """What a study's evaluation knows of an attack besides running it on the first ``n`` test images.

    ``subset``: the study ``evaluate`` key, and the key of a run's record, holding on how many of the
    first ``n`` images the attack runs (None: all ``n``). With ``subset_always`` that count defaults to
    ``n`` when the study is loaded, must lie in [0, n] (0: the attack does not run) and is part of every
    evaluation's settings (0 when the attack is not asked for); without, an unset or 0 count means ``n``
    and is recorded only when the attack runs. ``options``: :func:`~taylorat.evaluate.evaluate` keywords
    with their defaults, set under a study's ``evaluate`` and recorded when the attack runs. ``record``:
    record key -> ``EvalResult.extra`` key, copied into a run's record; ``metrics``: those of them that are
    numbers a study reports besides accuracies, with their column titles. ``same_images``: attacks also
    scored on exactly this attack's images (``{attack}_on_{name}_images``), for an honest gap.
    ``column``: shown as a column of a study page that does not list its columns.
    """

    subset: str | None = None
    subset_always: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    record: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)
    same_images: tuple[str, ...] = ()
    column: bool = True
    recorded_if_set: tuple[str, ...] = ()  # options recorded only away from their default (records made before
    # the option existed stay equal: AutoAttack's ``aa_version``, standard unless a study says reference)


ATTACK_OPTIONS: dict[str, AttackOptions] = {
    "aa": AttackOptions(subset="n_aa", subset_always=True, record={"aa_per_attack": "aa_per_attack"},
                        same_images=("pgd20", "clean"), options={"aa_version": "standard"},
                        recorded_if_set=("aa_version",)),
    "transfer": AttackOptions(column=False),
    "rays": AttackOptions(subset="n_rays", options={"rays_queries": RAYS_QUERIES}, record={"adbd": "rays_adbd"},
                          metrics={"adbd": "ADBD"}, column=False),
}


def attack_options(name: str) -> AttackOptions:
    """An attack's (or alias') study options; the defaults for one that has none."""
    return ATTACK_OPTIONS.get(name, AttackOptions())


def attack_metrics() -> dict[str, str]:
    """Numbers besides accuracies that a study row can report (RayS' ADBD), with their column titles."""
    return {k: title for o in ATTACK_OPTIONS.values() for k, title in o.metrics.items()}
