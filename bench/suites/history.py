"""``bench history SUITE[:PROFILE]``: every parent run of a suite, oldest first, per machine, steps flagged.

A suite lives across code changes: each parent run records its git commit, and its runs record the
machine (``hw.machine``). The history gives, per machine and row, each parent run's mean of the
suite's measure with a 95 % t-interval over its seeds, and the verdict that run reached against its
own baseline (judged as the run recorded it: its looks and decisions). Between consecutive parent runs
of the same plan on the same machine it asks what ``bench diff`` would: a row that diff calls worse,
or broken (missing, failed, diverged), is a flagged step. Parents of other plans (profile, data,
settings, seeds) are shown, not compared: a difference between them need not be the code's. Seconds
compare only on one machine, which is why runs are grouped by it.

Everything comes from the tracking store (``MLFLOW_TRACKING_URI``: a local store or a server).
"""

from __future__ import annotations

import dataclasses
import math
import textwrap

import pandas as pd
from scipy import stats

from .. import tracking
from ..verdicts import WORSE
from .diff import BROKEN, TARGET, Side, diff, plan_differences, resolve
from .parent import decisions_of, look_of
from .spec import MEASURES, SuiteError
from .summary import WIDTH, _clip, fit, summarize

CONFIDENCE = 0.95  # the interval of each run's mean over its seeds
FLAGGED = (WORSE, BROKEN)  # steps `bench diff` fails on by default
OTHER_PLAN = "other plan"
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
    previous: dict[str, Side] = {}  # machine -> its latest parent so far
    for index, (side, (_, parent)) in enumerate(zip(sides, parents.iterrows()), start=1):
        machine = machine_of(side)
        rows = _judged(side, parent, machine, index)
        before = previous.get(machine)
        if before is not None:
            rows = _steps(rows, before, side)
        previous[machine] = side
        frames.append(rows)
    table = pd.concat(frames, ignore_index=True)
    machines = list(dict.fromkeys(table["machine"]))
    order = {label: k for k, label in enumerate(dict.fromkeys(
        label for side in reversed(sides) for label in side.labels))}  # the newest plan's order first
    table["_m"], table["_r"] = table["machine"].map(machines.index), table["row"].map(order)
    table = table.sort_values(["_m", "_r", "run"]).drop(columns=["_m", "_r"]).reset_index(drop=True)
    return History(name, profile, table[COLUMNS], len(parents))


def machine_of(side: Side) -> str:
    """The machine a parent's runs ran on (the most common ``hw.machine`` of its runs)."""
    column = f"tags.{tracking.TAG_HARDWARE}.machine"
    found = side.pairs[column].dropna() if column in side.pairs else pd.Series(dtype=object)
    return str(found.mode().iloc[0]) if len(found) else NO_MACHINE


def _judged(side: Side, parent: pd.Series, machine: str, index: int) -> pd.DataFrame:
    """One row per row of the parent's plan: its mean and interval, and its verdict as the run recorded it."""
    run = tracking.get_run(side.parent_run_id)
    summary = summarize(side.pairs, side.suite, margin=side.margin, look=look_of(run.data.tags), planned=side.planned,
                        decided=decisions_of(side.parent_run_id))
    measure = summary.attrs.get("measure", "val_acc")
    commit = run.data.tags.get("bench.git_commit", "unknown")
    records = []
    for _, r in summary.iterrows():
        values = side.values(r["label"], measure).dropna()
        low, high = mean_interval(values)
        records.append({
            "machine": machine, "run": index, "parent_run_id": side.parent_run_id,
            "experiment_id": run.info.experiment_id, "start": pd.Timestamp(parent["start_time"]),
            "commit": commit, "status": run.info.status, "profile": side.profile, "row": r["label"],
            "measure": measure, "seeds": len(values), "mean": values.mean() if len(values) else math.nan,
            "std": values.std(ddof=1) if len(values) > 1 else math.nan, "ci_low": low, "ci_high": high,
            "verdict_kind": r["verdict_kind"], "verdict": r["verdict"], "step_kind": "", "step": "", "flagged": False,
        })
    return pd.DataFrame(records, columns=COLUMNS)


def mean_interval(values: pd.Series, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The t-interval of the mean over seeds (NaN with fewer than two)."""
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return values.mean() - half, values.mean() + half


def _steps(rows: pd.DataFrame, before: Side, after: Side) -> pd.DataFrame:
    """Each row's step from ``before`` to ``after`` (the same machine), as ``bench diff before after`` sees it;
    a row of ``before`` that ``after`` did not plan is added, broken (diff fails on it too)."""
    differences = plan_differences(before, after)
    if differences:
        rows["step_kind"] = OTHER_PLAN
        rows["step"] = f"{OTHER_PLAN}, not compared ({differences[0]}{'; ...' if len(differences) > 1 else ''})"
        return rows
    table = diff(before, after).set_index("label")
    for i, r in rows.iterrows():
        if r["row"] in table.index:
            found = table.loc[r["row"]]
            rows.at[i, "step_kind"], rows.at[i, "flagged"] = str(found["kind"]), str(found["kind"]) in FLAGGED
            rows.at[i, "step"] = str(found["verdict"])
    gone = [label for label in table.index if label not in set(rows["row"]) and table.loc[label, "kind"] == BROKEN]
    if gone:
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
    lines = [f"history of {shown}: {h.runs} parent run(s) on {len(h.machines)} machine(s), oldest first"]
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

        lines += ["", *textwrap.wrap(f"machine {k}: {machine}", WIDTH), fit(table, 24, 10)]
    flagged = h.flagged
    lines.append("")
    if len(flagged):
        lines += textwrap.wrap("flagged steps (`bench diff` of the run before on the same machine would fail): " + "; ".join(
            f"{r['row']} at #{r['run']} ({_short_commit(r['commit'])}): {r['step']}" for _, r in flagged.iterrows()),
            WIDTH, subsequent_indent="    ")
    else:
        lines.append("no flagged step: no row got worse or broke between consecutive runs on one machine")
    measure = ", ".join(MEASURES.get(m, m) for m in measures)
    lines += textwrap.wrap(
        f"Each run: {measure}, mean over its seeds with a 95 % t-interval (scipy.stats.t); verdict: that run's "
        "own against its baseline, as it recorded it. Step: the run against the run before it on the same machine, "
        "with bench diff's tests (paired over shared seeds, one Holm-Shaffer family at 5 %); '!' marks a row diff "
        "calls worse or broken. Runs of another plan are shown, not compared.", WIDTH)
    return "\n".join(lines)


def _short_commit(commit: str) -> str:
    """``a780951c`` (``+`` for a work tree with changes)."""
    return commit[:8] + ("+" if commit.endswith("-dirty") else "") if commit != "unknown" else "unknown"


def _interval(low: float, high: float) -> str:
    return "" if pd.isna(low) else f"[{low * 100:.2f}, {high * 100:.2f}]"


__all__ = ["History", "format_history", "history", "mean_interval", "parents_of"]
