"""Hyper-parameter search with Optuna: the only module of bench that imports optuna.

A study file (``studies/*_search.toml``) names a data set, a variant, a bounded search
space over lr, width, dropout and depth, epochs per trial, n_trials, the metric, the
sampler seed and the pruner. ``run_search`` creates or resumes the study in a storage
that survives restarts and can be shared by several worker processes:

- default: Optuna's journal file (``optuna/<study>.journal``), safe for many processes
  on one host; a worker killed mid-trial is found by its dead PID and its trial FAILed;
- ``postgresql://...``: Optuna's RDB storage with a heartbeat, for many machines; a
  worker that stops beating has its trial FAILed and retried by the others.

``n_trials`` counts the whole study: re-running the command resumes it. Trials are
created under a lock (a file lock, or a PostgreSQL advisory lock) so that concurrent
workers never overshoot it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import socket
import subprocess
import sys
import time
import tomllib
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import optuna
# Optuna keeps its heartbeat helpers private; they are what Study.optimize itself runs a trial under.
from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled
from optuna.trial import TrialState

from . import tracking
from .config import ConfigError, TrainConfig
from .data import DataError, DataSplits, check_dataset_name
from .models import get_variant
from .runtime import process_alive
from .suite import TRAINING_KEYS, EpochLine, Locator, SuiteError, check_keys, describe_variant

# Our own lines say what happened to each trial; Optuna's INFO lines would repeat them.
optuna.logging.set_verbosity(optuna.logging.WARNING)

PRUNERS = ("median", "hyperband", "none")
METRICS = {"val_acc": "maximize", "val_loss": "minimize"}
SPACE_KEYS = ("lr", "width", "dropout", "depth", "weight_decay")
STUDY_KEYS = {
    "name": str,
    "description": str,
    "dataset": str,
    "variant": str,
    "epochs": int,
    "n_trials": int,
    "metric": str,
    "sampler_seed": int,
    "pruner": str,
    "seed": int,
    "experiment": str,
}
PRUNER_KEYS = {"n_startup_trials": int, "n_warmup_steps": int, "min_resource": int, "reduction_factor": int}
RANGE_KEYS = {"low": float, "high": float, "log": bool}
PARENT_ATTR = "mlflow_parent_run_id"
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
DEFAULT_STORAGE_DIR = Path("optuna")
MAX_CONSECUTIVE_FAILURES = 3  # failed trials do not count, so endless failures would loop forever


class SearchError(SuiteError):
    """A study file or setting that cannot work; raised before any trial runs."""


@dataclasses.dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool
    integer: bool


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
    path = Path(path)
    try:
        text = path.read_text()
        doc = tomllib.loads(text)
    except OSError as exc:
        raise SearchError(f"{path}: cannot read study file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SearchError(f"{path}: not valid TOML: {exc}") from None
    where = Locator(path, text)
    check_keys(doc, {"study": dict, "training": dict, "space": dict, "pruner": dict}, where, [], "the top level")
    head = doc.get("study")
    if head is None:
        raise SearchError(f"{path}:1: missing [study] table")
    check_keys(head, STUDY_KEYS, where, ["study"], "[study]")
    for key in ("name", "dataset", "variant", "epochs", "n_trials"):
        if key not in head:
            raise SearchError(f"{where.line(['study'])}: [study] needs {key!r}")
    try:
        check_dataset_name(head["dataset"])
        variant = get_variant(head["variant"])
    except (DataError, ValueError) as exc:
        raise SearchError(f"{where.line(['study'])}: {exc}") from None
    metric = head.get("metric", "val_acc")
    if metric not in METRICS:
        raise SearchError(f"{where.line(['study', 'metric'])}: metric {metric!r}; accepted: {', '.join(METRICS)}")
    pruner = head.get("pruner", "median")
    if pruner not in PRUNERS:
        raise SearchError(f"{where.line(['study', 'pruner'])}: pruner {pruner!r}; accepted: {', '.join(PRUNERS)}")
    for key in ("epochs", "n_trials"):
        if head[key] < 1:
            raise SearchError(f"{where.line(['study', key])}: {key} must be >= 1, got {head[key]}")
    pruner_options = doc.get("pruner", {})
    check_keys(pruner_options, PRUNER_KEYS, where, ["pruner"], "[pruner]")
    training = doc.get("training", {})
    check_keys(training, TRAINING_KEYS, where, ["training"], "[training]")
    if "epochs" in training:
        raise SearchError(f"{where.line(['training', 'epochs'])}: set epochs per trial in [study], not [training]")

    space: dict[str, Range] = {}
    raw_space = doc.get("space", {})
    if not raw_space:
        raise SearchError(f"{path}:1: a study needs a [space] table (lr, width, dropout, depth)")
    for name, bounds in raw_space.items():
        if name not in SPACE_KEYS:
            raise SearchError(f"{where.line(['space', name])}: unknown parameter {name!r}; accepted: {', '.join(SPACE_KEYS)}")
        check_keys(bounds, RANGE_KEYS, where, ["space", name], f"[space.{name}]")
        if "low" not in bounds or "high" not in bounds:
            raise SearchError(f"{where.line(['space', name])}: {name} needs low and high")
        low, high, log = float(bounds["low"]), float(bounds["high"]), bool(bounds.get("log", False))
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

    spec = StudySpec(
        name=head["name"],
        description=head.get("description", ""),
        dataset=head["dataset"],
        variant=head["variant"],
        epochs=head["epochs"],
        n_trials=head["n_trials"],
        metric=metric,
        sampler_seed=head.get("sampler_seed", 0),
        pruner=pruner,
        pruner_options=pruner_options,
        seed=head.get("seed", 0),
        experiment=head.get("experiment", head["name"]),
        training=training,
        space=space,
        path=path,
        text=text,
    )
    try:  # the space's corners must make valid configs
        spec.config({n: (r.low if not r.integer else int(r.low)) for n, r in space.items()})
    except ConfigError as exc:
        raise SearchError(f"{path}: {exc}") from None
    return spec


# ---------------------------------------------------------------------------- storage


def default_storage(spec: StudySpec) -> str:
    return str(DEFAULT_STORAGE_DIR / f"{spec.name}.journal")


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """``postgresql://``/``mysql://``/``sqlite://`` -> RDB storage with heartbeat; anything else is a journal file."""
    if "://" in url:
        if url.startswith("sqlite"):
            print("bench: sqlite storage is not safe for parallel workers; prefer a journal file", file=sys.stderr)
        # Machines starting at once would race to create Optuna's tables in a fresh database.
        with warnings.catch_warnings(), _postgres_lock(url, "schema"):
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: "experimental"
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=HEARTBEAT_INTERVAL_S,
                grace_period=HEARTBEAT_GRACE_S,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES),
            )
    path = Path(url.removeprefix("journal:"))
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


