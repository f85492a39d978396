"""Optuna storages as a work queue's shared state: which backend, locks, heartbeats, dead workers.

- a path (or ``journal:PATH``): Optuna's journal file, safe for many processes on one host;
  a worker killed mid-trial is found by its dead PID (the journal has no heartbeat);
- ``postgresql://...`` (or another SQLAlchemy URL): Optuna's RDB storage with a heartbeat,
  for many machines; a worker that stops beating has its trial FAILed and queued again.

Only Optuna's public API is used: ``RDBStorage(heartbeat_interval=...)``,
``RetryHeartbeatStaleTrialCallback``, ``optuna.storages.fail_stale_trials`` and the storage's
public methods (``record_heartbeat``, ``get_trial_id_from_study_id_trial_number``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import filelock
import optuna
from optuna.trial import FrozenTrial, TrialState

from .. import tracking
from ..dblock import database_lock
from ..runtime import process_alive

# Our own lines say what happened to each trial; Optuna's INFO lines would repeat them.
optuna.logging.set_verbosity(optuna.logging.WARNING)

STORAGE_ENV = "BENCH_STORAGE_URL"  # a storage URL in the environment: workers get it so, never on argv (ps shows argv)
HEARTBEAT_INTERVAL_S = 10  # a live worker's trial is touched this often
HEARTBEAT_GRACE_S = 30  # ... and counted dead after this long without a beat
MAX_RETRIES = 2  # a trial (or a suite's pair) whose worker died is run again at most this often


def is_database(url: str) -> bool:
    return "://" in url


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """A database URL -> RDB storage with heartbeat; anything else is a journal file path."""
    if is_database(url):
        if url.startswith("sqlite"):
            print("bench: sqlite storage is not safe for parallel workers; prefer a journal file", file=sys.stderr)
        # Machines starting at once would race to create Optuna's tables in a fresh database.
        with warnings.catch_warnings(), database_lock(url, "schema"):
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: "experimental"
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=HEARTBEAT_INTERVAL_S,
                grace_period=HEARTBEAT_GRACE_S,
                heartbeat_stale_trial_callback=retry_callback(),
            )
    path = Path(url.removeprefix("journal:"))
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def retry_callback() -> optuna.storages.RetryHeartbeatStaleTrialCallback:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)


def heartbeat_interval(storage: optuna.storages.BaseStorage) -> int | None:
    """Seconds between beats, or None where the storage keeps no heartbeat (journal files)."""
    get = getattr(storage, "get_heartbeat_interval", None)  # public storage method, not a private module
    return get() if get is not None else None


@contextlib.contextmanager
def slot_lock(url: str) -> Iterator[None]:
    """Serialise "look at the queue, then take or make a trial" across workers.

    A file lock (``filelock``) beside a journal on this host; a PostgreSQL advisory lock for a
    shared database. Other databases get none: n_trials may then be exceeded by workers - 1.
    """
    if url.startswith("postgresql"):
        with database_lock(url, "trials"):
            yield
    elif is_database(url):
        yield
    else:
        lock_path = Path(url.removeprefix("journal:")).with_suffix(".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(lock_path):
            yield


@contextlib.contextmanager
def heartbeat(storage: optuna.storages.BaseStorage, study_name: str, trial_number: int) -> Iterator[None]:
    """Beat for a claimed trial while the block runs, as ``Study.optimize`` does for its own trials.

    Written here because Optuna's own heartbeat thread lives in a private module; the beat itself
    is the storage's public ``record_heartbeat`` (``BaseHeartbeat``'s interface, as is
    ``get_heartbeat_interval``).
    """
    interval = heartbeat_interval(storage)
    if interval is None:
        yield
        return
    study_id = storage.get_study_id_from_name(study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial_number)
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial_id)  # public storage method, not a private module
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-trial-{trial_number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def ask(study: optuna.Study) -> optuna.Trial:
    """``study.ask()``, without Optuna's warning that heartbeats are meant for ``Study.optimize``:
    our trials run under ``heartbeat`` above."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        return study.ask()


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Optuna's own recovery with a heartbeat storage: trials whose worker stopped beating are
    FAILed, and queued again by the storage's retry callback. Their numbers; [] for journal files."""
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return sorted({t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))} - before)


def claim_for_this_process(trial: optuna.Trial) -> None:
    """Record who runs the trial, so a dead process's trial can be found (journal files have no heartbeat)."""
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())


def fail_dead_local_trials(study: optuna.Study, retry: bool = False) -> list[int]:
    """RUNNING trials whose worker process on this host is gone (SIGKILL, OOM, power): FAIL them.

    Their MLflow runs are closed as FAILED too. ``retry``: queue each again as a WAITING copy
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
            retry_callback()(study, study.get_trials(deepcopy=False)[trial.number])
    return failed


def retried_number(trial: FrozenTrial) -> int | None:
    """The number of the dead worker's trial this one retries, if it is a retry."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
