"""``bench history SUITE[:PROFILE]``: every parent run of a suite, oldest first, per machine, steps flagged.

A suite lives across code changes: each parent run records its git commit, and its runs (and the
parent itself) record the machine (``hw.machine``). The history gives, per machine and row, each
parent run's mean of the suite's measure with a 95 % t-interval over its seeds, and the verdict that
run reached against its own baseline (as its last ``summary.csv`` recorded it). Each finished parent
is compared with the latest earlier parent of the same plan (profile, data, settings, seeds) on the
same machine, as ``bench diff`` would: a row diff calls worse, or broken (missing, failed,
diverged), is a flagged step. A parent with no earlier one of its plan there is shown, not compared
(a difference from another plan need not be the code's); one still running is not compared, nor
compared with. Seconds compare only on one machine, which is why runs are grouped by it.

Everything comes from the tracking store (``MLFLOW_TRACKING_URI``: a local store or a server).
"""

from __future__ import annotations

import dataclasses
import io
import math
import textwrap

import pandas as pd

from .. import tracking
from ..verdicts import WORSE
from ..verdicts.baseline import mean_interval
from .diff import BROKEN, TARGET, Side, diff, plan_differences, resolve
from .parent import decisions_of, look_of
from .spec import MEASURES, SuiteError
from .summary import WIDTH, _clip, fit, summarize

CONFIDENCE = 0.95  # the interval of each run's mean over its seeds
FLAGGED = (WORSE, BROKEN)  # steps `bench diff` fails on by default
OTHER_PLAN = "other plan"
RUNNING = "running"
NO_MACHINE = "machine not recorded"
COLUMNS = ["machine", "run", "parent_run_id", "experiment_id", "start", "commit", "status", "profile", "row", "measure",
           "seeds", "mean", "std", "ci_low", "ci_high", "verdict_kind", "verdict", "step_kind", "step", "flagged"]


@dataclasses.dataclass
class History:
    """``rows``: one per (parent run, row of its plan), in the order shown (machine, row, run)."""

    name: str
    profile: str | None
    rows: pd.DataFrame
    runs: int  # parent runs found

    @property
    def machines(self) -> list[str]:
        return list(dict.fromkeys(self.rows["machine"]))

    @property
    def flagged(self) -> pd.DataFrame:
        return self.rows[self.rows["flagged"]]

    def latest_flagged(self) -> pd.DataFrame:
        """Flagged steps into the newest run of each machine: what a CI gate on the history fails on."""
        newest = self.rows.groupby("machine")["run"].transform("max")
        return self.rows[self.rows["flagged"] & (self.rows["run"] == newest)]


def parents_of(name: str, profile: str | None) -> pd.DataFrame:
    """Every parent run of suite ``name`` (and ``profile``), in every experiment, oldest first."""
    where = f"tags.`{tracking.TAG_KIND}` = 'suite' and tags.`{tracking.TAG_SUITE}` = '{name}'"
    if profile:
        where += f" and tags.`{tracking.TAG_PROFILE}` = '{profile}'"
    runs = tracking.find_runs(filter_string=where)
    return runs.sort_values("start_time").reset_index(drop=True) if len(runs) else runs


