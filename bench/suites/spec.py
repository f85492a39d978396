"""A suite file (``studies/*.toml``): a data set, rows of variants with overrides, seeds, profiles.

The file is checked completely before any training: an unknown key, variant, knob or
profile, or a value of the wrong type, is reported with its file and line and what is
accepted. ``Suite.plan`` resolves every (row, seed) of a profile into a ``TrainConfig``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import specfile
from ..checkpoint import NOT_IDENTITY
from ..config import ConfigError, TrainConfig
from ..data import DataError, check_dataset_name
from ..models import get_variant, plugins
from ..specfile import Locator, SpecError, Training, check_table
from ..verdicts import DEFAULT_MARGIN, PROTOCOLS
from ..verdicts.sources import declared

TAG_ROWS = "bench.rows"  # set when a suite ran only some of its rows (--rows)
TAG_MARGIN = "bench.margin"  # the margin the suite was judged with
TAG_LOOKS = "bench.looks"  # how many looks --seeds auto may take (1: fixed seeds); alpha is split over them
TAG_SETTINGS = "bench.settings_digest"  # what the parent's runs were trained under (rows and settings, not seeds)
# What a verdict compares: one number per run, each a measure of its val accuracy (logged by the trainer).
MEASURES = {
    "val_acc": "val accuracy after the last epoch",
    "val_acc_last_k": "mean val accuracy over the last k epochs",
    "val_acc_ema": "val accuracy of the moving average of the weights",
}
DEFAULT_MEASURE = "val_acc_last_k"
# paired: seed by seed against the baseline (every row shares a seed's batch order, so its luck cancels);
# unpaired: Welch's test of the two groups of seeds.
DESIGNS = ("paired", "unpaired")
DEFAULT_DESIGN = "paired"
# Profile keys that describe the profile or its verdicts, not a run's training.
PROFILE_ONLY = ("description", "seeds", "measure", "design")


class SuiteError(SpecError):
    """A suite file or setting that cannot run; the message starts with ``file:line:`` where it can."""


# ---------------------------------------------------------------------------- the schema


@dataclasses.dataclass(frozen=True)
class Head:
    name: str
    dataset: str
    description: str = ""
    seeds: list = dataclasses.field(default_factory=lambda: [0])
    experiment: str | None = None
    baseline: str | None = None  # the row label verdicts compare against
    margin: float | None = None  # the smallest difference of val accuracy that matters (default 0.01)
    measure: str | None = None  # which measure of val accuracy the verdicts use (MEASURES; default DEFAULT_MEASURE)
    design: str | None = None  # paired (seed by seed against the baseline) or unpaired (Welch); default paired
    target: float | None = None  # a val accuracy (of the measure) whose time to reach each row is judged too
    target_margin: float | None = None  # epochs within which two times to the target are equivalent (default 1)


@dataclasses.dataclass(frozen=True)
class MeasuredUnder:
    """What a published figure was measured under; a figure is judged only when our runs match."""

    epochs: int | None = None
    train_images: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    batch_size: int | None = None
    protocol: str | None = None  # "eval" (model.eval()) or "train-mode" (never called: dropout on, batch statistics)


@dataclasses.dataclass(frozen=True)
class Source(MeasuredUnder):
    """Where published numbers come from, and what they were measured under."""

    title: str | None = None
    url: str | None = None


@dataclasses.dataclass(frozen=True)
class Reference(MeasuredUnder):
    """A row's published numbers from one source: reference.<source> = { val_acc = .., curve = {epoch = acc} };
    any setting given here overrides the source's for this row."""

    train_acc: float | None = None
    val_acc: float | None = None
    test_acc: float | None = None
    curve: dict | None = None


@dataclasses.dataclass(frozen=True)
class Profile(Training):
    description: str | None = None
    seeds: list | None = None
    # What a verdict compares, where a profile's runs call for another measure than the suite's: a
    # 100-epoch run smooths best with the weights' moving average, a 4-epoch one has little to average.
    measure: str | None = None
    design: str | None = None


