"""Running a suite: one MLflow parent run, one child run per row x seed, resumable.

``run_suite`` trains the pairs one after another in this process; ``workers.run_suite_workers``
hands the same pairs out to processes and machines. Both use the parent/child helpers here:
which parent a resume re-opens, which pairs already FINISHED, which were interrupted and can
continue from a checkpoint, and the child run of one pair.
"""

from __future__ import annotations

import dataclasses
import math
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
from ..verdicts import AutoSeeds
from .rounds import Rounds
from .spec import TAG_LOOKS, TAG_MARGIN, TAG_ROWS, TAG_SETTINGS, Row, Suite, SuiteError, settings_digest, settings_of
from .summary import summarize

TAG_AUTO_STOP = "bench.seeds_auto_stop"  # why --seeds auto stopped adding seeds


@dataclasses.dataclass
class SuiteOutcome:
    parent_run_id: str
    summary: pd.DataFrame
    ran: int  # pairs trained by this process (and the workers it started)
    skipped: int  # pairs found FINISHED when it started
    failed: list[str]
    finished: int = 0  # pairs of the plan FINISHED under the parent, by anyone
    total: int = 0  # pairs of the plan
    stop_reason: str = ""  # why --seeds auto stopped adding seeds

    def line(self) -> str:
        """``4 trained here, 0 skipped as finished; 8 of 8 pairs finished``."""
        return (f"{self.ran} trained here, {self.skipped} skipped as finished; {self.finished} of {self.total} "
                f"pairs finished")


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
    auto: AutoSeeds | None = None,
    margin: float | None = None,
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
    nested_under: str | None = None,
) -> SuiteOutcome:
    """Train every row x seed of ``profile`` as child runs of one parent run, one after another.

    ``seeds``: the same seeds for every row (default: the profile's); ``auto``: rounds of
    ``--seeds auto`` instead. ``resume``: True re-opens the latest parent of this suite and
    profile, a string re-opens that parent run id; FINISHED children are skipped, children that
    were interrupted (killed, Ctrl-C) continue from their latest checkpoint in the same run, and
    a parent whose runs were trained under other settings is refused. A failing child is marked
    FAILED and the suite goes on; the parent then ends FAILED naming them. ``rows``: only these
    row labels. ``checkpoints``: a ``checkpoint.Policy`` or None for none. ``epoch_lines``: one
    line per epoch (logs are never silent for long). ``nested_under``: the parent run is itself a child
    of that run (a search's confirmation, under the study's parent).
    """
    rounds = Rounds(suite, rows or [r.label for r in suite.rows], seeds, auto)
    margin = suite.margin if margin is None else margin
    every = suite.plan(profile, overrides=overrides, rows=rows, seeds_by_row=rounds.every_seed(profile))
    experiment_id = tracking.experiment_id_for(experiment, suite.experiment)
    parent_id = find_parent(suite, profile, resume, experiment_id, nested_under)
    if parent_id:
        check_same_settings(parent_id, every)
    done = finished_pairs(parent_id) if parent_id else set()
    pairs = _Pairs(suite, profile, echo, progress, log_models, checkpoints, epoch_lines, callbacks_for)
    with tracking.tracked_run(
        experiment_id=experiment_id, run_name=f"{suite.name} [{profile}]", tags=parent_tags(suite, profile),
        run_id=parent_id, parent_run_id=nested_under if parent_id is None else None,
    ) as parent_id:
        record_on_parent(parent_id, suite, rows, margin, rounds.looks, every)
        tracking.mark_stale_children(parent_id)
        interrupted = interrupted_pairs(parent_id) if done or resume else {}
        round_seeds: dict[str, list[int]] | None = rounds.first(profile)
        planned: set[tuple[str, int]] = set()
        while round_seeds:
            plan = suite.plan(profile, overrides=overrides, rows=rows, seeds_by_row=round_seeds)
            planned |= {(row.label, config.seed) for row, config in plan}
            pairs.train_all(plan, parent_id, done, interrupted)
            summary = log_summary(parent_id, suite, margin, rounds.looks)
            round_seeds = rounds.next(summary)
            if round_seeds:
                echo(f"next round of --seeds auto: {', '.join(f'{k} -> {v[-1] + 1}' for k, v in round_seeds.items())} "
                     "seeds")
        record_stop(parent_id, rounds, echo)
        if pairs.failed:
            raise SuiteFailed(parent_id, pairs.failed, summary)
    finished = len(finished_pairs(parent_id) & planned)
    return SuiteOutcome(parent_id, summary, pairs.ran, pairs.skipped, pairs.failed, finished, len(planned),
                        rounds.stop_reason)


@dataclasses.dataclass
class _Pairs:
    """Trains a serial suite's pairs: skips the FINISHED, continues the interrupted, counts what happened."""

    suite: Suite
    profile: str
    echo: Callable[[str], None]
    progress: bool | None
    log_models: bool
    checkpoints: Any
    epoch_lines: bool
    callbacks_for: Callable[[Row, TrainConfig], Iterable[Any]] | None
    data_cache: dict[tuple, DataSplits] = dataclasses.field(default_factory=dict)
    ran: int = 0
    skipped: int = 0
    failed: list[str] = dataclasses.field(default_factory=list)

    def train_all(self, plan: list[tuple[Row, TrainConfig]], parent_id: str, done: set[tuple[str, int]],
                  interrupted: Mapping[tuple[str, int], str]) -> None:
        for index, (row, config) in enumerate(plan, 1):
            name = pair_name(row, config)
            if (row.label, config.seed) in done:
                self.skipped += 1
                self.echo(f"[{index}/{len(plan)}] {name}: already FINISHED under {parent_id}, skipped")
                continue
            extra = list(self.callbacks_for(row, config)) if self.callbacks_for else []
            if self.epoch_lines:
                extra.append(EpochLine(name, self.echo))
            resume_id = interrupted.get((row.label, config.seed))
            if resume_id is not None and not resumable(resume_id):
                resume_id = None
            self.echo(f"[{index}/{len(plan)}] {name}"
                      + (f": resuming run {resume_id} from its checkpoint" if resume_id else ""))
            try:
                train_pair(self.suite, self.profile, row, config, parent_id, extra, resume_id,
                           data_for(config, self.data_cache), self.echo, progress=self.progress,
                           log_models=self.log_models, checkpoints=self.checkpoints)
                self.ran += 1
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # the child is FAILED in MLflow; the suite goes on
                self.failed.append(name)
                self.echo(f"    FAILED: {type(exc).__name__}: {tracking.redact(str(exc))}")