HEARTBEAT_INTERVAL_S = 10  # a live worker's trial is touched this often
MAX_RETRIES = 2  # a trial (or a suite's pair) whose worker died is run again at most this often
HEARTBEAT_GRACE_S = 30  # ... and counted dead after this long without a beat


@contextlib.contextmanager
def trial_slot_lock(url: str) -> Iterator[None]:
    """Serialise "count trials, then create one" across workers, so n_trials is never overshot.

    A file lock for a journal on this host; a PostgreSQL advisory lock for a shared database.
    """
    if url.startswith("postgresql"):
        with _postgres_lock(url, "trials"):
            yield
        return
    if "://" in url:  # other databases: no cross-process lock; n_trials may be exceeded by workers-1
        yield
        return
    lock_path = Path(url.removeprefix("journal:")).with_suffix(".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _postgres_lock(url: str, purpose: str) -> Iterator[None]:
    """A PostgreSQL advisory lock named by the database URL and ``purpose``; a no-op for other URLs."""
    if not url.startswith("postgresql"):
        yield
        return
    import sqlalchemy

    key = int.from_bytes(hashlib.sha256(f"{purpose}:{url}".encode()).digest()[:7], "big")
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    finally:
        engine.dispose()


def open_study(spec: StudySpec, storage_url: str) -> optuna.Study:
    return optuna.create_study(
        storage=make_storage(storage_url),
        study_name=spec.name,
        direction=spec.direction,
        sampler=optuna.samplers.TPESampler(seed=spec.sampler_seed),
        pruner=make_pruner(spec),
        load_if_exists=True,
    )


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    options = dict(spec.pruner_options)
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=options.get("n_startup_trials", 5), n_warmup_steps=options.get("n_warmup_steps", 1)
        )
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=options.get("min_resource", 1),
            max_resource=spec.epochs,
            reduction_factor=options.get("reduction_factor", 3),
        )
    return optuna.pruners.NopPruner()


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's own recovery with a heartbeat storage: trials whose worker stopped beating are
    FAILed, and re-enqueued by the storage's retry callback. A no-op for journal files."""
    if is_heartbeat_enabled(study._storage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


def counted_trials(study: optuna.Study) -> int:
    """Trials that count towards n_trials: all but FAILed ones (those are retried)."""
    return len(study.get_trials(deepcopy=False, states=COUNTED))


def fail_dead_local_trials(study: optuna.Study, retry: bool = False) -> list[int]:
    """RUNNING trials whose worker process on this host is gone (SIGKILL, OOM, power): FAIL them.

    The journal storage has no heartbeat, so workers record host and PID on their trials.
    Their MLflow runs are closed as FAILED too. ``retry``: re-enqueue each as a WAITING copy
    (same params and user attrs), as the RDB storage's heartbeat retry does.
    """
    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get("host") != host or "pid" not in attrs or process_alive(int(attrs["pid"])):
            continue
        study.tell(trial.number, state=TrialState.FAIL)
        failed.append(trial.number)
        if attrs.get("mlflow_run_id"):
            tracking.end_run(attrs["mlflow_run_id"], "FAILED", f"stale: worker pid {attrs['pid']} died mid-trial")
        if retry:
            optuna.storages.RetryFailedTrialCallback(max_retry=MAX_RETRIES)(study, study.get_trials(deepcopy=False)[trial.number])
    return failed



# ---------------------------------------------------------------------------- suites on many workers


@dataclasses.dataclass(frozen=True)
class Claim:
    label: str
    seed: int
    trial: optuna.Trial
    retry_of: int | None  # the trial number of a dead worker's attempt at this pair, if any


class PairQueue:
    """The (row, seed) pairs of one suite run, handed out to workers through an Optuna study.

    Optuna's storage is the shared state: each pair is an enqueued trial (user attrs
    ``label`` and ``seed``), and ``claim`` pops one with ``study.ask()`` under the trial-slot
    lock, so two workers never get the same pair. With PostgreSQL a claimed pair runs under
    Optuna's heartbeat, and a worker that stops beating has its trial FAILed and re-enqueued
    by the storage's retry callback; with a journal file (one host) workers record host and
    PID, and a dead worker's trial is FAILed and re-enqueued by the next worker that looks.
    A trial's value is the run's val accuracy, so optuna-dashboard shows the suite's progress.
    """

    PARENT_ATTR = PARENT_ATTR
    PLAN_ATTR = "bench_plan_digest"

    def __init__(self, storage_url: str, study_name: str) -> None:
        self.url = storage_url
        self.name = study_name
        self.storage = make_storage(storage_url)

    def create(self, plan_digest: str) -> bool:
        """Create the study; False when another process already did (then it is shared)."""
        try:
            study = optuna.create_study(storage=self.storage, study_name=self.name, direction="maximize")
        except optuna.exceptions.DuplicatedStudyError:
            return False
        study.set_user_attr(self.PLAN_ATTR, plan_digest)
        return True

    @property
    def study(self) -> optuna.Study:
        return optuna.load_study(study_name=self.name, storage=self.storage)

    def set_parent(self, run_id: str) -> None:
        self.study.set_user_attr(self.PARENT_ATTR, run_id)

    def parent(self, plan_digest: str, wait_s: float = 120.0) -> str:
        """The parent run id the creating process recorded (waiting for it briefly); raises
        ``SearchError`` when the study was made for another plan (rows, seeds or settings)."""
        deadline = time.monotonic() + wait_s
        while True:
            attrs = self.study.user_attrs
            found = attrs.get(self.PLAN_ATTR)
            if found is not None and found != plan_digest:
                raise SearchError(
                    f"study {self.name!r} in {tracking.redact(self.url)} holds another plan of this suite "
                    f"(different rows, seeds or settings); pass --study-name to start a separate one"
                )
            if attrs.get(self.PARENT_ATTR):
                return attrs[self.PARENT_ATTR]
            if time.monotonic() > deadline:
                raise SearchError(
                    f"study {self.name!r} in {tracking.redact(self.url)} has no parent run after {wait_s:.0f} s: "
                    "the process that created it died before recording one; pass --study-name to start anew"
                )
            time.sleep(0.5)

    def publish(self, pairs: list[tuple[str, int]], finished: set[tuple[str, int]]) -> int:
        """Enqueue the pairs that neither FINISHED nor sit in the queue (WAITING or RUNNING); the count."""
        with trial_slot_lock(self.url):
            study = self.study
            queued = {
                (t.user_attrs.get("label"), t.user_attrs.get("seed"))
                for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
            }
            added = 0
            for label, seed in pairs:
                if (label, seed) in finished or (label, seed) in queued:
                    continue
                study.enqueue_trial({}, user_attrs={"label": label, "seed": seed}, skip_if_exists=False)
                added += 1
            return added

    def reap(self) -> list[int]:
        """FAIL (and re-enqueue) the trials of workers that died: dead PIDs here, stale heartbeats anywhere."""
        study = self.study
        failed = fail_dead_local_trials(study, retry=True)
        if is_heartbeat_enabled(self.storage):
            before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
            fail_stale_trials(study)
            failed += sorted({t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))} - before)
        return failed

    def claim(self) -> Claim | None:
        """The next WAITING pair, now RUNNING and this process's; None when none waits."""
        with trial_slot_lock(self.url):
            study = self.study
            if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                return None
            trial = _ask(study)  # pops a WAITING trial: under the lock it is the one just seen
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        attrs = study.get_trials(deepcopy=False)[trial.number]
        return Claim(
            str(attrs.user_attrs["label"]), int(attrs.user_attrs["seed"]), trial, attrs.system_attrs.get("failed_trial")
        )

    def running(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    def run(self, claim: Claim, work: Callable[[], float]) -> TrialState:
        """Run ``work`` (returning the val accuracy) for a claimed pair under the heartbeat; tell its end."""
        study = self.study
        with get_heartbeat_thread(claim.trial._trial_id, self.storage):
            try:
                value = work()
            except KeyboardInterrupt:
                study.tell(claim.trial, state=TrialState.FAIL)
                raise
            except Exception as exc:  # an error of the run itself: FAILed, not retried (it would fail again)
                claim.trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}"[:1000])
                study.tell(claim.trial, state=TrialState.FAIL)
                return TrialState.FAIL
        study.tell(claim.trial, value)
        return TrialState.COMPLETE


