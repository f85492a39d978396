"""Trials as units of work: claimed one at a time under the slot lock, run under the heartbeat.

A search's trials and a suite's row x seed pairs are both Optuna trials; these functions are
what both do with one: count, claim (``ask`` under the lock, so no two workers take the same
trial and a study never overshoots its total), run and tell.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from .. import tracking
from .storage import ask, claim_for_this_process, heartbeat, slot_lock

# Trials that count towards a total: all but FAILed ones (those are retried).
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def counted(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=COUNTED))


def waiting(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.WAITING,))


def running(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def claim(study: optuna.Study, url: str, total: int | None = None) -> optuna.Trial | None:
    """The next trial for this process, RUNNING and counted before the lock opens; None when there
    is nothing to do: no WAITING trial and (with ``total``) the study already counts ``total``.

    A WAITING trial (queued work, or a dead worker's trial queued again) is taken first and is
    run even when the count is reached; without ``total`` only WAITING trials are handed out.
    """
    with slot_lock(url):
        if not waiting(study) and (total is None or counted(study) >= total):
            return None
        trial = ask(study)
    claim_for_this_process(trial)
    return trial


def run(study: optuna.Study, storage: optuna.storages.BaseStorage, trial: optuna.Trial,
        work: Callable[[optuna.Trial], Any]) -> FrozenTrial:
    """Run ``work(trial)`` under the heartbeat and tell its end, as ``Study.optimize`` does.

    ``work`` returns the value; ``optuna.TrialPruned`` ends the trial PRUNED; any other error
    FAILs it with the (credential-masked) reason in the ``fail_reason`` attribute. Ctrl-C FAILs
    it and propagates.
    """
    with heartbeat(storage, study.study_name, trial.number):
        try:
            value = work(trial)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
        except KeyboardInterrupt:
            study.tell(trial, state=TrialState.FAIL)
            raise
        except Exception as exc:
            trial.set_user_attr("fail_reason", tracking.redact(f"{type(exc).__name__}: {exc}")[:1000])
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, value)
    return study.get_trials(deepcopy=False)[trial.number]