def record_stop(parent_id: str, rounds: Rounds, echo: Callable[[str], None]) -> None:
    if rounds.auto:
        echo(f"--seeds auto stopped: {rounds.stop_reason}")
        tracking.set_tags(parent_id, {TAG_AUTO_STOP: rounds.stop_reason})


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


def find_parent(suite: Suite, profile: str, resume: str | bool, experiment_id: str,
                nested_under: str | None = None) -> str | None:
    """The parent run a resume re-opens: the one given, else the latest of this suite and profile
    (under ``nested_under`` when given)."""
    if not resume:
        return None
    if isinstance(resume, str):
        run = tracking.get_run(resume)
        if run.data.tags.get(tracking.TAG_SUITE) != suite.name:
            raise SuiteError(f"run {resume} is not a parent run of suite {suite.name!r}")
        return resume
    nested = f" and tags.`{tracking.PARENT_TAG}` = '{nested_under}'" if nested_under else ""
    runs = tracking.find_runs(
        [experiment_id],
        f"tags.`{tracking.TAG_KIND}` = 'suite' and tags.`{tracking.TAG_SUITE}` = '{suite.name}' "
        f"and tags.`{tracking.TAG_PROFILE}` = '{profile}'{nested}",
    )
    if runs.empty:
        return None  # nothing to resume: start a fresh parent
    return str(runs.sort_values("start_time").iloc[-1]["run_id"])


def open_parent(suite: Suite, profile: str, experiment_id: str, parent_id: str | None,
                nested_under: str | None = None) -> str:
    """Create the suite's parent run (a child of ``nested_under`` when given), or mark the one being
    resumed RUNNING again."""
    if parent_id is None:
        tags = parent_tags(suite, profile) | ({tracking.PARENT_TAG: nested_under} if nested_under else {})
        parent_id = tracking.create_run(experiment_id, f"{suite.name} [{profile}]", tags)
        tracking.adopt_launcher(parent_id, f"{suite.name} [{profile}]")
    else:
        tracking.reopen_run(parent_id)
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
    test = "test not evaluated" if result.test_acc is None else f"test acc {result.test_acc:.4f}"
    echo(f"    {name}: val acc {result.final.val_acc:.4f}, {test}, "
         f"{len(result.history)} epochs in {seconds:.1f} s")
    return result


def log_summary(parent_id: str, suite: Suite, margin: float, looks: int) -> pd.DataFrame:
    """The summary of the parent's FINISHED children, logged on the parent (summary.csv and .txt)."""
    summary = summarize(tracking.child_runs(parent_id), suite, margin=margin, looks=looks)
    tracking.log_table(parent_id, summary, "summary")
    tracking.log_metrics(parent_id, {"children_finished": float(summary["n_seeds"].sum()) if len(summary) else 0.0})
    return summary


def record_on_parent(parent_id: str, suite: Suite, rows: Sequence[str] | None, margin: float, looks: int,
                     plan: Sequence[tuple[Row, TrainConfig]]) -> None:
    """What the report needs to judge the parent's runs as this command did: the suite file (logged
    again on resume: references and notes are read from this copy), the rows, margin and looks, and
    the digest of the settings its runs are trained under."""
    tracking.log_artifact_text(parent_id, suite.path.name, suite.text)
    tags = {TAG_MARGIN: f"{margin:g}", TAG_LOOKS: str(looks), TAG_SETTINGS: settings_digest(plan)}
    if rows:
        tags[TAG_ROWS] = ",".join(rows)
    tracking.set_tags(parent_id, tags)


def check_same_settings(parent_id: str, plan: Sequence[tuple[Row, TrainConfig]]) -> None:
    """Refuse to resume a parent whose runs were trained under other settings than ``plan``'s: a pair
    FINISHED under 1 epoch must never count as done for a command that asks for 3."""
    children = tracking.child_runs(parent_id)
    if children.empty:
        return
    wanted = {row.label: settings_of(config) for row, config in plan}
    differ: dict[tuple[str, str], str] = {}
    for _, child in children[children["status"].isin(["FINISHED", "KILLED", "FAILED"])].iterrows():
        label = child.get(f"tags.{tracking.TAG_LABEL}")
        if label not in wanted or _missing(child.get("params.variant")):
            continue  # another row, or a run killed before it logged its config
        for key, value in wanted[label].items():
            logged = child.get(f"params.{key}")
            if key != "seed" and (key, label) not in differ and logged != tracking.param_text(value):
                shown = "not logged" if _missing(logged) else logged
                differ[(key, label)] = f"{label}: {key} = {shown} in its runs, {tracking.param_text(value)} now"
    if differ:
        raise SuiteError(
            f"--resume: parent run {parent_id} holds runs trained under other settings than this command's: "
            f"{'; '.join(list(differ.values())[:8])}{' ...' if len(differ) > 8 else ''}. Resume with the same "
            "settings, or leave out --resume to start a new parent run."
        )


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
