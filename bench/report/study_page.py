"""A study's report: optimization history, every trial's curve, importances, slices, the trials table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from .. import tracking
from ..suites.curves import COLUMNS as CURVE_COLUMNS
from ..suites.curves import learning_curves
from ..suites.parent import decisions_of, look_of, planned_of
from ..suites.spec import parse_logged
from ..suites.summary import baseline_cell, measure_name, method_text, pair_outcomes, per_seed, summarize
from ..verdicts import against_baseline
from . import charts
from .pages import Report, ReportError, RunLinks, data_uri, definition, environment, is_missing, mean_std, render

CONFIRMATION = "confirmation.json"  # logged on the study's parent by bench.search.confirm
# The study's one test measurement, as bench.search.confirm records it on the study's parent: the record
# of what happened, where confirmation.json is what the last machine to finish wrote.
TAG_TEST_MEASURED = "bench.test_measured"


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
    confirmation = _confirmation(read(CONFIRMATION) if CONFIRMATION in artifacts else None, link, tags)
    run_ids = set(children["run_id"]) | set(confirmation.get("labels", {}))
    registered = _registered(name, run_ids, link)
    curves = study_curves(children, confirmation.get("parent_id"))
    curves.to_csv(out / "curves.csv", index=False)
    if registered and confirmation:
        registered["label"] = confirmation["labels"].get(registered["run_id"], "")
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
        registered=registered,
        confirmation=confirmation,
        images=[(data_uri(p), p.stem) for p in images],
        importances=", ".join(f"{k}: {v:.3f}" for k, v in importances.items()),
        columns=[c for c in table.columns if c != "run_id"],
        rows=[_row(r, link) for _, r in table.iterrows()],
        definition_name=definition_name,
        definition=definition_text,
        environment=environment(tags),
    )
    return Report(out, [*images, out / "summary.csv", out / "curves.csv", page], table, parent_id)


def _best(best: dict[str, Any], metric: str) -> dict[str, Any] | None:
    if not best:
        return None
    return {"trial": best.get("trial"), "value": f"{best.get(metric, math.nan):.4f}",
            "params": json.dumps(best.get("params", {}))}


def _confirmation(record: dict[str, Any] | None, link: RunLinks, tags: dict[str, str]) -> dict[str, Any]:
    """The confirmation of the search's winner, as the page shows it: one line per config (search val,
    confirmed val, the winner's-curse gap, verdicts against the baseline and the winner)."""
    if not record:
        return {}
    confirm_id = record["confirmation_run_id"]
    children = tracking.child_runs(confirm_id)
    name, text = definition(confirm_id)
    confirm_tags = tracking.get_run(confirm_id).data.tags
    suite = parse_logged(text, name, confirm_tags.get(tracking.TAG_PROFILE, ""))
    margin = float(record.get("margin", 0.01))
    outcomes = pair_outcomes(children)
    # Judged as the confirmation judged it: its planned seeds, its look, the rows it decided.
    summary = summarize(outcomes, suite, margin=margin, look=look_of(confirm_tags), planned=planned_of(confirm_tags),
                        decided=decisions_of(confirm_id))
    method = method_text(summary)
    if text and suite is None:  # logged by a bench this one cannot read: judged without its baseline and measure
        method += (f" The confirmation's suite file ({name}) could not be read by this version of bench, so its"
                   " rows are shown without the suite's baseline and measure: see the record's own verdicts.")
    summary = summary.set_index("label")
    candidates = {c["label"]: c for c in record["candidates"]}
    versus = record.get("versus_winner")
    if versus is None and record.get("winner"):  # a confirmation from before bench recorded them: judged here
        measure, paired = summary.attrs.get("measure", "val_acc"), summary.attrs.get("design") == "paired"
        values = {label: per_seed(outcomes, label, measure) for label in summary.index if label in candidates}
        versus = against_baseline(values, record["winner"], margin=margin, pair=paired).set_index("label")["verdict"]
    versus = versus if versus is not None else {}
    rows = []
    for label in [*[c for c in candidates if c in summary.index], record["baseline"]]:
        if label not in summary.index:
            continue
        r, candidate = summary.loc[label], candidates.get(label)
        rows.append({
            "label": label,
            "search": "" if candidate is None else f"{candidate['value']:.4f}",
            "confirmed": f"{mean_std(r['val_acc_mean'], r['val_acc_std'])} (n={int(r['n_seeds'])})",
            "gap": "" if candidate is None else f"{(r['val_acc_mean'] - candidate['value']) * 100:+.2f}",
            "vs_baseline": "" if label == record["baseline"] else f"{baseline_cell(r)}{_level(r)} {r['verdict']}",
            "vs_winner": "" if label not in versus or label == record["winner"] else versus[label],
            "params": "" if candidate is None else json.dumps(candidate["params"]),
            "winner": label == record.get("winner"),
        })
    winner = record.get("winner")
    test = json.loads(tags[TAG_TEST_MEASURED]) if tags.get(TAG_TEST_MEASURED) else record.get("winner_test") or {}
    return {
        "rows": rows, "seeds": record["seeds"], "baseline": record["baseline"], "winner": winner,
        "winner_verdict": summary.loc[winner, "verdict"] if winner in summary.index else "",
        "beats_baseline": record.get("beats_baseline", False), "margin_pt": f"{margin * 100:g}",
        # Confirmations from before the fresh split recorded none: they measured on the trials' split.
        "split_seed": record.get("split_seed"), "trials_split_seed": record.get("trials_split_seed"),
        "val_fold": record.get("val_fold"), "trials_val_fold": record.get("trials_val_fold"),
        "champion_note": record.get("champion_note", ""),
        "test": f"{test['mean']:.4f} ± {test['std']:.4f} over {test['n']} runs" if test.get("n") else "not measured",
        "test_label": test.get("label", winner), "test_is_winner": test.get("label", winner) == winner,
        "parent_url": link(confirm_id), "parent_id": confirm_id,
        "labels": dict(zip(children["run_id"], children[f"tags.{tracking.TAG_LABEL}"])) if len(children) else {},
        "method_note": method,
        "measure": measure_name(summary.attrs),
    }


