"""MLflow runs: experiments, runs opened and always closed with a true status, tags, artifacts, queries.

``tracked_run`` opens a run so that an exception marks it FAILED (the error as a tag),
Ctrl-C marks it KILLED, and no run of ours is ever left RUNNING. The tracking store is
MLflow's own default (``sqlite:///mlflow.db`` in the working directory) unless
``MLFLOW_TRACKING_URI`` says otherwise, e.g. a tracking server.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import torch
from mlflow.entities import Metric, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from .. import __version__
from ..dblock import database_lock
from ..runtime import process_alive
from ..masking import redact

# Tag keys; "bench." keeps ours apart from MLflow's own "mlflow." tags.
TAG_VARIANT = "bench.variant"
TAG_VARIANT_SOURCE = "bench.variant_source"  # built-in, or the file (and its digest) or package that built it
TAG_LABEL = "bench.label"  # the suite's name for this row (a variant, possibly with overrides)
TAG_DATASET = "bench.dataset"
TAG_SUITE = "bench.suite"
TAG_STUDY = "bench.study"
TAG_PROFILE = "bench.profile"
TAG_KIND = "bench.kind"  # "run", "suite" or "study"
TAG_SEED = "bench.seed"
TAG_ERROR = "bench.error"
TAG_DATA_SOURCE = "bench.data_source"
TAG_HARDWARE = "hw"  # hw.cpu, hw.cpu_isa, hw.logical_cores, hw.torch_threads, hw.memory_gib, hw.gpu, hw.machine
TAG_HOST = "bench.host"  # the host and process that opened (or re-opened) the run
TAG_PID = "bench.pid"
TAG_CHECKPOINT_EPOCH = "bench.checkpoint_epoch"  # epoch of the checkpoint artifact, when one was logged
TAG_RESUMED = "bench.resumed_after_epoch"  # set when a run was resumed: its start-to-end span is no run's cost
TAG_COMPUTE_DTYPE = "bench.compute_dtype"  # float32, or the autocast dtype (bfloat16 on CUDA)
TAG_DIVERGED = "bench.diverged"  # why a run whose loss exploded is not judged
TAG_MODEL_NOTE = "bench.model"  # bench.model.<key>: what the variant's builder reports (e.g. pretrained weights)
# MLflow's own system-metrics monitor (CPU, memory, disk, network; GPU with nvidia-ml-py):
# every run gets one unless BENCH_SYSTEM_METRICS=0 (--no-system-metrics). Sampled every
# 2 s and logged at once, so a one-minute run still draws a curve.
SYSTEM_METRICS_ENV = "BENCH_SYSTEM_METRICS"
SYSTEM_METRICS_INTERVAL_S = 2
PARENT_TAG = "mlflow.parentRunId"
TAG_NOTE = "mlflow.note.content"  # the run's description in the MLflow UI
TAG_RUN_NAME = "mlflow.runName"
DEFAULT_EXPERIMENT_ID = "0"
# MLflow 3 tells GenAI experiments from model-training ones by this tag; say which ours are
# (the UI's landing page still follows its own GenAI / Model training switch).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def tracking_uri() -> str:
    """Where runs go, for messages and pages: credentials masked (the raw URI stays inside this room)."""
    return redact(mlflow.get_tracking_uri())


_STORES_OPENED: set[str] = set()


def open_store() -> None:
    """Open MLflow's store for the current tracking URI, once per process, one machine at a time.

    On an empty database MLflow's first call creates its tables (Alembic migrations) and the
    Default experiment; machines started at the same moment race on that and all but one die on a
    unique key (``alembic_version``). MLflow caches the store per URI, so opening it once under a
    PostgreSQL advisory lock is enough: every later call, MLflow's own included, finds it ready.
    Each function here that a command can start with calls this first.
    """
    uri = mlflow.get_tracking_uri()
    if uri in _STORES_OPENED:
        return
    if uri.startswith("postgresql"):
        with database_lock(uri, "mlflow-schema"):
            MlflowClient(uri).search_experiments(max_results=1)
    _STORES_OPENED.add(uri)


@functools.cache
def git_commit() -> str:
    """The project's commit, with ``-dirty`` if the work tree has changes; ``unknown`` outside git."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def environment_tags() -> dict[str, str]:
    return {
        "bench.version": __version__,
        "bench.git_commit": git_commit(),
        "torch.version": torch.__version__,
        "torch.cuda": str(torch.version.cuda),
        "python.version": platform.python_version(),
        "host.platform": platform.platform(),
    }


def experiment_id_for(explicit: str | None, default: str) -> str:
    """The experiment to log to: an explicit name, else one the user chose through MLflow's
    environment (``mlflow run --experiment-name``, ``MLFLOW_EXPERIMENT_NAME``), else ``default``.

    ``mlflow run`` always sets ``MLFLOW_EXPERIMENT_ID``; when it names MLflow's ``Default``
    experiment (id 0) the user chose nothing, so the suite's or study's own name wins and
    its runs do not disappear into ``Default``.
    """
    open_store()
    if explicit:
        return _set_experiment(explicit)
    chosen = os.environ.get("MLFLOW_EXPERIMENT_ID")
    if chosen and chosen != DEFAULT_EXPERIMENT_ID:
        return chosen
    return _set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or default)


