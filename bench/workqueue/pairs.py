"""A suite's (row, seed) pairs handed out to worker processes on one or many machines.

Optuna's storage is the shared state: each pair is an enqueued trial (user attrs ``label``
and ``seed``), and ``claim`` pops one under the slot lock, so two workers never get the same
pair. With PostgreSQL a claimed pair runs under a heartbeat, and a worker that stops beating
has its trial FAILed and queued again by the storage's retry callback; with a journal file
(one host) workers record host and PID, and a dead worker's trial is FAILed and queued again
by the next worker that looks. A trial's value is the run's val accuracy, so
optuna-dashboard shows a suite's progress.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable

import optuna
from optuna.trial import TrialState

from .. import tracking
from ..specfile import SpecError
from . import trials
from .storage import fail_dead_local_trials, fail_stale_trials, open_storage, retried_number, slot_lock

PARENT_ATTR = "mlflow_parent_run_id"  # the MLflow run every worker nests its runs under
PLAN_ATTR = "bench_plan_digest"  # what the study was made for: another plan is refused
DONE_ATTR = "bench_queue_closed"  # set when no more pairs will be published (rounds of --seeds auto)


class QueueError(SpecError):
    """A shared study that cannot be used for this plan; raised before any training."""


@dataclasses.dataclass(frozen=True)
class Claim:
    label: str
    seed: int
    number: int  # the trial's number in the queue's study
    retry_of: int | None  # the trial number of a dead worker's attempt at this pair, if any
    trial: optuna.Trial


IN_PROCESS = "memory://"  # the queue of a suite run in one process: Optuna's in-memory storage, no file, no lock


class PairQueue:
    """``storage_url``: a journal file, a database, or ``IN_PROCESS`` (a serial suite: the same
    queue and loop as workers, held in this process's memory)."""

    def __init__(self, storage_url: str, study_name: str) -> None:
        self.url = storage_url
        self.name = study_name
        # "memory://" is a URL no lock applies to (slot_lock locks journal files and PostgreSQL only).
        self.storage = optuna.storages.InMemoryStorage() if storage_url == IN_PROCESS else open_storage(storage_url)

    @property
    def shown_url(self) -> str:
        return tracking.redact(self.url)

    def exists(self) -> bool:
        """Whether the study was made already (by this command before, or another machine)."""
        try:
            self.storage.get_study_id_from_name(self.name)
        except KeyError:
            return False
        return True

    def lock(self):
        """The queue's slot lock, for a decision only one process may take at a time (who owns a parent)."""
        return slot_lock(self.url)

    def create(self, plan_digest: str) -> bool:
        """Create the study; False when another process already did (then it is shared)."""
        try:
            study = optuna.create_study(storage=self.storage, study_name=self.name, direction="maximize")
        except optuna.exceptions.DuplicatedStudyError:
            return False
        study.set_user_attr(PLAN_ATTR, plan_digest)
        return True

    @property
    def study(self) -> optuna.Study:
        return optuna.load_study(study_name=self.name, storage=self.storage)

    def set_parent(self, run_id: str) -> None:
        self.study.set_user_attr(PARENT_ATTR, run_id)

    def parent(self, plan_digest: str, wait_s: float = 120.0) -> str:
        """The parent run id the creating process recorded (waiting for it briefly); raises
        ``QueueError`` when the study was made for another plan (rows, seeds or settings)."""
        deadline = time.monotonic() + wait_s
        while True:
            attrs = self.study.user_attrs
            found = attrs.get(PLAN_ATTR)
            if found is not None and found != plan_digest:
                raise QueueError(
                    f"study {self.name!r} in {self.shown_url} holds another plan of this suite "
                    f"(different rows, seeds or settings); pass --study-name to start a separate one"
                )
            if attrs.get(PARENT_ATTR):
                return attrs[PARENT_ATTR]
            if time.monotonic() > deadline:
                raise QueueError(
                    f"study {self.name!r} in {self.shown_url} has no parent run after {wait_s:.0f} s: "
                    "the process that created it died before recording one; pass --study-name to start anew"
                )
            time.sleep(0.5)

    def publish(self, pairs: Iterable[tuple[str, int]], finished: set[tuple[str, int]]) -> int:
        """Enqueue the pairs that neither FINISHED nor sit in the queue (WAITING or RUNNING); the count."""
        with slot_lock(self.url):
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
                queued.add((label, seed))
                added += 1
            return added

    def close(self, closed: bool = True) -> None:
        """Say whether more pairs may still be published (a suite deciding its next round)."""
        self.study.set_user_attr(DONE_ATTR, closed)

    @property
    def open(self) -> bool:
        return self.study.user_attrs.get(DONE_ATTR) is False

    def reap(self) -> list[int]:
        """FAIL (and queue again) the trials of workers that died: dead PIDs here, stale heartbeats anywhere."""
        study = self.study
        return fail_dead_local_trials(study, retry=True) + fail_stale_trials(study)

    def claim(self) -> Claim | None:
        """The next WAITING pair, now RUNNING and this process's; None when none waits."""
        study = self.study
        trial = trials.claim(study, self.url)
        if trial is None:
            return None
        frozen = study.get_trials(deepcopy=False)[trial.number]
        return Claim(str(frozen.user_attrs["label"]), int(frozen.user_attrs["seed"]), trial.number,
                     retried_number(frozen), trial)

    def running(self) -> int:
        return len(trials.running(self.study))

    def waiting(self) -> int:
        return len(trials.waiting(self.study))

    def pairs(self) -> set[tuple[str, int]]:
        """Every pair ever queued in this study, whatever became of it."""
        return {(str(t.user_attrs["label"]), int(t.user_attrs["seed"])) for t in self.study.get_trials(deepcopy=False)
                if "label" in t.user_attrs}

    def run(self, claim: Claim, work: Callable[[], float]) -> tuple[bool, str]:
        """Run ``work`` (returning the val accuracy) for a claimed pair under the heartbeat;
        (finished, fail reason). An error of the run itself FAILs it, not retried: it would fail again."""
        frozen = trials.run(self.study, self.storage, claim.trial, lambda _: work())
        return frozen.state == TrialState.COMPLETE, frozen.user_attrs.get("fail_reason", "")
