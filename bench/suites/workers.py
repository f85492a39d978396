"""A suite on several worker processes here, and on any machine started with the same storage.

The row x seed pairs are queued in a ``bench.workqueue.PairQueue``: a journal file under
``optuna/suites/`` when no storage is given (this machine only), else the given storage
(PostgreSQL for several machines), where the study's name (default: suite, profile, seeds
and a digest of the plan) is how processes on different machines find each other. The first
process creates the parent run and queues the pairs that have not FINISHED, costliest first;
every process then claims pairs until none is waiting or running. A pair whose worker died is
queued again and continues from its checkpoint in the same child run. Each run is seeded as
in a serial suite, so at equal threads the summary is the same.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .. import checkpoint as ckpt
from .. import tracking
from ..config import TrainConfig
from ..data import DataSplits
from ..progress import EpochLine
from ..runner import resumable
from ..train import estimated_training_flops
from ..workqueue import STORAGE_ENV, PairQueue, QueueError
from ..verdicts import AutoSeeds
from .rounds import Rounds
from .run import (
    SuiteFailed, SuiteOutcome, record_stop, check_same_settings, data_for, find_parent, finished_pairs,
    interrupted_pairs, log_summary, open_parent, pair_name, record_on_parent, train_pair,
)
from .spec import Row, Suite, SuiteError, plan_digest, settings_digest

SUITE_STORAGE_DIR = Path("optuna") / "suites"  # journal files of suites run on several workers of one machine
POLL_S = 2.0  # an idle worker looks for a retried or unfinished pair this often


def run_suite_workers(
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
) -> SuiteOutcome:
    """``run_suite`` on ``workers`` processes here, and on any machine started with the same ``storage``.

    With ``auto`` the process that owns the parent judges the suite whenever the queue runs dry
    and queues the next round's pairs; the other processes wait for them while the queue is open.
    ``worker_of``: this process was started by a coordinator for that parent run.
    """
    started = pd.Timestamp.now(tz="UTC")
    rounds = Rounds(suite, rows or [r.label for r in suite.rows], seeds, auto)
    margin = suite.margin if margin is None else margin
    every = suite.plan(profile, overrides=overrides, rows=rows, seeds_by_row=rounds.every_seed(profile))
    first = suite.plan(profile, overrides=overrides, rows=rows, seeds_by_row=rounds.first(profile))
    key = f"{settings_digest(every)} auto {auto.start},{auto.step},{auto.max_seeds}" if auto else plan_digest(first)
    try:
        queue, parent_id, owner = _join(suite, profile, first, every, key, experiment, resume, storage, study_name,
                                        worker_of, echo, nested_under)
    except QueueError as exc:
        raise SuiteError(str(exc)) from None
    ctx = _Context(suite, profile, {(row.label, config.seed): (row, config) for row, config in every}, parent_id,
                   worker_index, echo, progress, log_models, checkpoints, epoch_lines)
    done: set[tuple[str, int]] = set()
    if not worker_of:
        done = _queue_first_round(queue, ctx, first, owner, bool(resume), auto is not None,
                                  lambda: record_on_parent(parent_id, suite, rows, margin, rounds.looks, every))
    try:
        procs = _start_workers(suite, profile, every, overrides or {}, rows, workers, queue, parent_id,
                               log_models=log_models, checkpoints=checkpoints, epoch_lines=epoch_lines,
                               echo=echo) if workers > 1 else []
        _coordinate(queue, ctx, procs, rounds if owner else None, margin, workers)
        if owner and auto:
            queue.close(True)
            record_stop(parent_id, rounds, echo)
        _wait(procs, echo)
        # Anything a dead worker left: the coordinator trains it itself.
        _work(queue, ctx, linger=not owner and auto is not None)
    except KeyboardInterrupt:
        if owner:
            tracking.end_run(parent_id, "KILLED", "interrupted (Ctrl-C)")
        raise
    here = _trained_here(parent_id, [os.getpid(), *(p.pid for p in procs)], started)
    if worker_of:
        return SuiteOutcome(parent_id, pd.DataFrame(), here, 0, ctx.failed)
    return _close(queue, ctx, set(_pairs(first)), margin, rounds, here, len(done))


def _queue_first_round(queue: PairQueue, ctx: _Context, first, owner: bool, resume: bool, auto: bool,
                       record: Callable[[], None]) -> set[tuple[str, int]]:
    """Queue the first round's pairs that have not FINISHED (the owner, or a resume); the FINISHED ones."""
    tracking.mark_stale_children(ctx.parent_id)
    done = finished_pairs(ctx.parent_id) & set(ctx.by_pair)
    if owner:
        record()
        if auto:
            queue.close(False)  # open: workers wait for the rounds to come
    if owner or resume:
        added = queue.publish(_costliest_first(first), done)
        ctx.echo(f"suite {ctx.suite.name} [{ctx.profile}]: {added} pair(s) queued in study {queue.name!r} "
                 f"({queue.shown_url}), {len(done)} already FINISHED under parent run {ctx.parent_id}")
    if owner:
        queue.set_parent(ctx.parent_id)  # last: processes joining wait for it, and then find the pairs queued
    return done


