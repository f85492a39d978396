"""Declared suites: a data set, rows of variants (with overrides), seeds and profiles.

A suite file (``studies/*.toml``) is checked completely before any training; an
unknown key, variant, knob or profile is reported with its file and line. Running a
suite makes one MLflow parent run (holding the suite file and a mean ± std summary)
with one child run per row x seed. ``resume`` re-opens a parent and skips the row/seed
pairs that already FINISHED under it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from . import checkpoint as ckpt
from . import tracking
from .config import ConfigError, TrainConfig
from .data import DataSplits
from .models import get_variant

# Training settings a suite may set at any level (defaults, profile, row, row profile).
TRAINING_KEYS = {
    "epochs": int,
    "batch_size": int,
    "eval_batch_size": int,
    "optimizer": str,
    "lr": float,
    "momentum": float,
    "weight_decay": float,
    "l2": float,
    "val_fraction": float,
    "val_from_test": bool,
    "max_train_samples": int,
    "split_seed": int,
    "amp": str,
    "knobs": dict,
}
SUITE_KEYS = {"name": str, "description": str, "dataset": str, "seeds": list, "experiment": str, "baseline": str}
PROFILE_KEYS = {**TRAINING_KEYS, "description": str, "seeds": list}
ROW_KEYS = {**TRAINING_KEYS, "variant": str, "label": str, "profiles": dict, "reference": dict, "note": str}
# A row's published numbers, per source: reference.<source> = { val_acc = .., epochs = .., curve = {epoch = acc} }
REFERENCE_KEYS = {"train_acc": float, "val_acc": float, "test_acc": float, "epochs": int, "curve": dict}
SOURCE_KEYS = {"title": str, "url": str, "epochs": int}
TOP_KEYS = {"suite": dict, "sources": dict, "defaults": dict, "profiles": dict, "variants": list}


TAG_ROWS = "bench.rows"  # set when a suite ran only some of its rows (--rows)


class SuiteError(ValueError):
    """A suite file that cannot run; the message starts with ``file:line:``."""


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
    baseline: str | None = None  # the row label verdicts compare against
    sources: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)  # name -> title, url, epochs

    def plan(
        self,
        profile: str,
        seeds: Sequence[int] | None = None,
        overrides: Mapping[str, Any] | None = None,
        rows: Sequence[str] | None = None,
    ) -> list[tuple[Row, TrainConfig]]:
        """Every (row, resolved config) pair of ``profile`` x seeds, checked, in run order.

        ``rows``: only the rows with these labels (all by default)."""
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
                settings.update({k: v for k, v in layer.items() if k not in ("description", "seeds")})
            for seed in seeds:
                config = TrainConfig(variant=row.variant, dataset=self.dataset, knobs=knobs, seed=seed, **settings)
                try:
                    planned.append((row, config.resolve()))
                except ConfigError as exc:
                    raise SuiteError(f"{self.path}: row {row.label!r}, profile {profile!r}: {exc}") from None
        return planned


def load_suite(path: str | Path) -> Suite:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read suite file: {exc.strerror}") from None
    return parse_suite(text, path)


def parse_suite(text: str, path: str | Path) -> Suite:
    """A suite from its text (e.g. the copy logged with a parent run); ``path`` names it in errors."""
    path = Path(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"{path}: not valid TOML: {exc}") from None
    where = Locator(path, text)

    check_keys(doc, TOP_KEYS, where, [], "the top level")
    head = doc.get("suite")
    if head is None:
        raise SuiteError(f"{path}:1: missing [suite] table (name, dataset)")
    check_keys(head, SUITE_KEYS, where, ["suite"], "[suite]")
    for key in ("name", "dataset"):
        if key not in head:
            raise SuiteError(f"{where.line(['suite'])}: [suite] needs {key!r}")
    from .data import DataError, check_dataset_name

    try:
        check_dataset_name(head["dataset"])
    except DataError as exc:
        raise SuiteError(f"{where.line(['suite', 'dataset'])}: {exc}") from None
    seeds = _seeds(head.get("seeds", [0]), where, ["suite", "seeds"])

    sources = doc.get("sources", {})
    check_keys(sources, {name: dict for name in sources}, where, ["sources"], "[sources]")
    for name, source in sources.items():
        check_keys(source, SOURCE_KEYS, where, ["sources", name], f"[sources.{name}]")
        if "title" not in source:
            raise SuiteError(f"{where.line(['sources', name])}: [sources.{name}] needs a 'title' saying where the numbers come from")

    defaults = doc.get("defaults", {})
    check_keys(defaults, TRAINING_KEYS, where, ["defaults"], "[defaults]")
    profiles = doc.get("profiles", {})
    if not profiles:
        raise SuiteError(f"{path}:1: a suite needs at least one [profiles.<name>] table (e.g. quick, full)")
    for name, profile in profiles.items():
        check_keys(profile, PROFILE_KEYS, where, ["profiles", name], f"[profiles.{name}]")
        if "seeds" in profile:
            _seeds(profile["seeds"], where, ["profiles", name, "seeds"])

    rows: list[Row] = []
    raw_rows = doc.get("variants", [])
    if not raw_rows:
        raise SuiteError(f"{path}:1: a suite needs at least one [[variants]] entry")
    for i, raw in enumerate(raw_rows):
        key_path = ["variants", i]
        check_keys(raw, ROW_KEYS, where, key_path, f"[[variants]] #{i + 1}")
        if "variant" not in raw:
            raise SuiteError(f"{where.line(key_path)}: [[variants]] #{i + 1} needs 'variant'")
        try:
            variant = get_variant(raw["variant"])
        except ValueError as exc:
            raise SuiteError(f"{where.line([*key_path, 'variant'])}: {exc}") from None
        row_profiles = raw.get("profiles", {})
        for name, overrides in row_profiles.items():
            if name not in profiles:
                raise SuiteError(
                    f"{where.line([*key_path, 'profiles', name])}: unknown profile {name!r}; "
                    f"accepted: {', '.join(profiles)}"
                )
            check_keys(overrides, TRAINING_KEYS, where, [*key_path, "profiles", name], f"profile {name!r} of row #{i + 1}")
        reference = raw.get("reference", {})
        check_keys(reference, {name: dict for name in sources}, where, [*key_path, "reference"],
                   f"reference of row #{i + 1} (sources are declared as [sources.<name>])")
        for source, numbers in reference.items():
            _check_reference(numbers, sources[source], where, [*key_path, "reference", source], f"{source} of row #{i + 1}")
        label = raw.get("label", raw["variant"])
        if any(r.label == label for r in rows):
            raise SuiteError(f"{where.line([*key_path, 'variant'])}: duplicate row label {label!r}; give one a 'label'")
        for layer, lpath in [(raw, key_path)] + [
            (o, [*key_path, "profiles", n]) for n, o in row_profiles.items()
        ]:
            unknown = set(layer.get("knobs", {})) - set(variant.knobs)
            if unknown:
                raise SuiteError(
                    f"{where.line([*lpath, 'knobs', sorted(unknown)[0]])}: variant {variant.name!r} has no knob "
                    f"{sorted(unknown)[0]!r}; accepted knobs: {', '.join(variant.knobs) or 'none'}"
                )
        settings = {k: v for k, v in raw.items() if k in TRAINING_KEYS}
        rows.append(Row(label, raw["variant"], settings, row_profiles, reference, raw.get("note", "")))

    baseline = head.get("baseline")
    if baseline is not None and baseline not in [r.label for r in rows]:
        raise SuiteError(
            f"{where.line(['suite', 'baseline'])}: baseline {baseline!r} is not a row; accepted: "
            f"{', '.join(r.label for r in rows)}"
        )
    suite = Suite(
        name=head["name"],
        description=head.get("description", ""),
        dataset=head["dataset"],
        seeds=seeds,
        experiment=head.get("experiment", head["name"]),
        defaults=defaults,
        profiles=profiles,
        rows=tuple(rows),
        path=path,
        text=text,
        baseline=baseline,
        sources=sources,
    )
    for profile in profiles:  # every combination must resolve, so nothing fails mid-suite
        suite.plan(profile, seeds=seeds[:1])
    return suite


def _check_reference(numbers: Any, source: Mapping[str, Any], where: Locator, key_path: list, what: str) -> None:
    check_keys(numbers, REFERENCE_KEYS, where, key_path, f"reference {what}")
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


def _seeds(value: Any, where: Locator, key_path: list) -> tuple[int, ...]:
    if not (isinstance(value, list) and value and all(isinstance(s, int) and s >= 0 for s in value)):
        raise SuiteError(f"{where.line(key_path)}: seeds must be a non-empty list of integers >= 0, got {value!r}")
    return tuple(value)


def check_keys(table: Any, accepted: Mapping[str, type], where: Locator, key_path: list, what: str) -> None:
    if not isinstance(table, dict):
        raise SuiteError(f"{where.line(key_path)}: {what} must be a table")
    for key, value in table.items():
        if key not in accepted:
            raise SuiteError(
                f"{where.line([*key_path, key])}: unknown key {key!r} in {what}; accepted: {', '.join(sorted(accepted))}"
            )
        kind = accepted[key]
        ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise SuiteError(f"{where.line([*key_path, key])}: {key} must be a {kind.__name__}, got {value!r}")


class Locator:
    """Finds the line of a key path in the TOML text (tomllib keeps no positions)."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line(self, key_path: Sequence[Any]) -> str:
        start = 0
        table = []
        for part in key_path:
            if isinstance(part, int):  # the n-th [[table]] of the path so far
                header = re.compile(r"^\s*\[\[\s*" + re.escape(".".join(table)) + r"\s*\]\]")
                hits = [i for i, line in enumerate(self.lines) if header.match(line)]
                if part < len(hits):
                    start = hits[part]
                continue
            table.append(str(part))
            found = self._find(str(part), start)
            if found is not None:
                start = found
        return f"{self.path}:{start + 1}"

    def _find(self, key: str, start: int) -> int | None:
        key_pattern = re.compile(r"(^|[\s{,.\[])" + re.escape(key) + r"\s*(=|\]|\.)|(^|[\s{,.\[])\"" + re.escape(key) + r"\"")
        for i in range(start, len(self.lines)):
            code = self.lines[i].split("#", 1)[0]
            if key_pattern.search(code):
                return i
        return None