@dataclasses.dataclass(frozen=True)
class RowTable(Training):
    variant: str | None = None
    label: str | None = None
    note: str | None = None
    profiles: dict | None = None
    reference: dict | None = None


@dataclasses.dataclass(frozen=True)
class File:
    suite: dict | None = None
    sources: dict | None = None
    defaults: dict | None = None
    profiles: dict | None = None
    variants: list | None = None


# ---------------------------------------------------------------------------- the suite


@dataclasses.dataclass(frozen=True)
class Row:
    label: str  # unique within the suite; what reports and the MLflow UI show
    variant: str
    settings: Mapping[str, Any]  # row-level training settings
    profiles: Mapping[str, Mapping[str, Any]]  # per-profile overrides of this row
    reference: Mapping[str, Mapping[str, Any]]  # published numbers per source name, if any
    note: str = ""  # shown in reports, e.g. why a costly row may be left out


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    description: str
    dataset: str
    seeds: tuple[int, ...]
    experiment: str
    defaults: Mapping[str, Any]
    profiles: Mapping[str, Mapping[str, Any]]
    rows: tuple[Row, ...]
    path: Path
    text: str  # the file as written, logged with the parent run
    baseline: str | None = None
    sources: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)  # name -> Source's keys
    margin: float = DEFAULT_MARGIN
    measure: str = DEFAULT_MEASURE
    design: str = DEFAULT_DESIGN
    target: float | None = None
    target_margin: float = 1.0
    declared: Mapping[str, str] = dataclasses.field(default_factory=dict)  # [suite] measure and design as written

    def at_profile(self, profile: str) -> "Suite":
        """This suite as ``profile`` judges it: the profile's measure and design where it declares them,
        else the [suite] table's."""
        if profile not in self.profiles:
            raise SuiteError(f"{self.path}: unknown profile {profile!r}; accepted: {', '.join(self.profiles)}")
        declared = self.declared or {"measure": self.measure, "design": self.design}
        return dataclasses.replace(self, declared=declared, **{key: self.profiles[profile].get(key, value)
                                                               for key, value in declared.items()})

    def measures_in_train_mode(self, row: Row) -> bool:
        """Whether a source of ``row`` measured with the model in train mode, so its runs must too."""
        return any(declared(numbers, self.sources[name]).get("protocol") == "train-mode"
                   for name, numbers in row.reference.items())

    def plan(
        self,
        profile: str,
        seeds: Sequence[int] | None = None,
        overrides: Mapping[str, Any] | None = None,
        rows: Sequence[str] | None = None,
        seeds_by_row: Mapping[str, Sequence[int]] | None = None,
    ) -> list[tuple[Row, TrainConfig]]:
        """Every (row, resolved config) pair of ``profile`` x seeds, checked, in run order.

        Layers, later ones winning: defaults < profile < row < row's profile < ``overrides``.
        ``rows``: only the rows with these labels (all by default). ``seeds_by_row``: each row's
        own seeds (a round of ``--seeds auto``), instead of the same ``seeds`` for all."""
        if profile not in self.profiles:
            raise SuiteError(f"{self.path}: unknown profile {profile!r}; accepted: {', '.join(self.profiles)}")
        labels = [r.label for r in self.rows]
        unknown = [label for label in rows or () if label not in labels]
        if unknown:
            raise SuiteError(f"{self.path}: unknown row {unknown[0]!r}; accepted: {', '.join(labels)}")
        chosen = self.profiles[profile]
        seeds = tuple(seeds) if seeds is not None else tuple(chosen.get("seeds", self.seeds))
        planned = []
        for row in self.rows:
            if rows and row.label not in rows:
                continue
            settings: dict[str, Any] = {}
            knobs: dict[str, Any] = {}
            for layer in (self.defaults, chosen, row.settings, row.profiles.get(profile, {}), overrides or {}):
                layer = dict(layer)
                knobs.update(layer.pop("knobs", {}))
                settings.update({k: v for k, v in layer.items() if k not in PROFILE_ONLY})
            if self.measures_in_train_mode(row):
                settings["train_mode_eval"] = True
            for seed in (seeds_by_row.get(row.label, ()) if seeds_by_row is not None else seeds):
                config = TrainConfig(variant=row.variant, dataset=self.dataset, knobs=knobs, seed=seed, **settings)
                try:
                    planned.append((row, config.resolve()))
                except ConfigError as exc:
                    raise SuiteError(f"{self.path}: row {row.label!r}, profile {profile!r}: {exc}") from None
        return planned