def _set_experiment(name: str) -> str:
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        try:
            return mlflow.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except mlflow.exceptions.MlflowException as exc:  # another machine made it a moment ago
            experiment = mlflow.get_experiment_by_name(name)
            if experiment is None:
                raise exc from None
    if experiment.lifecycle_stage == "deleted":
        MlflowClient().restore_experiment(experiment.experiment_id)
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment.experiment_id


@contextlib.contextmanager
def tracked_run(
    *,
    experiment_id: str | None = None,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
    run_id: str | None = None,
) -> Iterator[str]:
    """Open an MLflow run (or re-open ``run_id``) and always close it with a true status.

    FINISHED on success, KILLED on Ctrl-C, FAILED on any other exception, with the
    error message as the ``bench.error`` tag. Yields the run id. A child run goes into
    its parent's experiment, so the MLflow UI nests it. Under ``mlflow run`` (which
    creates a run holding the entry point's parameters and passes it as
    ``MLFLOW_RUN_ID``) a new top-level run becomes a child of that run, so our complete,
    resolved parameters never clash with the entry point's raw ones.
    """
    open_store()
    launcher = None  # the run `mlflow run` made for its entry point, when it lives elsewhere
    if run_id is None and parent_run_id is None and os.environ.get("MLFLOW_RUN_ID"):
        outer = os.environ.pop("MLFLOW_RUN_ID")
        if experiment_id is None or MlflowClient().get_run(outer).info.experiment_id == experiment_id:
            parent_run_id = outer
        else:
            launcher = outer
    if parent_run_id:
        experiment_id = MlflowClient().get_run(parent_run_id).info.experiment_id
    # Who holds the run: another process resuming the parent leaves it alone while this one lives.
    all_tags = {**environment_tags(), **(tags or {}), TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid())}
    if parent_run_id:
        all_tags[PARENT_TAG] = parent_run_id
    system_metrics = system_metrics_enabled()
    if system_metrics:
        mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL_S)
        mlflow.set_system_metrics_samples_before_logging(1)
    run = mlflow.start_run(
        run_id=run_id,
        experiment_id=None if run_id else experiment_id,
        run_name=None if run_id else run_name,
        tags=all_tags,
        nested=mlflow.active_run() is not None,
        log_system_metrics=system_metrics,
    )
    run_id = run.info.run_id
    if launcher:
        _point_launcher_at(launcher, run_id, experiment_id, run_name or run_id)
    try:
        yield run_id
    except KeyboardInterrupt:
        _end(run_id, RunStatus.KILLED, "interrupted (Ctrl-C)")
        raise
    except BaseException as exc:
        _end(run_id, RunStatus.FAILED, f"{type(exc).__name__}: {exc}")
        raise
    _end(run_id, RunStatus.FINISHED)


def adopt_launcher(run_id: str, name: str) -> None:
    """Under `mlflow run`, describe its run as the launcher of ``run_id`` (a run opened by id)."""
    launcher = os.environ.pop("MLFLOW_RUN_ID", None)
    if launcher and launcher != run_id:
        _point_launcher_at(launcher, run_id, MlflowClient().get_run(run_id).info.experiment_id, name)


def _point_launcher_at(launcher: str, run_id: str, experiment_id: str, name: str) -> None:
    """Name and describe `mlflow run`'s own run so a user who finds it finds ours."""
    experiment = MlflowClient().get_experiment(experiment_id).name
    set_tags(launcher, {
        TAG_RUN_NAME: f"mlflow run: {name}",
        TAG_NOTE: f"Started by `mlflow run`. bench logged its runs in experiment '{experiment}': run '{name}' "
                  f"({run_id}) and its children.",
        "bench.run": run_id,
    })
    set_tags(run_id, {"bench.launched_by": launcher})


def system_metrics_enabled() -> bool:
    return os.environ.get(SYSTEM_METRICS_ENV, "1") != "0"


def _end(run_id: str, status: int, error: str | None = None) -> None:
    client = MlflowClient()
    if error is not None:
        with contextlib.suppress(Exception):  # the status below matters more than the tag
            client.set_tag(run_id, TAG_ERROR, redact(error)[:4900])
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.end_run(RunStatus.to_string(status))
    else:
        client.set_terminated(run_id, RunStatus.to_string(status))


def log_artifact_text(run_id: str, name: str, text: str) -> None:
    """A text artifact, credentials masked like every tag and param."""
    MlflowClient().log_text(run_id, redact(text), name)


def log_artifact_file(run_id: str, path: str | os.PathLike, artifact_path: str | None = None) -> None:
    MlflowClient().log_artifact(run_id, str(path), artifact_path)


def log_table(run_id: str, frame: pd.DataFrame, name: str, text: bool = True) -> None:
    """A table as ``<name>.csv`` and (``text``) a fixed-width ``<name>.txt`` artifact of ``run_id``."""
    with tempfile.TemporaryDirectory() as tmp:
        csv, txt = Path(tmp) / f"{name}.csv", Path(tmp) / f"{name}.txt"
        csv.write_text(redact(frame.to_csv(index=False)))
        client = MlflowClient()
        client.log_artifact(run_id, str(csv))
        if text:
            txt.write_text(redact(frame.to_string(index=False)) + "\n")
            client.log_artifact(run_id, str(txt))


