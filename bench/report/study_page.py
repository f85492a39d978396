"""A study's report: optimization history, every trial's curve, importances, slices, the trials table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from .. import tracking
from . import charts
from .pages import Report, ReportError, RunLinks, data_uri, definition, environment, is_missing, render


def build(parent, name: str, children: pd.DataFrame, out: Path, ui_url: str) -> Report:
    parent_id = parent.info.run_id
    artifacts = set(tracking.list_artifacts(parent_id))
    if "trials.json" not in artifacts:
        raise ReportError(f"study run {parent_id} has no trials.json yet: run `bench search` to the end once")
    read = lambda name: json.loads(tracking.read_artifact_text(parent_id, name))  # noqa: E731
    trials = pd.DataFrame(read("trials.json"))
    importances = read("param_importances.json") if "param_importances.json" in artifacts else {}
    best = read("best_params.json") if "best_params.json" in artifacts else {}
    metric = parent.data.params.get("metric", "val_acc")
    params = sorted({k for p in trials["params"] for k in p})

    images = [charts.history_chart(trials, metric, out / "history.png"),
              charts.trial_curves_chart(trials, metric, out / "curves.png")]
    if importances:
        images.append(charts.importance_chart(importances, out / "importances.png"))
    images.append(charts.slice_chart(trials, params, metric, out / "slice.png"))
    table = pd.DataFrame(
        {
            "trial": trials["number"],
            "state": trials["state"],
            metric: trials["value"],
            "epochs": [len(v) for v in trials["intermediate_values"]],
            **{p: [t.get(p) for t in trials["params"]] for p in params},
            "run_id": trials["mlflow_run_id"],
        }
    ).sort_values(metric, ascending=parent.data.params.get("direction") == "minimize", na_position="last")
    table.to_csv(out / "summary.csv", index=False)
    definition_name, definition_text = definition(parent_id)
    link = RunLinks(ui_url, parent.info.experiment_id)
    states = trials["state"].value_counts().to_dict()
    tags = parent.data.tags
    page = render(
        "study.html.j2", out / "index.html",
        name=name,
        n_trials=len(trials),
        states=", ".join(f"{n} {k.lower()}" for k, n in sorted(states.items())),
        dataset=tags.get(tracking.TAG_DATASET, ""),
        parent_id=parent_id,
        parent_url=link(parent_id),
        metric=metric,
        best=_best(best, metric),
        registered=_registered(name, children, link),
        images=[(data_uri(p), p.stem) for p in images],
        importances=", ".join(f"{k}: {v:.3f}" for k, v in importances.items()),
        columns=[c for c in table.columns if c != "run_id"],
        rows=[_row(r, link) for _, r in table.iterrows()],
        definition_name=definition_name,
        definition=definition_text,
        environment=environment(tags),
    )
    return Report(out, [*images, out / "summary.csv", page], table, parent_id)


def _best(best: dict[str, Any], metric: str) -> dict[str, Any] | None:
    if not best:
        return None
    return {"trial": best.get("trial"), "value": f"{best.get(metric, math.nan):.4f}",
            "params": json.dumps(best.get("params", {}))}


def _registered(name: str, children: pd.DataFrame, link: RunLinks) -> dict[str, Any] | None:
    """The study's model as the registry has it (name, version, aliases), or None."""
    found = tracking.registered_model(f"{name}-best", set(children["run_id"]))
    if not found:
        return None
    return {**found, "run_url": link(found["run_id"]), "model_url": link.model(found["name"], found["version"]),
            "aliases": ", ".join(f"@{a}" for a in found["aliases"])}


def _row(r: pd.Series, link: RunLinks) -> dict[str, Any]:
    cells = []
    for column, value in r.items():
        if column == "run_id":
            continue
        if is_missing(value):
            cells.append("")
        else:
            cells.append(f"{value:.4g}" if isinstance(value, float) else str(value))
    run_id = r["run_id"] if isinstance(r["run_id"], str) else None
    return {"cells": cells, "run_id": run_id, "run_url": link(run_id) if run_id else None}
