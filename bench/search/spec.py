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
from ..models import get_variant, plugins
from ..specfile import SpecError, Training, build, check_table
from ..verdicts import DEFAULT_MARGIN

PRUNERS = ("median", "hyperband", "none")
METRICS = {"val_acc": "maximize", "val_loss": "minimize"}
TRAINING_SPACE = ("lr", "weight_decay")  # training settings a study may search; the rest are the variant's knobs
GENERIC_KNOBS = ("width", "depth", "dropout")
SPLIT_KEYS = ("split_seed", "val_fold", "val_fraction", "val_from_test")  # which images are val: one choice for every config


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
class ConfirmTable:
    """[confirm]: after the search, its best configs and a baseline trained again over fresh seeds, on
    a fresh split (val images the trials were not selected on)."""

    top: int = 3  # distinct configs to re-run
    seeds: int = 3  # fresh seeds, never the trials' own
    baseline: dict | None = None  # the config to beat: { variant = "net", lr = ..., knobs = {...} }
    margin: float | None = None  # the smallest difference of val accuracy that matters


@dataclasses.dataclass(frozen=True)
class BaselineTable(Training):
    variant: str | None = None
    label: str | None = None


@dataclasses.dataclass(frozen=True)
class File:
    study: dict | None = None
    training: dict | None = None
    space: dict | None = None
    pruner: dict | None = None
    confirm: dict | None = None


@dataclasses.dataclass(frozen=True)
class Confirm:
    top: int
    seeds: int
    baseline_label: str
    baseline_variant: str
    baseline_settings: Mapping[str, Any]  # training settings (and knobs) over the study's own [training]
    margin: float


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
    confirm: Confirm | None = None  # None: the file has no [confirm] table

    @property
    def direction(self) -> str:
        return METRICS[self.metric]

    @property
    def split_seed(self) -> int:
        """The hold-out the trials are selected on: which train images are val."""
        return int(self.training.get("split_seed", TrainConfig.split_seed))

    @property
    def val_fold(self) -> int:
        """Which block of the split seed's order the trials hold out as val."""
        return int(self.training.get("val_fold", TrainConfig.val_fold))

    @property
    def confirmation_val_fold(self) -> int:
        """The confirmation's hold-out: the next block of the same seeded order, disjoint from the trials'
        val, so that no config is confirmed on an image it was selected on (derived, so every machine and
        every re-run agrees)."""
        return self.val_fold + 1

    def config(self, params: Mapping[str, Any]) -> TrainConfig:
        """The trial's resolved config: fixed training settings plus the sampled ``params``."""
        settings = dict(self.training)
        knobs = dict(settings.pop("knobs", {}))
        for name, value in params.items():
            if name in ("lr", "weight_decay"):
                settings[name] = value
            else:
                knobs[name] = value
        # evaluate_test=False: trials are selected on val; test is touched once, after the search.
        config = TrainConfig(
            variant=self.variant, dataset=self.dataset, epochs=self.epochs, seed=self.seed, knobs=knobs,
            evaluate_test=False, **settings
        )
        return config.resolve()

    def baseline_config(self) -> TrainConfig:
        """The confirmation's baseline: its variant at its own training defaults, under the study's
        fixed settings (data, batch size, epochs) and whatever [confirm] baseline sets."""
        assert self.confirm is not None
        settings = {k: v for k, v in self.training.items() if k not in ("lr", "weight_decay", "momentum", "knobs")}
        settings.update(self.confirm.baseline_settings)
        knobs = settings.pop("knobs", {})
        return TrainConfig(variant=self.confirm.baseline_variant, dataset=self.dataset, epochs=self.epochs,
                           seed=self.seed, knobs=knobs, evaluate_test=False, **settings).resolve()


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
    head = dataclasses.replace(head, variant=plugins.canonical(head.variant, path.parent))
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
    if training.get("val_from_test"):
        raise SearchError(f"{where.line(['training', 'val_from_test'])}: val_from_test = true would make the search "
                          "select on the test split; a study's val is a hold-out of train (val_fraction)")
    space = _space(doc.get("space", {}), variant, where, path)
    spec = StudySpec(
        name=head.name, description=head.description, dataset=head.dataset, variant=head.variant, epochs=head.epochs,
        n_trials=head.n_trials, metric=head.metric, sampler_seed=head.sampler_seed, pruner=head.pruner,
        pruner_options=pruner_options, seed=head.seed, experiment=head.experiment or head.name, training=training,
        space=space, path=path, text=text,
        confirm=_confirm(doc["confirm"], head, where) if "confirm" in doc else None,
    )
    try:  # the space's corners must make valid configs
        spec.config({n: (r.low if not r.integer else int(r.low)) for n, r in space.items()})
    except ConfigError as exc:
        raise SearchError(f"{path}: {exc}") from None
    if spec.confirm is not None:
        try:
            spec.baseline_config()
        except ConfigError as exc:
            raise SearchError(f"{where.line(['confirm', 'baseline'])}: the [confirm] baseline: {exc}") from None
    return spec


