"""Running a suite: one MLflow parent run, one child run per row x seed, rounds of seeds, resumable.

There is one way to run a suite, whatever runs its pairs: the process that owns the parent run
queues a round of pairs (``workers.PairQueue``), the pairs are trained by this process (a serial
suite: one in-process worker over an in-memory queue), by K worker processes here, or by every
machine started with the same ``--storage``; when the queue runs dry the owner judges the round
(a look), records it on the parent, and queues the next round of ``--seeds auto``, if any.

Resume re-opens a parent: FINISHED pairs are skipped, interrupted ones continue from their
checkpoint in the same run, the recorded design and looks are continued (a changed design is
refused once a look spent alpha), and a parent whose runs were trained under other settings is
refused. A failing pair is marked FAILED and the suite goes on; the parent then ends FAILED.
"""

from __future__ import annotations

import contextlib
import os
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from .. import checkpoint as ckpt
from .. import tracking
from ..config import TrainConfig
from ..verdicts import AutoSeeds
from ..workqueue import IN_PROCESS, PairQueue, QueueError
from .parent import (
    SuiteFailed, SuiteOutcome, check_same_settings, data_for, find_parent, log_summary, open_parent, owner_gone,
    record_on_parent, record_rounds, restore_rounds,
)
from .rounds import TAG_AUTO_STOP, Rounds, look_data
from .spec import Row, Suite, SuiteError, plan_digest, settings_digest
from . import verdict_data
from .curves import learning_curves
from .summary import DIVERGED, FINISHED, UNFINISHED, decisions, pair_outcomes
from .workers import (
    SUITE_STORAGE_DIR, Worker, costliest_first, start_workers, trained_here, wait_for, wait_until_idle, work,
)

__all__ = ["SuiteFailed", "SuiteOutcome", "run_suite", "run_suite_workers", "default_study_name"]