# ---------------------------------------------------------------------------- the objective


class PruningReporter:
    """Trainer callback: report the metric each epoch; stop the trial when the pruner says so."""

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial = trial
        self.metric = metric
        self.epochs = 0

    def on_epoch_end(self, metrics) -> None:
        self.epochs = metrics.epoch
        self.trial.report(getattr(metrics, self.metric), step=metrics.epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {metrics.epoch}")


class Objective:
    """One trial: sample the space (define-by-run), train, log a child MLflow run, return the metric."""

    def __init__(self, spec: StudySpec, parent_run_id: str, data: DataSplits, progress: bool | None = False,
                 echo: Callable[[str], None] | None = None) -> None:
        self.spec = spec
        self.parent_run_id = parent_run_id
        self.data = data
        self.progress = progress
        self.echo = echo  # one line per epoch when set, so a log is never silent for a whole trial

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for name, r in self.spec.space.items():
            if r.integer:
                params[name] = trial.suggest_int(name, int(r.low), int(r.high), log=r.log)
            else:
                params[name] = trial.suggest_float(name, r.low, r.high, log=r.log)
        return params

    def __call__(self, trial: optuna.Trial) -> float:
        from .train import train

        params = self.suggest(trial)
        config = self.spec.config(params)
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        tags = {
            tracking.TAG_KIND: "trial",
            tracking.TAG_STUDY: self.spec.name,
            tracking.TAG_LABEL: f"trial {trial.number}",
            "optuna.trial_number": str(trial.number),
            tracking.TAG_NOTE: f"Optuna trial {trial.number} of study {self.spec.name} ({self.spec.description}); "
                               f"params {params}. {describe_variant(self.spec.variant)}",
        }
        reporter = PruningReporter(trial, self.spec.metric)
        pruned: optuna.TrialPruned | None = None
        with tracking.tracked_run(
            run_name=f"{self.spec.name} trial {trial.number}", tags=tags, parent_run_id=self.parent_run_id
        ) as run_id:
            trial.set_user_attr("mlflow_run_id", run_id)
            try:
                lines = [EpochLine(f"trial {trial.number}", self.echo)] if self.echo else []
                result = train(config, [*lines, tracking.MlflowLogger(run_id, log_model=False), reporter], data=self.data,
                               progress=self.progress)
            except optuna.TrialPruned as exc:  # a normal ending: the run FINISHES, tagged PRUNED
                pruned = exc
            tracking.set_tags(run_id, {"optuna.state": "PRUNED" if pruned else "COMPLETE"})
            trial.set_user_attr("epochs_trained", reporter.epochs)
        if pruned is not None:
            raise pruned
        return getattr(result.final, self.spec.metric)


# ---------------------------------------------------------------------------- running


@dataclasses.dataclass
class SearchOutcome:
    study_name: str
    parent_run_id: str
    n_trials: int
    states: dict[str, int]
    best_value: float | None
    best_params: dict[str, Any]
    best_trial: int | None
    epochs_trained: int
    best_run_id: str | None  # the retrained best model's run


def run_search(
    spec: StudySpec,
    *,
    storage: str | None = None,
    n_trials: int | None = None,
    workers: int = 1,
    threads: int | None = None,
    experiment: str | None = None,
    register_best: bool = True,
    progress: bool | None = False,
    echo: Callable[[str], None] = print,
) -> SearchOutcome:
    """Create or resume the study, run trials in ``workers`` processes until ``n_trials`` count, then summarise."""
    storage = storage or default_storage(spec)
    total = n_trials or spec.n_trials
    study = open_study(spec, storage)
    stale = fail_dead_local_trials(study)
    if stale:
        echo(f"trials {stale} were left RUNNING by a dead worker: marked FAILED (they will be retried)")
    parent_id = _parent_run(study, spec, experiment)
    tracking.adopt_launcher(parent_id, f"{spec.name} [study]")
    done = counted_trials(study)
    echo(f"study {spec.name}: {done} of {total} trials already counted; storage {tracking.redact(storage)}")
    with tracking.tracked_run(run_id=parent_id, tags={tracking.TAG_KIND: "study", tracking.TAG_STUDY: spec.name}):
        if workers <= 1:
            run_worker(spec, storage, total, parent_id, threads=threads, progress=progress, echo=echo)
        else:
            _run_worker_processes(spec, storage, total, parent_id, workers, threads, echo)
        _drain(spec, storage, total, parent_id, threads, echo)
        study = open_study(spec, storage)
        outcome = _summarise(study, spec, parent_id)
        if register_best and outcome.best_trial is not None:
            if _first_to_register(study, storage, outcome.best_trial):
                outcome.best_run_id = _retrain_best(study, spec, parent_id, echo)
            else:
                echo(f"best trial {outcome.best_trial}: already retrained and registered by another worker of this study")
    return outcome


def _drain(spec: StudySpec, storage: str, total: int, parent_id: str, threads: int | None,
           echo: Callable[[str], None]) -> None:
    """Wait until no trial runs anywhere, so every machine summarises (and registers) the same
    finished study; run the trials a dead worker left to do meanwhile."""
    told = False
    while True:
        study = open_study(spec, storage)
        fail_dead_local_trials(study)
        fail_stale_trials(study)
        if counted_trials(study) < total or study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            run_worker(spec, storage, total, parent_id, threads=threads, echo=echo)
            continue
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running:
            return
        if not told:
            echo(f"waiting for trial(s) {[t.number for t in running]} to end on other workers")
            told = True
        time.sleep(2.0)


REGISTERED_ATTR = "bench_registered_trial"


def _first_to_register(study: optuna.Study, storage: str, best_trial: int) -> bool:
    """Whether this process retrains and registers the best trial: the first of the study's
    top-level processes (one per machine) to ask, so the registry gets one version, not one per machine."""
    with trial_slot_lock(storage):
        if study.user_attrs.get(REGISTERED_ATTR) == best_trial:
            return False
        study.set_user_attr(REGISTERED_ATTR, best_trial)
        return True


def run_worker(
    spec: StudySpec,
    storage: str,
    total: int,
    parent_id: str,
    *,
    threads: int | None = None,
    worker_index: int = 0,
    progress: bool | None = False,
    echo: Callable[[str], None] = print,
) -> None:
    """Claim and run trials until the study counts ``total``; safe to run in many processes at once."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    study = open_study(spec, storage)
    if worker_index:  # same seed in every worker would make them sample the same points
        study.sampler = optuna.samplers.TPESampler(seed=spec.sampler_seed + worker_index)
    data = _load(spec)
    objective = Objective(spec, parent_id, data, progress=progress, echo=echo if progress is not False else None)
    consecutive_failures = 0
    while True:
        fail_dead_local_trials(study)
        fail_stale_trials(study)  # a dead worker's trial: FAILed, re-enqueued by the retry callback
        with trial_slot_lock(storage):
            # A WAITING trial is a dead worker's, queued again: it is run even when the count is reached.
            if counted_trials(study) >= total and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                return
            # ask() takes a WAITING trial (a retry of a dead worker's, same params) or makes a
            # new one, RUNNING and counted before the lock opens: no two workers share one and
            # the study never overshoots n_trials.
            trial = _ask(study)
            trial.set_user_attr("claimed_by", f"{socket.gethostname()}:{os.getpid()}")
        last = _run_trial(study, trial, objective)
        epochs = last.user_attrs.get("epochs_trained", "?")
        value = f" {spec.metric}={last.value:.4f} after {epochs} epoch(s)" if last.value is not None else ""
        echo(f"[worker {worker_index}] trial {last.number}: {last.state.name}{value}")
        consecutive_failures = consecutive_failures + 1 if last.state == TrialState.FAIL else 0
        if consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
            raise SearchError(
                f"{consecutive_failures} trials in a row FAILED (last: trial {last.number}, "
                f"{last.user_attrs.get('fail_reason', 'see its MLflow run')}); stopping this worker"
            )


def _ask(study: optuna.Study) -> optuna.Trial:
    """``study.ask()``, without Optuna's warning that heartbeats are meant for ``Study.optimize``:
    our trials run under the same heartbeat thread (``_run_trial``, ``PairQueue.run``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        return study.ask()


def _run_trial(study: optuna.Study, trial: optuna.Trial, objective: Objective) -> optuna.trial.FrozenTrial:
    """Run one claimed trial and tell its end, as ``Study.optimize`` does (heartbeat included)."""
    with get_heartbeat_thread(trial._trial_id, study._storage):
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
        except KeyboardInterrupt:
            study.tell(trial, state=TrialState.FAIL)
            raise
        except Exception as exc:  # the trial FAILs (and is retried by count); the worker goes on
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}"[:1000])
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, value)
    return study.get_trials(deepcopy=False)[trial.number]