def _confirm(raw: Any, head: Head, where) -> Confirm:
    table = build(ConfirmTable, raw, where, ["confirm"], "[confirm]")
    for key, low in (("top", 1), ("seeds", 2)):
        if getattr(table, key) < low:
            raise SearchError(f"{where.line(['confirm', key])}: {key} must be >= {low}, got {getattr(table, key)}")
    if table.margin is not None and not 0 < table.margin < 1:
        raise SearchError(f"{where.line(['confirm', 'margin'])}: margin is a fraction of accuracy in (0, 1), got {table.margin!r}")
    baseline = check_table(table.baseline or {}, BaselineTable, where, ["confirm", "baseline"], "[confirm] baseline")
    for key in SPLIT_KEYS:
        if key in baseline:
            raise SearchError(f"{where.line(['confirm', 'baseline', key])}: {key} cannot be set for the baseline: "
                              "it is judged on the candidates' val images (the confirmation's split), or the "
                              "comparison would be of two data sets")
    variant = plugins.canonical(baseline.pop("variant", head.variant), where.path.parent)
    try:
        get_variant(variant)
    except ValueError as exc:
        raise SearchError(f"{where.line(['confirm', 'baseline'])}: {exc}") from None
    label = baseline.pop("label", f"{plugins.short_name(variant)} (baseline)")
    return Confirm(table.top, table.seeds, label, variant, baseline,
                   DEFAULT_MARGIN if table.margin is None else float(table.margin))


def _space(raw_space: Any, variant, where, path: Path) -> dict[str, Range]:
    """The search space: lr and weight_decay, and any numeric knob of the variant (your own variant's too)."""
    if not raw_space:
        raise SearchError(f"{path}:1: a study needs a [space] table (lr, width, dropout, depth)")
    numeric = {name: knob for name, knob in variant.knobs.items() if knob.kind in (int, float) and knob.choices is None}
    space: dict[str, Range] = {}
    for name, bounds in raw_space.items():
        if name not in TRAINING_SPACE and name not in numeric:
            if name in variant.knobs or name in GENERIC_KNOBS:
                raise SearchError(
                    f"{where.line(['space', name])}: variant {variant.name!r} has no numeric knob {name!r}; "
                    f"accepted knobs: {', '.join(numeric) or 'none'}"
                )
            raise SearchError(f"{where.line(['space', name])}: unknown parameter {name!r}; accepted: "
                              f"{', '.join([*TRAINING_SPACE, *numeric])}")
        check_table(bounds, Bounds, where, ["space", name], f"[space.{name}]")
        if "low" not in bounds or "high" not in bounds:
            raise SearchError(f"{where.line(['space', name])}: {name} needs low and high")
        found = build(Bounds, bounds, where, ["space", name], f"[space.{name}]")
        low, high, log = float(found.low), float(found.high), found.log
        integer = name in numeric and numeric[name].kind is int
        if name in numeric:
            try:  # both ends must be values the variant accepts
                numeric[name].check(name, int(low) if integer else low)
                numeric[name].check(name, int(high) if integer else min(high, math.nextafter(high, -math.inf)))
            except ValueError as exc:
                raise SearchError(f"{where.line(['space', name])}: {exc}") from None
        if not low < high or (log and low <= 0) or (name == "lr" and low <= 0):
            raise SearchError(f"{where.line(['space', name])}: need 0 < low < high for {name} (log needs low > 0)")
        space[name] = Range(low, high, log, integer)
    return space


def with_confirmation(spec: StudySpec) -> StudySpec:
    """The spec with a [confirm] table: its own, or the defaults (top 3 configs, 3 fresh seeds, the
    study's variant at its own training defaults as the baseline, a 1-point margin)."""
    if spec.confirm is not None:
        return spec
    confirm = Confirm(ConfirmTable.top, ConfirmTable.seeds, f"{plugins.short_name(spec.variant)} (baseline)",
                      spec.variant, {}, DEFAULT_MARGIN)
    return dataclasses.replace(spec, confirm=confirm)