def load_suite(path: str | Path) -> Suite:
    path, text = specfile.read(path, "suite")
    return parse_suite(text, path)


def parse_suite(text: str, path: str | Path, *, check_variants: bool = True) -> Suite:
    """A suite from its text; ``path`` names it in errors and anchors relative variant files.

    ``check_variants=False`` reads a copy logged with a parent run (for a report): its rows,
    baseline and sources, without loading the variants' code, which may not be on this machine.
    """
    path = Path(path)
    try:
        return _parse(text, path, check_variants)
    except SpecError as exc:
        raise SuiteError(str(exc)) from None


def parse_logged(text: str, name: str, profile: str) -> Suite | None:
    """A suite file as logged with a parent run, as its ``profile`` judged it (as the file declares it
    when it has no such profile); None when absent, or written for a bench this one cannot read."""
    if not text:
        return None
    try:
        suite = parse_suite(text, name, check_variants=False)
    except SuiteError:
        return None
    return suite.at_profile(profile) if profile in suite.profiles else suite


def _parse(text: str, path: Path, check_variants: bool) -> Suite:
    doc, where = specfile.parse_toml(text, path)
    check_table(doc, File, where, [], "the top level")
    if "suite" not in doc:
        raise SuiteError(f"{path}:1: missing [suite] table (name, dataset)")
    specfile.require(check_table(doc["suite"], Head, where, ["suite"], "[suite]"), ("name", "dataset"), where,
                     ["suite"], "[suite]")
    head = Head(**doc["suite"])
    try:
        check_dataset_name(head.dataset)
    except DataError as exc:
        raise SuiteError(f"{where.line(['suite', 'dataset'])}: {exc}") from None
    seeds = specfile.seeds(head.seeds, where, ["suite", "seeds"])
    sources = _sources(doc.get("sources", {}), where)
    defaults = check_table(doc.get("defaults", {}), Training, where, ["defaults"], "[defaults]")
    profiles = doc.get("profiles", {})
    if not profiles:
        raise SuiteError(f"{path}:1: a suite needs at least one [profiles.<name>] table (e.g. quick, full)")
    for name, profile in profiles.items():
        check_table(profile, Profile, where, ["profiles", name], f"[profiles.{name}]")
        if "seeds" in profile:
            specfile.seeds(profile["seeds"], where, ["profiles", name, "seeds"])
    raw_rows = doc.get("variants", [])
    if not raw_rows:
        raise SuiteError(f"{path}:1: a suite needs at least one [[variants]] entry")
    rows: list[Row] = []
    for i, raw in enumerate(raw_rows):
        row = _row(raw, i, profiles, sources, where, path.parent if check_variants else None)
        if any(r.label == row.label for r in rows):
            raise SuiteError(f"{where.line(['variants', i, 'variant'])}: duplicate row label {row.label!r}; give one a 'label'")
        rows.append(row)
    if head.baseline is not None and head.baseline not in [r.label for r in rows]:
        raise SuiteError(
            f"{where.line(['suite', 'baseline'])}: baseline {head.baseline!r} is not a row; accepted: "
            f"{', '.join(r.label for r in rows)}"
        )
    if head.margin is not None and not 0 < head.margin < 1:
        raise SuiteError(f"{where.line(['suite', 'margin'])}: margin is a fraction of accuracy in (0, 1), e.g. 0.01 "
                         f"for 1 point; got {head.margin!r}")
    if head.target is not None and not 0 < head.target < 1:
        raise SuiteError(f"{where.line(['suite', 'target'])}: target is a val accuracy in (0, 1), e.g. 0.85; "
                         f"got {head.target!r}")
    if head.target_margin is not None and not head.target_margin > 0:
        raise SuiteError(f"{where.line(['suite', 'target_margin'])}: target_margin is a number of epochs > 0; "
                         f"got {head.target_margin!r}")
    for key, accepted in (("measure", MEASURES), ("design", DESIGNS)):
        declared_at = [(["suite", key], getattr(head, key))]
        declared_at += [(["profiles", name, key], profile[key]) for name, profile in profiles.items() if key in profile]
        for key_path, value in declared_at:
            if value is not None and value not in accepted:
                raise SuiteError(f"{where.line(key_path)}: {key} {value!r} is not accepted; accepted: "
                                 f"{', '.join(accepted)}")
    suite = Suite(
        name=head.name, description=head.description, dataset=head.dataset, seeds=seeds,
        experiment=head.experiment or head.name, defaults=defaults, profiles=profiles, rows=tuple(rows), path=path,
        text=text, baseline=head.baseline, sources=sources,
        margin=DEFAULT_MARGIN if head.margin is None else float(head.margin),
        measure=head.measure or DEFAULT_MEASURE, design=head.design or DEFAULT_DESIGN, target=head.target,
        target_margin=1.0 if head.target_margin is None else float(head.target_margin),
    )
    if check_variants:
        for profile in profiles:  # every combination must resolve, so nothing fails mid-suite
            plan = suite.plan(profile, seeds=seeds[:1])
            if suite.at_profile(profile).measure == "val_acc_ema" and any(config.ema_decay == 0 for _, config in plan):
                key_path = ["profiles", profile, "measure"] if "measure" in profiles[profile] else ["suite", "measure"]
                raise SuiteError(f"{where.line(key_path)}: measure 'val_acc_ema' needs the moving average, "
                                 f"but profile {profile!r} sets ema_decay = 0; accepted: ema_decay in (0, 1)")
    return suite