def history(target: str) -> History:
    """The history of ``SUITE[:PROFILE]``. Raises ``SuiteError`` for a malformed target or no runs."""
    match = TARGET.match(target)
    if not match or match["back"]:
        raise SuiteError(f"{target!r} names no suite; accepted: NAME or NAME:PROFILE (e.g. cifar2-chapter8:quick)")
    name, profile = match["name"], match["profile"]
    parents = parents_of(name, profile)
    if parents.empty:
        shown = f"{name}:{profile}" if profile else name
        raise SuiteError(f"no parent run of suite {shown!r} in {tracking.tracking_uri()}; run `bench suite` first")
    sides = [resolve(str(run_id)) for run_id in parents["run_id"]]
    frames = []
    earlier: dict[tuple[str, str], list[Side]] = {}  # (machine, profile) -> its finished parents so far
    for index, (side, (_, parent)) in enumerate(zip(sides, parents.iterrows()), start=1):
        machine = machine_of(side)
        rows = _judged(side, parent, machine, index)
        if parent["status"] == "RUNNING":  # still running (or its owner died): what it holds is not its result
            rows["step_kind"], rows["step"] = RUNNING, "still running: not compared"
            frames.append(rows)
            continue
        before = earlier.setdefault((machine, side.profile), [])
        # The run before it of the same plan: a step in the code, not a change of the plan.
        same_plan = next((b for b in reversed(before) if not plan_differences(b, side)), None)
        if same_plan is not None:
            rows = _steps(rows, same_plan, side)
        elif before:
            differences = plan_differences(before[-1], side)
            rows["step_kind"] = OTHER_PLAN
            rows["step"] = f"{OTHER_PLAN}, not compared ({differences[0]}{'; ...' if len(differences) > 1 else ''})"
        before.append(side)
        frames.append(rows)
    table = pd.concat(frames, ignore_index=True)
    machines = list(dict.fromkeys(table["machine"]))
    order = {label: k for k, label in enumerate(dict.fromkeys(
        label for side in reversed(sides) for label in side.labels))}  # the newest plan's order first
    table["_m"], table["_r"] = table["machine"].map(machines.index), table["row"].map(order)
    table = table.sort_values(["_m", "_r", "run"]).drop(columns=["_m", "_r"]).reset_index(drop=True)
    return History(name, profile, table[COLUMNS], len(parents))


def machine_of(side: Side) -> str:
    """The machine a parent's runs ran on (the most common ``hw.machine`` of its runs), else the one its
    owner recorded on it (every run failed before it could say)."""
    column = f"tags.{tracking.TAG_HARDWARE}.machine"
    found = side.pairs[column].dropna() if column in side.pairs else pd.Series(dtype=object)
    if len(found):
        return str(found.mode().iloc[0])
    return tracking.get_run(side.parent_run_id).data.tags.get(f"{tracking.TAG_HARDWARE}.machine", NO_MACHINE)


def _judged(side: Side, parent: pd.Series, machine: str, index: int) -> pd.DataFrame:
    """One row per row of the parent's plan: its mean and interval over its seeds, and its verdict as the
    run recorded it (its last ``summary.csv``; judged again from its runs only when it has none)."""
    run = tracking.get_run(side.parent_run_id)
    summary = summarize(side.pairs, side.suite, margin=side.margin, look=look_of(run.data.tags), planned=side.planned,
                        decided=decisions_of(side.parent_run_id))
    recorded = recorded_verdicts(side.parent_run_id)
    measure = summary.attrs.get("measure", "val_acc")
    commit = run.data.tags.get("bench.git_commit", "unknown")
    records = []
    for _, r in summary.iterrows():
        values = side.values(r["label"], measure).dropna()
        low, high = mean_interval(values, CONFIDENCE)
        kind, text = recorded.get(r["label"], (r["verdict_kind"], r["verdict"]))
        records.append({
            "machine": machine, "run": index, "parent_run_id": side.parent_run_id,
            "experiment_id": run.info.experiment_id, "start": pd.Timestamp(parent["start_time"]),
            "commit": commit, "status": run.info.status, "profile": side.profile, "row": r["label"],
            "measure": measure, "seeds": len(values), "mean": values.mean() if len(values) else math.nan,
            "std": values.std(ddof=1) if len(values) > 1 else math.nan, "ci_low": low, "ci_high": high,
            "verdict_kind": kind, "verdict": text, "step_kind": "", "step": "", "flagged": False,
        })
    return pd.DataFrame(records, columns=COLUMNS)


def recorded_verdicts(parent_id: str) -> dict[str, tuple[str, str]]:
    """label -> (verdict kind, verdict) as the parent's last summary recorded them ({} without one)."""
    if "summary.csv" not in tracking.list_artifacts(parent_id):
        return {}
    summary = pd.read_csv(io.StringIO(tracking.read_artifact_text(parent_id, "summary.csv")))
    if not {"label", "verdict_kind", "verdict"} <= set(summary.columns):
        return {}
    return {str(r["label"]): (str(r["verdict_kind"]), str(r["verdict"])) for _, r in summary.iterrows()}