# ---------------------------------------------------------------------------- running


@dataclasses.dataclass
class SuiteOutcome:
    parent_run_id: str
    summary: pd.DataFrame
    ran: int
    skipped: int
    failed: list[str]


def run_suite(
    suite: Suite,
    profile: str,
    *,
    seeds: Sequence[int] | None = None,
    resume: str | bool = False,
    experiment: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    log_models: bool = True,
    callbacks_for: Callable[[Row, TrainConfig], Iterable[Any]] | None = None,
    progress: bool | None = None,
    echo: Callable[[str], None] = print,
    rows: Sequence[str] | None = None,
    checkpoints: Any = ckpt.Policy(),
    epoch_lines: bool = True,
) -> SuiteOutcome:
    """Train every row x seed of ``profile`` as child runs of one parent run.

    ``resume``: True re-opens the latest parent of this suite and profile, a string
    re-opens that parent run id; FINISHED children are skipped, and children that were
    interrupted (killed, Ctrl-C) continue from their latest checkpoint in the same run.
    A failing child is marked FAILED and the suite goes on; the parent then ends FAILED
    naming them. ``rows``: only these row labels. ``checkpoints``: a ``checkpoint.Policy``
    or None for none. ``epoch_lines``: one line per epoch (logs are never silent for long).
    """
    from .runner import resumable

    plan = suite.plan(profile, seeds, overrides, rows=rows)
    experiment_id = tracking.experiment_id_for(experiment, suite.experiment)
    parent_id = _find_parent(suite, profile, resume, experiment_id)
    done = _finished_pairs(parent_id) if parent_id else set()
    tags = _suite_tags(suite, profile)
    parent_tags = _parent_tags(suite, profile)
    data_cache: dict[tuple, DataSplits] = {}
    ran = skipped = 0
    failed: list[str] = []
    with tracking.tracked_run(
        experiment_id=experiment_id, run_name=f"{suite.name} [{profile}]", tags=parent_tags, run_id=parent_id
    ) as parent_id:
        # Logged again on resume: the report reads references and notes from this copy.
        tracking.log_artifact_text(parent_id, suite.path.name, suite.text)
        if rows:
            tracking.set_tags(parent_id, {TAG_ROWS: ",".join(rows)})
        tracking.mark_stale_children(parent_id)
        interrupted = _interrupted_pairs(parent_id) if done or resume else {}
        for index, (row, config) in enumerate(plan, 1):
            name = f"{row.label} seed={config.seed}"
            if (row.label, config.seed) in done:
                skipped += 1
                echo(f"[{index}/{len(plan)}] {name}: already FINISHED under {parent_id}, skipped")
                continue
            data = _data_for(config, data_cache)
            child_tags = _child_tags(suite, row, config.seed, tags)
            extra = list(callbacks_for(row, config)) if callbacks_for else []
            if epoch_lines:
                extra.append(EpochLine(name, echo))
            resume_id = interrupted.get((row.label, config.seed))
            if resume_id is not None and not resumable(resume_id):
                resume_id = None
            echo(f"[{index}/{len(plan)}] {name}" + (f": resuming run {resume_id} from its checkpoint" if resume_id else ""))
            try:
                _train_pair(config, name, parent_id, child_tags, extra, resume_id, data, echo,
                            progress=progress, log_models=log_models, checkpoints=checkpoints)
                ran += 1
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # the child is FAILED in MLflow; the suite goes on
                failed.append(name)
                echo(f"    FAILED: {type(exc).__name__}: {exc}")
        summary = summarize(tracking.child_runs(parent_id), suite)
        tracking.log_table(parent_id, summary, "summary")
        tracking.log_metrics(parent_id, {"children_finished": float(summary["n_seeds"].sum()) if len(summary) else 0.0})
        if failed:
            raise SuiteFailed(parent_id, failed, summary)
    return SuiteOutcome(parent_id, summary, ran, skipped, failed)


