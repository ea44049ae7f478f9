"""A typed, read-only view of a checkpoint's JSON state (``checkpoint.CheckpointMeta``).

What taylorat's trainer writes beside the tensors — the model spec, the run's config (dataset, its
folder and options, the evaluation settings), the method and minimizer, the epoch, the history and
the best check — read through properties, each optional: old and imported files lack some sections.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

__all__ = ["CheckpointMeta", "EvalSettings"]


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
    def minimizer(self) -> dict[str, Any]:
        """How the run took its gradients: ``{"name": "sam", "rho": 0.05, ...}`` (empty before minimizers)."""
        return self._section("minimizer")

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
