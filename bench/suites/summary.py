"""A suite's summary: one row per suite row, mean ± std over seeds, verdicts and the sources' numbers.

Pure tables: ``summarize`` reads the child runs as ``mlflow.search_runs`` returns them and
leaves the statistics to ``bench.verdicts``; the ``*_cell`` helpers and ``format_summary``
are the one formatting of those numbers for the printed summary and the report.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from .. import tracking
from ..verdicts import DEFAULT_MARGIN, against_baseline, against_source, method_note
from .spec import Suite

# Per-run numbers summarised as mean and std over seeds: the final epoch's running train accuracy,
# val and test; the train split measured after training (eval mode); the model left in train mode.
SUMMARY_METRICS = ("train_acc", "val_acc", "test_acc", "train_acc_eval", "train_acc_train_mode", "val_acc_train_mode")
SOURCE_SUFFIXES = ("", "_epochs", "_diff", "_within_2pt", "_differs", "_ours")  # of <source>.<metric> columns
VERDICT_COLUMNS = {  # summary column -> against_baseline column
    "baseline_diff": "diff", "baseline_ci_low": "ci_low", "baseline_ci_high": "ci_high", "baseline_p_holm": "p_holm",
    "baseline_p_equiv_holm": "p_equiv_holm", "verdict": "verdict", "verdict_kind": "kind", "seeds_needed": "seeds_needed",
}
WIDTH = 100  # the printed summary fits a terminal this wide
# Settings a published figure may have been measured under, read from each row's first run.
RUN_SETTINGS = {"epochs": int, "optimizer": str, "lr": float, "batch_size": int, "train_images": int}


def summarize(children: pd.DataFrame, suite: Suite | None = None, *, margin: float | None = None,
              looks: int = 1) -> pd.DataFrame:
    """One row per suite row: accuracy mean and std over FINISHED seeds, size and speed, the
    machines it ran on, the verdict against the suite's baseline and the sources' numbers.

    Diverged runs (``bench.diverged``) count as non-finite: their row is not judged. ``margin``:
    the smallest difference that matters (default: the suite's); ``looks``: how many times the
    suite's seeds were judged (``--seeds auto``), for the alpha each look tests at.
    """
    columns = ["label", "variant", "n_seeds", "seeds"]
    for metric in SUMMARY_METRICS:
        columns += [f"{metric}_mean", f"{metric}_std"]
    columns += ["num_parameters", *[k for k in RUN_SETTINGS if k != "epochs"], "epochs", "s_per_epoch", "s_per_run",
                "train_gflops",
                "gemm_fraction", "machines", "diverged", "run_ids", *VERDICT_COLUMNS]
    if children.empty or "status" not in children:
        return pd.DataFrame(columns=columns)
    finished = children[children["status"] == "FINISHED"]
    order = [r.label for r in suite.rows] if suite else sorted(finished[f"tags.{tracking.TAG_LABEL}"].unique())
    records = [_record(label, runs) for label in order
               if not (runs := finished[finished[f"tags.{tracking.TAG_LABEL}"] == label]).empty]
    summary = pd.DataFrame(records, columns=columns)
    if summary.empty:
        return summary
    values = {rec["label"]: rec.pop("_val_values") for rec in records}
    margin = margin if margin is not None else (suite.margin if suite else DEFAULT_MARGIN)
    verdicts = against_baseline(values, suite.baseline if suite else None, margin=margin, looks=looks).set_index("label")
    for column, source_column in VERDICT_COLUMNS.items():
        summary[column] = summary["label"].map(verdicts[source_column])
    if suite and suite.sources:
        _add_sources(summary, records, suite)
    return summary


def _record(label: str, runs: pd.DataFrame) -> dict[str, Any]:
    diverged = _column(runs, f"tags.{tracking.TAG_DIVERGED}").notna()
    record: dict[str, Any] = {
        "label": label,
        "variant": runs[f"tags.{tracking.TAG_VARIANT}"].iloc[0],
        "n_seeds": len(runs),
        "seeds": " ".join(sorted(runs[f"tags.{tracking.TAG_SEED}"].tolist(), key=int)),
        "diverged": int(diverged.sum()),
    }
    for metric in SUMMARY_METRICS:
        metric_values = _column(runs, f"metrics.{metric}").astype(float)
        record[f"{metric}_mean"] = metric_values.mean()
        record[f"{metric}_std"] = metric_values.std(ddof=1) if metric_values.notna().sum() > 1 else math.nan
    # A diverged run's accuracy is not a measurement of the variant: it enters the verdict as NaN.
    record["_val_values"] = np.where(diverged, np.nan, runs["metrics.val_acc"].astype(float)).tolist()
    record["num_parameters"] = int(runs["params.num_parameters"].iloc[0])
    for key, kind in RUN_SETTINGS.items():  # absent from runs logged before bench recorded them
        value = _column(runs, f"params.{key}").iloc[0]
        record[key] = kind(value) if isinstance(value, str) and value not in ("None", "") else None
    record["s_per_epoch"] = runs["metrics.epoch_time_s"].astype(float).mean()
    # Wall seconds from a run's start to its end: training plus evaluation, logging and the model.
    record["s_per_run"] = (runs["end_time"] - runs["start_time"]).dt.total_seconds().mean() \
        if {"start_time", "end_time"} <= set(runs) else math.nan
    for metric in ("train_gflops", "gemm_fraction"):
        record[metric] = _column(runs, f"metrics.{metric}").astype(float).mean()
    machines = _column(runs, f"tags.{tracking.TAG_HARDWARE}.machine").dropna().unique().tolist()
    record["machines"] = "; ".join(sorted(machines)) or "not recorded"
    record["run_ids"] = " ".join(runs["run_id"])
    return record


def _column(runs: pd.DataFrame, name: str) -> pd.Series:
    return runs[name] if name in runs else pd.Series([None] * len(runs), index=runs.index, dtype=object)


def _add_sources(summary: pd.DataFrame, records: list[dict[str, Any]], suite: Suite) -> None:
    by_label = {r.label: r for r in suite.rows}
    for source, meta in suite.sources.items():
        found = [
            against_source({m: rec[f"{m}_mean"] for m in SUMMARY_METRICS}, {k: rec[k] for k in RUN_SETTINGS},
                           by_label[rec["label"]].reference[source], meta)
            if source in by_label[rec["label"]].reference else {}
            for rec in records
        ]
        for metric in ("train_acc", "val_acc", "test_acc"):
            if any(metric in f for f in found):
                for suffix in SOURCE_SUFFIXES:
                    summary[f"{source}.{metric}{suffix}"] = [f.get(f"{metric}{suffix}") for f in found]


# ---------------------------------------------------------------------------- cells


def published_columns(summary: pd.DataFrame) -> list[tuple[str, str]]:
    """The (source, metric) pairs the summary has published numbers for, in column order."""
    pairs = []
    for column in summary.columns:
        if "." in column and not column.endswith(SOURCE_SUFFIXES[1:]):
            source, metric = column.rsplit(".", 1)
            pairs.append((source, metric))
    return pairs


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def baseline_cell(row: Mapping[str, Any]) -> str:
    """``+0.0123 [-0.0040, +0.0286]``: a summary row's val-accuracy difference from the baseline."""
    if row["verdict"] == "baseline" or _missing(row["baseline_diff"]):
        return ""
    low, high = row["baseline_ci_low"], row["baseline_ci_high"]
    return f"{row['baseline_diff']:+.4f}" + ("" if _missing(low) else f" [{low:+.4f}, {high:+.4f}]")


def published_cell(row: Mapping[str, Any], source: str, metric: str) -> str:
    """``0.9000 -0.0110 (within 2 pt)``: a source's value, ours minus it, and the 2-point check;
    ``0.9211 -0.0513 (theirs after 2 epochs, ours 1)``: compared, not judged, naming what differs."""
    value, diff, ok = row[f"{source}.{metric}"], row[f"{source}.{metric}_diff"], row[f"{source}.{metric}_within_2pt"]
    if _missing(value):
        return ""
    differs = row.get(f"{source}.{metric}_differs")
    if _missing(diff):
        return f"{value:.4f}" + (f" (not compared: {differs})" if differs else "")
    if _missing(ok):  # not like for like: compared, not judged
        if _missing(differs) or not differs:
            differs = f"theirs after {int(row[f'{source}.{metric}_epochs'])} epochs, ours {int(row['epochs'])}"
        return f"{value:.4f} {diff:+.4f} ({differs})"
    return f"{value:.4f} {diff:+.4f} ({'within' if ok else 'beyond'} 2 pt)"


def points(diff: float, low: float, high: float) -> str:
    """``+0.50 [-0.40, +1.40]``: a difference of accuracies and its interval, in points."""
    if _missing(diff):
        return ""
    return f"{diff * 100:+.2f}" + ("" if _missing(low) else f" [{low * 100:+.2f}, {high * 100:+.2f}]")


def percent(mean: float, std: float) -> str:
    if _missing(mean):
        return ""
    return f"{mean * 100:.2f}" + ("" if _missing(std) else f" ± {std * 100:.2f}")


# ---------------------------------------------------------------------------- the printed summary


def format_summary(summary: pd.DataFrame, *, margin: float = DEFAULT_MARGIN, looks: int = 1) -> str:
    """The summary as text no wider than ``WIDTH``: the verdicts (accuracies in %, differences in
    points), the runs' size and speed, and one line per published number."""
    if summary.empty:
        return "(no finished runs)"
    baseline = next((r["label"] for _, r in summary.iterrows() if r["verdict"] == "baseline"), "baseline")
    verdicts = pd.DataFrame({
        "row": summary["label"].map(lambda s: _clip(str(s), 18)),
        "seeds": summary["n_seeds"],
        "val acc %": [percent(r["val_acc_mean"], r["val_acc_std"]) for _, r in summary.iterrows()],
        f"vs {_clip(baseline, 14)}, pt [95% CI]": [points(r["baseline_diff"], r["baseline_ci_low"], r["baseline_ci_high"])
                                                  if r["verdict"] != "baseline" else "" for _, r in summary.iterrows()],
        "verdict": summary["verdict"].map(lambda s: _clip(str(s), 42)),
    })
    size = pd.DataFrame({
        "row": verdicts["row"],
        "train acc %": [percent(r["train_acc_eval_mean"], r["train_acc_eval_std"]) or
                        percent(r["train_acc_mean"], r["train_acc_std"]) for _, r in summary.iterrows()],
        "test acc %": [percent(r["test_acc_mean"], r["test_acc_std"]) for _, r in summary.iterrows()],
        "params": summary["num_parameters"].map("{:,}".format),
        "epochs": summary["epochs"],
        "s/epoch": summary["s_per_epoch"].map("{:.2f}".format),
        "GFLOP/s": summary["train_gflops"].map("{:.1f}".format),
    })
    lines = [verdicts.to_string(index=False), "", size.to_string(index=False)]
    lines += _published_lines(summary)
    n_compared = int(summary["baseline_p_holm"].notna().sum())
    lines += ["", *textwrap.wrap(method_note(n_compared, margin, looks), WIDTH)]
    machines = sorted({m for ms in summary["machines"] for m in ms.split("; ")})
    if len(machines) > 1:
        lines += textwrap.wrap(f"Runs came from {len(machines)} machines ({' | '.join(machines)}): seconds per epoch "
                               "do not compare.", WIDTH)
    return "\n".join(lines)


def _published_lines(summary: pd.DataFrame) -> list[str]:
    """One line per figure judged (within 2 points or not); the figures not judged only counted,
    with one example of why (the report lists them all)."""
    judged, skipped = [], []
    for _, r in summary.iterrows():
        for source, metric in published_columns(summary):
            cell = published_cell(r, source, metric)
            if not cell:
                continue
            name = f"{r['label']} {source} {metric.removesuffix('_acc')}"
            (skipped if _missing(r[f"{source}.{metric}_within_2pt"]) else judged).append(f"{name}: {cell}")
    if not judged and not skipped:
        return []
    lines = ["", f"Published numbers: {len(judged)} judged like for like (value, ours minus it, within 2 points?)"
             + (f", {len(skipped)} not judged" if skipped else "") + (":" if judged else ".")]
    for line in judged:
        lines += textwrap.wrap(line, WIDTH, subsequent_indent="    ")
    if skipped:
        lines += textwrap.wrap(f"Not judged, for example {skipped[0]}; the report lists all.", WIDTH,
                               subsequent_indent="    ")
    return lines


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
