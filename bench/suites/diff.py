"""``bench diff A B``: two runs of one suite compared row by row with the suite's own statistics.

A and B are parent runs (ids, or a suite name with an optional ``:profile`` and ``~N`` for the
N-th latest before the newest): before and after a code change, or two machines. What a CI gate
needs, per row of A's plan:

- a row of A that is missing from B, or whose runs failed, diverged or did not finish in B (and
  not in A), is **broken**: a regression, named, whatever the statistics say;
- A and B must be runs of the same plan (profile, data, every training setting of each row, and
  seeds): otherwise the comparison is refused, naming what differs, unless the caller accepts it
  (``allow_other_plans``), and then it says so;
- rows that ran the same seeds on both sides are compared seed by seed (paired t-test and paired
  TOST: the shared seed, which fixes init and batch order, cancels out); identical per-seed values
  are **identical**; other rows get Welch's tests. All rows form one Holm-Shaffer family at alpha;
- optionally seconds per epoch, the same tests on a log scale (the margin is a ratio).
"""

from __future__ import annotations

import dataclasses
import math
import re
import textwrap

import numpy as np
import pandas as pd

from .. import tracking
from ..checkpoint import NOT_IDENTITY
from ..config import TrainConfig
from ..verdicts import (
    ALPHA, BETTER, DEFAULT_MARGIN, EQUIVALENT, IDENTICAL, UNDECIDED, UNJUDGED, WORSE, compare,
)
from .parent import planned_of
from .rounds import TAG_DESIGN
from .spec import TAG_MARGIN, Suite, SuiteError, parse_logged
from .summary import DIVERGED, FAILED, FINISHED, WIDTH, _grouped, fit, measure_name, pair_outcomes, percent, points

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
TARGET = re.compile(r"^(?P<name>[^:~]+)(:(?P<profile>[^~]+))?(~(?P<back>\d+))?$")
FASTER, SLOWER = "faster", "slower"
BROKEN = "broken"  # missing, failed, diverged or unfinished in B and not in A: a regression, not a statistic
DEFAULT_TIME_MARGIN = 0.05  # seconds per epoch within ±5 % count as the same speed
# Params that are not the plan: where and how fast a run ran, the seed (compared on its own), and what
# the code makes of the plan (a model's size is what a code change may change, and diff compares).
NOT_PLAN = (*NOT_IDENTITY, "seed", "num_parameters")