def run_suite(
    suite: Suite,
    profile: str,
    *,
    seeds: Sequence[int] | None = None,
    auto: AutoSeeds | None = None,
    margin: float | None = None,
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
    nested_under: str | None = None,
    callbacks_for: Callable[[Row, TrainConfig], Iterable[Any]] | None = None,
) -> SuiteOutcome:
    """Train every row x seed of ``profile`` as child runs of one parent run.

    ``seeds``: the same seeds for every row (default: the profile's); ``auto``: rounds of
    ``--seeds auto`` instead. ``resume``: True re-opens the latest parent of this suite and
    profile, a string re-opens that parent run id. ``rows``: only these row labels. ``workers``:
    processes on this machine (1: this process trains every pair); ``storage``: an Optuna storage
    shared with other machines started with the same command. ``worker_of``: this process was
    started by a coordinator for that parent run. ``checkpoints``: a ``checkpoint.Policy`` or None.
    ``epoch_lines``: one line per epoch. ``nested_under``: the parent run is itself a child of that
    run (a search's confirmation). ``callbacks_for``: extra trainer callbacks per pair, for pairs
    trained in this process (tests use them).
    """
    started = pd.Timestamp.now(tz="UTC")
    suite = suite.at_profile(profile)
    labels = [r.label for r in suite.rows if not rows or r.label in rows]
    margin = suite.margin if margin is None else margin
    rounds = Rounds(suite, profile, labels, seeds, auto, margin)
    every = suite.plan(profile, overrides=overrides, rows=rows, seeds_by_row=rounds.every_seed())
    first = suite.plan(profile, overrides=overrides, rows=rows, seeds_by_row=rounds.first())
    key = f"{settings_digest(every)} {auto.schedule}" if auto else plan_digest(first)
    # Every data set the pairs need, loaded before anything is queued or opened: data that cannot be
    # found is this machine's problem, a one-line error, not a failure of each pair it would claim.
    data_cache: dict = {}
    for _, config in every:
        data_for(config, data_cache)
    try:
        queue, parent_id, owner = _join(suite, profile, every, first, key, rounds, experiment, resume, workers,
                                        storage, study_name, worker_of, echo, nested_under)
    except QueueError as exc:
        raise SuiteError(str(exc)) from None
    worker = Worker(suite, profile, {(row.label, config.seed): (row, config) for row, config in every}, parent_id,
                    worker_index, echo, progress, log_models, checkpoints, epoch_lines, callbacks_for, data_cache)
    if worker_of:
        work(queue, worker, linger=True)
        return SuiteOutcome(parent_id, pd.DataFrame(), worker.claimed - len(worker.failed), 0, worker.failed)
    procs = []
    try:
        skipped = _queue_round(queue, worker, rounds, every, margin, rows) if owner else 0
        if workers > 1:
            procs = start_workers(suite, profile, every, overrides or {}, rows, workers, queue, parent_id,
                                  log_models=log_models, checkpoints=checkpoints, epoch_lines=epoch_lines,
                                  echo=echo)
        last = _rounds_loop(queue, worker, procs, rounds if owner else None, margin, workers)
        judged_at = worker.claimed
        if owner and auto:
            queue.close(True)
            say(echo, f"--seeds auto stopped: {rounds.stop_reason}")
            tracking.set_tags(parent_id, {TAG_AUTO_STOP: rounds.stop_reason})
        wait_for(procs, echo)
        work(queue, worker, linger=not owner and queue.open)  # anything a dead worker left
    except BaseException as exc:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        if owner:
            with contextlib.suppress(Exception):  # other machines stop waiting for rounds that will not come
                queue.close(True)
            interrupted = isinstance(exc, KeyboardInterrupt)
            tracking.end_run(parent_id, "KILLED" if interrupted else "FAILED",
                             "interrupted (Ctrl-C)" if interrupted else f"{type(exc).__name__}: {exc}")
        raise
    # The last look's summary stands unless pairs were trained after it (what a dead worker left).
    last = last if worker.claimed == judged_at else None
    return _close(worker, rounds, owner, margin, [os.getpid(), *(p.pid for p in procs)], started, skipped, last)


run_suite_workers = run_suite  # the same function; kept under the name callers and tests know


def say(echo: Callable[[str], None], text: str) -> None:
    """``echo`` a line wrapped to the 100 columns everything a suite prints fits in."""
    echo("\n".join(textwrap.wrap(text, 100, subsequent_indent="    ")))


def _join(suite: Suite, profile: str, every, first, key: str, rounds: Rounds, experiment: str | None,
          resume: str | bool, workers: int, storage: str | None, study_name: str | None, worker_of: str | None,
          echo: Callable[[str], None], nested_under: str | None) -> tuple[PairQueue, str, bool]:
    """(queue, parent run id, whether this process owns the parent: queues its rounds and records its looks)."""
    if worker_of:
        return PairQueue(str(storage), str(study_name)), worker_of, False
    experiment_id = tracking.experiment_id_for(experiment, suite.experiment)
    device = every[0][1].device if every else "auto"

    def parent_to_resume() -> str | None:
        found = find_parent(suite, profile, resume, experiment_id, nested_under)
        if found:  # both checks before the parent is touched
            check_same_settings(found, every)
            restore_rounds(rounds, found)
        return found

    if storage is None:
        parent_id = open_parent(suite, profile, experiment_id, parent_to_resume(), nested_under, device)
        if workers == 1:
            queue = PairQueue(IN_PROCESS, f"{suite.name} [{profile}] {parent_id}")
            queue.create(key)
            return queue, parent_id, True
        # One study per plan: a resume that changes the plan before any look queues in a study of its own.
        queue = PairQueue(str(SUITE_STORAGE_DIR / f"{parent_id}.journal"),
                          study_name or f"{suite.name} [{profile}] {parent_id} plan {key}")
        if not queue.create(key):
            queue.parent(key)  # resuming: the same plan, or a clear error
        return queue, parent_id, True
    queue = PairQueue(storage, study_name or default_study_name(suite, profile, first, key))
    if not queue.exists():
        found = parent_to_resume()  # a refused resume leaves no study behind without a parent
        if queue.create(key):
            return queue, open_parent(suite, profile, experiment_id, found, nested_under, device), True
    parent_id = queue.parent(key)
    if resume:
        with queue.lock():  # of several machines resuming at once, one takes over
            if owner_gone(parent_id):
                if isinstance(resume, str) and resume != parent_id:
                    raise SuiteError(f"--resume {resume}: study {queue.name!r} belongs to parent run {parent_id}")
                check_same_settings(parent_id, every)
                restore_rounds(rounds, parent_id)
                say(echo, f"taking over parent run {parent_id} of study {queue.name!r}: its owner stopped")
                return queue, open_parent(suite, profile, experiment_id, parent_id, nested_under, device), True
    say(echo, f"joining study {queue.name!r} (parent run {parent_id})")
    return queue, parent_id, False


