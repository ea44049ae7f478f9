"""Export a trained model for the tools the field uses: RobustBench, ONNX, a plain state dict.

* ``robustbench``: what a RobustBench submission needs (its README, "Adding a new model"): the
  weights in RobustBench's key layout (``WideResNet`` or ``PreActResNet`` with ``PreActBlockV2``,
  normalization as ``mu``/``sigma`` buffers inside the model, inputs in [0,1]) as ``NAME.pt``
  (``torch.save`` of tensors only, what their model zoo loads) and ``NAME.safetensors``; a
  ``NAME.json`` in the layout of ``model_info/<dataset>/<threat model>/``, filled from the run
  (architecture, dataset, ε, clean and AutoAttack accuracy with the number of test images they
  were measured on, the training method and the paper); and ``autoattack_log.txt``, the log of
  the AutoAttack run the accuracy comes from (a ``taylorat eval`` report at 8/255, or one run
  here). The four files are written into a temporary folder and renamed into place only once all of them
  are written (``common.atomic_folder``): an export is whole or absent.
* ``onnx``: a traced export (``torch.onnx.export``) of the model in eval mode, [0,1] NCHW input, as one
  self-contained file (the weights inside the graph, not in an external data file).
* ``state-dict``: plain safetensors of ``model.state_dict()`` (our names, no taylorat header, no
  ``model.`` prefix), loadable with ``load_state_dict(safetensors.torch.load_file(...))``.
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save
from torch import nn

from . import checkpoint as ckpt
from .common import InputError, atomic_folder, atomic_write_bytes, atomic_write_text, require
from .models import layouts

FORMATS = ("robustbench", "onnx", "state-dict")
PAPER = {"link": "https://openaccess.thecvf.com/content/CVPR2023/html/Jin_Randomized_Adversarial_Training_via_"
                 "Taylor_Expansion_CVPR_2023_paper.html",
         "name": "Randomized Adversarial Training via Taylor Expansion",
         "authors": "Gaojie Jin, Xinping Yi, Dengyu Wu, Ronghui Mu, Xiaowei Huang", "venue": "CVPR 2023"}
ARCHITECTURE = {"preact_resnet18": "PreActResNet-18"}


def architecture_name(model_name: str) -> str:
    m = re.fullmatch(r"wrn_(\d+)_(\d+)", model_name)
    return f"WideResNet-{m.group(1)}-{m.group(2)}" if m else ARCHITECTURE.get(model_name, model_name)


def eps_text(eps: float) -> str:
    """RobustBench writes radii as fractions of 255 where they are one (``8/255``)."""
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{eps:.4g}"


def model_info(meta: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """RobustBench's model_info JSON for a run, from its checkpoint metadata and an evaluation report."""
    if "aa" not in report.get("results", {}):
        raise InputError("the evaluation report has no AutoAttack result; run taylorat eval --attacks clean,aa "
                         "--n 10000 --out DIR and pass --report DIR/report.json")
    aa = report["settings"]["aa"]
    norm = {"linf": "Linf", "l2": "L2"}[aa["norm"]]
    if norm == "Linf" and abs(aa["eps"] - 8 / 255) > 1e-9:
        raise InputError(f"this report's AutoAttack ran at eps={aa['eps']:.5g}; RobustBench's Linf leaderboard is "
                         "at 8/255: evaluate with --attack-eps aa=8/255")
    method = meta.get("method", {})
    dataset = report.get("dataset") or meta.get("data", {}).get("dataset", "")
    n = report["n"]
    info = {**{k: PAPER[k] for k in ("link", "name", "authors")}, "additional_data": False,
            "number_forward_passes": 1, "dataset": dataset, "venue": PAPER["venue"],
            "architecture": architecture_name(meta["model"]["name"]), "eps": eps_text(aa["eps"]),
            "clean_acc": f"{report['results']['clean']:.2f}" if "clean" in report["results"] else None,
            "reported": f"{report['results']['aa']:.2f}", "autoattack_acc": f"{report['results']['aa']:.2f}",
            "n_examples": n, "threat_model": norm,
            "training": {"method": method.get("name"), **{k: v for k, v in method.items() if k != "name"},
                         "toolkit": "taylorat", "epochs": meta.get("config", {}).get("optim", {}).get("epochs"),
                         "checkpoint_epoch": meta.get("epoch")}}
    if n < 10_000:
        info["footnote"] = (f"Clean and AutoAttack accuracy measured on the first {n} test images; RobustBench's "
                            "leaderboard uses all 10,000.")
    return info