def _steps(rows: pd.DataFrame, before: Side, after: Side) -> pd.DataFrame:
    """Each row's step from ``before`` to ``after`` (the same machine and plan), as ``bench diff before after``
    sees it; a row of ``before`` that ``after`` did not plan is added, broken (diff fails on it too)."""
    table = diff(before, after).set_index("label")
    for i, r in rows.iterrows():
        if r["row"] in table.index:
            found = table.loc[r["row"]]
            rows.at[i, "step_kind"], rows.at[i, "flagged"] = str(found["kind"]), str(found["kind"]) in FLAGGED
            rows.at[i, "step"] = str(found["verdict"])
    gone = [label for label in table.index if label not in set(rows["row"]) and table.loc[label, "kind"] == BROKEN]
    if gone and len(rows):
        first = rows.iloc[0]
        added = pd.DataFrame([{**first.to_dict(), "row": label, "seeds": 0, "mean": math.nan, "std": math.nan,
                               "ci_low": math.nan, "ci_high": math.nan, "verdict_kind": "", "verdict": "",
                               "step_kind": BROKEN, "step": str(table.loc[label, "verdict"]), "flagged": True}
                              for label in gone], columns=COLUMNS)
        rows = pd.concat([rows, added], ignore_index=True)
    return rows


def format_history(h: History) -> str:
    """The history as text no wider than ``WIDTH``: per machine, per row, one line per parent run."""
    measures = sorted(set(h.rows["measure"]))
    shown = f"{h.name}:{h.profile}" if h.profile else h.name
    lines = textwrap.wrap(f"history of {shown}: {h.runs} parent run(s) on {len(h.machines)} machine(s), oldest first",
                          WIDTH)
    for k, machine in enumerate(h.machines, start=1):
        mine = h.rows[h.rows["machine"] == machine]

        def table(clip: int, mine: pd.DataFrame = mine) -> str:
            return pd.DataFrame({
                "row": mine["row"].map(lambda s: _clip(str(s), 18)),
                "run": mine["run"].map(lambda n: f"#{n}"),
                "date": mine["start"].map(lambda t: t.strftime("%m-%d %H:%M") if pd.notna(t) else ""),
                "commit": mine["commit"].map(_short_commit),
                "seeds": mine["seeds"],
                "mean %": mine["mean"].map(lambda v: "" if pd.isna(v) else f"{v * 100:.2f}"),
                "95% interval": [_interval(lo, hi) for lo, hi in zip(mine["ci_low"], mine["ci_high"])],
                "verdict": mine["verdict_kind"].map(lambda s: _clip(str(s), 12)),
                "step": [("! " if f else "") + _clip(str(k), clip) for k, f in zip(mine["step_kind"], mine["flagged"])],
            }).to_string(index=False)

        lines += ["", *textwrap.wrap(f"machine {k}: {machine}", WIDTH), fit(table, 24, 4)]
    flagged = h.flagged
    lines.append("")
    if len(flagged):
        lines += textwrap.wrap("flagged steps (`bench diff` of the run before of its plan on its machine fails): " + "; ".join(
            f"{r['row']} at #{r['run']} ({_short_commit(r['commit'])}): {r['step']}" for _, r in flagged.iterrows()),
            WIDTH, subsequent_indent="    ")
    else:
        lines.append("no flagged step: no row got worse or broke between consecutive runs on one machine")
    measure = ", ".join(MEASURES.get(m, m) for m in measures)
    lines += textwrap.wrap(
        f"Each run: {measure}, mean over its seeds with a 95 % t-interval (scipy.stats.t); verdict: that run's "
        "own against its baseline, as it recorded it. Step: the run against the latest earlier run of the same "
        "plan on the same machine, "
        "with bench diff's tests (paired over shared seeds, one Holm-Shaffer family at 5 %); '!' marks a row diff "
        "calls worse or broken. A run with no earlier run of its plan there, or still running, is not compared.",
        WIDTH)
    return "\n".join(lines)


def _short_commit(commit: str) -> str:
    """``a780951c`` (``+`` for a work tree with changes)."""
    return commit[:8] + ("+" if commit.endswith("-dirty") else "") if commit != "unknown" else "unknown"


def _interval(low: float, high: float) -> str:
    return "" if pd.isna(low) else f"[{low * 100:.2f}, {high * 100:.2f}]"


__all__ = ["History", "format_history", "history", "mean_interval", "parents_of"]