def _sources(sources: Any, where: Locator) -> dict[str, dict[str, Any]]:
    check_table(sources, {name: dict for name in sources} if isinstance(sources, dict) else {}, where, ["sources"],
                "[sources]")
    for name, source in sources.items():
        check_table(source, Source, where, ["sources", name], f"[sources.{name}]")
        if "title" not in source:
            raise SuiteError(f"{where.line(['sources', name])}: [sources.{name}] needs a 'title' saying where the numbers come from")
        _check_measured_under(source, where, ["sources", name], f"[sources.{name}]")
    return sources


def _check_measured_under(table: Mapping[str, Any], where: Locator, key_path: list, what: str) -> None:
    protocol = table.get("protocol")
    if protocol is not None and protocol not in PROTOCOLS:
        raise SuiteError(f"{where.line([*key_path, 'protocol'])}: protocol {protocol!r} in {what}; accepted: "
                         f"{', '.join(PROTOCOLS)}")
    for key in ("epochs", "train_images", "batch_size"):
        if key in table and table[key] < 1:
            raise SuiteError(f"{where.line([*key_path, key])}: {key} must be >= 1, got {table[key]}")


def _row(raw: Any, i: int, profiles: Mapping[str, Any], sources: Mapping[str, Any], where: Locator,
         folder: Path | None) -> Row:
    """One [[variants]] row; ``folder``: where a relative variant file lives (None: do not load variants)."""
    key_path = ["variants", i]
    check_table(raw, RowTable, where, key_path, f"[[variants]] #{i + 1}")
    if "variant" not in raw:
        raise SuiteError(f"{where.line(key_path)}: [[variants]] #{i + 1} needs 'variant'")
    variant_name = plugins.canonical(raw["variant"], folder)
    label = raw.get("label", plugins.short_name(raw["variant"]))
    if folder is None:  # a logged copy: its variants are not loaded
        return Row(label, variant_name, {k: v for k, v in raw.items() if k in specfile.TRAINING_KEYS},
                   raw.get("profiles", {}), raw.get("reference", {}), raw.get("note", ""))
    try:
        variant = get_variant(variant_name)
    except ValueError as exc:
        raise SuiteError(f"{where.line([*key_path, 'variant'])}: {exc}") from None
    row_profiles = raw.get("profiles", {})
    for name, overrides in row_profiles.items():
        if name not in profiles:
            raise SuiteError(
                f"{where.line([*key_path, 'profiles', name])}: unknown profile {name!r}; accepted: {', '.join(profiles)}"
            )
        check_table(overrides, Training, where, [*key_path, "profiles", name], f"profile {name!r} of row #{i + 1}")
    reference = raw.get("reference", {})
    check_table(reference, {name: dict for name in sources}, where, [*key_path, "reference"],
                f"reference of row #{i + 1} (sources are declared as [sources.<name>])")
    for source, numbers in reference.items():
        _check_reference(numbers, sources[source], where, [*key_path, "reference", source], f"{source} of row #{i + 1}")
    for layer, layer_path in [(raw, key_path)] + [(o, [*key_path, "profiles", n]) for n, o in row_profiles.items()]:
        unknown = sorted(set(layer.get("knobs", {})) - set(variant.knobs))
        if unknown:
            raise SuiteError(
                f"{where.line([*layer_path, 'knobs', unknown[0]])}: variant {variant.name!r} has no knob "
                f"{unknown[0]!r}; accepted knobs: {', '.join(variant.knobs) or 'none'}"
            )
    settings = {k: v for k, v in raw.items() if k in specfile.TRAINING_KEYS}
    return Row(label, variant_name, settings, row_profiles, reference, raw.get("note", ""))