@dataclasses.dataclass
class Side:
    parent_run_id: str
    name: str  # the suite's name
    profile: str
    pairs: pd.DataFrame  # one row per planned (label, seed) that has a run: ``summary.pair_outcomes``
    planned: dict[str, list[int]]  # each row's planned seeds
    suite: Suite | None  # as logged with the parent
    margin: float  # the margin the suite was judged with
    dataset: str = ""
    design: str = ""  # the seeds design the parent recorded (bench.seeds_design), "" for older parents

    @property
    def title(self) -> str:
        return f"{self.name} [{self.profile}] {self.parent_run_id[:8]}"

    @property
    def runs(self) -> pd.DataFrame:
        """The measured runs (FINISHED, not diverged)."""
        return self.pairs[self.pairs["pair_state"] == FINISHED]

    def of(self, label: str) -> pd.DataFrame:
        return self.pairs[self.pairs[f"tags.{tracking.TAG_LABEL}"] == label]

    def values(self, label: str, metric: str) -> pd.Series:
        """Per planned seed of the row: the run's ``metric``, NaN for a run that is not a measurement."""
        runs = self.of(label)
        measured = runs[runs["pair_state"] == FINISHED]
        column = f"metrics.{metric}"
        found = dict(zip(measured["seed"], measured[column].astype(float))) if column in measured else {}
        return pd.Series({seed: found.get(seed, math.nan) for seed in self.planned.get(label, [])}, dtype=float)

    def broken(self, label: str) -> str:
        """``2 of 3 runs failed (seed 1: ...)``, or "" when every planned run is a measurement."""
        runs = self.of(label)
        states = dict(zip(runs["seed"], runs["pair_state"]))
        reasons = dict(zip(runs["seed"], runs["pair_reason"]))
        bad = [(seed, states.get(seed, "not started"), reasons.get(seed, "no run")) for seed in self.planned[label]
               if states.get(seed) != FINISHED]
        if not bad:
            return ""
        counts = {}
        for _, state, _ in bad:
            word = {FAILED: "failed", DIVERGED: "diverged"}.get(state, "did not finish")
            counts[word] = counts.get(word, 0) + 1
        head = ", ".join(f"{n} {word}" for word, n in counts.items())
        return f"{head} of {len(self.planned[label])} runs ({_grouped(bad)})"

    def settings(self, label: str) -> dict[str, str]:
        """What the row's runs were trained under: their params, less what does not change a number."""
        runs = self.of(label)
        params = [c for c in runs.columns if c.startswith("params.") and c.removeprefix("params.") not in NOT_PLAN]
        for _, run in runs.iterrows():
            if isinstance(run.get("params.variant"), str):
                found = {c.removeprefix("params."): run[c] for c in params if isinstance(run[c], str)}
                source = run.get(f"tags.{tracking.TAG_DATA_SOURCE}")
                if isinstance(source, str):
                    found["data source"] = source
                return found
        return {}

    @property
    def labels(self) -> list[str]:
        order = [r.label for r in self.suite.rows] if self.suite else sorted(self.planned)
        return [label for label in order if label in self.planned] + sorted(set(self.planned) - set(order))


def resolve(target: str) -> Side:
    """A parent run id, or ``suite[:profile][~N]``: that suite's latest parent (N-th before it)."""
    if RUN_ID.match(target):
        try:
            run = tracking.get_run(target)
        except Exception as exc:
            raise SuiteError(f"no run with id {target!r} in {tracking.tracking_uri()}: {tracking.redact(str(exc))}") \
                from None
    else:
        match = TARGET.match(target)
        if not match:
            raise SuiteError(f"{target!r} names no suite run; accepted: a parent run id, NAME, NAME:PROFILE, NAME~1")
        where = f"tags.`{tracking.TAG_KIND}` = 'suite' and tags.`{tracking.TAG_SUITE}` = '{match['name']}'"
        if match["profile"]:
            where += f" and tags.`{tracking.TAG_PROFILE}` = '{match['profile']}'"
        runs = tracking.find_runs(filter_string=where).sort_values("start_time", ascending=False)
        back = int(match["back"] or 0)
        if len(runs) <= back:
            raise SuiteError(f"{target!r}: found {len(runs)} parent run(s) of suite {match['name']!r}"
                             f"{' [' + match['profile'] + ']' if match['profile'] else ''} in {tracking.tracking_uri()}")
        run = tracking.get_run(str(runs.iloc[back]["run_id"]))
    tags = run.data.tags
    if tags.get(tracking.TAG_KIND) != "suite":
        raise SuiteError(f"run {run.info.run_id} is not a suite's parent run (bench.kind is {tags.get(tracking.TAG_KIND)!r})")
    outcomes = pair_outcomes(tracking.child_runs(run.info.run_id))
    label_tag = f"tags.{tracking.TAG_LABEL}"
    planned = planned_of(tags) or {label: sorted(group["seed"]) for label, group in outcomes.groupby(label_tag)}
    wanted = {(label, seed) for label, seeds in planned.items() for seed in seeds}
    keep = [(label, int(seed)) in wanted for label, seed in zip(outcomes[label_tag], outcomes["seed"])]
    outcomes = outcomes.loc[pd.Series(keep, index=outcomes.index, dtype=bool)]
    suite = _suite_of(run.info.run_id, tags.get(tracking.TAG_PROFILE, ""))
    margin = float(tags.get(TAG_MARGIN) or (suite.margin if suite else DEFAULT_MARGIN))
    return Side(run.info.run_id, tags.get(tracking.TAG_SUITE, "?"), tags.get(tracking.TAG_PROFILE, "?"), outcomes,
                planned, suite, margin, tags.get(tracking.TAG_DATASET, ""), tags.get(TAG_DESIGN, ""))


