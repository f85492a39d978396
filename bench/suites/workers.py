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
from ..workqueue import PairQueue, QueueError
from .run import (
    SuiteFailed, SuiteOutcome, data_for, find_parent, finished_pairs, interrupted_pairs, log_summary, open_parent,
    pair_name, train_pair,
)
from .spec import Row, Suite, SuiteError, plan_digest

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

    ``worker_of``: this process was started by a coordinator for that parent run.
    """
    plan = suite.plan(profile, seeds, overrides, rows=rows)
    by_pair = {(row.label, config.seed): (row, config) for row, config in plan}
    try:
        queue, parent_id, owner = _join(suite, profile, plan, experiment, resume, rows, storage, study_name, worker_of,
                                        echo)
    except QueueError as exc:
        raise SuiteError(str(exc)) from None
    done: set[tuple[str, int]] = set()
    if not worker_of:
        tracking.mark_stale_children(parent_id)
        done = finished_pairs(parent_id) & set(by_pair)
        if owner or resume:
            added = queue.publish(_costliest_first(plan), done)
            echo(f"suite {suite.name} [{profile}]: {added} pair(s) queued in study {queue.name!r} "
                 f"({queue.shown_url}), {len(done)} already FINISHED under parent run {parent_id}")
        if owner:
            queue.set_parent(parent_id)  # last: processes joining wait for it, and then find the pairs queued
    ran: list[str] = []
    failed: list[str] = []
    context = _Context(suite, profile, by_pair, parent_id, worker_index, echo, progress, log_models, checkpoints,
                       epoch_lines)
    try:
        if workers > 1:
            _start_workers(suite, profile, plan, overrides or {}, rows, workers, queue, parent_id,
                           log_models=log_models, checkpoints=checkpoints, epoch_lines=epoch_lines, echo=echo)
        # The coordinator works too: after its workers end it picks up any pair a dead one left.
        _work(queue, context, ran, failed)
    except KeyboardInterrupt:
        if owner:
            tracking.end_run(parent_id, "KILLED", "interrupted (Ctrl-C)")
        raise
    if worker_of:
        return SuiteOutcome(parent_id, pd.DataFrame(), len(ran), 0, failed)
    summary = log_summary(parent_id, suite)
    finished = finished_pairs(parent_id)
    missing = [f"{label} seed={seed}" for label, seed in by_pair if (label, seed) not in finished]
    if missing:
        tracking.end_run(parent_id, "FAILED", f"{len(missing)} run(s) did not finish: {', '.join(missing)}")
        raise SuiteFailed(parent_id, missing, summary)
    tracking.end_run(parent_id, "FINISHED")
    return SuiteOutcome(parent_id, summary, len(by_pair) - len(done), len(done), failed)


def _join(suite: Suite, profile: str, plan, experiment: str | None, resume: str | bool, rows, storage: str | None,
          study_name: str | None, worker_of: str | None, echo) -> tuple[PairQueue, str, bool]:
    """(queue, parent run id, whether this process owns the parent and answers for its status)."""
    digest = plan_digest(plan)
    experiment_id = tracking.experiment_id_for(experiment, suite.experiment)
    if worker_of:
        return PairQueue(str(storage), str(study_name)), worker_of, False
    if storage is None:
        parent_id = open_parent(suite, profile, experiment_id, rows, find_parent(suite, profile, resume, experiment_id))
        # One study per plan: resuming with more seeds queues the new pairs in a study of their own.
        queue = PairQueue(str(SUITE_STORAGE_DIR / f"{parent_id}.journal"),
                          study_name or f"{suite.name} [{profile}] {parent_id} plan {digest}")
        if not queue.create(digest):
            queue.parent(digest)  # resuming: the same plan, or a clear error
        return queue, parent_id, True
    queue = PairQueue(storage, study_name or default_study_name(suite, profile, plan, digest))
    if queue.create(digest):
        parent_id = open_parent(suite, profile, experiment_id, rows, find_parent(suite, profile, resume, experiment_id))
        return queue, parent_id, True
    parent_id = queue.parent(digest)
    echo(f"joining study {queue.name!r} (parent run {parent_id})")
    return queue, parent_id, False


def default_study_name(suite: Suite, profile: str, plan: Sequence[tuple[Row, TrainConfig]], digest: str) -> str:
    seeds = sorted({config.seed for _, config in plan})
    return f"{suite.name} [{profile}] seeds {','.join(map(str, seeds))} plan {digest}"


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

    @property
    def who(self) -> str:
        return f"[worker {self.worker_index}]"


def _work(queue: PairQueue, ctx: _Context, ran: list[str], failed: list[str]) -> None:
    """Claim and train pairs until none is waiting or running anywhere."""
    told_waiting = False
    while True:
        dead = queue.reap()
        if dead:
            ctx.echo(f"{ctx.who} trial(s) {dead} belonged to a worker that died: queued again")
        claim = queue.claim()
        if claim is None:
            running = queue.running()
            if running == 0:
                return
            if not told_waiting:
                ctx.echo(f"{ctx.who} nothing left to claim; waiting while {running} pair(s) run on other workers")
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
        (ran if finished else failed).append(name)
        if not finished:
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
                   queue: PairQueue, parent_id: str, *, log_models: bool, checkpoints: Any, epoch_lines: bool,
                   echo: Callable[[str], None]) -> None:
    """``workers`` processes on this machine, each with its share of the cores, or its own GPU when
    there are several; returns when they have all ended."""
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