def _check_reference(numbers: Any, source: Mapping[str, Any], where: Locator, key_path: list, what: str) -> None:
    check_table(numbers, Reference, where, key_path, f"reference {what}")
    _check_measured_under(numbers, where, key_path, f"reference {what}")
    if not any(k in numbers for k in ("train_acc", "val_acc", "test_acc")):
        raise SuiteError(f"{where.line(key_path)}: reference {what} gives no train_acc, val_acc or test_acc")
    for key in ("train_acc", "val_acc", "test_acc"):
        if key in numbers and not 0 <= numbers[key] <= 1:
            raise SuiteError(f"{where.line([*key_path, key])}: {key} is a fraction in [0, 1], got {numbers[key]!r}")
    if "epochs" not in numbers and "epochs" not in source:
        raise SuiteError(f"{where.line(key_path)}: reference {what} needs 'epochs' (here or in its [sources] table)")
    for epoch, value in numbers.get("curve", {}).items():
        if not (epoch.isdigit() and int(epoch) >= 1 and isinstance(value, int | float) and 0 <= value <= 1):
            raise SuiteError(f"{where.line([*key_path, 'curve'])}: curve maps epochs (>= 1) to fractions, got {epoch} = {value!r}")


def settings_of(config: TrainConfig) -> dict[str, Any]:
    """What decides a run's numbers (not device, threads or data root), as plain JSON values."""
    return json.loads(json.dumps({k: v for k, v in config.to_flat_dict().items() if k not in NOT_IDENTITY}, default=str))


def plan_digest(plan: Sequence[tuple[Row, TrainConfig]]) -> str:
    """A digest of the rows, seeds and every setting that changes a number."""
    content = [[row.label, settings_of(config)] for row, config in plan]
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]


def settings_digest(plan: Sequence[tuple[Row, TrainConfig]]) -> str:
    """A digest of the rows and their settings, seeds left out: what stays the same when a resume
    (or a round of ``--seeds auto``) adds seeds."""
    content = sorted({json.dumps([row.label, {k: v for k, v in settings_of(config).items() if k != "seed"}],
                                 sort_keys=True) for row, config in plan})
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()[:12]
