"""Running a suite: one MLflow parent run, one child run per row x seed, resumable.

``run_suite`` trains the pairs one after another in this process; ``workers.run_suite_workers``
hands the same pairs out to processes and machines. Both use the parent/child helpers here:
which parent a resume re-opens, which pairs already FINISHED, which were interrupted and can
continue from a checkpoint, and the child run of one pair.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from .. import checkpoint as ckpt
from .. import tracking
from ..config import TrainConfig
from ..data import DataSplits
from ..models import describe_variant
from ..progress import EpochLine
from ..runner import resumable, run_tracked
from ..train import load_data
from .spec import TAG_ROWS, Row, Suite, SuiteError
from .summary import summarize


@dataclasses.dataclass
class SuiteOutcome:
    parent_run_id: str
    summary: pd.DataFrame
    ran: int
    skipped: int
    failed: list[str]


class SuiteFailed(RuntimeError):
    def __init__(self, parent_run_id: str, failed: list[str], summary: pd.DataFrame) -> None:
        super().__init__(f"{len(failed)} run(s) failed: {', '.join(failed)} (parent run {parent_run_id})")
        self.parent_run_id = parent_run_id
        self.failed = failed
        self.summary = summary


def run_suite(
    suite: Suite,
    profile: str,
    *,
    seeds: Sequence[int] | None = None,
    resume: str | bool = False,
    experiment: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    log_models: bool = True,
    callbacks_for: Callable[[Row, TrainConfig], Iterable[Any]] | None = None,
    progress: bool | None = None,
    echo: Callable[[str], None] = print,
    rows: Sequence[str] | None = None,
    checkpoints: Any = ckpt.Policy(),
    epoch_lines: bool = True,
) -> SuiteOutcome:
    """Train every row x seed of ``profile`` as child runs of one parent run.

    ``resume``: True re-opens the latest parent of this suite and profile, a string
    re-opens that parent run id; FINISHED children are skipped, and children that were
    interrupted (killed, Ctrl-C) continue from their latest checkpoint in the same run.
    A failing child is marked FAILED and the suite goes on; the parent then ends FAILED
    naming them. ``rows``: only these row labels. ``checkpoints``: a ``checkpoint.Policy``
    or None for none. ``epoch_lines``: one line per epoch (logs are never silent for long).
    """
    plan = suite.plan(profile, seeds, overrides, rows=rows)
    experiment_id = tracking.experiment_id_for(experiment, suite.experiment)
    parent_id = find_parent(suite, profile, resume, experiment_id)
    done = finished_pairs(parent_id) if parent_id else set()
    data_cache: dict[tuple, DataSplits] = {}
    ran = skipped = 0
    failed: list[str] = []
    with tracking.tracked_run(
        experiment_id=experiment_id, run_name=f"{suite.name} [{profile}]", tags=parent_tags(suite, profile),
        run_id=parent_id,
    ) as parent_id:
        # Logged again on resume: the report reads references and notes from this copy.
        tracking.log_artifact_text(parent_id, suite.path.name, suite.text)
        if rows:
            tracking.set_tags(parent_id, {TAG_ROWS: ",".join(rows)})
        tracking.mark_stale_children(parent_id)
        interrupted = interrupted_pairs(parent_id) if done or resume else {}
        for index, (row, config) in enumerate(plan, 1):
            name = pair_name(row, config)
            if (row.label, config.seed) in done:
                skipped += 1
                echo(f"[{index}/{len(plan)}] {name}: already FINISHED under {parent_id}, skipped")
                continue
            extra = list(callbacks_for(row, config)) if callbacks_for else []
            if epoch_lines:
                extra.append(EpochLine(name, echo))
            resume_id = interrupted.get((row.label, config.seed))
            if resume_id is not None and not resumable(resume_id):
                resume_id = None
            echo(f"[{index}/{len(plan)}] {name}" + (f": resuming run {resume_id} from its checkpoint" if resume_id else ""))
            try:
                train_pair(suite, profile, row, config, parent_id, extra, resume_id, data_for(config, data_cache), echo,
                           progress=progress, log_models=log_models, checkpoints=checkpoints)
                ran += 1
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # the child is FAILED in MLflow; the suite goes on
                failed.append(name)
                echo(f"    FAILED: {type(exc).__name__}: {tracking.redact(str(exc))}")
        summary = log_summary(parent_id, suite)
        if failed:
            raise SuiteFailed(parent_id, failed, summary)
    return SuiteOutcome(parent_id, summary, ran, skipped, failed)


# ---------------------------------------------------------------------------- parent and children


def pair_name(row: Row, config: TrainConfig) -> str:
    return f"{row.label} seed={config.seed}"


def suite_tags(suite: Suite, profile: str) -> dict[str, str]:
    return {
        tracking.TAG_KIND: "suite",
        tracking.TAG_SUITE: suite.name,
        tracking.TAG_PROFILE: profile,
        tracking.TAG_DATASET: suite.dataset,
    }


def parent_tags(suite: Suite, profile: str) -> dict[str, str]:
    profile_note = suite.profiles[profile].get("description", "")
    return {**suite_tags(suite, profile), tracking.TAG_NOTE: f"{suite.description} Profile {profile}: {profile_note}".strip()}


def child_tags(suite: Suite, profile: str, row: Row, seed: int) -> dict[str, str]:
    # Label and seed from the start: a run killed before its first epoch still says which pair it was.
    return {**suite_tags(suite, profile), tracking.TAG_KIND: "run", tracking.TAG_LABEL: row.label,
            tracking.TAG_SEED: str(seed),
            tracking.TAG_NOTE: f"{describe_variant(row.variant)} Suite {suite.name}: {suite.description}"}


def find_parent(suite: Suite, profile: str, resume: str | bool, experiment_id: str) -> str | None:
    """The parent run a resume re-opens: the one given, else the latest of this suite and profile."""
    if not resume:
        return None
    if isinstance(resume, str):
        run = tracking.get_run(resume)
        if run.data.tags.get(tracking.TAG_SUITE) != suite.name:
            raise SuiteError(f"run {resume} is not a parent run of suite {suite.name!r}")
        return resume
    runs = tracking.find_runs(
        [experiment_id],
        f"tags.`{tracking.TAG_KIND}` = 'suite' and tags.`{tracking.TAG_SUITE}` = '{suite.name}' "
        f"and tags.`{tracking.TAG_PROFILE}` = '{profile}'",
    )
    if runs.empty:
        return None  # nothing to resume: start a fresh parent
    return str(runs.sort_values("start_time").iloc[-1]["run_id"])


def open_parent(suite: Suite, profile: str, experiment_id: str, rows: Sequence[str] | None, parent_id: str | None) -> str:
    """Create the suite's parent run, or mark the one being resumed RUNNING again."""
    if parent_id is None:
        parent_id = tracking.create_run(experiment_id, f"{suite.name} [{profile}]", parent_tags(suite, profile))
        tracking.adopt_launcher(parent_id, f"{suite.name} [{profile}]")
    else:
        tracking.reopen_run(parent_id)
    tracking.log_artifact_text(parent_id, suite.path.name, suite.text)
    if rows:
        tracking.set_tags(parent_id, {TAG_ROWS: ",".join(rows)})
    return parent_id


