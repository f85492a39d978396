"""Running a study: workers claim trials until ``n_trials`` count, then one summary and one registration.

The study lives in a storage that survives restarts and is shared by every worker
(``bench.workqueue``): re-running the command resumes it, ``--workers K`` starts K processes
here, and ``--storage postgresql://...`` lets other machines join.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from .. import tracking
from ..data import DataSplits
from ..train import load_data
from ..workqueue import STORAGE_ENV, open_storage, storage as queue_storage, trials
from .confirm import run_confirmation, say
from .objective import Objective
from .spec import SearchError, StudySpec, with_confirmation

PARENT_ATTR = "mlflow_parent_run_id"
REGISTERED_ATTR = "bench_registered_trial"
DEFAULT_STORAGE_DIR = Path("optuna")
MAX_CONSECUTIVE_FAILURES = 3  # failed trials do not count, so endless failures would loop forever
POLL_S = 2.0


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
    confirmation: Any = None  # confirm.Confirmation, when the winner was confirmed over fresh seeds


def default_storage(spec: StudySpec) -> str:
    return str(DEFAULT_STORAGE_DIR / f"{spec.name}.journal")


class StudyHandle:
    """A study file's Optuna study in its storage (sampler and pruner from the file)."""

    def __init__(self, spec: StudySpec, url: str, sampler_seed: int | None = None) -> None:
        self.spec, self.url = spec, url
        self.storage = open_storage(url)
        self.study = optuna.create_study(
            storage=self.storage,
            study_name=spec.name,
            direction=spec.direction,
            sampler=optuna.samplers.TPESampler(seed=spec.sampler_seed if sampler_seed is None else sampler_seed),
            pruner=make_pruner(spec),
            load_if_exists=True,
        )

    def reap(self) -> list[int]:
        """FAIL the trials of dead workers: dead PIDs here (journal), stale heartbeats anywhere (database)."""
        return queue_storage.fail_dead_local_trials(self.study) + queue_storage.fail_stale_trials(self.study)


def open_study(spec: StudySpec, storage_url: str) -> optuna.Study:
    return StudyHandle(spec, storage_url).study


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


def run_search(
    spec: StudySpec,
    *,
    storage: str | None = None,
    n_trials: int | None = None,
    workers: int = 1,
    threads: int | None = None,
    experiment: str | None = None,
    register_best: bool = True,
    confirm: bool | None = None,
    confirm_seeds: int | None = None,
    retest: bool = False,
    progress: bool | None = False,
    echo: Callable[[str], None] = print,
) -> SearchOutcome:
    """Create or resume the study, run trials in ``workers`` processes until ``n_trials`` count, summarise,
    then (``confirm``: default, whether the file has a [confirm] table) train its top configs and the
    baseline over fresh seeds on a fresh split, and register the confirmed winner as the champion when
    it holds against the baseline. Test is measured once per study; ``retest`` measures it again."""
    confirm = spec.confirm is not None if confirm is None else confirm
    if confirm:
        spec = with_confirmation(spec)
    storage = storage or default_storage(spec)
    total = n_trials or spec.n_trials
    handle = StudyHandle(spec, storage)
    stale = queue_storage.fail_dead_local_trials(handle.study)
    if stale:
        say(echo, f"trials {stale} were left RUNNING by a dead worker: marked FAILED (they will be retried)")
    parent_id = _parent_run(handle.study, spec, experiment, storage)
    tracking.adopt_launcher(parent_id, f"{spec.name} [study]")
    say(echo, f"study {spec.name}: {trials.counted(handle.study)} of {total} trials already counted; "
              f"storage {tracking.redact(storage)}")
    with tracking.tracked_run(run_id=parent_id, tags={tracking.TAG_KIND: "study", tracking.TAG_STUDY: spec.name}):
        if workers <= 1:
            run_worker(spec, storage, total, parent_id, threads=threads, progress=progress, echo=echo)
        else:
            _run_worker_processes(spec, storage, total, parent_id, workers, threads, echo)
        _drain(spec, storage, total, parent_id, threads, echo)
        handle = StudyHandle(spec, storage)
        outcome = _summarise(handle.study, spec, parent_id)
    # After the study's parent run is closed: the confirmation's own parent nests under it, and MLflow
    # would otherwise hang every new run under the run still active in this process.
    if confirm and outcome.best_trial is not None:
        outcome.confirmation = run_confirmation(
            spec, handle.study, parent_id, storage, seeds=confirm_seeds, workers=workers, threads=threads,
            register=register_best, retest=retest, claim=lambda key: _first_to_register(handle.study, storage, key),
            echo=echo,
        )
    elif register_best:
        say(echo, "no champion registered: the winner of one seed per trial is not confirmed (add a [confirm] "
                  "table or --confirm to train the top configs again over fresh seeds)")
    return outcome


