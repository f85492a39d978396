"""A suite's MLflow runs: the parent run and its children, one per row x seed.

Which parent a resume re-opens, which pairs were tried and what became of them, which were
interrupted and can continue from a checkpoint, the child run of one pair, and what the parent
records so that anyone (a resume, another machine, a report) judges its runs as the command did.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from .. import checkpoint as ckpt
from .. import tracking
from ..config import TrainConfig
from ..data import DataSplits
from ..models import describe_variant
from ..runner import run_tracked
from ..runtime import hardware, process_alive, resolve_device
from ..train import load_data
from ..verdicts.sequential import Look
from .curves import learning_curves, time_to_target
from .rounds import (DECISIONS_ARTIFACT, TAG_JUDGED_SEEDS, TAG_LOOK, TAG_LOOKS_TAKEN, TAG_ROUND, TAG_ROUND_JUDGED,
                     Rounds, look_data)
from .spec import TAG_LOOKS, TAG_MARGIN, TAG_ROWS, TAG_SETTINGS, Row, Suite, SuiteError, settings_digest, settings_of
from . import verdict_data
from .summary import DIVERGED, FINISHED, pair_outcomes, summarize


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
        shown = ", ".join(failed[:6]) + (f" and {len(failed) - 6} more" if len(failed) > 6 else "")
        super().__init__(f"{len(failed)} run(s) did not finish: {shown} (parent run {parent_run_id})")
        self.parent_run_id = parent_run_id
        self.failed = failed
        self.summary = summary


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
                nested_under: str | None = None, device: str = "auto") -> str:
    """Create the suite's parent run (a child of ``nested_under`` when given), or mark the one being
    resumed RUNNING again. The parent names the machine that owns it (``hw.machine``, for ``device``):
    a history groups by it even when every run of the parent failed before it could say."""
    if parent_id is None:
        tags = parent_tags(suite, profile) | ({tracking.PARENT_TAG: nested_under} if nested_under else {})
        parent_id = tracking.create_run(experiment_id, f"{suite.name} [{profile}]", tags)
        tracking.adopt_launcher(parent_id, f"{suite.name} [{profile}]")
    else:
        tracking.reopen_run(parent_id)
    # Who owns the parent now: a resume on this host can tell a dead owner from a live one.
    tracking.set_tags(parent_id, {tracking.TAG_HOST: socket.gethostname(), tracking.TAG_PID: str(os.getpid()),
                                  f"{tracking.TAG_HARDWARE}.machine": hardware(resolve_device(device))["machine"]})
    return parent_id


def owner_gone(parent_id: str) -> bool:
    """Whether the parent's owner has stopped: the parent ended (KILLED, FAILED, FINISHED), or its owning
    process on this host is dead. An owner on another host that died without ending it looks alive."""
    run = tracking.get_run(parent_id)
    if run.info.status != "RUNNING":
        return True
    host, pid = run.data.tags.get(tracking.TAG_HOST), run.data.tags.get(tracking.TAG_PID, "")
    return host == socket.gethostname() and pid.isdigit() and not process_alive(int(pid))


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
    key = (config.dataset, config.data_dir, config.split_seed, config.val_fold, config.val_fraction, config.val_from_test,
           config.max_train_samples)
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
        echo("\n".join(textwrap.wrap(f"    cannot resume ({tracking.redact(str(exc))}); training it again as a new run",
                                     100, subsequent_indent="      ")))
        _, result = run_tracked(config, **kwargs)
    seconds = sum(m.epoch_time_s for m in result.history)
    test = "test not evaluated" if result.test_acc is None else f"test acc {result.test_acc:.4f}"
    echo(f"    {name}: val acc {result.final.val_acc:.4f}, {test}, "
         f"{len(result.history)} epochs in {seconds:.1f} s")
    return result


def log_summary(parent_id: str, suite: Suite, margin: float, rounds: Rounds) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The summary of every pair of the rounds so far (failed and unfinished ones counted, never
    dropped), logged on the parent (summary.csv and .txt); also the pairs' outcomes."""
    outcomes = pair_outcomes(tracking.child_runs(parent_id))
    summary = summarize(outcomes, suite, margin=margin, look=rounds.look(look_data(outcomes)),
                        planned=rounds.round_seeds, decided=rounds.decisions, reached=reached_of(outcomes, suite))
    tracking.log_table(parent_id, summary, "summary")
    tracking.log_metrics(parent_id, {"children_finished": float(summary["n_seeds"].sum()) if len(summary) else 0.0})
    verdict_data.publish(parent_id, summary, outcomes, summary.attrs["look"].index)
    return summary, outcomes


def reached_of(outcomes: pd.DataFrame, suite: Suite | None) -> pd.DataFrame | None:
    """With a suite ``target``: each run's time to it, from its learning curve (None without one)."""
    if suite is None or suite.target is None:
        return None
    return time_to_target(learning_curves(outcomes), suite.target, suite.measure)