def _suite_of(parent_id: str, profile: str) -> Suite | None:
    """The suite as logged with the parent run, as ``profile`` judged it."""
    for artifact in tracking.list_artifacts(parent_id):
        if artifact.endswith(".toml"):
            return parse_logged(tracking.read_artifact_text(parent_id, artifact), artifact, profile)
    return None


def plan_differences(a: Side, b: Side) -> list[str]:
    """What differs between the plans of A and B: profile, data set, each shared row's settings and seeds."""
    differ = []
    if a.profile != b.profile:
        differ.append(f"profile: A {a.profile}, B {b.profile}")
    if a.dataset != b.dataset:
        differ.append(f"data set: A {a.dataset}, B {b.dataset}")
    if a.suite is not None and b.suite is not None:
        judged_a, judged_b = (f"{side.suite.measure}, {side.suite.design}" for side in (a, b))
        if judged_a != judged_b:  # what a verdict compares is part of the plan, as a resume holds it
            differ.append(f"measure: A {judged_a}, B {judged_b}")
    for label in [label for label in a.labels if label in b.planned]:
        sa, sb = a.settings(label), b.settings(label)
        if sa and sb:
            for key in sorted(set(sa) | set(sb)):
                # A setting one side's bench did not log yet was its default then (e.g. val_fold).
                va, vb = sa.get(key, _default_setting(key)), sb.get(key, _default_setting(key))
                if va != vb:
                    differ.append(f"{label}: {key} A {va or 'not set'}, B {vb or 'not set'}")
        # --seeds auto: the seeds each row ends with depend on its data; the same schedule is the same plan.
        same_schedule = a.design.startswith("auto ") and _schedule(a.design) == _schedule(b.design)
        if a.planned[label] != b.planned[label] and not same_schedule:
            differ.append(f"{label}: seeds A {_seeds(a.planned[label])}, B {_seeds(b.planned[label])}")
    return differ


def _default_setting(key: str) -> str | None:
    """A training setting's default as a run logs it (None for keys that are not ``TrainConfig`` fields)."""
    field = next((f for f in dataclasses.fields(TrainConfig) if f.name == key), None)
    if field is None or field.default is dataclasses.MISSING:
        return None
    return tracking.param_text(field.default)


def _schedule(design: str) -> str:
    return design.split(";", 1)[0]


def _seeds(seeds: list[int]) -> str:
    return ",".join(map(str, seeds)) or "none"


