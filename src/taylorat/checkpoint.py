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
import re
import warnings
import zlib
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn
from torch.overrides import TorchFunctionMode

from . import models
from .checkpoint_meta import CheckpointMeta as CheckpointMeta  # the typed view, re-exported
from .checkpoint_meta import EvalSettings as EvalSettings
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


def is_pickle(head: bytes) -> bool:
    """Whether a file starting with ``head`` is a ``torch.save`` file (a zip archive or a bare pickle)."""
    return head[:4] == b"PK\x03\x04" or head[:1] == b"\x80"


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON state of a checkpoint, without reading its tensors."""
    return load(path, tensors=False)[1]


def load(path: str | os.PathLike, device: str | torch.device = "cpu", tensors: bool = True):
    """``(tensors, meta)`` of a taylorat checkpoint; a one-line CheckpointError otherwise."""
    path = Path(path)
    try:  # not is_file() then read: a run replacing `last` between the two would escape as FileNotFoundError
        raw = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise CheckpointError(f"no checkpoint at {path}; give the path of a .safetensors file written by taylorat"
                              ) from None
    try:
        header_len = int.from_bytes(raw[:8], "little")
        if len(raw) < 8 or header_len > len(raw) - 8:
            raise InputError("truncated or not safetensors")
        header = parse_json(raw[8 : 8 + header_len], MAX_HEADER_CHARS, f"{path}'s safetensors header")
        if not isinstance(header, dict):
            raise InputError("header is not a JSON object")
        data = st_load(raw) if tensors else {}
    except (SafetensorError, ValueError, UnicodeDecodeError) as e:
        if is_pickle(raw):
            raise CheckpointError(f"{path} is a pickle (torch.save) file; taylorat loads only safetensors "
                                  "checkpoints, which cannot run code") from None
        raise CheckpointError(f"{path} is not a taylorat checkpoint (not a valid safetensors file: {e})") from None
    meta_raw = (header.get("__metadata__") or {}).get("taylorat")
    if meta_raw is None:
        raise CheckpointError(f"{path} is a safetensors file without taylorat metadata; "
                              "it was not written by taylorat")
    try:
        meta = parse_json(meta_raw, MAX_META_CHARS, f"{path}'s taylorat metadata")
    except CheckpointError:
        raise
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a taylorat checkpoint (unreadable metadata)")
    if meta.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} was written by a newer taylorat (checkpoint version {meta['version']}); upgrade")
    verify(path, raw, header_len, meta)
    return {k: v.to(device) for k, v in data.items()}, meta


# ------------------------------------------------------------------ metadata, validated before use
MAX_HEADER_CHARS = 100_000_000  # safetensors' own limit on its header
MAX_META_CHARS = 16_000_000  # the JSON state: a long run's history is well under 1 MB
MAX_DEPTH = 32  # nesting of the JSON state (taylorat writes 5 levels)
_JSON_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')  # a string, or a bracket


def parse_json(text: str | bytes, max_chars: int, what: str) -> Any:
    """``json.loads(text)`` once its size and nesting are known to be bounded (a one-line CheckpointError
    otherwise), so a crafted file can neither exhaust memory nor the parser's recursion."""
    data = text.encode() if isinstance(text, str) else bytes(text)
    if len(data) > max_chars:
        raise CheckpointError(f"{what} is {len(data):,} bytes, more than {max_chars:,}; the file is not a taylorat "
                              "checkpoint or was altered")
    depth = deepest = 0
    for m in _JSON_TOKEN.finditer(data):
        token = m.group()
        if token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                raise CheckpointError(f"{what} is nested more than {MAX_DEPTH} levels deep; the file is not a "
                                      "taylorat checkpoint or was altered")
        elif token in (b"]", b"}"):
            depth -= 1
    return json.loads(data)