def _drain(spec: StudySpec, storage: str, total: int, parent_id: str, threads: int | None,
           echo: Callable[[str], None]) -> None:
    """Wait until no trial runs anywhere, so every machine summarises (and registers) the same
    finished study; run the trials a dead worker left to do meanwhile."""
    told = False
    while True:
        handle = StudyHandle(spec, storage)
        handle.reap()
        if trials.counted(handle.study) < total or trials.waiting(handle.study):
            run_worker(spec, storage, total, parent_id, threads=threads, echo=echo)
            continue
        running = trials.running(handle.study)
        if not running:
            return
        if not told:
            say(echo, f"waiting for trial(s) {[t.number for t in running]} to end on other workers")
            told = True
        time.sleep(POLL_S)


def _first_to_register(study: optuna.Study, storage: str, key: str) -> bool:
    """Whether this process measures test and registers the champion for the confirmation ``key``
    names: the first of the study's top-level processes (one per machine) to ask, so that test is
    measured once and the registry gets one version, not one per machine."""
    with queue_storage.slot_lock(storage):
        if study.user_attrs.get(REGISTERED_ATTR) == key:
            return False
        study.set_user_attr(REGISTERED_ATTR, key)
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
    # Each worker its own sampler seed: the same seed everywhere would sample the same points.
    handle = StudyHandle(spec, storage, spec.sampler_seed + worker_index)
    objective = Objective(spec, parent_id, load_study_data(spec), progress=progress, echo=echo if progress is not False else None)
    consecutive_failures = 0
    while True:
        handle.reap()  # a dead worker's trial: FAILed, and queued again by the retry callback
        trial = trials.claim(handle.study, storage, total)
        if trial is None:
            return
        trial.set_user_attr("claimed_by", f"{socket.gethostname()}:{os.getpid()}")
        last = trials.run(handle.study, handle.storage, trial, objective)
        epochs = last.user_attrs.get("epochs_trained", "?")
        value = f" {spec.metric}={last.value:.4f} after {epochs} epoch(s)" if last.value is not None else ""
        echo(f"[worker {worker_index}] trial {last.number}: {last.state.name}{value}")
        consecutive_failures = consecutive_failures + 1 if last.state == TrialState.FAIL else 0
        if consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
            raise SearchError(
                f"{consecutive_failures} trials in a row FAILED (last: trial {last.number}, "
                f"{last.user_attrs.get('fail_reason', 'see its MLflow run')}); stopping this worker"
            )


def _run_worker_processes(spec, storage, total, parent_id, workers, threads, echo) -> None:
    """K processes on this host, each with its share of the cores (spinning OpenMP threads of
    processes that oversubscribe the cores slow each other down by orders of magnitude)."""
    per_worker = threads or max(1, (os.cpu_count() or 1) // workers)
    # The storage URL (a password, maybe) in the environment, not on the command line: ps shows argv.
    env = {**os.environ, "OMP_NUM_THREADS": str(per_worker), "MKL_NUM_THREADS": str(per_worker), STORAGE_ENV: storage}
    env.pop("MLFLOW_RUN_ID", None)
    procs = []
    for index in range(workers):
        cmd = [
            sys.executable, "-m", "bench", "search", str(spec.path), "--n-trials", str(total),
            "--threads", str(per_worker), "--worker-of", parent_id, "--worker-index", str(index),
        ]
        procs.append(subprocess.Popen(cmd, env=env))
    codes = [p.wait() for p in procs]
    for index, code in enumerate(codes):
        if code != 0:
            say(echo, f"worker {index} exited with status {code}; its unfinished trial is FAILed and retried")


def load_study_data(spec: StudySpec) -> DataSplits:
    """The splits every trial of the study trains on (the same for all: only knobs and lr vary)."""
    return load_data(spec.config({}))


def _parent_run(study: optuna.Study, spec: StudySpec, experiment: str | None, storage: str) -> str:
    """The study's one MLflow parent run, created once; its id lives in the study so every
    worker on any machine nests its trials under it. Created under the slot lock: machines
    starting at once would otherwise each make one."""
    with queue_storage.slot_lock(storage):
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
        return run_id


def _summarise(study: optuna.Study, spec: StudySpec, parent_id: str) -> SearchOutcome:
    all_trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in all_trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    epochs = sum(len(t.intermediate_values) for t in all_trials)
    finished = [t for t in all_trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if finished else None
    outcome = SearchOutcome(
        study_name=spec.name,
        parent_run_id=parent_id,
        n_trials=len(all_trials),
        states=states,
        best_value=best.value if best else None,
        best_params=dict(best.params) if best else {},
        best_trial=best.number if best else None,
        epochs_trained=epochs,
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
    tracking.log_artifact_text(parent_id, "trials.json", json.dumps([_trial_record(t) for t in all_trials], indent=2))
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
