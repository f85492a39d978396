"""``bench diff A B``: two runs of one suite compared row by row with the suite's own statistics.

A and B are parent runs (ids, or a suite name with an optional ``:profile`` and ``~N`` for the
N-th latest before the newest): before and after a code change, or two machines. Each row present
in both is judged B against A: better / worse / equivalent within the margin / undecided (Welch,
TOST, Holm over the rows), for val accuracy and, optionally, seconds per epoch (on a log scale, so
the margin is a ratio). What a CI gate needs: whether any row got significantly worse.
"""

from __future__ import annotations

import dataclasses
import math
import re
import textwrap

import numpy as np
import pandas as pd

from .. import tracking
from ..verdicts import ALPHA, BETTER, DEFAULT_MARGIN, EQUIVALENT, UNDECIDED, UNJUDGED, WORSE, compare
from .spec import TAG_MARGIN, Suite, SuiteError, parse_suite
from .summary import WIDTH, percent, points

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
TARGET = re.compile(r"^(?P<name>[^:~]+)(:(?P<profile>[^~]+))?(~(?P<back>\d+))?$")
FASTER, SLOWER = "faster", "slower"
BROKEN = "broken"  # a row whose runs diverged in B and not in A: not a statistical verdict, a regression
DEFAULT_TIME_MARGIN = 0.05  # seconds per epoch within ±5 % count as the same speed


@dataclasses.dataclass
class Side:
    parent_run_id: str
    name: str  # the suite's name
    profile: str
    runs: pd.DataFrame  # FINISHED children
    suite: Suite | None  # as logged with the parent
    margin: float  # the margin the suite was judged with

    @property
    def title(self) -> str:
        return f"{self.name} [{self.profile}] {self.parent_run_id[:8]}"

    def values(self, label: str, metric: str) -> list[float]:
        runs = self.runs[self.runs[f"tags.{tracking.TAG_LABEL}"] == label]
        column = f"metrics.{metric}"
        values = runs[column].astype(float) if column in runs else pd.Series(np.nan, index=runs.index)
        if f"tags.{tracking.TAG_DIVERGED}" in runs:  # a diverged run is not a measurement of the variant
            values = values.where(runs[f"tags.{tracking.TAG_DIVERGED}"].isna(), np.nan)
        return values.tolist()

    @property
    def labels(self) -> list[str]:
        found = list(dict.fromkeys(self.runs[f"tags.{tracking.TAG_LABEL}"])) if not self.runs.empty else []
        order = [r.label for r in self.suite.rows] if self.suite else sorted(found)
        return [label for label in order if label in found]


def resolve(target: str) -> Side:
    """A parent run id, or ``suite[:profile][~N]``: that suite's latest parent (N-th before it)."""
    if RUN_ID.match(target):
        try:
            run = tracking.get_run(target)
        except Exception as exc:
            raise SuiteError(f"no run with id {target!r} in {tracking.tracking_uri()}: {exc}") from None
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
    children = tracking.child_runs(run.info.run_id)
    finished = children[children["status"] == "FINISHED"] if not children.empty else children
    suite = _suite_of(run.info.run_id)
    margin = float(tags.get(TAG_MARGIN) or (suite.margin if suite else DEFAULT_MARGIN))
    return Side(run.info.run_id, tags.get(tracking.TAG_SUITE, "?"), tags.get(tracking.TAG_PROFILE, "?"), finished,
                suite, margin)


def _suite_of(parent_id: str) -> Suite | None:
    for artifact in tracking.list_artifacts(parent_id):
        if artifact.endswith(".toml"):
            try:
                return parse_suite(tracking.read_artifact_text(parent_id, artifact), artifact, check_variants=False)
            except SuiteError:
                return None
    return None


