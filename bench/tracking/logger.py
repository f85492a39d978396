"""The trainer's MLflow observer: config as params, per-epoch metrics, hardware tags, data set
inputs, checkpoints as artifacts, test metrics and the model."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import mlflow
import tenacity
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.entities import DatasetInput, InputTag
from mlflow.tracking import MlflowClient

from .models import log_model
from ..masking import redact
from .runs import (
    TAG_CHECKPOINT_EPOCH, TAG_COMPUTE_DTYPE, TAG_RESUMED, TAG_DATA_SOURCE, TAG_DATASET, TAG_DIVERGED, TAG_HARDWARE, TAG_MODEL_NOTE,
    TAG_SEED, TAG_VARIANT, TAG_VARIANT_SOURCE, list_artifacts, param_text, set_tags,
)

CHECKPOINT_ARTIFACT_DIR = "checkpoint"


class MlflowLogger:
    """Trainer callback: config as params, per-epoch metrics (step=epoch), hardware tags,
    checkpoints as the ``checkpoint/last.pt`` artifact, test metrics and the model.

    A resumed run (``info.start_epoch > 0``) is the same MLflow run re-opened: its params
    are already there, and epochs it logged before it was killed are not logged again.
    """

    def __init__(self, run_id: str, *, log_model: bool = True, log_checkpoints: bool = True) -> None:
        self.run_id = run_id
        self.log_model = log_model
        self.log_checkpoints = log_checkpoints
        self.client = MlflowClient()
        self.logged_through = 0  # last epoch already in the run's metric history

    def on_train_start(self, info) -> None:
        if info.start_epoch == 0:
            params = {k: param_text(v) for k, v in info.config.to_flat_dict().items()}
            params["num_parameters"] = str(info.num_parameters)
            # Facts the config implies, logged so a comparison can read them: how many images each split holds.
            params.update(train_images=str(info.train_size), val_images=str(info.val_size), test_images=str(info.test_size))
            mlflow.log_params(params, run_id=self.run_id)
            log_datasets(self.run_id, info.config.dataset, info.data)
        else:
            history = self.client.get_metric_history(self.run_id, "val_acc")
            self.logged_through = max((m.step for m in history), default=0)
            set_tags(self.run_id, {TAG_RESUMED: str(info.start_epoch)})
        set_tags(
            self.run_id,
            {
                TAG_VARIANT: info.config.variant,
                TAG_DATASET: info.config.dataset,
                TAG_SEED: str(info.config.seed),
                TAG_DATA_SOURCE: info.data_source,
                "device": info.device,
                **{f"{TAG_HARDWARE}.{k}": v for k, v in info.hardware.items()},
                "bench.flop_per_image": f"{info.flop_per_image:.6g}",
                "bench.peak_gflops": f"{info.peak_gflops:.1f}",
                TAG_COMPUTE_DTYPE: info.compute_dtype,
                TAG_VARIANT_SOURCE: info.variant_source,
                **{f"{TAG_MODEL_NOTE}.{k}": v for k, v in info.model_notes.items()},
            },
        )

    def on_epoch_end(self, metrics) -> None:
        if metrics.epoch > self.logged_through:
            mlflow.log_metrics(metrics.as_dict(), step=metrics.epoch, run_id=self.run_id)

    def on_checkpoint(self, saved) -> None:
        if self.log_checkpoints:  # one artifact, overwritten: another machine resumes from the latest
            self.client.log_artifact(self.run_id, str(saved.path), CHECKPOINT_ARTIFACT_DIR)
            self.client.set_tag(self.run_id, TAG_CHECKPOINT_EPOCH, str(saved.epoch))

    def on_train_end(self, result) -> None:
        metrics = dict(result.after)
        if result.test_acc is not None:
            metrics.update(test_acc=result.test_acc, test_loss=result.test_loss)
        # At the last epoch's step: val_acc_ema measured after training (batch-norm statistics recomputed)
        # is then the run's val_acc_ema (the latest at the highest step) and the last point of its curve.
        mlflow.log_metrics(metrics, step=len(result.history), run_id=self.run_id)
        if result.diverged:
            set_tags(self.run_id, {TAG_DIVERGED: result.diverged})
        if self.log_model:
            log_model(result)


def log_datasets(run_id: str, name: str, data) -> None:
    """The run's train, val and test splits as MLflow dataset inputs (the UI's Datasets column).

    The digest is bench's own hash of the exact decoded split (``Split.digest``), so runs on
    two copies of a data set (the JPEG re-encoded CIFAR, a subset) show different digests
    and runs can be filtered by it; the source is the folder the files were read from.
    """
    location = redact(data.source.split(" (", 1)[0])
    uri = location if "://" in location else Path(location).expanduser().resolve().as_uri()
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are the local source
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(uri)
    inputs = []
    for split_name, context, split in (
        ("train", "training", data.train), ("val", "validation", data.val), ("test", "test", data.test)
    ):
        dataset = mlflow.data.from_numpy(
            split.images.numpy(), source=source, targets=split.labels.numpy(), name=f"{name}/{split_name}",
            digest=split.digest(),
        )
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)]))
    _log_inputs(run_id, inputs)


def _lost_an_insert_race(exc: BaseException) -> bool:
    return isinstance(exc, mlflow.exceptions.MlflowException) and "unique constraint" in str(exc).lower()


# Datasets are rows shared by an experiment's runs: two workers logging the same split at once
# can both try to insert it, and the loser sees a UNIQUE-constraint error. Once the winner's row
# exists the same call succeeds, so try again.
@tenacity.retry(retry=tenacity.retry_if_exception(_lost_an_insert_race), stop=tenacity.stop_after_attempt(4),
                wait=tenacity.wait_incrementing(start=0.2, increment=0.2), reraise=True)
def _log_inputs(run_id: str, inputs: list[DatasetInput]) -> None:
    MlflowClient().log_inputs(run_id, datasets=inputs)


def download_checkpoint(run_id: str, dest: str | os.PathLike) -> Path | None:
    """The run's latest checkpoint artifact, downloaded into ``dest``; None if it logged none."""
    if not any(a.endswith(".pt") for a in list_artifacts(run_id, CHECKPOINT_ARTIFACT_DIR)):
        return None
    folder = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=CHECKPOINT_ARTIFACT_DIR, dst_path=str(dest))
    path = Path(folder) / "last.pt"
    return path if path.is_file() else None


def run_config(run_id: str) -> dict[str, str]:
    """The run's logged params: the complete resolved config, as strings."""
    return dict(MlflowClient().get_run(run_id).data.params)