def diff(a: Side, b: Side, *, margin: float | None = None, seconds: bool = False,
         time_margin: float = DEFAULT_TIME_MARGIN, alpha: float = ALPHA) -> pd.DataFrame:
    """One row per row of A's plan (and B's new ones): B against A in val accuracy (and seconds per
    epoch), with verdicts; a row of A missing, failed or diverged in B is ``broken``."""
    margin = a.margin if margin is None else margin
    measure = _measure(a, b)
    judgeable, records = [], {}
    for label in dict.fromkeys([*a.labels, *b.labels]):
        va, vb = a.values(label, measure), b.values(label, measure)
        record = {"label": label, "n_a": int(va.notna().sum()), "n_b": int(vb.notna().sum()),
                  "a_mean": _mean(va), "a_std": _std(va), "b_mean": _mean(vb), "b_std": _std(vb)}
        broken_a = a.broken(label) if label in a.planned else ""
        broken_b = b.broken(label) if label in b.planned else ""
        if label not in b.planned:
            record.update(kind=BROKEN, verdict="missing in B")
        elif label not in a.planned:
            record.update(kind=UNJUDGED, verdict="new in B: not compared")
        elif broken_b and not broken_a:
            record.update(kind=BROKEN, verdict=f"B: {broken_b}")
        elif broken_a:
            record.update(kind=UNJUDGED, verdict=f"not compared: A {broken_a}" + (f"; B {broken_b}" if broken_b else ""))
        else:
            judgeable.append(label)
        records[label] = record
    # Seed by seed over the seeds both ran (all of them, or those two --seeds auto runs share), when
    # there are at least two; all rows in one family either way.
    same_seeds = [len(set(a.planned[label]) & set(b.planned[label])) >= 2 for label in judgeable]
    judged = {r["label"]: r for r in compare(
        [(label, b.values(label, measure), a.values(label, measure)) for label in judgeable],
        margin=margin, alpha=alpha, against="A", pair=same_seeds)}
    for label, found in judged.items():
        records[label].update(diff=found["diff"], ci_low=found["ci_low"], ci_high=found["ci_high"],
                              p_holm=found["p_holm"], p_equiv_holm=found["p_equiv_holm"], kind=found["kind"],
                              verdict=found["verdict"], seeds_needed=found["seeds_needed"], test=found["test"])
    if seconds:  # on a log scale: a difference is a ratio; "better" is faster, so the sign is flipped
        speed = {r["label"]: r for r in compare(
            [(label, -np.log(b.values(label, "epoch_time_s")), -np.log(a.values(label, "epoch_time_s")))
             for label in judgeable], margin=math.log1p(time_margin), alpha=alpha, against="A", pair=same_seeds)}
        for label, found in speed.items():
            records[label].update(
                s_a=_mean(a.values(label, "epoch_time_s")), s_b=_mean(b.values(label, "epoch_time_s")),
                time_ratio=math.exp(-found["diff"]) if not math.isnan(found["diff"]) else math.nan,
                time_kind=_speed_kind(found["kind"]), time_verdict=_speed_text(found, time_margin))
    table = pd.DataFrame(list(records.values()))
    table.attrs.update(margin=margin, time_margin=time_margin, measure=measure)
    last_k = {str(k) for side in (a, b) if "params.last_k" in side.runs for k in side.runs["params.last_k"].dropna()}
    if measure == "val_acc_last_k" and len(last_k) == 1:  # another k on each side is another plan, said above
        table.attrs["last_k"] = int(last_k.pop())
    return table


def _measure(a: Side, b: Side) -> str:
    """What A's suite judges its rows on, when both runs logged it; else val after the last epoch."""
    measure = a.suite.measure if a.suite is not None else "val_acc"
    logged = all(f"metrics.{measure}" in side.runs and side.runs[f"metrics.{measure}"].notna().all()
                 for side in (a, b) if len(side.runs))
    return measure if logged else "val_acc"


def _speed_kind(kind: str) -> str:
    return {BETTER: FASTER, WORSE: SLOWER}.get(kind, kind)


def _speed_text(found: dict, time_margin: float) -> str:
    kind = found["kind"]
    if kind == EQUIVALENT:
        return f"same speed within ±{time_margin:.0%}"
    if kind == UNDECIDED:
        return found["verdict"].replace("undecided", "speed undecided", 1)
    return _speed_kind(kind) if kind in (BETTER, WORSE) else found["verdict"]


def failures(table: pd.DataFrame, fail_on: str) -> list[str]:
    """Rows that fail the gate: broken in B or significantly worse (``worse``), slower (``slower``),
    either (``any``)."""
    bad = []
    for _, r in table.iterrows():
        if fail_on in ("worse", "any") and r.get("kind") == WORSE:
            bad.append(f"{r['label']} (val accuracy worse: {points(r['diff'], r['ci_low'], r['ci_high'])} pt)")
        if fail_on != "never" and r.get("kind") == BROKEN:  # whatever else is gated, a broken row is
            bad.append(f"{r['label']} ({r['verdict']})")
        if fail_on in ("slower", "any") and r.get("time_kind") == SLOWER:
            bad.append(f"{r['label']} (slower: {r['time_ratio']:.2f}x the seconds per epoch)")
    return bad


