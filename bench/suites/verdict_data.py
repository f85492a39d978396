"""A suite's verdicts as MLflow data: searchable, sortable and shown where MLflow users look.

The summary (``summary.summarize``) is the one source; this module writes it into the tracking store
under one naming scheme (listed in the README, "Verdicts in MLflow"):

- **every child run** of a row (each attempt, failed ones included) gets the row's verdict:
  tags ``bench.verdict`` (the kind: better, worse, equivalent, identical, undecided, not judged,
  baseline), ``bench.verdict_text`` (the sentence the summary prints) and ``bench.measure``;
  metrics ``verdict.diff``, ``verdict.ci_low``, ``verdict.ci_high`` (row minus baseline on the
  suite's measure, as a fraction of accuracy like ``val_acc``), ``verdict.ci_level`` (the level the
  verdict used) and ``verdict.seeds``, logged at step = the look. So ``tags.bench.verdict = 'worse'``
  filters the runs table and ``mlflow.search_runs``, and the column sorts.
- **the parent run** gets per row a metric family ``row/<label>/mean``, ``.../std``, ``.../diff``,
  ``.../ci_low``, ``.../ci_high``, ``.../seeds`` at step = the look (a chart per row in the run's
  Model metrics), a tag ``bench.verdict.<label>`` and a tag ``bench.verdicts`` counting the kinds;
  and, at each look taken, the summary appended to the table ``verdicts.json`` (one row per row and
  look: ``mlflow.load_table`` reads it back, the run page renders it). The forest plot is logged by
  the report room (``bench.report.log_verdicts_figure``) as ``verdicts.png``.

Labels become parts of metric and tag names by ``names_of``.
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import numbers
import re
from collections.abc import Mapping
from typing import Any

import pandas as pd

from .. import tracking
from ..verdicts import BASELINE
from .summary import failure_counts

TAG_VERDICT = "bench.verdict"  # the row's verdict kind, on each of its runs
TAG_VERDICT_TEXT = "bench.verdict_text"
TAG_MEASURE = "bench.measure"
TAG_ROW_VERDICT = "bench.verdict."  # + label, on the parent
TAG_VERDICT_COUNTS = "bench.verdicts"  # on the parent: "1 better, 1 worse, 2 undecided"
CHILD_METRIC = "verdict."  # + diff, ci_low, ci_high, ci_level, seeds
ROW_METRIC = "row/"  # + label + "/" + mean, std, diff, ci_low, ci_high, seeds
TABLE = "verdicts.json"
NOT_A_NAME = re.compile(r"[^A-Za-z0-9_\-. :]")  # what MLflow refuses in a metric or tag name, and "/"


def name_of(label: str) -> str:
    """``label`` as part of a metric or tag name: every character but letters, digits, ``_ - . :`` and
    space becomes ``_`` (a ``/`` too: MLflow reads names as paths), at most 120 characters."""
    name = NOT_A_NAME.sub("_", label)[:120]
    return name.replace(".", "_") if set(name) <= {"."} else name  # "." and ".." are paths MLflow refuses


def names_of(labels: list[str]) -> dict[str, str]:
    """Each label's ``name_of``; labels that come out the same get the first 6 hex digits of their SHA-1
    appended, so no row's numbers overwrite another's."""
    names = {label: name_of(label) for label in labels}
    taken = collections.Counter(names.values())
    return {label: name if taken[name] == 1 else f"{name}-{hashlib.sha1(label.encode()).hexdigest()[:6]}"
            for label, name in names.items()}


def row_numbers(r: Mapping[str, Any]) -> dict[str, float]:
    """One summary row's numbers under their metric suffixes (NaN ones left out: not measured)."""
    numbers = {"mean": r.get("measure_mean"), "std": r.get("measure_std"), "diff": r.get("baseline_diff"),
               "ci_low": r.get("baseline_ci_low"), "ci_high": r.get("baseline_ci_high"),
               "ci_level": r.get("baseline_ci_level"), "seeds": r.get("n_seeds")}
    return {k: float(v) for k, v in numbers.items() if _number(v)}


def publish(parent_id: str, summary: pd.DataFrame, outcomes: pd.DataFrame, look: int) -> None:
    """Each row's verdict onto its runs and the parent (tags and metrics at step ``look``)."""
    if summary.empty:
        return
    label_tag = f"tags.{tracking.TAG_LABEL}"
    runs_of = {label: list(group["run_id"]) for label, group in outcomes.groupby(label_tag)} if len(outcomes) else {}
    children = tracking.child_runs(parent_id)
    if len(children) and label_tag in children:  # every attempt, not only the run that stands for the pair
        runs_of = {label: list(group["run_id"]) for label, group in children.groupby(label_tag)}
    measure = summary.attrs.get("measure", "val_acc")
    parent_metrics: dict[str, float] = {}
    parent_tags: dict[str, str] = {}
    names = names_of([str(label) for label in summary["label"]])
    for _, r in summary.iterrows():
        numbers = row_numbers(r)
        kind = str(r["verdict_kind"]) if isinstance(r.get("verdict_kind"), str) else ""
        tags = {TAG_VERDICT: kind, TAG_VERDICT_TEXT: str(r.get("verdict") or ""), TAG_MEASURE: measure}
        child_metrics = {CHILD_METRIC + k: v for k, v in numbers.items() if k not in ("mean", "std")}
        for run_id in runs_of.get(r["label"], []):
            tracking.log_values(run_id, tags=tags, metrics=child_metrics, step=look)
        name = names[str(r["label"])]
        parent_metrics.update({f"{ROW_METRIC}{name}/{k}": v for k, v in numbers.items() if k != "ci_level"})
        parent_tags[TAG_ROW_VERDICT + name] = kind
    counts = summary["verdict_kind"].dropna().value_counts()
    parent_tags[TAG_VERDICT_COUNTS] = ", ".join(f"{n} {kind}" for kind, n in counts.items() if kind != BASELINE)
    tracking.log_values(parent_id, tags=parent_tags, metrics=parent_metrics, step=look)


def table(summary: pd.DataFrame, look: int) -> pd.DataFrame:
    """The rows of ``verdicts.json`` for one look: readable units (percent, points), the method in a column."""
    rows = []
    for _, r in summary.iterrows():
        n = row_numbers(r)
        rows.append({
            "look": look, "row": r["label"], "verdict": r.get("verdict") or "",
            "seeds": int(n.get("seeds", 0)), "mean %": _pt(n.get("mean")), "std pt": _pt(n.get("std")),
            "diff pt": _pt(n.get("diff")), "ci low pt": _pt(n.get("ci_low")), "ci high pt": _pt(n.get("ci_high")),
            "ci level %": _pt(n.get("ci_level"), 1), "rho": round(float(r["rho"]), 2) if _number(r.get("rho")) else None,
            "failures": failure_counts(r) if r.get("failures") else "",
        })
    frame = pd.DataFrame(rows)
    frame["measure"] = summary.attrs.get("measure", "val_acc")
    frame["design"] = summary.attrs.get("design", "")
    return frame


def publish_look(parent_id: str, summary: pd.DataFrame, look: int) -> None:
    """At a look taken: the summary appended to the parent's ``verdicts.json``, once per look (a resume
    that judges the same look again adds nothing)."""
    if summary.empty:
        return
    if TABLE in tracking.list_artifacts(parent_id):
        logged = json.loads(tracking.read_artifact_text(parent_id, TABLE))
        looks = {row[logged["columns"].index("look")] for row in logged.get("data", [])}
        if look in looks:
            return
    tracking.log_run_table(parent_id, table(summary, look), TABLE)


def _pt(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value * 100, digits)


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(float(value))