def planned_of(tags: Mapping[str, str]) -> dict[str, list[int]] | None:
    """Each row's seeds as the parent's last look judged them (None for parents from before bench
    recorded them). While a new round is under way (``round_under_way``), the seeds of the look before
    it: the new round's runs are judged at the next look, and until then the last look's verdicts stand."""
    text = tags.get(TAG_JUDGED_SEEDS) if round_under_way(tags) else tags.get(TAG_ROUND)
    return {k: [int(s) for s in v] for k, v in json.loads(text).items()} if text else None


def round_under_way(tags: Mapping[str, str]) -> bool:
    """Whether a parent started a round after judging one and has not judged it yet (a run stopped
    or still training between looks). False when its last round was judged, or none was judged yet
    (then the first round is all there is to show)."""
    return tags.get(TAG_ROUND_JUDGED) == "false" and bool(json.loads(tags.get(TAG_JUDGED_SEEDS) or "{}"))


def round_progress(tags: Mapping[str, str], outcomes: pd.DataFrame) -> dict[str, Any] | None:
    """For a round under way: the pairs judged so far (whose verdicts stand until the next look), the
    last look taken (None if no look tested anything yet) and how many of the round's new runs have
    ended (finished or diverged) of how many it plans. ``outcomes``: ``pair_outcomes`` of the children."""
    if not round_under_way(tags):
        return None
    judged = {(k, int(s)) for k, v in json.loads(tags[TAG_JUDGED_SEEDS]).items() for s in v}
    new = {(k, int(s)) for k, v in json.loads(tags.get(TAG_ROUND) or "{}").items() for s in v} - judged
    ended = {(label, int(seed)) for label, seed, state in zip(outcomes[f"tags.{tracking.TAG_LABEL}"], outcomes["seed"],
                                                              outcomes["pair_state"]) if state in (FINISHED, DIVERGED)}
    return {"judged": judged, "look": int(tags.get(TAG_LOOKS_TAKEN) or 0) or None, "ended": len(new & ended),
            "planned": len(new)}


def record_on_parent(parent_id: str, suite: Suite, rows: Sequence[str] | None, margin: float, rounds: Rounds,
                     plan: Sequence[tuple[Row, TrainConfig]]) -> None:
    """What the report needs to judge the parent's runs as this command did: the suite file (logged
    again on resume: references and notes are read from this copy), the rows, the margin, the design
    and its looks, and the digest of the settings its runs are trained under."""
    tracking.log_artifact_text(parent_id, suite.path.name, suite.text)
    tags = {TAG_MARGIN: f"{margin:g}", TAG_SETTINGS: settings_digest(plan)}
    if rows:
        tags[TAG_ROWS] = ",".join(rows)
    tracking.set_tags(parent_id, tags)
    record_rounds(parent_id, rounds)


def looks_of(tags: Mapping[str, str]) -> int:
    return int(tags.get(TAG_LOOKS) or 1)


def look_of(tags: Mapping[str, str]) -> Look:
    """The last look a parent recorded (its nominal levels); a parent from before bench recorded looks
    was judged at alpha split evenly over ``bench.looks``."""
    text = tags.get(TAG_LOOK)
    if text:
        found = json.loads(text)
        return Look(tuple(found["fractions"]), int(found["index"]), found["spending"], tuple(found.get("seeds", ())),
                    found.get("test", ""))
    looks = looks_of(tags)
    return Look(tuple((k + 1) / looks for k in range(looks)), looks, "bonferroni") if looks > 1 else Look()


TAG_DECISIONS_BEFORE = "bench.decisions"  # where parents of older bench recorded their decisions


def decisions_of(parent_id: str) -> dict[str, dict]:
    """The rows a parent's looks decided, final (its ``decisions.json``; none for older parents)."""
    if DECISIONS_ARTIFACT not in tracking.list_artifacts(parent_id):  # bench before 2fc7111 kept them in a tag
        return json.loads(tracking.get_run(parent_id).data.tags.get(TAG_DECISIONS_BEFORE, "") or "{}")
    return json.loads(tracking.read_artifact_text(parent_id, DECISIONS_ARTIFACT))


def restore_rounds(rounds: Rounds, parent_id: str) -> None:
    """``rounds`` continued from what the parent recorded (its tags and decisions)."""
    rounds.restore(tracking.get_run(parent_id).data.tags, parent_id, decisions_of(parent_id))


def record_rounds(parent_id: str, rounds: Rounds) -> None:
    """The design, the round and the looks on the parent's tags; the rows decided in ``decisions.json``."""
    tracking.set_tags(parent_id, rounds.tags())
    tracking.log_artifact_text(parent_id, DECISIONS_ARTIFACT, json.dumps(rounds.decisions, indent=1))


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