def format_diff(table: pd.DataFrame, a: Side, b: Side, differences: list[str] | None = None) -> str:
    """The comparison as text no wider than ``WIDTH``."""
    def shown(clip: int) -> str:
        return pd.DataFrame({
            "row": table["label"].map(lambda s: s if len(s) <= 18 else s[:17] + "…"),
            "seeds": [f"{r['n_a']}/{r['n_b']}" for _, r in table.iterrows()],
            "A %": [percent(r["a_mean"], r["a_std"]) for _, r in table.iterrows()],
            "B %": [percent(r["b_mean"], r["b_std"]) for _, r in table.iterrows()],
            "B - A, pt [CI]": [points(r.get("diff", math.nan), r.get("ci_low", math.nan),
                                          r.get("ci_high", math.nan)) for _, r in table.iterrows()],
            "verdict": table["verdict"].map(lambda s: s if len(s) <= clip else s[: clip - 1] + "…"),
        }).to_string(index=False)

    lines = [f"A: {a.title} ({len(a.runs)} runs)", f"B: {b.title} ({len(b.runs)} runs)"]
    if differences:
        lines += textwrap.wrap("Plans differ (compared because --allow-other-plans was given): "
                               + "; ".join(differences), WIDTH, subsequent_indent="    ")
    rendered = fit(shown, 40)
    lines.append(rendered)
    for _, r in table.iterrows():  # verdicts the table had to cut, in full
        if f" {r['verdict']}" not in rendered:
            lines += textwrap.wrap(f"{r['label']}: {r['verdict']}", WIDTH, subsequent_indent="    ")
    if "time_verdict" in table:
        speed = table.dropna(subset=["time_verdict"])
        lines += ["", pd.DataFrame({"row": speed["label"], "A s/epoch": speed["s_a"].map("{:.2f}".format),
                                    "B s/epoch": speed["s_b"].map("{:.2f}".format),
                                    "B / A": speed["time_ratio"].map("{:.2f}x".format),
                                    "speed": speed["time_verdict"]}).to_string(index=False)]
    lines += [""] + textwrap.wrap(method_text(table), WIDTH)
    return "\n".join(lines)


def method_text(table: pd.DataFrame) -> str:
    margin = table.attrs.get("margin", DEFAULT_MARGIN)
    tests = set(table.get("test", pd.Series(dtype=object)).dropna()) - {""}
    how = {"paired": "seed by seed (paired t-test, paired TOST)", "Welch": "Welch's t-test and TOST"}
    identical = int((table.get("kind", pd.Series(dtype=object)) == IDENTICAL).sum())
    used = " and ".join(how[t] for t in sorted(tests))
    if identical:  # compared seed by seed and found the same: nothing left to test
        same = f"{identical} row(s) seed by seed, every seed the same (identical, no test needed)"
        used = f"{used}; {same}" if used else same
    used = used or "no test (no row had runs on both sides to compare)"
    n = int(table["p_holm"].notna().sum()) if "p_holm" in table else 0
    measure = measure_name(table.attrs)
    return (f"B against A per row, on {measure}: {used}; equivalent within ±{margin * 100:g} pt; identical when "
            "every seed "
            f"gave the same number. The {n} row(s) tested form one Holm-Shaffer family at {ALPHA:.0%}; a row of A "
            "missing, failed, diverged or unfinished in B is broken" + (
                "; seconds per epoch on a log scale, the same tests on their ratio." if "time_verdict" in table
                else "."))


def _mean(values: pd.Series) -> float:
    values = pd.Series(values).dropna()
    return float(values.mean()) if len(values) else math.nan


def _std(values: pd.Series) -> float:
    values = pd.Series(values).dropna()
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan


__all__ = ["BROKEN", "IDENTICAL", "Side", "diff", "failures", "format_diff", "plan_differences", "resolve"]
