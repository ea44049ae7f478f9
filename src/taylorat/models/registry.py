"""Name -> constructor registry: ``register``, ``create``, ``available``.

Names are plain (``preact_resnet18``) or templates with integer fields
(``wrn_<depth>_<width>``); template fields are parsed from the requested
name and passed to the constructor as keyword arguments.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..common import InputError, Registry
from .base import Classifier

_FIELD = re.compile(r"<([a-z_][a-z0-9_]*)>")
_VALID_NAME = re.compile(r"[a-z0-9_]*(<[a-z_][a-z0-9_]*>[a-z0-9_]*)*")
_BASE_ARGS = ("num_classes", "in_channels", "image_size")

F = TypeVar("F", bound=Callable[..., Classifier])


@dataclass(frozen=True)
class _Entry:
    name: str
    builder: Callable[..., Classifier]
    pattern: re.Pattern[str]
    fields: tuple[str, ...]
    example: str | None
    small: str | None
    named: tuple[str, ...] = ()


def _listed(name: str, meta: dict[str, Any]) -> str:
    return f"{name} (e.g. {meta['example']})" if meta.get("example") else name


MODELS: Registry[_Entry] = Registry("model", sort=True, describe=_listed)


def register(name: str, *, example: str | None = None, small: str | None = None,
             named: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Decorator registering a Classifier constructor under ``name``.

    ``name`` may contain ``<field>`` placeholders that match positive integers,
    e.g. ``register("wrn_<depth>_<width>", example="wrn_34_10", small="wrn_16_2")``: ``example``
    is shown in messages, ``small`` is the instance the test suite checks (default: ``example``),
    ``named`` are further well-known instances (``wrn_28_10``, ``wrn_70_16``) listed by :func:`named`.
    Setting ``model.name`` is the registry's job: ``create`` names every model it builds.
    """
    if not _VALID_NAME.fullmatch(name) or not name:
        raise InputError(f"invalid model name {name!r}; use lowercase letters, digits, _ and <field>")
    fields = tuple(_FIELD.findall(name))
    regex = "".join(
        f"(?P<{part}>[1-9][0-9]*)" if i % 2 else re.escape(part)
        for i, part in enumerate(_FIELD.split(name))
    )
    if fields and not (small or example):
        raise InputError(f"model template {name!r} needs example= (a concrete name such as {name!r} filled in)")
    pattern = re.compile(regex)
    bad = [n for n in named if not pattern.fullmatch(n)]
    if bad:
        raise InputError(f"named example(s) {', '.join(bad)} do not fill the template {name!r}")
    add = MODELS.register(name, example=example, small=small or example, named=tuple(named))

    def decorator(builder: F) -> F:
        add(_Entry(name, builder, pattern, fields, example, small or example, tuple(named)))
        return builder

    return decorator


def unregister(name: str) -> None:
    """Remove a registered model (tests and plug-ins that replace one)."""
    MODELS.unregister(name)


def examples(small: bool = True) -> list[str]:
    """One concrete, creatable name per registered model (templates filled with their small example)."""
    out = []
    for e in (MODELS.get(n) for n in available()):
        out.append(e.name if not e.fields else (e.small if small else e.example) or e.example)
    return out


def named() -> list[str]:
    """Every concrete name the registry lists: each model's example and its further named instances."""
    out = []
    for e in (MODELS.get(n) for n in available()):
        out += [e.name] if not e.fields else [e.example, *e.named]
    return out


def accepts(name: str, option: str) -> bool:
    """Whether the model ``name`` takes the constructor keyword ``option`` (e.g. ``activation``)."""
    if name.startswith("timm:"):
        return False
    entry, _ = _lookup(name)
    params = inspect.signature(entry.builder).parameters
    return option in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def available() -> list[str]:
    """Registered model names (templates like ``wrn_<depth>_<width>`` included), sorted."""
    return MODELS.names()


def _lookup(name: str) -> tuple[_Entry, dict[str, int]]:
    if name in MODELS and not MODELS.get(name).fields:
        return MODELS.get(name), {}
    for entry in (MODELS.get(n) for n in MODELS.names()):
        if entry.fields:
            m = entry.pattern.fullmatch(name)
            if m is not None:
                return entry, {k: int(v) for k, v in m.groupdict().items()}
    raise MODELS.error(name)


def check_name(name: str) -> None:
    """Raise the one-line "unknown model" error unless ``name`` is registered (or fills a template,
    or is ``timm:<architecture>`` with timm installed)."""
    if isinstance(name, str) and name.startswith("timm:"):
        from .timm_models import check_timm_name  # noqa: PLC0415 - imports timm, an optional extra

        check_timm_name(name)
        return
    _lookup(name)


def _check_kwargs(entry: _Entry, name: str, kwargs: dict[str, Any]) -> None:
    clash = sorted(set(kwargs) & set(entry.fields))
    if clash:
        raise TypeError(f"model {name!r}: {', '.join(clash)} is set by the name, not as a keyword")
    params = inspect.signature(entry.builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [
        p for p, v in params.items()
        if p not in entry.fields and p not in _BASE_ARGS
        and v.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"model {name!r} got unexpected keyword argument(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(accepted) or 'none'}"
        )


def create(
    name: str, num_classes: int = 10, in_channels: int = 3, image_size: int = 32, **kwargs: Any
) -> Classifier:
    """Build the registered model ``name``; extra ``kwargs`` go to its constructor."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    if name.startswith("timm:"):
        from .timm_models import TimmClassifier  # noqa: PLC0415 - imports timm, an optional extra

        model: Classifier = TimmClassifier(name[len("timm:"):], num_classes=num_classes, in_channels=in_channels,
                                           image_size=image_size, **kwargs)
        model.name = name
        return model
    entry, fields = _lookup(name)
    _check_kwargs(entry, name, kwargs)
    model = entry.builder(
        num_classes=num_classes, in_channels=in_channels, image_size=image_size, **fields, **kwargs
    )
    if not isinstance(model, Classifier):
        raise TypeError(f"constructor for {entry.name!r} returned {type(model).__name__}, not a Classifier")
    model.name = name
    return model