def _close(queue: PairQueue, ctx: _Context, first: set[tuple[str, int]], margin: float, rounds: Rounds, here: int,
           skipped: int) -> SuiteOutcome:
    """The summary, and the parent ended FINISHED, or FAILED naming the pairs that did not finish."""
    summary = log_summary(ctx.parent_id, ctx.suite, margin, rounds.looks)
    finished, planned = finished_pairs(ctx.parent_id), queue.pairs() | first
    missing = [f"{label} seed={seed}" for label, seed in sorted(planned) if (label, seed) not in finished]
    outcome = SuiteOutcome(ctx.parent_id, summary, here, skipped, ctx.failed, len(planned) - len(missing),
                           len(planned), rounds.stop_reason)
    if missing:
        tracking.end_run(ctx.parent_id, "FAILED", f"{len(missing)} run(s) did not finish: {', '.join(missing)}")
        raise SuiteFailed(ctx.parent_id, missing, summary)
    tracking.end_run(ctx.parent_id, "FINISHED")
    return outcome


def _coordinate(queue: PairQueue, ctx: _Context, procs: list[subprocess.Popen], rounds: Rounds | None, margin: float,
                workers: int) -> None:
    """Until the suite needs no more runs: let the workers (or this process) empty the queue; the
    owner of ``--seeds auto`` then judges what FINISHED and queues the next round."""
    while True:
        if procs:
            _wait_until_idle(queue, procs, ctx)
        else:
            _work(queue, ctx, linger=rounds is None and queue.open)
        if rounds is None or rounds.auto is None:
            return
        summary = log_summary(ctx.parent_id, ctx.suite, margin, rounds.looks)
        following = rounds.next(summary, workers)
        if not following:
            return
        plan = ctx.suite.plan(ctx.profile, overrides=None, rows=None, seeds_by_row=following)
        plan = [(row, ctx.by_pair[(row.label, config.seed)][1]) for row, config in plan]
        added = queue.publish(_costliest_first(plan), finished_pairs(ctx.parent_id))
        ctx.echo(f"next round of --seeds auto: {added} pair(s) queued "
                 f"({', '.join(f'{k} -> {v[-1] + 1}' for k, v in following.items())} seeds)")


def _wait_until_idle(queue: PairQueue, procs: list[subprocess.Popen], ctx: _Context) -> None:
    """Return when nothing waits or runs in the queue, or when every worker process has ended."""
    while any(p.poll() is None for p in procs):
        dead = queue.reap()
        if dead:
            ctx.echo(f"trial(s) {dead} belonged to a worker that died: queued again")
        if queue.waiting() == 0 and queue.running() == 0:
            return
        time.sleep(POLL_S)


def _wait(procs: list[subprocess.Popen], echo: Callable[[str], None]) -> None:
    for index, proc in enumerate(procs, 1):
        code = proc.wait()
        if code != 0:
            echo(f"worker {index} exited with status {code}; a pair it left unfinished is queued again")