SUITE_STORAGE_DIR = Path("optuna") / "suites"  # journal files of suites run on several workers of one machine
POLL_S = 2.0  # an idle worker looks for a retried or unfinished pair this often


def run_suite_workers(
    suite: Suite,
    profile: str,
    *,
    seeds: Sequence[int] | None = None,
    resume: str | bool = False,
    experiment: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    rows: Sequence[str] | None = None,
    workers: int = 1,
    storage: str | None = None,
    study_name: str | None = None,
    worker_of: str | None = None,
    worker_index: int = 0,
    log_models: bool = True,
    progress: bool | None = None,
    echo: Callable[[str], None] = print,
    checkpoints: Any = ckpt.Policy(),
    epoch_lines: bool = True,
) -> SuiteOutcome:
    """``run_suite`` on ``workers`` processes here, and on any machine started with the same ``storage``.

    The row x seed pairs are trials of an Optuna study (``search.PairQueue``): a journal
    file under ``optuna/suites/`` when ``storage`` is None (this machine only), else the
    given storage (PostgreSQL for several machines), where the study's name (default:
    suite, profile and a digest of the plan) is how processes on different machines find
    each other. The first process creates the parent run and queues the pairs that have not
    FINISHED; every process then claims pairs until none is waiting or running. A pair whose
    worker died is queued again and continues from its checkpoint in the same child run.
    Each run is seeded as in a serial suite, so the summary is the same.
    ``worker_of``: this process was started by a coordinator for that parent run.
    """
    from . import search

    plan = suite.plan(profile, seeds, overrides, rows=rows)
    by_pair = {(row.label, config.seed): (row, config) for row, config in plan}
    digest = plan_digest(plan)
    experiment_id = tracking.experiment_id_for(experiment, suite.experiment)
    owner = False  # whether this process made (or re-opened) the parent run and answers for its status
    if worker_of:
        queue = search.PairQueue(str(storage), str(study_name))
        parent_id = worker_of
    elif storage is None:
        parent_id = _find_parent(suite, profile, resume, experiment_id)
        parent_id = _open_parent(suite, profile, experiment_id, rows, parent_id)
        owner = True
        storage = str(SUITE_STORAGE_DIR / f"{parent_id}.journal")
        # One study per plan: resuming with more seeds queues the new pairs in a study of their own.
        queue = search.PairQueue(storage, study_name or f"{suite.name} [{profile}] {parent_id} plan {digest}")
        if not queue.create(digest):
            queue.parent(digest)  # resuming: the same plan, or a clear error
    else:
        queue = search.PairQueue(storage, study_name or default_study_name(suite, profile, plan, digest))
        if queue.create(digest):
            parent_id = _open_parent(suite, profile, experiment_id, rows, _find_parent(suite, profile, resume, experiment_id))
            owner = True
        else:
            parent_id = queue.parent(digest)
            echo(f"joining study {queue.name!r} (parent run {parent_id})")
    done: set[tuple[str, int]] = set()
    if not worker_of:
        tracking.mark_stale_children(parent_id)
        done = _finished_pairs(parent_id) & set(by_pair)
        if owner or resume:
            added = queue.publish(_costliest_first(plan), done)
            echo(f"suite {suite.name} [{profile}]: {added} pair(s) queued in study {queue.name!r} "
                 f"({tracking.redact(queue.url)}), {len(done)} already FINISHED under parent run {parent_id}")
        if owner:
            queue.set_parent(parent_id)  # last: processes joining wait for it, and then find the pairs queued
    ran: list[str] = []
    failed: list[str] = []
    try:
        if workers > 1:
            _start_workers(suite, profile, plan, overrides or {}, rows, workers, queue, parent_id,
                           log_models=log_models, checkpoints=checkpoints, epoch_lines=epoch_lines, echo=echo)
        # The coordinator works too: after its workers end it picks up any pair a dead one left.
        _work(queue, suite, profile, by_pair, parent_id, worker_index, ran, failed, echo=echo, progress=progress,
              log_models=log_models, checkpoints=checkpoints, epoch_lines=epoch_lines)
    except KeyboardInterrupt:
        if owner:
            tracking.end_run(parent_id, "KILLED", "interrupted (Ctrl-C)")
        raise
    if worker_of:
        return SuiteOutcome(parent_id, pd.DataFrame(), len(ran), 0, failed)
    summary = summarize(tracking.child_runs(parent_id), suite)
    tracking.log_table(parent_id, summary, "summary")
    tracking.log_metrics(parent_id, {"children_finished": float(summary["n_seeds"].sum()) if len(summary) else 0.0})
    finished = _finished_pairs(parent_id)
    missing = [f"{label} seed={seed}" for label, seed in by_pair if (label, seed) not in finished]
    if missing:
        tracking.end_run(parent_id, "FAILED", f"{len(missing)} run(s) did not finish: {', '.join(missing)}")
        raise SuiteFailed(parent_id, missing, summary)
    tracking.end_run(parent_id, "FINISHED")
    return SuiteOutcome(parent_id, summary, len(by_pair) - len(done), len(done), failed)