def default_study_name(suite: Suite, profile: str, plan: Sequence[tuple[Row, TrainConfig]], key: str) -> str:
    """How machines started with the same command find each other: suite, profile, seeds and the plan's digest."""
    if " auto " in key:
        digest, _, schedule = key.partition(" auto ")
        return f"{suite.name} [{profile}] seeds auto {schedule} plan {digest}"
    seeds = sorted({config.seed for _, config in plan})
    return f"{suite.name} [{profile}] seeds {','.join(map(str, seeds))} plan {key}"


def _queue_round(queue: PairQueue, worker: Worker, rounds: Rounds, every, margin: float,
                 rows: Sequence[str] | None) -> int:
    """Record the design on the parent and queue the current round's pairs still to train; the number
    of them already FINISHED. A round already judged is final: nothing of it is queued again."""
    tracking.mark_stale_children(worker.parent_id)
    record_on_parent(worker.parent_id, worker.suite, rows, margin, rounds, every)
    if rounds.auto:
        queue.close(False)  # open: workers wait for the rounds to come
    outcomes = pair_outcomes(tracking.child_runs(worker.parent_id))
    states = dict(zip(zip(outcomes.get(f"tags.{tracking.TAG_LABEL}", []), outcomes.get("seed", [])),
                      outcomes.get("pair_state", [])))
    wanted = rounds.pairs()
    finished = {pair for pair, state in states.items() if state in (FINISHED, DIVERGED)}
    # Failed or interrupted pairs of the round not yet judged are tried again (this is a resume);
    # pairs a look judged are final.
    skip = finished | rounds.final_pairs()
    added = queue.publish(_in_order(queue, _plan_of(worker, wanted)), skip)
    done = len(finished & wanted)
    where = "" if queue.url == IN_PROCESS else f" in study {queue.name!r} ({queue.shown_url})"
    say(worker.echo, f"suite {worker.suite.name} [{worker.profile}]: {added} pair(s) queued{where}, {done} already "
                     f"FINISHED under parent run {worker.parent_id}")
    queue.set_parent(worker.parent_id)  # last: processes joining wait for it, and then find the pairs queued
    return done


def _plan_of(worker: Worker, pairs: Iterable[tuple[str, int]]) -> list[tuple[Row, TrainConfig]]:
    wanted = set(pairs)
    return [worker.by_pair[pair] for pair in worker.by_pair if pair in wanted]


def _in_order(queue: PairQueue, plan: list[tuple[Row, TrainConfig]]) -> list[tuple[str, int]]:
    """The order to hand pairs out: the suite's own in this process (one worker: the order changes
    no wall time, and a log reads as the file does), else longest first, so no worker is left with
    a long one at the end."""
    if queue.url == IN_PROCESS:
        return [(row.label, config.seed) for row, config in plan]
    return costliest_first(plan)


