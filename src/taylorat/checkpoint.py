"""Checkpoints: one safetensors file holding tensors and a JSON state, written atomically.

A checkpoint is a safetensors file whose header metadata holds ``{"taylorat": <json>}``; the
JSON names the format, the model spec (enough to rebuild it with ``models.create``) and the
run state. Writes go to a temporary file in the same directory, are fsynced, then renamed over
the target, so a crash never leaves a half-written checkpoint under the final name. The JSON
also holds ``data_crc32``, the CRC-32 of the tensor data (every byte after the header), which every
load verifies: a flipped or lost byte is a one-line :class:`CheckpointDamaged` instead of weights
that load silently (safetensors itself checks only the header). Loading never unpickles anything.
"""

from __future__ import annotations

import json
import os
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from . import models
from .common import InputError, atomic_write_bytes
from .models import layouts

FORMAT = "taylorat-checkpoint"
VERSION = 1
MODEL_PREFIX = "model."


class CheckpointError(InputError):
    """A file that is missing, not a taylorat checkpoint, or does not fit the model."""


class CheckpointDamaged(CheckpointError):
    """A taylorat checkpoint whose bytes changed after it was written (truncated, flipped, overwritten)."""


class UnverifiedCheckpoint(UserWarning):
    """A checkpoint written before checksums (it loads; its tensor data cannot be verified)."""


@dataclass(frozen=True)
class EvalSettings:
    """A run's per-epoch check: the threat model (its training attack's norm) and the PGD radius, step and steps.

    ``None`` where the checkpoint does not record it (imported weights, older checkpoints).
    """

    norm: str = "linf"
    eps: float | None = None
    step: float | None = None
    steps: int | None = None


class CheckpointMeta:
    """A typed, read-only view of a checkpoint's JSON state (the ``meta`` of ``load`` and ``load_model``).

    What a training run writes (``train.run_dir.state_meta``): ``model`` (the spec: ``name`` + the kwargs
    of ``models.create``), ``config`` (the run config: ``data``, ``attack``, ``eval``, ...), ``method``
    (``name`` + resolved weights), ``epoch``, ``metrics`` (that epoch's record) and, in
    ``last.safetensors``, ``history``, ``best``, ``best_epoch`` and ``partial``. Imported weights and older
    checkpoints lack some keys: a missing key reads as None (a scalar) or empty (a section). Sections are
    returned as copies.
    """

    __slots__ = ("_meta",)

    def __init__(self, meta: Mapping[str, Any]):
        self._meta = MappingProxyType(dict(meta))

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> CheckpointMeta:
        return cls(meta)

    def _section(self, *keys: str) -> dict[str, Any]:
        """The dict at ``meta[k0][k1]...``; empty where a key is missing or not a dict."""
        node: Any = self._meta
        for k in keys:
            node = node.get(k) if isinstance(node, Mapping) else None
        return dict(node) if isinstance(node, Mapping) else {}

    @property
    def raw(self) -> Mapping[str, Any]:
        """The whole JSON state, read-only."""
        return self._meta

    @property
    def kind(self) -> str | None:
        """``model`` (weights to evaluate) or ``train_state`` (``last.safetensors``)."""
        return self._meta.get("kind")

    @property
    def model_spec(self) -> dict[str, Any]:
        """``models.create(**model_spec)`` rebuilds the architecture: ``name`` and its constructor kwargs."""
        return self._section("model")

    @property
    def model_name(self) -> str | None:
        return self.model_spec.get("name")

    @property
    def model_kwargs(self) -> dict[str, Any]:
        """The model spec without its name (classes, input shape, normalization, ...)."""
        return {k: v for k, v in self.model_spec.items() if k != "name"}

    @property
    def config(self) -> dict[str, Any]:
        """The run config (``Config.to_dict()``); empty for imported weights."""
        return self._section("config")

    @property
    def dataset(self) -> str | None:
        """The dataset the model was trained on (``config.data.dataset``), as the run named it."""
        return self._section("config", "data").get("dataset")

    @property
    def data_dir(self) -> str:
        """Where the run read its data (``config.data.data_dir``; ``./data`` when not recorded)."""
        return self._section("config", "data").get("data_dir", "./data")

    @property
    def data_options(self) -> dict[str, Any]:
        """The dataset's own options the run used (``config.data.options``, e.g. synthetic sizes)."""
        return self._section("config", "data", "options")

    @property
    def method(self) -> dict[str, Any]:
        """The training method: ``name`` and its resolved weights (beta, eta, eta2, noise_std, ...)."""
        return self._section("method")

    @property
    def method_name(self) -> str | None:
        return self.method.get("name")

    @property
    def label(self) -> str | None:
        """What to call the model in a table: its method's name, else its architecture's."""
        return self.method.get("name", self.model_name)

    @property
    def eval_settings(self) -> EvalSettings:
        """The run's per-epoch check (``config.eval``) under its training norm (``config.attack.norm``)."""
        e = self._section("config", "eval")
        return EvalSettings(norm=self._section("config", "attack").get("norm", "linf"), eps=e.get("eps"),
                            step=e.get("step"), steps=e.get("steps"))

    @property
    def epoch(self) -> int | None:
        """The last finished epoch the weights come from."""
        return self._meta.get("epoch")

    @property
    def record(self) -> dict[str, Any]:
        """That epoch's metrics (losses, accuracies, seconds), as in ``metrics.jsonl``."""
        return self._section("metrics")

    @property
    def history(self) -> list[dict[str, Any]]:
        """Every finished epoch's record (train state only)."""
        return list(self._meta.get("history") or [])

    @property
    def best(self) -> dict[str, float]:
        """The best per-epoch check so far: ``{"clean": %, "pgd": %}``."""
        return self._section("best")

    @property
    def best_epoch(self) -> int | None:
        return self._meta.get("best_epoch")

    @property
    def partial(self) -> dict[str, Any] | None:
        """Where a signal stopped an epoch (``epoch``, ``step``, running sums), or None."""
        part = self._meta.get("partial")
        return dict(part) if part else None