def plan_digest(plan: Sequence[tuple[Row, TrainConfig]]) -> str:
    """What decides a plan's numbers (rows, seeds, settings; not device, threads or data root)."""
    import hashlib
    import json

    content = [
        [row.label, {k: v for k, v in config.to_flat_dict().items() if k not in ckpt.NOT_IDENTITY}]
        for row, config in plan
    ]
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:12]


def default_study_name(suite: Suite, profile: str, plan: Sequence[tuple[Row, TrainConfig]], digest: str) -> str:
    seeds = sorted({config.seed for _, config in plan})
    return f"{suite.name} [{profile}] seeds {','.join(map(str, seeds))} plan {digest}"


def _open_parent(suite: Suite, profile: str, experiment_id: str, rows: Sequence[str] | None, parent_id: str | None) -> str:
    """Create the suite's parent run, or mark the one being resumed RUNNING again."""
    if parent_id is None:
        parent_id = tracking.create_run(experiment_id, f"{suite.name} [{profile}]", _parent_tags(suite, profile))
        tracking.adopt_launcher(parent_id, f"{suite.name} [{profile}]")
    else:
        tracking.reopen_run(parent_id)
    tracking.log_artifact_text(parent_id, suite.path.name, suite.text)
    if rows:
        tracking.set_tags(parent_id, {TAG_ROWS: ",".join(rows)})
    return parent_id


