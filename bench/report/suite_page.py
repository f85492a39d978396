"""A suite's report: accuracy chart, learning curves, the summary with verdicts and sources, one page."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from .. import tracking
from ..suites.curves import learning_curves, time_to_target
from ..suites.parent import decisions_of, look_of, looks_of, planned_of, round_progress
from ..suites.rounds import TAG_AUTO_STOP, TAG_LOOK, TAG_LOOKS_TAKEN
from ..suites.spec import TAG_MARGIN, TAG_ROWS, Suite, parse_logged
from ..suites.summary import (
    FINISHED, TARGET_CONFIDENCE, baseline_cell, failure_counts, measure_name, method_text, pair_outcomes, published_columns,
    seeds_cell, summarize,
)
from ..verdicts import DEFAULT_MARGIN
from ..verdicts.sources import declared
from ..verdicts.kinds import IDENTICAL
from . import charts
from .pages import Report, RunLinks, data_uri, definition, environment, is_missing, mean_std, number, render, safe_link


def build(parent, name: str, children: pd.DataFrame, out: Path, ui_url: str) -> Report:
    parent_id = parent.info.run_id
    definition_name, definition_text = definition(parent_id)
    tags = parent.data.tags
    suite = parse_logged(definition_text, definition_name, tags.get(tracking.TAG_PROFILE, ""))
    margin = float(tags.get(TAG_MARGIN) or (suite.margin if suite else DEFAULT_MARGIN))
    looks = looks_of(tags)
    outcomes = pair_outcomes(children)
    curves = learning_curves(outcomes)
    reached = time_to_target(curves, suite.target, suite.measure) if suite and suite.target is not None else None
    summary = summarize(outcomes, suite, margin=margin, look=look_of(tags), planned=planned_of(tags),
                        decided=decisions_of(parent_id), reached=reached)
    under_way = round_progress(tags, outcomes)
    curves.to_csv(out / "curves.csv", index=False)  # every run's, a round under way included
    if under_way:  # the charts show what the table judged: the runs of the round under way wait for its look
        outcomes = outcomes[[(label, int(seed)) in under_way["judged"] for label, seed
                             in zip(outcomes[f"tags.{tracking.TAG_LABEL}"], outcomes["seed"])]]
        curves = curves[[(label, int(seed)) in under_way["judged"] for label, seed in zip(curves["row"], curves["seed"])]]
    finished = outcomes[outcomes["pair_state"] == FINISHED]  # the measurements; the others are listed as failures
    images = {} if finished.empty else {
        "accuracy": charts.accuracy_chart(finished, summary, suite, out / "accuracy.png"),
        "curves": charts.curves_chart(_long(curves[curves["state"] == FINISHED]), summary, suite, out / "curves.png"),
    }
    if summary["baseline_diff"].notna().sum() > 1:  # the baseline and at least one row compared with it
        images["verdicts"] = charts.verdicts_chart(summary, margin, out / "verdicts.png",
                                                   baseline=suite.baseline if suite else None)
    table = _table(summary)
    table.to_csv(out / "summary.csv", index=False)
    page = render(
        "suite.html.j2", out / "index.html",
        **_context(parent, name, summary, finished, suite, children, images, ui_url),
        method_note=method_text(summary),
        margin_pt=f"{margin * 100:g}", looks=looks, looks_taken=tags.get(TAG_LOOKS_TAKEN, ""),
        # a stop recorded before the round under way was started is not why the parent stands where it does
        auto_stop="" if under_way else tags.get(TAG_AUTO_STOP, ""), under_way=under_way,
        target=_target(summary),
        failures=[{"row": r["label"], "counts": failure_counts(r), "why": r["failures"]}
                  for _, r in summary.iterrows() if r["failures"]],
        definition_name=definition_name, definition=definition_text,
    )
    return Report(out, [*images.values(), out / "summary.csv", out / "curves.csv", page], summary, parent_id)


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
        # Parents from before bench recorded its looks were judged once at their last: no look to name.
        rows=[_row(r, link, looks_of(tags) if TAG_LOOK in tags else 1) for _, r in summary.iterrows()],
        published_rows=_published_rows(summary, published),
        missing=_rows_not_run(suite, summary, children, tags),
        width=16,
        measure=measure_name(summary.attrs),
        protocol_rows=_protocol_rows(summary, suite),
        model_notes=_model_notes(finished),
        sources=[
            {"name": n, "title": meta.get("title", ""), "epochs": meta.get("epochs"), "url": safe_link(meta.get("url")),
             "shown_url": meta.get("url"), "under": _measured_under(meta)}
            for n, meta in (suite.sources.items() if suite else [])
        ],
        ui_url=ui_url,
        environment=environment(
            tags,
            device=finished.iloc[0].get("tags.device", "") if len(finished) else "",
            machines=" | ".join(machines),
            data="; ".join(data_sources),
            **{"tracking store": tracking.redact(tracking.tracking_uri())},
        ),
    )


def _target(summary: pd.DataFrame) -> dict[str, Any] | None:
    """The time-to-target table, when the suite declares a target."""
    if "target_verdict" not in summary or "target" not in summary.attrs:
        return None
    measure = measure_name(summary.attrs)
    value = f"{summary.attrs['target'] * 100:g} %"
    rows = []
    for _, r in summary.iterrows():
        interval = "" if is_missing(r.get("target_epochs_ci_low")) else \
            f" [{r['target_epochs_ci_low']:.1f}, {r['target_epochs_ci_high']:.1f}]"
        level = r.get("target_ci_level")
        diff = "" if r["target_kind"] == "baseline" or is_missing(r.get("target_diff")) else (
            f"{r['target_diff']:+.1f}" + ("" if is_missing(r.get("target_ci_low")) else
                                         f" [{r['target_ci_low']:+.1f}, {r['target_ci_high']:+.1f}]")
            + ("" if is_missing(level) else f" at {level * 100:.1f} %"))
        rows.append({
            "row": str(r["label"]),
            "reached": f"{int(r['target_runs'] - r['target_not_reached'])} of {int(r['target_runs'])}",
            "epochs": "" if is_missing(r["target_epochs_mean"]) else f"{r['target_epochs_mean']:.1f}{interval}",
            "seconds": number(r.get("target_seconds_mean"), ".0f"),
            "diff": diff, "verdict": str(r["target_verdict"]),
            "css": f"verdict {str(r.get('target_kind') or '').replace(' ', '-')}".strip(),
        })
    return {"what": f"{measure} of {value}", "measure": measure, "value": value, "rows": rows,
            "margin": f"{summary.attrs.get('target_margin', 1):g}", "confidence": f"{TARGET_CONFIDENCE:.0%}"}


def _row(r: pd.Series, link: RunLinks, looks: int = 1) -> dict[str, Any]:
    """One row of the verdict table; with ``looks`` > 1 (a --seeds auto schedule) a decided row names the
    look that decided it."""
    named = looks > 1 and not is_missing(r.get("decided_at")) and r.get("verdict_kind") != IDENTICAL  # no test decided it
    verdict = str(r["verdict"]) + (f" (look {int(r['decided_at'])})" if named else "")
    cells = [(str(r["label"]), ""), (str(r["variant"]), ""), (seeds_cell(r), "")]
    train = "train_acc_eval" if not pd.isna(r["train_acc_eval_mean"]) else "train_acc"  # runs from before bench measured it
    cells += [(mean_std(r[f"{m}_mean"], r[f"{m}_std"]), "") for m in (train, "val_acc", "test_acc")]
    kind = str(r.get("verdict_kind") or "").replace(" ", "-")
    level = r.get("baseline_ci_level")
    cells += [(mean_std(r["measure_mean"], r["measure_std"]), ""),
              (baseline_cell(r) + ("" if is_missing(level) or not baseline_cell(r) else f" at {level * 100:.1f} %"), ""),
              (number(r.get("rho"), "+.2f"), ""), (verdict, f"verdict {kind}".strip())]
    cells += [(number(r["num_parameters"], ",.0f"), ""), (number(r["epochs"], ".0f"), ""),
              (number(r["s_per_epoch"], ".2f"), ""), (number(r["train_gflops"], ".1f"), ""),
              (number(r["gemm_fraction"] * 100, ".1f"), "")]
    return {"cells": cells, "runs": [(run_id, link(run_id)) for run_id in str(r["run_ids"]).split()]}


def _published_rows(summary: pd.DataFrame, published: list[tuple[str, str]]) -> list[dict[str, str]]:
    """One line per published figure: the value, ours measured the source's way, the difference,
    and whether it was judged (or what differs)."""
    out = []
    for _, r in summary.iterrows():
        for source, metric in published:
            value = r[f"{source}.{metric}"]
            if pd.isna(value):
                continue
            ours_key = r.get(f"{source}.{metric}_ours") or metric
            ok, differs = r[f"{source}.{metric}_within_2pt"], r.get(f"{source}.{metric}_differs") or ""
            epochs = r[f"{source}.{metric}_epochs"]
            out.append({
                "row": str(r["label"]), "source": source, "metric": metric.replace("_", " "),
                "value": f"{value:.4f}" + ("" if pd.isna(epochs) else f" ({int(epochs)} epochs)"),
                "ours": mean_std(r.get(f"{ours_key}_mean"), r.get(f"{ours_key}_std")),
                "measured": ours_key.replace("_", " "),
                "diff": number(r[f"{source}.{metric}_diff"], "+.4f"),
                "judged": ("within 2 pt" if ok else "beyond 2 pt") if not pd.isna(ok) else f"not judged: {differs}",
            })
    return out


def _measured_under(meta: dict[str, Any]) -> str:
    shown = {"train_images": lambda v: f"{int(v):,} train images", "optimizer": lambda v: f"optimizer {v}",
             "lr": lambda v: f"lr {v:g}", "batch_size": lambda v: f"batch {v}",
             "protocol": lambda v: "the model left in train mode (no model.eval())" if v == "train-mode" else "eval mode"}
    return ", ".join(show(meta[key]) for key, show in shown.items() if meta.get(key) is not None)


def _protocol_rows(summary: pd.DataFrame, suite: Suite | None) -> list[dict[str, str]]:
    """For each row a source measured in train mode: our val in eval mode, our val and train measured
    the source's way, and the source's figures."""
    if suite is None:
        return []
    by_label = {r.label: r for r in suite.rows}
    out = []
    for _, r in summary.iterrows():
        row = by_label.get(r["label"])
        for name, numbers in (row.reference.items() if row else []):
            if declared(numbers, suite.sources[name]).get("protocol") != "train-mode":
                continue
            out.append({
                "row": r["label"], "source": name,
                "val_eval": mean_std(r["val_acc_mean"], r["val_acc_std"]),
                "val_train_mode": mean_std(r["val_acc_train_mode_mean"], r["val_acc_train_mode_std"]),
                "val_theirs": number(numbers.get("val_acc")),
                "train_eval": mean_std(r["train_acc_eval_mean"], r["train_acc_eval_std"]),
                "train_train_mode": mean_std(r["train_acc_train_mode_mean"], r["train_acc_train_mode_std"]),
                "train_theirs": number(numbers.get("train_acc")),
            })
    return out


def _model_notes(finished: pd.DataFrame) -> list[tuple[str, str]]:
    """(row, note) for what variants' builders reported about their runs, e.g. which weights were loaded."""
    prefix = f"tags.{tracking.TAG_MODEL_NOTE}."
    notes = []
    for column in sorted(c for c in finished.columns if c.startswith(prefix)):
        for label, values in finished.groupby(f"tags.{tracking.TAG_LABEL}")[column]:
            for value in sorted(set(values.dropna())):
                notes.append((str(label), f"{column.removeprefix(prefix)}: {value}"))
    return notes