def _ints(value: Any) -> list[int]:
    """Every integer (not bool) in a JSON value."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, dict):
        return [i for v in value.values() for i in _ints(v)]
    if isinstance(value, list):
        return [i for v in value for i in _ints(v)]
    return []


class _SkipInit(TorchFunctionMode):
    """Weight initialisation as a no-op: on meta tensors it only costs time (and imports the compiler)."""

    SKIP = frozenset(getattr(torch.Tensor, n) for n in ("normal_", "uniform_", "fill_", "zero_", "erfinv_", "clamp_",
                                                         "mul_", "add_", "random_", "bernoulli_", "copy_"))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.SKIP and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))


def build_model(spec: Any, tensors: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """The model a checkpoint's spec names, built only once it is known to fit the tensors in the same file.

    Every integer of the spec (classes, channels, sizes, a template's depth) is bounded by what the tensors
    imply (their largest dimension or their count); the model is then built on the ``meta`` device (no
    memory) and every tensor's shape compared, so a spec that claims 10**10 classes, another architecture
    or an option the architecture does not take is a one-line CheckpointError before anything is allocated.
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise CheckpointError(f"{source} holds no model spec; it is not a model checkpoint")
    try:
        models.check_name(spec["name"])
    except InputError as e:
        raise CheckpointError(f"{source}: {e}; the file was altered or needs a plug-in (TAYLORAT_PLUGINS)") from None
    state = {k[len(MODEL_PREFIX):]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
    bound = max([len(state), *(d for v in state.values() for d in v.shape)], default=0)
    name_ints = [int(v) for v in re.findall(r"\d+", spec["name"])]  # a template's fields (wrn_<depth>_<width>)
    too_big = [i for i in _ints(spec) + name_ints if abs(i) > bound]
    if too_big:
        raise CheckpointError(f"{source}: its model spec holds {too_big[0]}, more than its tensors imply (at most "
                              f"{bound}); the file was altered or belongs to another model")
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    try:
        with torch.device("meta"), _SkipInit():
            probe = models.create(spec["name"], **kwargs)
    except (TypeError, ValueError) as e:  # an unknown model, an option it does not take, a bad value
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{source}: its model spec does not build ({first[:200]}); the file was altered "
                              "or needs a plug-in (TAYLORAT_PLUGINS)") from None
    detail = _misfit({k: tuple(v.shape) for k, v in probe.state_dict().items()},
                     {k: tuple(v.shape) for k, v in state.items()})
    if detail:
        raise CheckpointError(f"{source} does not fit this model ({detail}); its model spec ({spec['name']}) was "
                              "altered or it was written for another architecture")
    del probe
    return models.create(spec["name"], **kwargs)
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


def _misfit(own: Mapping[str, tuple[int, ...]], state: Mapping[str, tuple[int, ...]]) -> str:
    """What keeps ``state`` (name -> shape) from loading into a model with ``own``; empty when it fits."""
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    bad = sorted(k for k in set(own) & set(state) if own[k] != state[k])
    return "; ".join(d for d in (f"missing {missing[:3]}" if missing else "",
                                 f"unexpected {extra[:3]}" if extra else "",
                                 f"shape mismatch at {bad[:3]}: {state[bad[0]]} in the file, {own[bad[0]]} here"
                                 if bad else "") if d)


def load_state_strict(model: nn.Module, tensors: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load the ``model.*`` tensors into ``model``; every key and shape must match."""
    state = {k[len(MODEL_PREFIX):]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
    detail = _misfit({k: tuple(v.shape) for k, v in model.state_dict().items()},
                     {k: tuple(v.shape) for k, v in state.items()})
    if detail:
        raise CheckpointError(f"{source} does not fit this model ({detail}); it was written for another architecture")
    model.load_state_dict(state, strict=True)


def save_model(path: str | os.PathLike, model: nn.Module, meta: dict[str, Any] | None = None) -> None:
    """Save weights (and buffers) with the model spec, so ``load_model`` can rebuild it."""
    save(path, model_tensors(model), {"kind": "model", "model": model.spec, **(meta or {})})


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model named in the checkpoint and load its weights strictly. Returns (model, meta)."""
    tensors, meta = load(path, device)
    model = build_model(meta.get("model"), tensors, str(path)).to(device)
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
    if is_pickle(raw):
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
