"""One config trained as one MLflow run, with epoch checkpoints, and resumed in that same run.

Used by ``bench train`` and by suites. A fresh run checkpoints into
``$BENCH_CACHE_DIR/checkpoints/<run id>/`` (and logs the latest as the run's
``checkpoint/last.pt`` artifact); ``resume_run_id`` re-opens a run that did not finish
and continues from its latest checkpoint, local first, else the artifact, so another
machine can pick it up. The run ends FINISHED with every epoch logged once, and its
local checkpoints are removed (its model is logged).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from . import checkpoint as ckpt
from . import tracking
from .config import TrainConfig
from .data import DataSplits
from .train import TrainResult, evaluate_pixels, load_data, train


def find_checkpoint(run_id: str, download_dir: str | Path) -> Path | None:
    """The run's latest checkpoint: this machine's copy, else the run's artifact; None if it has none."""
    return ckpt.local_checkpoint(run_id) or tracking.download_checkpoint(run_id, download_dir)


def resumable(run_id: str) -> bool:
    """Whether a run that did not finish left a checkpoint here or in the store."""
    return ckpt.local_checkpoint(run_id) is not None or tracking.get_run(run_id).data.tags.get(
        tracking.TAG_CHECKPOINT_EPOCH
    ) is not None


def run_tracked(
    config: TrainConfig,
    *,
    callbacks: Iterable[Any] = (),
    experiment_id: str | None = None,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
    resume_run_id: str | None = None,
    data: DataSplits | None = None,
    progress: bool | None = None,
    log_model: bool = True,
    checkpoints: ckpt.Policy | None = ckpt.Policy(),
) -> tuple[str, TrainResult]:
    """Train ``config`` in a new MLflow run, or continue run ``resume_run_id``; (run id, result).

    ``checkpoints=None`` writes none. Resuming a run with no checkpoint, or one from
    another configuration, raises ``CheckpointError``.
    """
    with tempfile.TemporaryDirectory(prefix="bench-resume-") as tmp:
        resume_from = None
        if resume_run_id is not None:
            resume_from = find_checkpoint(resume_run_id, tmp)
            if resume_from is None:
                raise ckpt.CheckpointError(
                    f"run {resume_run_id} has no checkpoint (here or as an artifact): it stopped before its "
                    "first one; start it again as a new run"
                )
        with tracking.tracked_run(
            experiment_id=experiment_id, run_name=run_name, tags=tags, parent_run_id=parent_run_id, run_id=resume_run_id
        ) as run_id:
            checkpointer = ckpt.Checkpointer(run_id, checkpoints) if checkpoints is not None else None
            logger = tracking.MlflowLogger(run_id, log_model=log_model)
            result = train(
                config, [*callbacks, logger], data=data, progress=progress, checkpointer=checkpointer,
                resume_from=resume_from,
            )
        if checkpointer is not None:
            checkpointer.discard()
    return run_id, result


def evaluate_test_after_selection(run_id: str, config: TrainConfig, tag: str) -> float:
    """The test accuracy of the model run ``run_id`` logged, measured now (after a selection made on
    val) and logged on that run as ``test_acc`` / ``test_loss``, with ``tag`` set to say so."""
    model = tracking.load_model(run_id)
    loss, accuracy = evaluate_pixels(model, load_data(config).test, config.eval_batch_size)
    tracking.log_metrics(run_id, {"test_acc": accuracy, "test_loss": loss})
    tracking.set_tags(run_id, {tag: "true"})
    return accuracy