def _rows_not_run(suite: Suite | None, summary: pd.DataFrame, children: pd.DataFrame, tags: dict) -> list[tuple[str, str]]:
    """(row, why) for each row of the suite with no FINISHED run under this parent."""
    if suite is None:
        return []
    chosen = [r for r in tags.get(TAG_ROWS, "").split(",") if r]
    out = []
    for row in suite.rows:
        if row.label in set(summary["label"]):
            continue  # in the plan: listed in the summary, failures and all
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


def _long(curves: pd.DataFrame) -> pd.DataFrame:
    """The learning curves in the long form the chart draws: label, seed, metric, epoch, value."""
    long = curves.melt(id_vars=["row", "seed", "epoch"], value_vars=["train_acc", "val_acc", "train_loss", "val_loss"],
                       var_name="metric", value_name="value").dropna(subset=["value"])
    return long.rename(columns={"row": "label"})[["label", "seed", "metric", "epoch", "value"]]


def _table(summary: pd.DataFrame) -> pd.DataFrame:
    """summary.csv: one row per variant, plain numbers a spreadsheet can read."""
    table = summary.rename(columns={"label": "variant_row"})
    # What the verdicts compared and how, so `bench judge` on this folder judges as the suite did by default.
    for key in ("measure", "design", "margin"):
        if key in summary.attrs:
            table[key] = summary.attrs[key]
    first = ["variant_row", "variant", "n_seeds", "seeds"]
    return table[first + [c for c in table.columns if c not in first]]