def diff(a: Side, b: Side, *, margin: float | None = None, seconds: bool = False,
         time_margin: float = DEFAULT_TIME_MARGIN, alpha: float = ALPHA) -> pd.DataFrame:
    """One row per suite row: B against A in val accuracy (and seconds per epoch), with verdicts;
    rows run on one side only are listed, not judged."""
    margin = a.margin if margin is None else margin
    both = [label for label in a.labels if label in b.labels]
    judged = {r["label"]: r for r in compare([(label, b.values(label, "val_acc"), a.values(label, "val_acc"))
                                              for label in both], margin=margin, alpha=alpha, against="A")}
    speed = {}
    if seconds:  # on a log scale: a difference is a ratio; "better" is faster, so the sign is flipped
        pairs = [(label, [-math.log(v) for v in b.values(label, "epoch_time_s")],
                  [-math.log(v) for v in a.values(label, "epoch_time_s")]) for label in both]
        speed = {r["label"]: r for r in compare(pairs, margin=math.log1p(time_margin), alpha=alpha, against="A")}
    records = []
    for label in dict.fromkeys([*a.labels, *b.labels]):
        va, vb = a.values(label, "val_acc"), b.values(label, "val_acc")
        record = {"label": label, "n_a": len(va), "n_b": len(vb), "a_mean": _mean(va), "a_std": _std(va),
                  "b_mean": _mean(vb), "b_std": _std(vb)}
        if label in judged and _diverged_only_in_b(va, vb):
            record.update(kind=BROKEN, verdict=f"diverged in B ({sum(math.isnan(v) for v in vb)} of {len(vb)} runs), "
                                               "not in A")
        elif label in judged:
            found = judged[label]
            record.update(diff=found["diff"], ci_low=found["ci_low"], ci_high=found["ci_high"], p_holm=found["p_holm"],
                          p_equiv_holm=found["p_equiv_holm"], kind=found["kind"], verdict=found["verdict"],
                          seeds_needed=found["seeds_needed"])
        else:
            record.update(kind=UNJUDGED, verdict=f"only in {'A' if label in a.labels else 'B'}: not compared")
        if label in speed:
            found = speed[label]
            record.update(s_a=_mean(a.values(label, "epoch_time_s")), s_b=_mean(b.values(label, "epoch_time_s")),
                          time_ratio=math.exp(-found["diff"]) if not math.isnan(found["diff"]) else math.nan,
                          time_kind=_speed_kind(found["kind"]), time_verdict=_speed_text(found, time_margin))
        records.append(record)
    table = pd.DataFrame(records)
    table.attrs.update(margin=margin, time_margin=time_margin)
    return table


def _diverged_only_in_b(va: list[float], vb: list[float]) -> bool:
    return any(math.isnan(v) for v in vb) and not any(math.isnan(v) for v in va)


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
    """Rows that fail the gate: significantly worse (``worse``), slower (``slower``), either (``any``)."""
    bad = []
    for _, r in table.iterrows():
        if fail_on in ("worse", "any") and r.get("kind") == WORSE:
            bad.append(f"{r['label']} (val accuracy worse: {points(r['diff'], r['ci_low'], r['ci_high'])} pt)")
        if fail_on in ("worse", "any") and r.get("kind") == BROKEN:
            bad.append(f"{r['label']} ({r['verdict']})")
        if fail_on in ("slower", "any") and r.get("time_kind") == SLOWER:
            bad.append(f"{r['label']} (slower: {r['time_ratio']:.2f}x the seconds per epoch)")
    return bad


def format_diff(table: pd.DataFrame, a: Side, b: Side) -> str:
    """The comparison as text no wider than ``WIDTH``."""
    shown = pd.DataFrame({
        "row": table["label"].map(lambda s: s if len(s) <= 18 else s[:17] + "…"),
        "A val %": [percent(r["a_mean"], r["a_std"]) for _, r in table.iterrows()],
        "B val %": [percent(r["b_mean"], r["b_std"]) for _, r in table.iterrows()],
        "B - A, pt [95% CI]": [points(r.get("diff", math.nan), r.get("ci_low", math.nan), r.get("ci_high", math.nan))
                               for _, r in table.iterrows()],
        "verdict": table["verdict"].map(lambda s: s if len(s) <= 36 else s[:35] + "…"),
    })
    lines = [f"A: {a.title} ({len(a.runs)} runs)", f"B: {b.title} ({len(b.runs)} runs)", shown.to_string(index=False)]
    if "time_verdict" in table:
        speed = table.dropna(subset=["time_verdict"])
        lines += ["", pd.DataFrame({"row": speed["label"], "A s/epoch": speed["s_a"].map("{:.2f}".format),
                                    "B s/epoch": speed["s_b"].map("{:.2f}".format),
                                    "B / A": speed["time_ratio"].map("{:.2f}x".format),
                                    "speed": speed["time_verdict"]}).to_string(index=False)]
    margin = table.attrs.get("margin", DEFAULT_MARGIN)
    lines += [""] + textwrap.wrap(
        f"B against A per row: Welch's t-test (better/worse) and TOST within ±{margin * 100:g} pt (equivalent), "
        f"Holm-corrected over the {int(table['p_holm'].notna().sum()) if 'p_holm' in table else 0} rows compared at "
        f"a family-wise {ALPHA:.0%}" + ("; seconds per epoch on a log scale, the same tests on their ratio."
                                        if "time_verdict" in table else "."), WIDTH)
    return "\n".join(lines)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _std(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
