"""A study file (``studies/*_search.toml``): data set, variant, a bounded space, trials, pruner.

Checked completely before any trial: errors name the file, the line and what is accepted.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import specfile
from ..config import ConfigError, TrainConfig
from ..data import DataError, check_dataset_name
from ..models import get_variant
from ..specfile import SpecError, Training, build, check_table

PRUNERS = ("median", "hyperband", "none")
METRICS = {"val_acc": "maximize", "val_loss": "minimize"}
SPACE_KEYS = ("lr", "width", "dropout", "depth", "weight_decay")


class SearchError(SpecError):
    """A study file or setting that cannot work; raised before any trial runs."""


# ---------------------------------------------------------------------------- the schema


@dataclasses.dataclass(frozen=True)
class Head:
    name: str
    dataset: str
    variant: str
    epochs: int
    n_trials: int
    description: str = ""
    metric: str = "val_acc"
    sampler_seed: int = 0
    pruner: str = "median"
    seed: int = 0
    experiment: str | None = None


@dataclasses.dataclass(frozen=True)
class PrunerOptions:
    n_startup_trials: int | None = None
    n_warmup_steps: int | None = None
    min_resource: int | None = None
    reduction_factor: int | None = None


@dataclasses.dataclass(frozen=True)
class Bounds:
    low: float
    high: float
    log: bool = False


@dataclasses.dataclass(frozen=True)
class File:
    study: dict | None = None
    training: dict | None = None
    space: dict | None = None
    pruner: dict | None = None


@dataclasses.dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool
    integer: bool


# ---------------------------------------------------------------------------- the study


@dataclasses.dataclass(frozen=True)
class StudySpec:
    name: str
    description: str
    dataset: str
    variant: str
    epochs: int
    n_trials: int
    metric: str
    sampler_seed: int
    pruner: str
    pruner_options: Mapping[str, int]
    seed: int
    experiment: str
    training: Mapping[str, Any]
    space: Mapping[str, Range]
    path: Path
    text: str

    @property
    def direction(self) -> str:
        return METRICS[self.metric]

    def config(self, params: Mapping[str, Any]) -> TrainConfig:
        """The trial's resolved config: fixed training settings plus the sampled ``params``."""
        settings = dict(self.training)
        knobs = dict(settings.pop("knobs", {}))
        for name, value in params.items():
            if name in ("lr", "weight_decay"):
                settings[name] = value
            else:
                knobs[name] = value
        config = TrainConfig(
            variant=self.variant, dataset=self.dataset, epochs=self.epochs, seed=self.seed, knobs=knobs, **settings
        )
        return config.resolve()


def load_study(path: str | Path) -> StudySpec:
    """Parse and check a study file completely; errors name the file and line."""
    path, text = specfile.read(path, "study")
    try:
        return _parse(text, path)
    except SpecError as exc:
        raise SearchError(str(exc)) from None


def _parse(text: str, path: Path) -> StudySpec:
    doc, where = specfile.parse_toml(text, path)
    check_table(doc, File, where, [], "the top level")
    if "study" not in doc:
        raise SearchError(f"{path}:1: missing [study] table")
    specfile.require(check_table(doc["study"], Head, where, ["study"], "[study]"),
                     ("name", "dataset", "variant", "epochs", "n_trials"), where, ["study"], "[study]")
    head = Head(**doc["study"])
    try:
        check_dataset_name(head.dataset)
        variant = get_variant(head.variant)
    except (DataError, ValueError) as exc:
        raise SearchError(f"{where.line(['study'])}: {exc}") from None
    if head.metric not in METRICS:
        raise SearchError(f"{where.line(['study', 'metric'])}: metric {head.metric!r}; accepted: {', '.join(METRICS)}")
    if head.pruner not in PRUNERS:
        raise SearchError(f"{where.line(['study', 'pruner'])}: pruner {head.pruner!r}; accepted: {', '.join(PRUNERS)}")
    for key in ("epochs", "n_trials"):
        if getattr(head, key) < 1:
            raise SearchError(f"{where.line(['study', key])}: {key} must be >= 1, got {getattr(head, key)}")
    pruner_options = check_table(doc.get("pruner", {}), PrunerOptions, where, ["pruner"], "[pruner]")
    training = check_table(doc.get("training", {}), Training, where, ["training"], "[training]")
    if "epochs" in training:
        raise SearchError(f"{where.line(['training', 'epochs'])}: set epochs per trial in [study], not [training]")
    space = _space(doc.get("space", {}), variant, where, path)
    spec = StudySpec(
        name=head.name, description=head.description, dataset=head.dataset, variant=head.variant, epochs=head.epochs,
        n_trials=head.n_trials, metric=head.metric, sampler_seed=head.sampler_seed, pruner=head.pruner,
        pruner_options=pruner_options, seed=head.seed, experiment=head.experiment or head.name, training=training,
        space=space, path=path, text=text,
    )
    try:  # the space's corners must make valid configs
        spec.config({n: (r.low if not r.integer else int(r.low)) for n, r in space.items()})
    except ConfigError as exc:
        raise SearchError(f"{path}: {exc}") from None
    return spec


def _space(raw_space: Any, variant, where, path: Path) -> dict[str, Range]:
    if not raw_space:
        raise SearchError(f"{path}:1: a study needs a [space] table (lr, width, dropout, depth)")
    space: dict[str, Range] = {}
    for name, bounds in raw_space.items():
        if name not in SPACE_KEYS:
            raise SearchError(f"{where.line(['space', name])}: unknown parameter {name!r}; accepted: {', '.join(SPACE_KEYS)}")
        check_table(bounds, Bounds, where, ["space", name], f"[space.{name}]")
        if "low" not in bounds or "high" not in bounds:
            raise SearchError(f"{where.line(['space', name])}: {name} needs low and high")
        found = build(Bounds, bounds, where, ["space", name], f"[space.{name}]")
        low, high, log = float(found.low), float(found.high), found.log
        integer = name in ("width", "depth")
        if name in ("width", "depth", "dropout"):
            if name not in variant.knobs:
                raise SearchError(
                    f"{where.line(['space', name])}: variant {variant.name!r} has no knob {name!r}; "
                    f"accepted knobs: {', '.join(variant.knobs) or 'none'}"
                )
            knob = variant.knobs[name]
            try:  # both ends must be values the variant accepts
                knob.check(name, int(low) if integer else low)
                knob.check(name, int(high) if integer else min(high, math.nextafter(high, -math.inf)))
            except ValueError as exc:
                raise SearchError(f"{where.line(['space', name])}: {exc}") from None
        if not low < high or (log and low <= 0) or (name == "lr" and low <= 0):
            raise SearchError(f"{where.line(['space', name])}: need 0 < low < high for {name} (log needs low > 0)")
        space[name] = Range(low, high, log, integer)
    return space