def _trained_here(parent_id: str, pids: Sequence[int], since: pd.Timestamp) -> int:
    """Pairs FINISHED under the parent, since ``since``, by this process or the workers it started."""
    children = tracking.child_runs(parent_id)
    if children.empty or f"tags.{tracking.TAG_PID}" not in children:
        return 0
    mine = ((children["status"] == "FINISHED") & (children["end_time"] >= since)
            & children[f"tags.{tracking.TAG_PID}"].isin([str(p) for p in pids])
            & (children[f"tags.{tracking.TAG_HOST}"] == socket.gethostname()))
    return int(mine.sum())


def _pairs(plan: Sequence[tuple[Row, TrainConfig]]) -> list[tuple[str, int]]:
    return [(row.label, config.seed) for row, config in plan]


def _join(suite: Suite, profile: str, first, every, key: str, experiment: str | None, resume: str | bool,
          storage: str | None, study_name: str | None, worker_of: str | None, echo,
          nested_under: str | None) -> tuple[PairQueue, str, bool]:
    """(queue, parent run id, whether this process owns the parent and answers for its status)."""
    experiment_id = tracking.experiment_id_for(experiment, suite.experiment)
    if worker_of:
        return PairQueue(str(storage), str(study_name)), worker_of, False

    def parent_to_resume() -> str | None:
        found = find_parent(suite, profile, resume, experiment_id, nested_under)
        if found:
            check_same_settings(found, every)  # before the parent is touched
        return found

    if storage is None:
        parent_id = open_parent(suite, profile, experiment_id, parent_to_resume(), nested_under)
        # One study per plan: resuming with more seeds queues the new pairs in a study of their own.
        queue = PairQueue(str(SUITE_STORAGE_DIR / f"{parent_id}.journal"),
                          study_name or f"{suite.name} [{profile}] {parent_id} plan {key}")
        if not queue.create(key):
            queue.parent(key)  # resuming: the same plan, or a clear error
        return queue, parent_id, True
    queue = PairQueue(storage, study_name or default_study_name(suite, profile, first, key))
    if queue.create(key):
        parent_id = open_parent(suite, profile, experiment_id, parent_to_resume(), nested_under)
        return queue, parent_id, True
    parent_id = queue.parent(key)
    echo(f"joining study {queue.name!r} (parent run {parent_id})")
    return queue, parent_id, False


def default_study_name(suite: Suite, profile: str, plan: Sequence[tuple[Row, TrainConfig]], key: str) -> str:
    """How machines started with the same command find each other: suite, profile, seeds and the plan's digest."""
    if " auto " in key:
        digest, _, auto = key.partition(" auto ")
        return f"{suite.name} [{profile}] seeds auto {auto} plan {digest}"
    seeds = sorted({config.seed for _, config in plan})
    return f"{suite.name} [{profile}] seeds {','.join(map(str, seeds))} plan {key}"


def _costliest_first(plan: Sequence[tuple[Row, TrainConfig]]) -> list[tuple[str, int]]:
    """Pairs in the order to hand out: longest runs first, so no worker is left with a long one at the end."""
    cost: dict[str, float] = {}
    for row, config in plan:
        if row.label not in cost:
            try:
                cost[row.label] = estimated_training_flops(config)
            except Exception:  # an estimate only: a row that cannot be costed keeps its place
                cost[row.label] = 0.0
    order = sorted(range(len(plan)), key=lambda i: -cost[plan[i][0].label])  # stable: seeds stay in order
    return [(plan[i][0].label, plan[i][1].seed) for i in order]


@dataclasses.dataclass
class _Context:
    """What a worker needs to train the pairs it claims."""

    suite: Suite
    profile: str
    by_pair: dict[tuple[str, int], tuple[Row, TrainConfig]]
    parent_id: str
    worker_index: int
    echo: Callable[[str], None]
    progress: bool | None
    log_models: bool
    checkpoints: Any
    epoch_lines: bool
    data_cache: dict[tuple, DataSplits] = dataclasses.field(default_factory=dict)
    failed: list[str] = dataclasses.field(default_factory=list)

    @property
    def who(self) -> str:
        return f"[worker {self.worker_index}]"


