"""A suite's summary: one row per suite row, mean ± std over seeds, verdicts and the sources' numbers.

Pure tables: ``summarize`` reads the child runs as ``mlflow.search_runs`` returns them and
leaves the statistics to ``bench.verdicts``; the ``*_cell`` helpers and ``format_summary``
are the one formatting of those numbers for the printed summary and the report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from .. import tracking
from ..verdicts import against_baseline, against_source, method_note
from .spec import Suite


SUMMARY_METRICS = ("train_acc", "val_acc", "test_acc")
SOURCE_SUFFIXES = ("", "_epochs", "_diff", "_within_2pt")  # of a summary's <source>.<metric> columns
VERDICT_COLUMNS = ["baseline_diff", "baseline_ci_low", "baseline_ci_high", "baseline_p_holm", "verdict"]


def summarize(children: pd.DataFrame, suite: Suite | None = None) -> pd.DataFrame:
    """One row per suite row: accuracy mean and std over FINISHED seeds, size and speed, the
    machines it ran on, the verdict against the suite's baseline and the sources' numbers.

    Source columns are ``<source>.<metric>`` (the published value at our epochs where the source
    has one, else its figure), ``<source>.<metric>_epochs`` (the epochs that value was taken at),
    ``<source>.<metric>_diff`` (ours - published) and ``<source>.<metric>_within_2pt`` (empty where
    the epochs differ: not judged).
    """
    columns = ["label", "variant", "n_seeds", "seeds"]
    for metric in SUMMARY_METRICS:
        columns += [f"{metric}_mean", f"{metric}_std"]
    columns += ["num_parameters", "epochs", "s_per_epoch", "train_gflops", "gemm_fraction", "machines", "run_ids"]
    columns += VERDICT_COLUMNS
    if children.empty or "status" not in children:
        return pd.DataFrame(columns=columns)
    finished = children[children["status"] == "FINISHED"]
    order = [r.label for r in suite.rows] if suite else sorted(finished[f"tags.{tracking.TAG_LABEL}"].unique())
    machine_tag = f"tags.{tracking.TAG_HARDWARE}.machine"
    records = []
    values: dict[str, list[float]] = {}
    for label in order:
        runs = finished[finished[f"tags.{tracking.TAG_LABEL}"] == label]
        if runs.empty:
            continue
        record: dict[str, Any] = {
            "label": label,
            "variant": runs[f"tags.{tracking.TAG_VARIANT}"].iloc[0],
            "n_seeds": len(runs),
            "seeds": " ".join(sorted(runs[f"tags.{tracking.TAG_SEED}"].tolist(), key=int)),
        }
        for metric in SUMMARY_METRICS:
            metric_values = runs[f"metrics.{metric}"].astype(float)
            record[f"{metric}_mean"] = metric_values.mean()
            record[f"{metric}_std"] = metric_values.std(ddof=1) if len(metric_values) > 1 else math.nan
        values[label] = runs["metrics.val_acc"].astype(float).tolist()
        record["num_parameters"] = int(runs["params.num_parameters"].iloc[0])
        record["epochs"] = int(runs["params.epochs"].iloc[0])
        record["s_per_epoch"] = runs["metrics.epoch_time_s"].astype(float).mean()
        for metric in ("train_gflops", "gemm_fraction"):  # absent from runs logged before bench measured them
            column = f"metrics.{metric}"
            record[metric] = runs[column].astype(float).mean() if column in runs else math.nan
        machines = runs[machine_tag].dropna().unique().tolist() if machine_tag in runs else []
        record["machines"] = "; ".join(sorted(machines)) or "not recorded"
        record["run_ids"] = " ".join(runs["run_id"])
        records.append(record)
    summary = pd.DataFrame(records, columns=columns)
    if summary.empty:
        return summary
    verdicts = against_baseline(values, suite.baseline if suite else None).set_index("label")
    for column, source_column in zip(VERDICT_COLUMNS, ["diff", "ci_low", "ci_high", "p_holm", "verdict"]):
        summary[column] = summary["label"].map(verdicts[source_column])
    if suite and suite.sources:
        by_label = {r.label: r for r in suite.rows}
        for source, meta in suite.sources.items():
            found = [
                against_source({m: rec[f"{m}_mean"] for m in SUMMARY_METRICS}, rec["epochs"],
                               by_label[rec["label"]].reference.get(source, {}), meta.get("epochs"))
                if source in by_label[rec["label"]].reference else {}
                for rec in records
            ]
            for metric in SUMMARY_METRICS:
                if any(metric in f for f in found):
                    for suffix in SOURCE_SUFFIXES:
                        summary[f"{source}.{metric}{suffix}"] = [f.get(f"{metric}{suffix}") for f in found]
    return summary


def published_columns(summary: pd.DataFrame) -> list[tuple[str, str]]:
    """The (source, metric) pairs the summary has published numbers for, in column order."""
    pairs = []
    for column in summary.columns:
        if "." in column and not column.endswith(SOURCE_SUFFIXES[1:]):
            source, metric = column.rsplit(".", 1)
            pairs.append((source, metric))
    return pairs


def baseline_cell(row: Mapping[str, Any]) -> str:
    """``+0.0123 [-0.0040, +0.0286]``: a summary row's val-accuracy difference from the baseline."""
    if row["verdict"] == "baseline" or math.isnan(row["baseline_diff"]):
        return ""
    low, high = row["baseline_ci_low"], row["baseline_ci_high"]
    return f"{row['baseline_diff']:+.4f}" + ("" if math.isnan(low) else f" [{low:+.4f}, {high:+.4f}]")