def _run_worker_processes(spec, storage, total, parent_id, workers, threads, echo) -> None:
    """K processes on this host, each with its share of the cores (spinning OpenMP threads of
    processes that oversubscribe the cores slow each other down by orders of magnitude)."""
    per_worker = threads or max(1, (os.cpu_count() or 1) // workers)
    env = {**os.environ, "OMP_NUM_THREADS": str(per_worker), "MKL_NUM_THREADS": str(per_worker)}
    env.pop("MLFLOW_RUN_ID", None)
    procs = []
    for index in range(workers):
        cmd = [
            sys.executable, "-m", "bench", "search", str(spec.path), "--storage", storage, "--n-trials", str(total),
            "--threads", str(per_worker), "--worker-of", parent_id, "--worker-index", str(index),
        ]
        procs.append(subprocess.Popen(cmd, env=env))
    codes = [p.wait() for p in procs]
    for index, code in enumerate(codes):
        if code != 0:
            echo(f"worker {index} exited with status {code}; its unfinished trial is FAILed and retried")


def _load(spec: StudySpec) -> DataSplits:
    from .train import load_data

    return load_data(spec.config({}))


def _parent_run(study: optuna.Study, spec: StudySpec, experiment: str | None) -> str:
    """The study's one MLflow parent run, created once; its id lives in the study so every
    worker on any machine nests its trials under it."""
    existing = study.user_attrs.get(PARENT_ATTR)
    if existing:
        return existing
    experiment_id = tracking.experiment_id_for(experiment, spec.experiment)
    tags = {tracking.TAG_KIND: "study", tracking.TAG_STUDY: spec.name, tracking.TAG_DATASET: spec.dataset,
            tracking.TAG_NOTE: f"Optuna study {spec.name}: {spec.description} ({spec.n_trials} trials of "
                               f"{spec.epochs} epochs, {spec.pruner} pruning, metric {spec.metric})."}
    run_id = tracking.create_run(experiment_id, f"{spec.name} [study]", tags)
    tracking.log_artifact_text(run_id, spec.path.name, spec.text)
    tracking.log_params(run_id, {"direction": spec.direction, "metric": spec.metric, "pruner": spec.pruner,
                                 "sampler": "TPESampler", "sampler_seed": spec.sampler_seed,
                                 "epochs_per_trial": spec.epochs, "variant": spec.variant})
    study.set_user_attr(PARENT_ATTR, run_id)
    time.sleep(0.2)  # two first workers racing: the last write wins, the loser retires its run
    winner = study.user_attrs.get(PARENT_ATTR, run_id)
    if winner != run_id:
        tracking.end_run(run_id, "KILLED", f"duplicate parent; the study uses {winner}")
    return winner


def _summarise(study: optuna.Study, spec: StudySpec, parent_id: str) -> SearchOutcome:
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    epochs = sum(len(t.intermediate_values) for t in trials)
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if finished else None
    outcome = SearchOutcome(
        study_name=spec.name,
        parent_run_id=parent_id,
        n_trials=len(trials),
        states=states,
        best_value=best.value if best else None,
        best_params=dict(best.params) if best else {},
        best_trial=best.number if best else None,
        epochs_trained=epochs,
        best_run_id=None,
    )
    metrics = {"trials_complete": states.get("COMPLETE", 0), "trials_pruned": states.get("PRUNED", 0),
               "trials_failed": states.get("FAIL", 0), "epochs_trained": epochs}
    if best:
        metrics[f"best_{spec.metric}"] = best.value
        tracking.set_tags(parent_id, {f"best.{k}": v for k, v in best.params.items()} | {"best.trial": best.number})
        tracking.log_artifact_text(parent_id, "best_params.json", json.dumps(
            {"trial": best.number, spec.metric: best.value, "params": best.params,
             "mlflow_run_id": best.user_attrs.get("mlflow_run_id")}, indent=2))
    if len(finished) >= 3 and len(spec.space) > 1:
        importances = optuna.importance.get_param_importances(study)
        tracking.log_artifact_text(parent_id, "param_importances.json", json.dumps(importances, indent=2))
        metrics.update({f"importance.{k}": v for k, v in importances.items()})
    tracking.log_artifact_text(parent_id, "trials.json", json.dumps([_trial_record(t) for t in trials], indent=2))
    tracking.log_metrics(parent_id, metrics)
    return outcome


def _trial_record(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        "params": trial.params,
        "intermediate_values": {str(k): v for k, v in sorted(trial.intermediate_values.items())},
        "mlflow_run_id": trial.user_attrs.get("mlflow_run_id"),
    }


def _retrain_best(study: optuna.Study, spec: StudySpec, parent_id: str, echo: Callable[[str], None]) -> str:
    """Train the best trial's config again (trials log no models) and register it as ``<study>-best``."""
    from .train import train

    best = study.best_trial
    config = spec.config(best.params)
    name = f"{spec.name}-best"
    tags = {tracking.TAG_KIND: "best", tracking.TAG_STUDY: spec.name, tracking.TAG_LABEL: f"best (trial {best.number})"}
    with tracking.tracked_run(run_name=f"{spec.name} best = trial {best.number} (retrained)", tags=tags,
                              parent_run_id=parent_id) as run_id:
        result = train(config, [tracking.MlflowLogger(run_id, log_model=False)], data=_load(spec), progress=False)
        tracking.log_model(result, register_as=name)
        value = getattr(result.final, spec.metric)
        tracking.set_tags(run_id, {"retrain_matches_trial": str(math.isclose(value, best.value, rel_tol=1e-9))})
    echo(f"best trial {best.number}: {spec.metric}={best.value:.4f} with {best.params}; retrained "
         f"({spec.metric}={value:.4f}) and registered as model {name!r} (alias @{tracking.CHAMPION_ALIAS})")
    return run_id


# ---------------------------------------------------------------------------- dashboard


def serve_dashboard(
    spec: StudySpec, storage: str | None = None, *, host: str = "127.0.0.1", port: int = 8080,
    echo: Callable[[str], None] = print,
) -> None:
    """Serve optuna-dashboard on the study's own storage (journal file or database) until Ctrl-C."""
    try:
        import optuna_dashboard
    except ImportError:
        raise SearchError("optuna-dashboard is not installed: pip install -e '.[dashboard]'") from None
    url = storage or default_storage(spec)
    if "://" not in url and not Path(url.removeprefix("journal:")).is_file():
        raise SearchError(f"no study storage at {url}: run `bench search {spec.path}` first, or pass --storage")
    backend = make_storage(url)
    if spec.name not in {s.study_name for s in optuna.get_all_study_summaries(backend)}:
        raise SearchError(f"storage {tracking.redact(url)} holds no study named {spec.name!r}")
    echo(f"optuna-dashboard for study {spec.name} ({tracking.redact(url)}): http://{host}:{port}/dashboard/ (Ctrl-C stops it)")
    optuna_dashboard.run_server(backend, host=host, port=port)