def _costliest_first(plan: Sequence[tuple[Row, TrainConfig]]) -> list[tuple[str, int]]:
    """Pairs in the order to hand out: longest runs first, so no worker is left with a long one at the end."""
    from .train import estimated_training_flops

    cost: dict[str, float] = {}
    for row, config in plan:
        if row.label not in cost:
            try:
                cost[row.label] = estimated_training_flops(config)
            except Exception:  # an estimate only: a row that cannot be costed keeps its place
                cost[row.label] = 0.0
    order = sorted(range(len(plan)), key=lambda i: -cost[plan[i][0].label])  # stable: seeds stay in order
    return [(plan[i][0].label, plan[i][1].seed) for i in order]


def _work(queue, suite: Suite, profile: str, by_pair, parent_id: str, worker_index: int, ran: list[str],
          failed: list[str], *, echo: Callable[[str], None], progress, log_models: bool, checkpoints: Any,
          epoch_lines: bool) -> None:
    """Claim and train pairs until none is waiting or running anywhere."""
    from .runner import resumable

    tags = _suite_tags(suite, profile)
    data_cache: dict[tuple, DataSplits] = {}
    who = f"[worker {worker_index}]"
    told_waiting = False
    while True:
        dead = queue.reap()
        if dead:
            echo(f"{who} trial(s) {dead} belonged to a worker that died: queued again")
        claim = queue.claim()
        if claim is None:
            running = queue.running()
            if running == 0:
                return
            if not told_waiting:
                echo(f"{who} nothing left to claim; waiting while {running} pair(s) run on other workers")
                told_waiting = True
            time.sleep(POLL_S)
            continue
        told_waiting = False
        row, config = by_pair[(claim.label, claim.seed)]
        name = f"{row.label} seed={config.seed}"
        resume_id = _take_over(parent_id, row.label, config.seed, claim)
        if resume_id is not None and not resumable(resume_id):
            resume_id = None
        echo(f"{who} {name} (trial {claim.trial.number})"
             + (f": resuming run {resume_id} from its checkpoint" if resume_id else ""))
        extra = [EpochLine(name, echo)] if epoch_lines else []

        def work() -> float:
            data = _data_for(config, data_cache)
            result = _train_pair(config, name, parent_id, _child_tags(suite, row, config.seed, tags), extra, resume_id, data, echo,
                                 progress=progress, log_models=log_models, checkpoints=checkpoints)
            return result.final.val_acc

        state = queue.run(claim, work)
        (ran if state.name == "COMPLETE" else failed).append(name)
        if state.name != "COMPLETE":
            echo(f"    {name} FAILED: {claim.trial.user_attrs.get('fail_reason', 'see its MLflow run')}")


def _take_over(parent_id: str, label: str, seed: int, claim) -> str | None:
    """This process now owns the pair: any child of it still RUNNING belongs to a worker that died
    (the queue hands a pair to one worker at a time). Close those; the latest interrupted child is
    the run to continue."""
    children = tracking.child_runs(parent_id)
    if not children.empty and f"tags.{tracking.TAG_SEED}" in children:
        mine = children[(children[f"tags.{tracking.TAG_LABEL}"] == label)
                        & (children[f"tags.{tracking.TAG_SEED}"] == str(seed))]
        for run_id in mine[mine["status"] == "RUNNING"]["run_id"]:
            tracking.end_run(run_id, "FAILED", f"stale: its worker stopped; the pair was queued again (trial {claim.trial.number})")
    return _interrupted_pairs(parent_id).get((label, seed))


