"""MLflow tracking: the only room of bench that imports mlflow.

- ``runs``: experiments, runs opened and always closed with a true status, tags, artifacts, queries;
- ``logger``: the trainer's observer (params, per-epoch metrics, data sets, checkpoints, the model);
- ``models``: the logged ``pt2`` model and the Model Registry;
- ``redact`` (from ``bench.masking``, which needs no MLflow) masks credentials in every tag, param and
  error it logs.

The raw tracking URI stays in this room: ``tracking_uri()`` is the masked one, for display.

The trainer is observed through its callbacks; it imports none of this.
"""

from .logger import CHECKPOINT_ARTIFACT_DIR, MlflowLogger, download_checkpoint, log_datasets, run_config
from .models import (
    CHAMPION_ALIAS, MODEL_NAME, PIP_REQUIREMENTS, load_model, log_model, logged_models, model_uri, register_champion,
    registered_model, registered_versions,
)
from ..masking import redact
from .runs import (
    DEFAULT_EXPERIMENT_ID, EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, PARENT_TAG, SYSTEM_METRICS_ENV,
    SYSTEM_METRICS_INTERVAL_S, TAG_CHECKPOINT_EPOCH, TAG_COMPUTE_DTYPE, TAG_RESUMED, TAG_DATASET, TAG_DATA_SOURCE, TAG_DIVERGED,
    TAG_ERROR, TAG_HARDWARE, TAG_HOST, TAG_KIND, TAG_LABEL, TAG_MODEL_NOTE, TAG_NOTE, TAG_PID, TAG_PROFILE,
    TAG_RUN_NAME, TAG_SEED, TAG_STUDY, TAG_SUITE, TAG_VARIANT, TAG_VARIANT_SOURCE, adopt_launcher, child_runs,
    create_run, end_run, environment_tags, experiment_id_for, find_runs, get_run, git_commit, list_artifacts,
    log_artifact_file, log_artifact_text, log_metrics, log_params, log_run_table, log_table, log_values,
    mark_stale_children, metric_history,
    param_text, read_artifact_text, reopen_run, set_tags, system_metrics_enabled, tracked_run, tracking_uri,
)

__all__ = [
    "CHAMPION_ALIAS", "CHECKPOINT_ARTIFACT_DIR", "DEFAULT_EXPERIMENT_ID", "EXPERIMENT_KIND", "EXPERIMENT_KIND_TAG",
    "MODEL_NAME", "MlflowLogger", "PARENT_TAG", "PIP_REQUIREMENTS", "SYSTEM_METRICS_ENV",
    "SYSTEM_METRICS_INTERVAL_S", "TAG_CHECKPOINT_EPOCH", "TAG_COMPUTE_DTYPE", "TAG_RESUMED", "TAG_DATASET", "TAG_DATA_SOURCE",
    "TAG_DIVERGED", "TAG_ERROR", "TAG_HARDWARE", "TAG_HOST", "TAG_KIND", "TAG_LABEL", "TAG_MODEL_NOTE", "TAG_NOTE",
    "TAG_PID", "TAG_PROFILE", "TAG_RUN_NAME", "TAG_SEED", "TAG_STUDY", "TAG_SUITE", "TAG_VARIANT",
    "TAG_VARIANT_SOURCE", "adopt_launcher", "child_runs", "create_run", "download_checkpoint", "end_run",
    "environment_tags", "experiment_id_for", "find_runs", "get_run", "git_commit", "list_artifacts", "load_model",
    "log_artifact_file", "log_artifact_text", "log_datasets", "log_metrics", "log_model", "log_params", "log_run_table",
    "log_table", "log_values",
    "logged_models", "mark_stale_children", "metric_history", "model_uri", "param_text", "read_artifact_text",
    "redact", "register_champion", "registered_model", "registered_versions", "reopen_run", "run_config", "set_tags",
    "system_metrics_enabled", "tracked_run", "tracking_uri",
]