def _level(r: pd.Series) -> str:
    level = r.get("baseline_ci_level")
    return "" if is_missing(level) or not baseline_cell(r) else f" at {level * 100:.1f} %"


def study_curves(children: pd.DataFrame, confirmation_id: str | None) -> pd.DataFrame:
    """Every epoch of every trial (row ``trial N``, the study's seed) and of every confirmation run
    (``curves.learning_curves``), with the stage each belongs to."""
    kind = children.get(f"tags.{tracking.TAG_KIND}", pd.Series(dtype=object, index=children.index))
    trials = children[kind == "trial"].copy()
    trials["seed"] = trials.get("params.seed", pd.Series(math.nan, index=trials.index))
    state = trials.get("tags.optuna.state", pd.Series(dtype=object, index=trials.index))
    trials["pair_state"] = state.where(state.notna(), trials["status"])
    stages = [("trial", learning_curves(trials[trials["seed"].notna()]))]
    if confirmation_id:
        stages.append(("confirmation", learning_curves(pair_outcomes(tracking.child_runs(confirmation_id)))))
    frames = [curves.assign(stage=stage) for stage, curves in stages if not curves.empty]
    if not frames:
        return pd.DataFrame(columns=["stage", *CURVE_COLUMNS])
    return pd.concat(frames, ignore_index=True)[["stage", *CURVE_COLUMNS]]


def _registered(name: str, run_ids: set[str], link: RunLinks) -> dict[str, Any] | None:
    """The study's model as the registry has it (name, version, aliases), or None."""
    found = tracking.registered_model(f"{name}-best", run_ids)
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
