"""Reports from MLflow: charts, a summary table and one self-contained HTML page per suite or study.

Everything comes from the tracking store (the parent run and its children), so a report can be
rebuilt at any time, on any machine that reaches the store. Pages are rendered from the Jinja2
templates in ``templates/`` with autoescaping on: a value taken from a run is never markup.

- ``charts``: every chart (the only module of bench that draws);
- ``suite_page`` / ``study_page``: what each page shows, gathered from the store;
- ``pages``: the template environment and the helpers the pages share.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pandas as pd

from .. import tracking
from .charts import CHART_DPI
from .pages import DEFAULT_UI, Report, ReportError, slug

RUN_ID = re.compile(r"^[0-9a-f]{32}$")

__all__ = ["CHART_DPI", "DEFAULT_UI", "VERDICTS_FIGURE", "Report", "ReportError", "build_report", "find_parent",
           "log_verdicts_figure"]
VERDICTS_FIGURE = "verdicts.png"  # the forest plot on a suite's parent run


def find_parent(target: str):
    """The parent run of a suite or study named ``target`` (the latest), or run id ``target``."""
    if RUN_ID.match(target):
        try:
            return tracking.get_run(target)
        except Exception as exc:
            raise ReportError(f"no run with id {target!r} in {tracking.tracking_uri()}: {exc}") from None
    runs = tracking.find_runs(
        filter_string=f"tags.`{tracking.TAG_SUITE}` = '{target}' and tags.`{tracking.TAG_KIND}` = 'suite'"
    )
    if runs.empty:
        runs = tracking.find_runs(
            filter_string=f"tags.`{tracking.TAG_STUDY}` = '{target}' and tags.`{tracking.TAG_KIND}` = 'study'"
        )
    if runs.empty:
        raise ReportError(
            f"no suite or study named {target!r} in {tracking.tracking_uri()}; pass a suite name (e.g. "
            "cifar2-chapter8), a study name, or a parent run id"
        )
    return tracking.get_run(str(runs.sort_values("start_time").iloc[-1]["run_id"]))


def build_report(target: str, out_dir: str | Path | None = None, *, ui_url: str = DEFAULT_UI, log: bool = True) -> Report:
    """Write the report of a suite or study (its latest parent run, or a parent run id) to ``out_dir``
    (default ``reports/<name>``) and, with ``log``, also under ``report/`` on the parent run."""
    from . import study_page, suite_page

    parent = find_parent(target)
    parent_id = parent.info.run_id
    tags = parent.data.tags
    name = tags.get(tracking.TAG_SUITE) or tags.get(tracking.TAG_STUDY) or parent_id
    out = Path(out_dir) if out_dir else Path("reports") / slug(name)
    out.mkdir(parents=True, exist_ok=True)
    children = tracking.child_runs(parent_id)
    if children.empty or not (children["status"] == "FINISHED").any():
        raise ReportError(f"run {parent_id} ({name}) has no FINISHED child runs to report")
    page = study_page if tags.get(tracking.TAG_KIND) == "study" else suite_page
    report = page.build(parent, name, children, out, ui_url.rstrip("/"))
    if log:
        for path in report.files:
            tracking.log_artifact_file(parent_id, path, "report")
    return report


def log_verdicts_figure(parent_run_id: str, summary: pd.DataFrame) -> bool:
    """The forest plot of a suite's verdicts (each row's difference from the baseline, its interval at
    the level that decided it) logged on its parent run as ``verdicts.png``, where the run page shows
    it. False when no row was compared with the baseline (nothing to draw)."""
    from . import charts

    if summary.empty or summary["baseline_diff"].notna().sum() < 2:  # the baseline's own 0 and one row at least
        return False
    base = summary.loc[summary["verdict_kind"] == "baseline", "label"]
    with tempfile.TemporaryDirectory() as tmp:
        path = charts.verdicts_chart(summary, summary.attrs.get("margin", 0.01), Path(tmp) / VERDICTS_FIGURE,
                                     baseline=str(base.iloc[0]) if len(base) else None)
        tracking.log_artifact_file(parent_run_id, path)
    return True