def _rounds_loop(queue: PairQueue, worker: Worker, procs: list, rounds: Rounds | None, margin: float,
                 workers: int) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Until the suite needs no more runs: the pairs queued are trained (by the workers, or here); the
    owner (``rounds`` given) then judges them, a look recorded on the parent, and queues the next
    round of ``--seeds auto``. The last judgment's (summary, pair outcomes), for the owner."""
    while True:
        if procs:
            wait_until_idle(queue, procs, worker.echo)
        # Here: every pair when there are no workers, else what dead workers left (nothing, usually).
        work(queue, worker, linger=rounds is None and queue.open)
        if rounds is None:
            return None
        summary, outcomes = log_summary(worker.parent_id, worker.suite, margin, rounds)
        tested = bool(summary["baseline_p_holm"].notna().any()) if len(summary) else False
        if rounds.judged(tested, look_data(outcomes), decisions(summary, rounds.looks_taken + 1)):
            worker.echo(f"look {rounds.looks_taken} of at most {rounds.looks} taken")
            verdict_data.publish_look(worker.parent_id, summary, rounds.looks_taken)
        before = rounds.pairs()
        following = rounds.next(summary, workers)
        record_rounds(worker.parent_id, rounds)
        if not following:
            return summary, outcomes
        # Only the new seeds: a judged round is final, its failed or unfinished pairs stay as they are.
        added = queue.publish(_in_order(queue, _plan_of(worker, rounds.pairs() - before)), _tried(worker.parent_id))
        say(worker.echo, f"next round of --seeds auto: {added} pair(s) queued "
                         f"({', '.join(f'{k} -> {len(v)}' for k, v in following.items())} seeds)")


def _tried(parent_id: str) -> set[tuple[str, int]]:
    """Pairs with a run that ended by itself (finished, diverged or failed): never trained again."""
    outcomes = pair_outcomes(tracking.child_runs(parent_id))
    return {(label, int(seed)) for label, seed, state in zip(outcomes.get(f"tags.{tracking.TAG_LABEL}", []),
                                                              outcomes.get("seed", []), outcomes.get("pair_state", []))
            if state != UNFINISHED}


def _close(worker: Worker, rounds: Rounds, owner: bool, margin: float, pids: Sequence[int], started: pd.Timestamp,
           skipped: int, last: tuple[pd.DataFrame, pd.DataFrame] | None) -> SuiteOutcome:
    """The summary (``last``, when nothing changed since it was logged), and the parent ended
    FINISHED, or FAILED naming the pairs that did not finish."""
    if not owner:  # a machine that joined: judge as the owner recorded
        restore_rounds(rounds, worker.parent_id)
    summary, outcomes = last or log_summary(worker.parent_id, worker.suite, margin, rounds)
    here = trained_here(outcomes, pids, started)
    states = dict(zip(zip(outcomes.get(f"tags.{tracking.TAG_LABEL}", []), outcomes.get("seed", [])),
                      outcomes.get("pair_state", [])))
    planned = sorted(rounds.pairs())
    missing = [f"{label} seed={seed}" for label, seed in planned if states.get((label, seed)) not in (FINISHED, DIVERGED)]
    outcome = SuiteOutcome(worker.parent_id, summary, here, skipped, worker.failed, len(planned) - len(missing),
                           len(planned), rounds.stop_reason)
    if not owner and tracking.get_run(worker.parent_id).info.status != "RUNNING":
        return outcome  # the owner ended it (done, or stopped: a --resume takes over): its status stands
    # Every epoch of every run, so the suite can be judged again without this store (curves.csv).
    tracking.log_table(worker.parent_id, learning_curves(outcomes), "curves", text=False)
    if missing:
        tracking.end_run(worker.parent_id, "FAILED", f"{len(missing)} run(s) did not finish: {', '.join(missing)}")
        raise SuiteFailed(worker.parent_id, missing, summary)
    tracking.end_run(worker.parent_id, "FINISHED")
    return outcome