def log_metrics(run_id: str, metrics: Mapping[str, float]) -> None:
    mlflow.log_metrics(dict(metrics), run_id=run_id)


def log_values(run_id: str, *, tags: Mapping[str, str] | None = None, metrics: Mapping[str, float] | None = None,
               step: int = 0) -> None:
    """Tags (credentials in values masked) and metrics at ``step``, in as few requests as MLflow takes
    (at most 100 tags and 1,000 values in one)."""
    now = int(time.time() * 1000)
    tag_list = [RunTag(k, redact(str(v))) for k, v in (tags or {}).items()]
    metric_list = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items()]
    client = MlflowClient()
    while tag_list or metric_list:
        batch_tags, tag_list = tag_list[:100], tag_list[100:]
        batch_metrics, metric_list = metric_list[:1000 - len(batch_tags)], metric_list[1000 - len(batch_tags):]
        client.log_batch(run_id, metrics=batch_metrics, tags=batch_tags)


def log_run_table(run_id: str, frame: pd.DataFrame, artifact_file: str) -> None:
    """A table the MLflow run page renders and ``mlflow.load_table`` reads (MLflow's ``log_table``: rows
    are appended when the file exists); text cells masked."""
    frame = frame.copy()
    for column in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            frame[column] = frame[column].map(lambda v: redact(v) if isinstance(v, str) else v)
    MlflowClient().log_table(run_id, frame, artifact_file)


def set_tags(run_id: str, tags: Mapping[str, str]) -> None:
    """All of ``tags`` in one request (credentials in values masked)."""
    MlflowClient().log_batch(run_id, tags=[RunTag(key, redact(str(value))) for key, value in tags.items()])


def find_runs(experiment_ids: list[str] | None = None, filter_string: str = "") -> pd.DataFrame:
    """Runs as a DataFrame (``mlflow.search_runs``), in the given experiments or all of them."""
    open_store()
    if experiment_ids is None:
        experiment_ids = [e.experiment_id for e in MlflowClient().search_experiments()]
    return mlflow.search_runs(experiment_ids=experiment_ids, filter_string=filter_string, output_format="pandas")


def child_runs(parent_run_id: str) -> pd.DataFrame:
    open_store()
    run = MlflowClient().get_run(parent_run_id)
    return mlflow.search_runs(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
        output_format="pandas",
    )


def get_run(run_id: str):
    open_store()
    return MlflowClient().get_run(run_id)


def mark_stale_children(parent_run_id: str) -> list[str]:
    """Children of ``parent_run_id`` still RUNNING whose process died: mark them FAILED.

    So no run stays RUNNING after a crash we could not catch (SIGKILL, power loss). A child
    whose process (``bench.host``/``bench.pid``) still runs on this host is left alone: another
    worker is training it. Children on other hosts are left alone too (no way to see their
    processes from here); children without those tags (older bench) count as dead. Returns
    the ids marked.
    """
    children = child_runs(parent_run_id)
    if children.empty:
        return []
    host = socket.gethostname()
    stale = []
    for _, child in children[children["status"] == "RUNNING"].iterrows():
        owner_host, pid = child.get(f"tags.{TAG_HOST}"), child.get(f"tags.{TAG_PID}")
        if isinstance(pid, str) and pid.isdigit() and (owner_host != host or process_alive(int(pid))):
            continue
        stale.append(child["run_id"])
    for run_id in stale:
        _end(run_id, RunStatus.FAILED, "stale: its process ended without closing the run")
    return stale


def list_artifacts(run_id: str, path: str | None = None) -> list[str]:
    return [a.path for a in MlflowClient().list_artifacts(run_id, path)]


def read_artifact_text(run_id: str, path: str) -> str:
    return mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) in the order logged (by step, then time): of two values at one step, the later last."""
    history = sorted(MlflowClient().get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return [(m.step, m.value) for m in history]


def create_run(experiment_id: str, run_name: str, tags: Mapping[str, str]) -> str:
    """A run that outlives this process (a study's parent): opened here, closed by ``end_run``."""
    open_store()
    run = MlflowClient().create_run(experiment_id, run_name=run_name, tags={**environment_tags(), **tags})
    return run.info.run_id


def reopen_run(run_id: str) -> None:
    """Mark a run that ended (or was left) as RUNNING again, e.g. a suite's parent being resumed."""
    MlflowClient().update_run(run_id, status="RUNNING")


def end_run(run_id: str, status: str, error: str | None = None) -> None:
    _end(run_id, RunStatus.from_string(status), error)


def log_params(run_id: str, params: Mapping[str, Any]) -> None:
    mlflow.log_params({k: param_text(v) for k, v in params.items()}, run_id=run_id)


def param_text(value: Any) -> str:
    """A value as MLflow keeps it as a param: a string, credentials masked, at most 6,000 characters."""
    return redact(str(value))[:6000]