def _start_workers(suite: Suite, profile: str, plan, overrides: Mapping[str, Any], rows, workers: int, queue,
                   parent_id: str, *, log_models: bool, checkpoints: Any, epoch_lines: bool,
                   echo: Callable[[str], None]) -> None:
    """``workers`` processes on this machine, each with its share of the cores, or its own GPU when
    there are several; returns when they have all ended."""
    import subprocess
    import sys

    import torch

    threads = overrides.get("threads") or max(1, (os.cpu_count() or 1) // workers)
    device = overrides.get("device") or "auto"
    gpus = torch.cuda.device_count() if device in ("auto", "cuda") else 0
    seeds = sorted({config.seed for _, config in plan})
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env.pop("MLFLOW_RUN_ID", None)
    procs = []
    for index in range(1, workers + 1):
        cmd = [sys.executable, "-m", "bench", "suite", str(suite.path), "--profile", profile,
               "--seeds", ",".join(map(str, seeds)) + ",", "--storage", queue.url, "--study-name", queue.name,
               "--worker-of", parent_id, "--worker-index", str(index), "--threads", str(threads),
               "--device", f"cuda:{(index - 1) % gpus}" if gpus > 1 else device]
        if rows:
            cmd += ["--rows", ",".join(rows)]
        for key in ("epochs", "batch_size", "max_train_samples", "data_dir"):
            if overrides.get(key) is not None:
                cmd += [f"--{key.replace('_', '-')}", str(overrides[key])]
        if not log_models:
            cmd.append("--no-log-model")
        if checkpoints is None:
            cmd.append("--no-checkpoint")
        elif checkpoints.every is not None:
            cmd += ["--checkpoint-every", str(checkpoints.every)]
        if not epoch_lines:
            cmd.append("--quiet")
        procs.append(subprocess.Popen(cmd, env=env))
    echo(f"{workers} workers started, {threads} thread(s) each" + (f", over {gpus} GPUs" if gpus > 1 else ""))
    for index, proc in enumerate(procs, 1):
        code = proc.wait()
        if code != 0:
            echo(f"worker {index} exited with status {code}; a pair it left unfinished is queued again")


def _suite_tags(suite: Suite, profile: str) -> dict[str, str]:
    return {
        tracking.TAG_KIND: "suite",
        tracking.TAG_SUITE: suite.name,
        tracking.TAG_PROFILE: profile,
        tracking.TAG_DATASET: suite.dataset,
    }


def _parent_tags(suite: Suite, profile: str) -> dict[str, str]:
    profile_note = suite.profiles[profile].get("description", "")
    return {**_suite_tags(suite, profile), tracking.TAG_NOTE: f"{suite.description} Profile {profile}: {profile_note}".strip()}


def _child_tags(suite: Suite, row: Row, seed: int, suite_tags: Mapping[str, str]) -> dict[str, str]:
    # Label and seed from the start: a run killed before its first epoch still says which pair it was.
    return {**suite_tags, tracking.TAG_KIND: "run", tracking.TAG_LABEL: row.label, tracking.TAG_SEED: str(seed),
            tracking.TAG_NOTE: f"{describe_variant(row.variant)} Suite {suite.name}: {suite.description}"}


def _train_pair(config: TrainConfig, name: str, parent_id: str, tags: Mapping[str, str], callbacks: list,
                resume_id: str | None, data: DataSplits, echo: Callable[[str], None], *, progress: bool | None,
                log_models: bool, checkpoints: Any) -> Any:
    """One row x seed as a child run (continuing ``resume_id`` from its checkpoint when given); its result."""
    from .runner import run_tracked

    kwargs = dict(callbacks=callbacks, run_name=name, tags=tags, parent_run_id=parent_id, data=data,
                  progress=progress, log_model=log_models, checkpoints=checkpoints)
    try:
        _, result = run_tracked(config, resume_run_id=resume_id, **kwargs)
    except ckpt.CheckpointError as exc:
        if resume_id is None:
            raise
        echo(f"    cannot resume ({exc}); training it again as a new run")
        _, result = run_tracked(config, **kwargs)
    seconds = sum(m.epoch_time_s for m in result.history)
    echo(f"    {name}: val acc {result.final.val_acc:.4f}, test acc {result.test_acc:.4f}, "
         f"{len(result.history)} epochs in {seconds:.1f} s")
    return result


class SuiteFailed(RuntimeError):
    def __init__(self, parent_run_id: str, failed: list[str], summary: pd.DataFrame) -> None:
        super().__init__(f"{len(failed)} run(s) failed: {', '.join(failed)} (parent run {parent_run_id})")
        self.parent_run_id = parent_run_id
        self.failed = failed
        self.summary = summary


def _find_parent(suite: Suite, profile: str, resume: str | bool, experiment_id: str) -> str | None:
    if not resume:
        return None
    if isinstance(resume, str):
        run = tracking.get_run(resume)
        if run.data.tags.get(tracking.TAG_SUITE) != suite.name:
            raise SuiteError(f"run {resume} is not a parent run of suite {suite.name!r}")
        return resume
    runs = tracking.find_runs(
        [experiment_id],
        f"tags.`{tracking.TAG_KIND}` = 'suite' and tags.`{tracking.TAG_SUITE}` = '{suite.name}' "
        f"and tags.`{tracking.TAG_PROFILE}` = '{profile}'",
    )
    if runs.empty:
        return None  # nothing to resume: start a fresh parent
    return str(runs.sort_values("start_time").iloc[-1]["run_id"])


def describe_variant(name: str) -> str:
    """One sentence for a run's description: what the variant is and where it comes from."""
    variant = get_variant(name)
    return f"{name}: {variant.description} (from {variant.origin})."


def _interrupted_pairs(parent_id: str) -> dict[tuple[str, int], str]:
    """(label, seed) -> the latest child run that was interrupted (killed, Ctrl-C, process died),
    not failed by an error of its own: those are worth continuing from a checkpoint."""
    children = tracking.child_runs(parent_id)
    if children.empty:
        return {}
    error = children.get(f"tags.{tracking.TAG_ERROR}", pd.Series("", index=children.index)).fillna("")
    stopped = children[(children["status"] == "KILLED") | error.str.startswith(("stale", "interrupted"))]
    pairs: dict[tuple[str, int], str] = {}
    for _, r in stopped.sort_values("start_time").iterrows():
        pairs[(r[f"tags.{tracking.TAG_LABEL}"], int(r[f"tags.{tracking.TAG_SEED}"]))] = r["run_id"]
    return pairs


class EpochLine:
    """Trainer callback: one plain line per epoch, and one every ``every_s`` seconds inside an epoch
    that takes longer (a 100-block net on a CPU), so a log is never silent for minutes."""

    def __init__(self, name: str, echo: Callable[[str], None], every_s: float = 30.0) -> None:
        self.name, self.echo, self.every_s, self.epochs = name, echo, every_s, 0
        self.last = time.monotonic()

    def on_train_start(self, info) -> None:
        self.epochs = info.config.epochs
        self.last = time.monotonic()

    def on_step_end(self, epoch: int, step: int, steps: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.every_s and step < steps:
            self.last = now
            self.echo(f"    {self.name} epoch {epoch}/{self.epochs}: step {step}/{steps}")

    def on_epoch_end(self, m) -> None:
        self.last = time.monotonic()
        self.echo(f"    {self.name} epoch {m.epoch}/{self.epochs}: train acc {m.train_acc:.4f}, val acc {m.val_acc:.4f}, "
                  f"{m.epoch_time_s:.1f} s")


def _finished_pairs(parent_id: str) -> set[tuple[str, int]]:
    children = tracking.child_runs(parent_id)
    if children.empty:
        return set()
    finished = children[children["status"] == "FINISHED"]
    return {(r[f"tags.{tracking.TAG_LABEL}"], int(r[f"tags.{tracking.TAG_SEED}"])) for _, r in finished.iterrows()}


def _data_for(config: TrainConfig, cache: dict[tuple, DataSplits]) -> DataSplits:
    key = (config.dataset, config.data_dir, config.split_seed, config.val_fraction, config.val_from_test, config.max_train_samples)
    if key not in cache:
        from .train import load_data

        cache[key] = load_data(config)
    return cache[key]


SUMMARY_METRICS = ("train_acc", "val_acc", "test_acc")
SOURCE_SUFFIXES = ("", "_epochs", "_diff", "_within_2pt")  # of a summary's <source>.<metric> columns
VERDICT_COLUMNS = ["baseline_diff", "baseline_ci_low", "baseline_ci_high", "baseline_p_holm", "verdict"]


def summarize(children: pd.DataFrame, suite: Suite | None = None) -> pd.DataFrame:
    """One row per suite row: accuracy mean and std over FINISHED seeds, size and speed, the
    machines it ran on, the verdict against the suite's baseline and the sources' numbers.

    Source columns are ``<source>.<metric>`` (the published value at our epochs where the source
    has one, else its figure), ``<source>.<metric>_epochs`` (the epochs that value was taken at),
    ``<source>.<metric>_diff`` (ours - published) and ``<source>.<metric>_within_2pt`` (empty where
    the epochs differ: not judged).
    """
    from .verdicts import against_baseline, against_source

    columns = ["label", "variant", "n_seeds", "seeds"]
    for metric in SUMMARY_METRICS:
        columns += [f"{metric}_mean", f"{metric}_std"]
    columns += ["num_parameters", "epochs", "s_per_epoch", "train_gflops", "gemm_fraction", "machines", "run_ids"]
    columns += VERDICT_COLUMNS
    if children.empty or "status" not in children:
        return pd.DataFrame(columns=columns)
    finished = children[children["status"] == "FINISHED"]
    order = [r.label for r in suite.rows] if suite else sorted(finished[f"tags.{tracking.TAG_LABEL}"].unique())
    machine_tag = f"tags.{tracking.TAG_HARDWARE}.machine"
    records = []
    values: dict[str, list[float]] = {}
    for label in order:
        runs = finished[finished[f"tags.{tracking.TAG_LABEL}"] == label]
        if runs.empty:
            continue
        record: dict[str, Any] = {
            "label": label,
            "variant": runs[f"tags.{tracking.TAG_VARIANT}"].iloc[0],
            "n_seeds": len(runs),
            "seeds": " ".join(sorted(runs[f"tags.{tracking.TAG_SEED}"].tolist(), key=int)),
        }
        for metric in SUMMARY_METRICS:
            metric_values = runs[f"metrics.{metric}"].astype(float)
            record[f"{metric}_mean"] = metric_values.mean()
            record[f"{metric}_std"] = metric_values.std(ddof=1) if len(metric_values) > 1 else math.nan
        values[label] = runs["metrics.val_acc"].astype(float).tolist()
        record["num_parameters"] = int(runs["params.num_parameters"].iloc[0])
        record["epochs"] = int(runs["params.epochs"].iloc[0])
        record["s_per_epoch"] = runs["metrics.epoch_time_s"].astype(float).mean()
        for metric in ("train_gflops", "gemm_fraction"):  # absent from runs logged before bench measured them
            column = f"metrics.{metric}"
            record[metric] = runs[column].astype(float).mean() if column in runs else math.nan
        machines = runs[machine_tag].dropna().unique().tolist() if machine_tag in runs else []
        record["machines"] = "; ".join(sorted(machines)) or "not recorded"
        record["run_ids"] = " ".join(runs["run_id"])
        records.append(record)
    summary = pd.DataFrame(records, columns=columns)
    if summary.empty:
        return summary
    verdicts = against_baseline(values, suite.baseline if suite else None).set_index("label")
    for column, source_column in zip(VERDICT_COLUMNS, ["diff", "ci_low", "ci_high", "p_holm", "verdict"]):
        summary[column] = summary["label"].map(verdicts[source_column])
    if suite and suite.sources:
        by_label = {r.label: r for r in suite.rows}
        for source, meta in suite.sources.items():
            found = [
                against_source({m: rec[f"{m}_mean"] for m in SUMMARY_METRICS}, rec["epochs"],
                               by_label[rec["label"]].reference.get(source, {}), meta.get("epochs"))
                if source in by_label[rec["label"]].reference else {}
                for rec in records
            ]
            for metric in SUMMARY_METRICS:
                if any(metric in f for f in found):
                    for suffix in SOURCE_SUFFIXES:
                        summary[f"{source}.{metric}{suffix}"] = [f.get(f"{metric}{suffix}") for f in found]
    return summary


def published_columns(summary: pd.DataFrame) -> list[tuple[str, str]]:
    """The (source, metric) pairs the summary has published numbers for, in column order."""
    pairs = []
    for column in summary.columns:
        if "." in column and not column.endswith(SOURCE_SUFFIXES[1:]):
            source, metric = column.rsplit(".", 1)
            pairs.append((source, metric))
    return pairs


def baseline_cell(row: Mapping[str, Any]) -> str:
    """``+0.0123 [-0.0040, +0.0286]``: a summary row's val-accuracy difference from the baseline."""
    if row["verdict"] == "baseline" or math.isnan(row["baseline_diff"]):
        return ""
    low, high = row["baseline_ci_low"], row["baseline_ci_high"]
    return f"{row['baseline_diff']:+.4f}" + ("" if math.isnan(low) else f" [{low:+.4f}, {high:+.4f}]")


def published_cell(row: Mapping[str, Any], source: str, metric: str) -> str:
    """``0.9000 -0.0110 (within 2 pt)``: a source's value, ours minus it, and the 2-point check;
    ``0.9211 -0.0513 (theirs after 2 epochs, ours 1)`` where the source has no figure at our epochs."""
    value, diff, ok = row[f"{source}.{metric}"], row[f"{source}.{metric}_diff"], row[f"{source}.{metric}_within_2pt"]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if diff is None or math.isnan(diff):
        return f"{value:.4f}"
    if ok is None or (isinstance(ok, float) and math.isnan(ok)):  # epochs differ: compared, not judged
        return f"{value:.4f} {diff:+.4f} (theirs after {int(row[f'{source}.{metric}_epochs'])} epochs, ours {int(row['epochs'])})"
    return f"{value:.4f} {diff:+.4f} ({'within' if ok else 'beyond'} 2 pt)"


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as fixed-width text: accuracies (mean ± std), then each row's verdict
    against the baseline and its difference from each source."""
    from .verdicts import method_note

    if summary.empty:
        return "(no finished runs)"

    def cell(mean: float, std: float) -> str:
        return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"

    table = pd.DataFrame(
        {
            "row": summary["label"],
            "seeds": summary["n_seeds"],
            **{m: [cell(a, b) for a, b in zip(summary[f"{m}_mean"], summary[f"{m}_std"])] for m in SUMMARY_METRICS},
            "params": summary["num_parameters"].map("{:,}".format),
            "epochs": summary["epochs"],
            "s/epoch": summary["s_per_epoch"].map("{:.2f}".format),
            "GFLOP/s": summary["train_gflops"].map("{:.1f}".format),
        }
    )
    lines = [table.to_string(index=False), ""]
    verdict_table = pd.DataFrame({
        "row": summary["label"],
        "val acc vs baseline": [baseline_cell(r) for _, r in summary.iterrows()],
        "verdict": summary["verdict"],
    })
    for source, metric in published_columns(summary):
        verdict_table[f"{source} {metric.removesuffix('_acc')}"] = [
            published_cell(r, source, metric) for _, r in summary.iterrows()
        ]
    lines.append(verdict_table.to_string(index=False))
    n_compared = int(summary["baseline_p_holm"].notna().sum())
    lines.append(method_note(n_compared))
    if published_columns(summary):
        lines.append("Sources: published value at our epochs (the source's figure, or its per-epoch curve), ours "
                     "minus it, and whether that is within 2 points; where the source has no value at our epochs, "
                     "the difference from its figure with both epochs, not judged.")
    machines = sorted({m for ms in summary["machines"] for m in ms.split("; ")})
    if len(machines) > 1:
        lines.append(f"Runs came from {len(machines)} machines ({' | '.join(machines)}): seconds per epoch do not compare.")
    return "\n".join(lines)