def _work(queue: PairQueue, ctx: _Context, linger: bool = False) -> None:
    """Claim and train pairs until none is waiting or running anywhere (and, with ``linger``, until the
    queue is closed: more rounds may come)."""
    told_waiting = False
    while True:
        dead = queue.reap()
        if dead:
            ctx.echo(f"{ctx.who} trial(s) {dead} belonged to a worker that died: queued again")
        claim = queue.claim()
        if claim is None:
            running = queue.running()
            if running == 0 and not (linger and queue.open):
                return
            if not told_waiting:
                ctx.echo(f"{ctx.who} nothing left to claim; waiting while {running} pair(s) run on other workers"
                         + (" and the next round is decided" if linger else ""))
                told_waiting = True
            time.sleep(POLL_S)
            continue
        told_waiting = False
        row, config = ctx.by_pair[(claim.label, claim.seed)]
        name = pair_name(row, config)
        resume_id = _take_over(ctx.parent_id, row.label, config.seed, claim.number)
        if resume_id is not None and not resumable(resume_id):
            resume_id = None
        ctx.echo(f"{ctx.who} {name} (trial {claim.number})"
                 + (f": resuming run {resume_id} from its checkpoint" if resume_id else ""))
        extra = [EpochLine(name, ctx.echo)] if ctx.epoch_lines else []

        def work() -> float:
            result = train_pair(ctx.suite, ctx.profile, row, config, ctx.parent_id, extra, resume_id,
                                data_for(config, ctx.data_cache), ctx.echo, progress=ctx.progress,
                                log_models=ctx.log_models, checkpoints=ctx.checkpoints)
            return result.final.val_acc

        finished, reason = queue.run(claim, work)
        if not finished:
            ctx.failed.append(name)
            ctx.echo(f"    {name} FAILED: {reason or 'see its MLflow run'}")


def _take_over(parent_id: str, label: str, seed: int, trial_number: int) -> str | None:
    """This process now owns the pair: any child of it still RUNNING belongs to a worker that died
    (the queue hands a pair to one worker at a time). Close those; the latest interrupted child is
    the run to continue."""
    children = tracking.child_runs(parent_id)
    if not children.empty and f"tags.{tracking.TAG_SEED}" in children:
        mine = children[(children[f"tags.{tracking.TAG_LABEL}"] == label)
                        & (children[f"tags.{tracking.TAG_SEED}"] == str(seed))]
        for run_id in mine[mine["status"] == "RUNNING"]["run_id"]:
            tracking.end_run(run_id, "FAILED", f"stale: its worker stopped; the pair was queued again (trial {trial_number})")
    return interrupted_pairs(parent_id).get((label, seed))


def _start_workers(suite: Suite, profile: str, plan, overrides: Mapping[str, Any], rows, workers: int,
                   queue: PairQueue, parent_id: str, *, log_models: bool, checkpoints: Any,
                   epoch_lines: bool, echo: Callable[[str], None]) -> list[subprocess.Popen]:
    """``workers`` processes on this machine, each with its share of the cores, or its own GPU when
    there are several. The storage URL travels in the environment, never on a command line (which
    ``ps`` shows to every user of the machine)."""
    import torch

    threads = overrides.get("threads") or max(1, (os.cpu_count() or 1) // workers)
    device = overrides.get("device") or "auto"
    gpus = torch.cuda.device_count() if device in ("auto", "cuda") else 0
    seeds = sorted({config.seed for _, config in plan})
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), STORAGE_ENV: queue.url}
    env.pop("MLFLOW_RUN_ID", None)
    procs = []
    for index in range(1, workers + 1):
        cmd = [sys.executable, "-m", "bench", "suite", str(suite.path), "--profile", profile,
               "--seeds", ",".join(map(str, seeds)) + ",", "--study-name", queue.name,
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
    return procs