def published_cell(row: Mapping[str, Any], source: str, metric: str) -> str:
    """``0.9000 -0.0110 (within 2 pt)``: a source's value, ours minus it, and the 2-point check;
    ``0.9211 -0.0513 (theirs after 2 epochs, ours 1)`` where the source has no figure at our epochs."""
    value, diff, ok = row[f"{source}.{metric}"], row[f"{source}.{metric}_diff"], row[f"{source}.{metric}_within_2pt"]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if diff is None or math.isnan(diff):
        return f"{value:.4f}"
    if ok is None or (isinstance(ok, float) and math.isnan(ok)):  # epochs differ: compared, not judged
        return f"{value:.4f} {diff:+.4f} (theirs after {int(row[f'{source}.{metric}_epochs'])} epochs, ours {int(row['epochs'])})"
    return f"{value:.4f} {diff:+.4f} ({'within' if ok else 'beyond'} 2 pt)"


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as fixed-width text: accuracies (mean ± std), then each row's verdict
    against the baseline and its difference from each source."""
    if summary.empty:
        return "(no finished runs)"

    def cell(mean: float, std: float) -> str:
        return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"

    table = pd.DataFrame(
        {
            "row": summary["label"],
            "seeds": summary["n_seeds"],
            **{m: [cell(a, b) for a, b in zip(summary[f"{m}_mean"], summary[f"{m}_std"])] for m in SUMMARY_METRICS},
            "params": summary["num_parameters"].map("{:,}".format),
            "epochs": summary["epochs"],
            "s/epoch": summary["s_per_epoch"].map("{:.2f}".format),
            "GFLOP/s": summary["train_gflops"].map("{:.1f}".format),
        }
    )
    lines = [table.to_string(index=False), ""]
    verdict_table = pd.DataFrame({
        "row": summary["label"],
        "val acc vs baseline": [baseline_cell(r) for _, r in summary.iterrows()],
        "verdict": summary["verdict"],
    })
    for source, metric in published_columns(summary):
        verdict_table[f"{source} {metric.removesuffix('_acc')}"] = [
            published_cell(r, source, metric) for _, r in summary.iterrows()
        ]
    lines.append(verdict_table.to_string(index=False))
    n_compared = int(summary["baseline_p_holm"].notna().sum())
    lines.append(method_note(n_compared))
    if published_columns(summary):
        lines.append("Sources: published value at our epochs (the source's figure, or its per-epoch curve), ours "
                     "minus it, and whether that is within 2 points; where the source has no value at our epochs, "
                     "the difference from its figure with both epochs, not judged.")
    machines = sorted({m for ms in summary["machines"] for m in ms.split("; ")})
    if len(machines) > 1:
        lines.append(f"Runs came from {len(machines)} machines ({' | '.join(machines)}): seconds per epoch do not compare.")
    return "\n".join(lines)
