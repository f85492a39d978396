"""Who trains a suite's pairs: the one pair loop, in this process or in worker processes.

Every pair of a suite, serial or not, goes through a ``bench.workqueue.PairQueue``: Optuna's
in-memory storage for a suite run in one process, a journal file under ``optuna/suites/`` for
workers on this machine, or a shared storage (PostgreSQL) for several machines. ``work`` claims
pairs until none is waiting or running: a pair is claimed by one worker at a time, and a pair
whose worker died is queued again and continues from its checkpoint in the same child run.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .. import tracking
from ..config import TrainConfig
from ..data import DataSplits
from ..progress import EpochLine
from ..runner import resumable
from ..train import estimated_training_flops
from ..workqueue import STORAGE_ENV, PairQueue
from .parent import data_for, interrupted_pairs, owner_gone, pair_name, train_pair
from .spec import Row, Suite

SUITE_STORAGE_DIR = Path("optuna") / "suites"  # journal files of suites run on several workers of one machine
POLL_S = 2.0  # an idle worker looks for a retried or unfinished pair this often


@dataclasses.dataclass
class Worker:
    """What a worker needs to train the pairs it claims, and what it did."""

    suite: Suite
    profile: str
    by_pair: dict[tuple[str, int], tuple[Row, TrainConfig]]
    parent_id: str
    index: int  # 0: the process that started the suite; 1..K: the workers it started
    echo: Callable[[str], None]
    progress: bool | None
    log_models: bool
    checkpoints: Any
    epoch_lines: bool
    callbacks_for: Callable[[Row, TrainConfig], Iterable[Any]] | None = None  # in this process only
    data_cache: dict[tuple, DataSplits] = dataclasses.field(default_factory=dict)
    failed: list[str] = dataclasses.field(default_factory=list)
    claimed: int = 0
    # (label, seed) -> the interrupted child run to continue, as found when this worker started: a
    # pair killed before (a resume) continues in its run. Later, only a pair the queue hands out again
    # after a worker died (``Claim.retry_of``) can have one, and is looked up then.
    interrupted: dict[tuple[str, int], str] | None = None

    @property
    def who(self) -> str:
        return f"[worker {self.index}] " if self.index else ""


def work(queue: PairQueue, worker: Worker, linger: bool = False) -> None:
    """Claim and train pairs until none is waiting or running anywhere (and, with ``linger``, until the
    queue is closed: more rounds may come)."""
    told_waiting = False
    while True:
        dead = queue.reap()
        if dead:
            worker.echo(f"{worker.who}trial(s) {dead} belonged to a worker that died: queued again")
        claim = queue.claim()
        if claim is None:
            running = queue.running()
            if running == 0 and not (linger and queue.open):
                return
            if running == 0 and owner_gone(worker.parent_id):  # no next round will come: its owner stopped
                worker.echo(f"{worker.who}the suite's owner stopped; a --resume on any machine takes over")
                return
            if not told_waiting:
                worker.echo("\n".join(textwrap.wrap(
                    f"{worker.who}nothing left to claim; waiting while {running} pair(s) run on other workers"
                    + (" and the next round is decided" if linger else ""), 100, subsequent_indent="    ")))
                told_waiting = True
            time.sleep(POLL_S)
            continue
        told_waiting = False
        worker.claimed += 1
        row, config = worker.by_pair[(claim.label, claim.seed)]
        name = pair_name(row, config)
        if worker.interrupted is None:
            worker.interrupted = interrupted_pairs(worker.parent_id)
        if claim.retry_of is not None:
            resume_id = take_over(worker.parent_id, row.label, config.seed, claim.number)
        else:
            resume_id = worker.interrupted.pop((claim.label, claim.seed), None)
        if resume_id is not None and not resumable(resume_id):
            resume_id = None
        where = f"{worker.who}{name} (trial {claim.number})" if worker.index else f"[{worker.claimed}] {name}"
        worker.echo("\n".join(textwrap.wrap(where + (f": resuming run {resume_id} from its checkpoint" if resume_id
                                                      else ""), 100, subsequent_indent="    ")))
        extra = list(worker.callbacks_for(row, config)) if worker.callbacks_for else []
        if worker.epoch_lines:
            extra.append(EpochLine(name, worker.echo))

        def train() -> float:
            result = train_pair(worker.suite, worker.profile, row, config, worker.parent_id, extra, resume_id,
                                data_for(config, worker.data_cache), worker.echo, progress=worker.progress,
                                log_models=worker.log_models, checkpoints=worker.checkpoints)
            return result.final.val_acc

        finished, reason = queue.run(claim, train)
        if not finished:
            worker.failed.append(name)
            worker.echo("\n".join(textwrap.wrap(f"    {name} FAILED: {reason or 'see its MLflow run'}", 100,
                                                 subsequent_indent="      ")))


def take_over(parent_id: str, label: str, seed: int, trial_number: int) -> str | None:
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


def wait_until_idle(queue: PairQueue, procs: list[subprocess.Popen], echo: Callable[[str], None]) -> None:
    """Return when nothing waits or runs in the queue, or when every worker process has ended."""
    while any(p.poll() is None for p in procs):
        dead = queue.reap()
        if dead:
            echo(f"trial(s) {dead} belonged to a worker that died: queued again")
        if queue.waiting() == 0 and queue.running() == 0:
            return
        time.sleep(POLL_S)


def wait_for(procs: list[subprocess.Popen], echo: Callable[[str], None]) -> None:
    for index, proc in enumerate(procs, 1):
        code = proc.wait()
        if code != 0:
            echo(f"worker {index} exited with status {code}; a pair it left unfinished is queued again")


def trained_here(outcomes: pd.DataFrame, pids: Sequence[int], since: pd.Timestamp) -> int:
    """Pairs FINISHED (``summary.pair_outcomes``) since ``since``, by this process or the workers it started."""
    children = outcomes
    if children.empty or f"tags.{tracking.TAG_PID}" not in children:
        return 0
    mine = ((children["status"] == "FINISHED") & (children["end_time"] >= since)
            & children[f"tags.{tracking.TAG_PID}"].isin([str(p) for p in pids])
            & (children[f"tags.{tracking.TAG_HOST}"] == socket.gethostname()))
    return int(mine.sum())


def costliest_first(plan: Sequence[tuple[Row, TrainConfig]]) -> list[tuple[str, int]]:
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


def start_workers(suite: Suite, profile: str, plan, overrides: Mapping[str, Any], rows, workers: int,
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
