"""A suite's report: accuracy chart, learning curves, the summary with verdicts and sources, one page."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from .. import tracking
from ..suites.spec import TAG_ROWS, Suite, SuiteError, parse_suite
from ..suites.summary import SUMMARY_METRICS, baseline_cell, published_cell, published_columns, summarize
from ..verdicts import method_note
from . import charts
from .pages import Report, RunLinks, data_uri, definition, environment, mean_std, number, render, safe_link


def build(parent, name: str, children: pd.DataFrame, out: Path, ui_url: str) -> Report:
    parent_id = parent.info.run_id
    definition_name, definition_text = definition(parent_id)
    suite = _parse_definition(definition_name, definition_text)
    summary = summarize(children, suite)
    finished = children[children["status"] == "FINISHED"]
    images = {
        "accuracy": charts.accuracy_chart(finished, summary, suite, out / "accuracy.png"),
        "curves": charts.curves_chart(_histories(finished), summary, suite, out / "curves.png"),
    }
    table = _table(summary)
    table.to_csv(out / "summary.csv", index=False)
    page = render(
        "suite.html.j2", out / "index.html",
        **_context(parent, name, summary, finished, suite, children, images, ui_url),
        definition_name=definition_name, definition=definition_text,
    )
    return Report(out, [*images.values(), out / "summary.csv", page], summary, parent_id)


def _context(parent, name: str, summary: pd.DataFrame, finished: pd.DataFrame, suite: Suite | None,
             children: pd.DataFrame, images: dict[str, Path], ui_url: str) -> dict[str, Any]:
    tags = parent.data.tags
    link = RunLinks(ui_url, parent.info.experiment_id)
    published = published_columns(summary)
    data_sources = sorted(set(finished[f"tags.{tracking.TAG_DATA_SOURCE}"].dropna()))
    machines = sorted({m for ms in summary["machines"] for m in ms.split("; ")})
    return dict(
        name=name,
        description=tags.get(tracking.TAG_NOTE, ""),
        profile=tags.get(tracking.TAG_PROFILE, ""),
        dataset=tags.get(tracking.TAG_DATASET, ""),
        n_finished=len(finished),
        parent_id=parent.info.run_id,
        parent_url=link(parent.info.run_id),
        parent_status=parent.info.status,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        jpeg=any("JPEG" in s for s in data_sources),
        images={key: data_uri(path) for key, path in images.items()},
        machines=machines,
        baseline=suite.baseline if suite else None,
        published=published,
        rows=[_row(r, published, link) for _, r in summary.iterrows()],
        missing=_rows_not_run(suite, summary, children, tags),
        width=14 + len(published),
        method_note=method_note(int(summary["baseline_p_holm"].notna().sum())),
        sources=[
            {"name": n, "title": meta.get("title", ""), "epochs": meta.get("epochs"), "url": safe_link(meta.get("url"))}
            for n, meta in (suite.sources.items() if suite else [])
        ],
        ui_url=ui_url,
        environment=environment(
            tags,
            device=finished.iloc[0].get("tags.device", ""),
            machines=" | ".join(machines),
            data="; ".join(data_sources),
            **{"tracking store": tracking.redact(tracking.tracking_uri())},
        ),
    )


def _row(r: pd.Series, published: list[tuple[str, str]], link: RunLinks) -> dict[str, Any]:
    cells = [(str(r["label"]), ""), (str(r["variant"]), ""), (str(int(r["n_seeds"])), "")]
    cells += [(mean_std(r[f"{m}_mean"], r[f"{m}_std"]), "") for m in SUMMARY_METRICS]
    cells += [(baseline_cell(r), ""), (str(r["verdict"]), "verdict")]
    cells += [(published_cell(r, source, metric), "") for source, metric in published]
    cells += [(f"{int(r['num_parameters']):,}", ""), (str(int(r["epochs"])), ""), (f"{r['s_per_epoch']:.2f}", ""),
              (number(r["train_gflops"], ".1f"), ""), (number(r["gemm_fraction"] * 100, ".1f"), "")]
    return {"cells": cells, "runs": [(run_id, link(run_id)) for run_id in str(r["run_ids"]).split()]}


def _parse_definition(name: str, text: str) -> Suite | None:
    """The suite as logged with its parent run (rows, baseline, sources); None if absent or unreadable."""
    if not text:
        return None
    try:
        return parse_suite(text, name)
    except SuiteError:  # written for another bench version: report what the runs say, without references
        return None


def _rows_not_run(suite: Suite | None, summary: pd.DataFrame, children: pd.DataFrame, tags: dict) -> list[tuple[str, str]]:
    """(row, why) for each row of the suite with no FINISHED run under this parent."""
    if suite is None:
        return []
    chosen = [r for r in tags.get(TAG_ROWS, "").split(",") if r]
    out = []
    for row in suite.rows:
        if row.label in set(summary["label"]):
            continue
        runs = children[children[f"tags.{tracking.TAG_LABEL}"] == row.label] if not children.empty else children
        if chosen and row.label not in chosen:
            why = f"left out of this run (it ran only --rows {','.join(chosen)})"
        elif len(runs):
            states = ", ".join(f"{n} {s}" for s, n in runs["status"].value_counts().items())
            why = f"no finished run ({states})"
        else:
            why = "not run under this parent run"
        out.append((row.label, why + (f". Note: {row.note}" if row.note else "")))
    return out


def _histories(finished: pd.DataFrame) -> pd.DataFrame:
    frames = []
    for _, run in finished.iterrows():
        for metric in ("train_acc", "val_acc", "train_loss", "val_loss"):
            for step, value in tracking.metric_history(run["run_id"], metric):
                frames.append((run[f"tags.{tracking.TAG_LABEL}"], run[f"tags.{tracking.TAG_SEED}"], metric, step, value))
    return pd.DataFrame(frames, columns=["label", "seed", "metric", "epoch", "value"])


def _table(summary: pd.DataFrame) -> pd.DataFrame:
    """summary.csv: one row per variant, plain numbers a spreadsheet can read."""
    table = summary.rename(columns={"label": "variant_row"})
    first = ["variant_row", "variant", "n_seeds", "seeds"]
    return table[first + [c for c in table.columns if c not in first]]