def finished_pairs(parent_id: str) -> set[tuple[str, int]]:
    children = tracking.child_runs(parent_id)
    if children.empty:
        return set()
    finished = children[children["status"] == "FINISHED"]
    return {(r[f"tags.{tracking.TAG_LABEL}"], int(r[f"tags.{tracking.TAG_SEED}"])) for _, r in finished.iterrows()}


def interrupted_pairs(parent_id: str) -> dict[tuple[str, int], str]:
    """(label, seed) -> the latest child run that was interrupted (killed, Ctrl-C, process died),
    not failed by an error of its own: those are worth continuing from a checkpoint."""
    children = tracking.child_runs(parent_id)
    if children.empty:
        return {}
    error = children.get(f"tags.{tracking.TAG_ERROR}", pd.Series("", index=children.index)).fillna("")
    stopped = children[(children["status"] == "KILLED") | error.str.startswith(("stale", "interrupted"))]
    pairs: dict[tuple[str, int], str] = {}
    for _, r in stopped.sort_values("start_time").iterrows():
        pairs[(r[f"tags.{tracking.TAG_LABEL}"], int(r[f"tags.{tracking.TAG_SEED}"]))] = r["run_id"]
    return pairs


def data_for(config: TrainConfig, cache: dict[tuple, DataSplits]) -> DataSplits:
    """The config's splits, loaded once per distinct data setting."""
    key = (config.dataset, config.data_dir, config.split_seed, config.val_fraction, config.val_from_test, config.max_train_samples)
    if key not in cache:
        cache[key] = load_data(config)
    return cache[key]


def train_pair(suite: Suite, profile: str, row: Row, config: TrainConfig, parent_id: str, callbacks: list,
               resume_id: str | None, data: DataSplits, echo: Callable[[str], None], *, progress: bool | None,
               log_models: bool, checkpoints: Any) -> Any:
    """One row x seed as a child run (continuing ``resume_id`` from its checkpoint when given); its result."""
    name = pair_name(row, config)
    kwargs = dict(callbacks=callbacks, run_name=name, tags=child_tags(suite, profile, row, config.seed),
                  parent_run_id=parent_id, data=data, progress=progress, log_model=log_models, checkpoints=checkpoints)
    try:
        _, result = run_tracked(config, resume_run_id=resume_id, **kwargs)
    except ckpt.CheckpointError as exc:
        if resume_id is None:
            raise
        echo(f"    cannot resume ({exc}); training it again as a new run")
        _, result = run_tracked(config, **kwargs)
    seconds = sum(m.epoch_time_s for m in result.history)
    echo(f"    {name}: val acc {result.final.val_acc:.4f}, test acc {result.test_acc:.4f}, "
         f"{len(result.history)} epochs in {seconds:.1f} s")
    return result


def log_summary(parent_id: str, suite: Suite) -> pd.DataFrame:
    """The summary of the parent's FINISHED children, logged on the parent (summary.csv and .txt)."""
    summary = summarize(tracking.child_runs(parent_id), suite)
    tracking.log_table(parent_id, summary, "summary")
    tracking.log_metrics(parent_id, {"children_finished": float(summary["n_seeds"].sum()) if len(summary) else 0.0})
    return summary