def save(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Atomically write ``tensors`` and the JSON-serialisable ``meta`` to ``path``, with the data's CRC-32."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    header = {"format": FORMAT, "version": VERSION, **meta}
    raw = st_save(flat, metadata={"taylorat": json.dumps(header)})
    n = int.from_bytes(raw[:8], "little")
    data = memoryview(raw)[8 + n:]
    index = json.loads(raw[8 : 8 + n])  # the tensors' names, dtypes, shapes and offsets: independent of metadata
    index["__metadata__"] = {"taylorat": json.dumps({**header, "data_crc32": f"{zlib.crc32(data):08x}"})}
    text = json.dumps(index, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors aligns the data to 8 bytes
    atomic_write_bytes(path, b"".join((len(text).to_bytes(8, "little"), text, data)))


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON state of a checkpoint, without reading its tensors."""
    return load(path, tensors=False)[1]


def load(path: str | os.PathLike, device: str | torch.device = "cpu", tensors: bool = True):
    """``(tensors, meta)`` of a taylorat checkpoint; a one-line CheckpointError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; give the path of a .safetensors file written by taylorat")
    raw = path.read_bytes()
    try:
        header_len = int.from_bytes(raw[:8], "little")
        if len(raw) < 8 or header_len > len(raw) - 8:
            raise InputError("truncated or not safetensors")
        header = json.loads(raw[8 : 8 + header_len])
        if not isinstance(header, dict):
            raise InputError("header is not a JSON object")
        data = st_load(raw) if tensors else {}
    except (SafetensorError, ValueError, UnicodeDecodeError) as e:
        if raw[:4] == b"PK\x03\x04" or raw[:1] == b"\x80":
            raise CheckpointError(f"{path} is a pickle (torch.save) file; taylorat loads only safetensors "
                                  "checkpoints, which cannot run code") from None
        raise CheckpointError(f"{path} is not a taylorat checkpoint (not a valid safetensors file: {e})") from None
    meta_raw = (header.get("__metadata__") or {}).get("taylorat")
    if meta_raw is None:
        raise CheckpointError(f"{path} is a safetensors file without taylorat metadata; "
                              "it was not written by taylorat")
    try:
        meta = json.loads(meta_raw)
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a taylorat checkpoint (unreadable metadata)")
    if meta.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} was written by a newer taylorat (checkpoint version {meta['version']}); upgrade")
    verify(path, raw, header_len, meta)
    return {k: v.to(device) for k, v in data.items()}, meta


def verify(path: Path, raw: bytes, header_len: int, meta: dict[str, Any]) -> None:
    """Compare the CRC-32 of the tensor data with ``meta["data_crc32"]``; a note where there is none."""
    stored = meta.pop("data_crc32", None)
    if stored is None:
        warnings.warn(f"{path} carries no checksum (written by an older taylorat); its tensor data is not verified",
                      UnverifiedCheckpoint, stacklevel=3)
        return
    if f"{zlib.crc32(memoryview(raw)[8 + header_len:]):08x}" != stored:
        raise CheckpointDamaged(f"{path} is damaged: its tensor data does not match the checksum written with it "
                                "(a flipped or lost byte); use an earlier checkpoint or retrain")


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {MODEL_PREFIX + k: v for k, v in model.state_dict().items()}


def load_state_strict(model: nn.Module, tensors: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load the ``model.*`` tensors into ``model``; every key and shape must match."""
    state = {k[len(MODEL_PREFIX):]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    bad = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or extra or bad:
        detail = "; ".join(d for d in (f"missing {missing[:3]}" if missing else "",
                                       f"unexpected {extra[:3]}" if extra else "",
                                       f"shape mismatch at {bad[:3]}" if bad else "") if d)
        raise CheckpointError(f"{source} does not fit this model ({detail}); it was written for another architecture")
    model.load_state_dict(state, strict=True)


def save_model(path: str | os.PathLike, model: nn.Module, meta: dict[str, Any] | None = None) -> None:
    """Save weights (and buffers) with the model spec, so ``load_model`` can rebuild it."""
    save(path, model_tensors(model), {"kind": "model", "model": model.spec, **(meta or {})})


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model named in the checkpoint and load its weights strictly. Returns (model, meta)."""
    tensors, meta = load(path, device)
    spec = meta.get("model")
    if not isinstance(spec, dict) or "name" not in spec:
        raise CheckpointError(f"{path} holds no model spec; it is not a model checkpoint")
    model = models.create(**spec).to(device)
    load_state_strict(model, tensors, str(path))
    model.eval()
    return model, meta


def read_pickled_state(path: str | os.PathLike, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a ``torch.save`` state dict (e.g. the reference code's ``epoch200.pt``).

    Needs ``allow_pickle=True`` and uses ``torch.load(weights_only=True)``, which refuses any
    pickle that would construct objects other than tensors and plain containers, so a crafted
    file cannot run code. A ``{"state_dict": ...}`` wrapper is unwrapped.
    """
    path = Path(path)
    if not allow_pickle:
        raise CheckpointError(f"{path} is a pickle; loading one needs an explicit opt-in (--allow-pickle), "
                              "and then only tensors are accepted")
    if not path.is_file():
        raise CheckpointError(f"no file at {path}")
    import pickle  # noqa: PLC0415 (only for the exception type)

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a plain tensor state dict; refused ({first[:160]})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return obj


def read_foreign_state(path: str | os.PathLike, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """A plain state dict from a ``.safetensors`` file (no taylorat header needed) or a ``.pt`` pickle."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no file at {path}")
    raw = path.read_bytes()
    if raw[:4] == b"PK\x03\x04" or raw[:1] == b"\x80":
        return read_pickled_state(path, allow_pickle)
    try:
        return dict(st_load(raw))
    except (SafetensorError, ValueError) as e:
        raise CheckpointError(f"{path} is neither a safetensors file nor a torch.save state dict ({e})") from None


def import_pickled_weights(path: str | os.PathLike, model: nn.Module, allow_pickle: bool = False) -> list[str]:
    """Load a ``torch.save`` state dict in our or a reference layout into ``model``; returns dropped keys."""
    return load_foreign_state(model, read_pickled_state(path, allow_pickle), str(path))


def load_foreign_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> list[str]:
    """Load a state dict in another code base's layout (``models.layouts``) strictly; returns dropped keys.

    Only keys the reference architectures build but never use (``sub_block1.*``) are dropped;
    any other key that does not map, or a missing one, is a one-line CheckpointError.
    """
    mapped, dropped = layouts.to_ours(state, set(model.state_dict()))
    load_state_strict(model, {MODEL_PREFIX + k: v for k, v in mapped.items()}, source)
    return dropped