def export(path: str | Path, fmt: str, out: str | Path, report: dict[str, Any] | None = None,
           name: str | None = None) -> list[Path]:
    """Export the model checkpoint at ``path`` as ``fmt`` into the folder ``out``; returns the files written."""
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    model, meta = ckpt.load_model(path)
    out = Path(out)
    model_name = meta["model"]["name"]
    stem = name or Path(path).stem
    written: list[Path] = []
    if fmt == "state-dict":
        p = out / f"{stem}.safetensors"
        atomic_write_bytes(p, st_save({k: v.contiguous() for k, v in model.state_dict().items()}))
        written.append(p)
    elif fmt == "onnx":
        written.append(export_onnx(model, out / f"{stem}.onnx"))
    else:
        if report is None:
            raise InputError("--format robustbench needs the AutoAttack evaluation: pass --report report.json "
                             "(from taylorat eval --attacks clean,aa)")
        state = layouts.to_robustbench(model.state_dict(), model_name)
        rb_name = name or "Jin2023Randomized"
        info = model_info(meta, report)
        log = (report.get("extra") or {}).get("aa_log") or []
        names = [f"{rb_name}.safetensors", f"{rb_name}.pt", f"{rb_name}.json", "autoattack_log.txt"]
        with atomic_folder(out) as tmp:
            atomic_write_bytes(tmp / names[0], st_save({k: v.contiguous() for k, v in state.items()}))
            atomic_write_bytes(tmp / names[1], _torch_save(state))
            atomic_write_text(tmp / names[2], json.dumps(info, indent=2) + "\n")
            atomic_write_text(tmp / names[3], "\n".join(log) + "\n")
        written += [out / n for n in names]
    return written


def _torch_save(state: dict[str, torch.Tensor]) -> bytes:

    buf = io.BytesIO()
    torch.save({k: v.contiguous() for k, v in state.items()}, buf)
    return buf.getvalue()


def export_onnx(model: nn.Module, path: str | Path, batch: int = 1) -> Path:
    """An ONNX graph of ``model`` (eval mode), input ``images`` (B, C, H, W) in [0,1], dynamic batch.

    With ``onnxscript`` installed (``taylorat[onnx]``) PyTorch's ``torch.export``-based exporter is
    used; otherwise its older TorchScript-based tracer (deprecated by PyTorch, same graph). The file is
    self-contained: the weights are stored in the graph (``external_data=False``; ONNX's protobuf limit of
    2 GB is far above the models here).
    """

    require("onnx", "onnx", "ONNX export")
    spec = getattr(model, "spec", None) or {}
    c, s = spec.get("in_channels", 3), spec.get("image_size", 32)
    model = model.eval()
    x = torch.rand(batch, c, s, s)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    names = dict(input_names=["images"], output_names=["logits"])
    try:
        if importlib.util.find_spec("onnxscript") is not None:
            dim = torch.export.Dim("batch", min=1)
            torch.onnx.export(model, (x,), str(tmp), dynamic_shapes=({0: dim},), dynamo=True, external_data=False,
                              **names)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.onnx.export(model, (x,), str(tmp), dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                                  dynamo=False, **names)
        tmp.replace(path)
    finally:
        for left in (tmp, tmp.with_name(tmp.name + ".data")):
            if left.exists():
                left.unlink()
    return path
