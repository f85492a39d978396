"""One trial: sample the space (define-by-run), train, log a child MLflow run, return the metric."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

from .. import tracking
from ..data import DataSplits
from ..models import describe_variant
from ..progress import EpochLine
from ..train import train
from ..workqueue.storage import claim_for_this_process
from .spec import StudySpec


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
    """Optuna's objective for a study file: called with a trial, returns its metric."""

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
        params = self.suggest(trial)
        config = self.spec.config(params)
        claim_for_this_process(trial)
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
