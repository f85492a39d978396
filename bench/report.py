"""Reports from MLflow: the train/val accuracy chart redrawn, curves, a summary table, one HTML page.

The only module of bench that draws. Everything comes from the tracking store (the
suite's parent run and its children), so a report can be rebuilt at any time, on any
machine that reaches the store.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import platform
import re
import tomllib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only; never a window

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from . import __version__, tracking  # noqa: E402
from .suite import (  # noqa: E402
    SUMMARY_METRICS, TAG_ROWS, Suite, SuiteError, baseline_cell, parse_suite, published_cell, published_columns, summarize,
)
from .verdicts import curve_metric, method_note  # noqa: E402

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
DEFAULT_UI = "http://127.0.0.1:5000"
CHART_DPI = 110
# One stylesheet for suite and study pages, inlined so each page stays a single file.
STYLE = """<style>
body { font: 15px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; padding: 0 1rem; color: #222; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; margin: .5rem 0; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child, td:nth-child(2) { text-align: left; }
pre { background: #f6f6f6; padding: 1rem; overflow-x: auto; font-size: 13px; }
.note { background: #fff6d6; padding: .5rem 1rem; border-left: 4px solid #e0b000; }
dt { font-weight: 600; } dd { margin: 0 0 .4rem 0; }
td.verdict { font-weight: 600; } tr.missing td { color: #777; text-align: left; }
</style>"""


class ReportError(ValueError):
    """Nothing to report: unknown name or run id, or no finished runs."""


@dataclasses.dataclass
class Report:
    out_dir: Path
    files: list[Path]
    summary: pd.DataFrame
    parent_run_id: str


def find_parent(target: str) -> Any:
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
    parent = find_parent(target)
    parent_id = parent.info.run_id
    tags = parent.data.tags
    name = tags.get(tracking.TAG_SUITE) or tags.get(tracking.TAG_STUDY) or parent_id
    out = Path(out_dir) if out_dir else Path("reports") / _slug(name)
    out.mkdir(parents=True, exist_ok=True)

    children = tracking.child_runs(parent_id)
    if children.empty or not (children["status"] == "FINISHED").any():
        raise ReportError(f"run {parent_id} ({name}) has no FINISHED child runs to report")
    if tags.get(tracking.TAG_KIND) == "study":
        return _study_report(parent, name, out, ui_url, log)
    definition_name, definition = _definition(parent_id)
    suite = _parse_definition(definition_name, definition)
    summary = summarize(children, suite)
    finished = children[children["status"] == "FINISHED"]
    histories = _histories(finished)
    missing = _rows_not_run(suite, summary, children, tags)

    files = [
        _accuracy_chart(finished, summary, suite, out / "accuracy.png"),
        _curves_chart(histories, summary, suite, out / "curves.png"),
    ]
    table = _table(summary)
    table.to_csv(out / "summary.csv", index=False)
    files.append(out / "summary.csv")
    page = _html(
        name=name,
        parent=parent,
        summary=summary,
        table=table,
        finished=finished,
        definition_name=definition_name,
        definition=definition,
        images={"accuracy": out / "accuracy.png", "curves": out / "curves.png"},
        ui_url=ui_url.rstrip("/"),
        suite=suite,
        missing=missing,
    )
    (out / "index.html").write_text(page, encoding="utf-8")
    files.append(out / "index.html")
    if log:
        _log_files(parent_id, files)
    return Report(out, files, summary, parent_id)


def _log_files(parent_id: str, files: list[Path]) -> None:
    for f in files:
        tracking.log_artifact_file(parent_id, f, "report")


# ---------------------------------------------------------------------------- data


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "report"


def _definition(parent_id: str) -> tuple[str, str]:
    """The suite/study file logged with the parent run, as (file name, text)."""
    for artifact in tracking.list_artifacts(parent_id):
        if artifact.endswith(".toml"):
            return artifact, tracking.read_artifact_text(parent_id, artifact)
    return "", ""


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


# ---------------------------------------------------------------------------- charts


SOURCE_MARKERS = ("D", "^", "s", "v", "P")  # one per source, black, drawn on the bars


def _accuracy_chart(finished: pd.DataFrame, summary: pd.DataFrame, suite: Suite | None, path: Path) -> Path:
    """The seed's grouped bar chart: train and val accuracy per variant, mean ± std over seeds,
    with each source's published value marked on its bar (and test bars where a source gives test)."""
    pairs = published_columns(summary)
    splits = [("train", "train_acc"), ("val", "val_acc")]
    if any(metric == "test_acc" for _, metric in pairs):
        splits.append(("test", "test_acc"))
    long = pd.concat(
        [
            pd.DataFrame(
                {
                    "variant": finished[f"tags.{tracking.TAG_LABEL}"],
                    "split": split,
                    "accuracy": finished[f"metrics.{metric}"].astype(float),
                }
            )
            for split, metric in splits
        ]
    )
    order = list(summary["label"])
    hue_order = [split for split, _ in splits]
    n_seeds = sorted(set(summary["n_seeds"]))
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(order) + 2) + 2.6, 5))
    sns.barplot(
        data=long, x="variant", y="accuracy", hue="split", order=order, hue_order=hue_order,
        errorbar="sd" if max(n_seeds) > 1 else None, capsize=0.15, palette=["#4c72b0", "#dd8452", "#55a868"][: len(splits)],
        ax=ax,
    )
    lowest = long["accuracy"].min()
    width = 0.8 / len(hue_order)  # seaborn's default dodge: hues share 0.8 of each slot
    sources = list(dict.fromkeys(source for source, _ in pairs))
    for k, source in enumerate(sources):
        xs, ys = [], []
        for source_, metric in pairs:
            if source_ != source:
                continue
            hue = hue_order.index(metric.removesuffix("_acc"))
            for i, value in enumerate(summary[f"{source}.{metric}"]):
                if value is not None and not (isinstance(value, float) and math.isnan(value)):
                    xs.append(i + (hue - (len(hue_order) - 1) / 2) * width)
                    ys.append(float(value))
        if xs:
            epochs = suite.sources.get(source, {}).get("epochs") if suite else None
            label = f"published: {source}" + (f" ({epochs} epochs)" if epochs else "")
            ax.scatter(xs, ys, marker=SOURCE_MARKERS[k % len(SOURCE_MARKERS)], color="black", s=28, zorder=5,
                       label=label)
            lowest = min(lowest, min(ys))
    low = min(0.7, math.floor((lowest - 0.02) * 20) / 20)
    ax.set_ylim(max(low, 0.0), 1.0)
    seeds = "/".join(map(str, n_seeds))
    ax.set_title(f"Accuracy per variant, mean ± std over {seeds} seed(s)" if max(n_seeds) > 1 else "Accuracy per variant (1 seed)")
    ax.set_xlabel("")
    ax.tick_params(axis="x", labelrotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.legend(title=None, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=CHART_DPI)
    plt.close(fig)
    return path


def _curves_chart(histories: pd.DataFrame, summary: pd.DataFrame, suite: Suite | None, path: Path) -> Path:
    """Val accuracy and train loss per epoch, one line per variant (band: std over seeds), with
    any published per-epoch curve dashed in the variant's colour."""
    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    order = list(summary["label"])
    palette = sns.color_palette("tab10" if len(order) <= 10 else "husl", len(order))
    for ax, metric, title in ((axes[0], "val_acc", "Val accuracy"), (axes[1], "train_loss", "Train loss")):
        data = histories[histories["metric"] == metric]
        sns.lineplot(
            data=data, x="epoch", y="value", hue="label", hue_order=order, palette=palette,
            errorbar="sd", marker="o" if data["epoch"].max() <= 12 else None, ax=ax,
        )
        ax.set_title(title)
        ax.set_ylabel(metric)
    rows = {r.label: r for r in suite.rows} if suite else {}
    for color, label in zip(palette, order):
        for source, numbers in (rows[label].reference.items() if label in rows else []):
            curve = numbers.get("curve")
            if curve:
                metric = curve_metric(numbers) or "accuracy"
                epochs = sorted(int(e) for e in curve)
                axes[0].plot(epochs, [curve[str(e)] for e in epochs], linestyle="--", marker="x", color=color,
                             label=f"{label}: {source} ({metric.replace('_', ' ')})")
    axes[0].legend(title=None, fontsize="small", loc="lower right")
    axes[1].legend(title=None, fontsize="small", loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=CHART_DPI)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- studies


def _study_report(parent, name: str, out: Path, ui_url: str, log: bool) -> Report:
    """Optimization history, parameter importances, a slice plot per parameter, trials table."""
    parent_id = parent.info.run_id
    artifacts = set(tracking.list_artifacts(parent_id))
    if "trials.json" not in artifacts:
        raise ReportError(f"study run {parent_id} has no trials.json yet: run `bench search` to the end once")
    read = lambda name: json.loads(tracking.read_artifact_text(parent_id, name))  # noqa: E731
    trials = pd.DataFrame(read("trials.json"))
    importances = read("param_importances.json") if "param_importances.json" in artifacts else {}
    best = read("best_params.json") if "best_params.json" in artifacts else {}
    definition_name, definition = _definition(parent_id)
    metric = parent.data.params.get("metric", "val_acc")
    params = sorted({k for p in trials["params"] for k in p})

    files = [_history_chart(trials, metric, out / "history.png"), _trial_curves_chart(trials, metric, out / "curves.png")]
    if importances:
        files.append(_importance_chart(importances, out / "importances.png"))
    files.append(_slice_chart(trials, params, metric, out / "slice.png"))

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
    files.append(out / "summary.csv")
    page = _study_html(name, parent, table, trials, best, importances, definition_name, definition,
                       [f for f in files if f.suffix == ".png"], metric, ui_url.rstrip("/"))
    (out / "index.html").write_text(page, encoding="utf-8")
    files.append(out / "index.html")
    if log:
        _log_files(parent_id, files)
    return Report(out, files, table, parent_id)


_STATE_COLORS = {"COMPLETE": "#4c72b0", "PRUNED": "#c44e52", "FAIL": "#999999", "RUNNING": "#55a868"}


def _history_chart(trials: pd.DataFrame, metric: str, path: Path) -> Path:
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    done = trials.dropna(subset=["value"])
    for state, group in done.groupby("state"):
        ax.scatter(group["number"], group["value"], label=state.lower(), color=_STATE_COLORS.get(state, "k"),
                   marker="o" if state == "COMPLETE" else "x", zorder=3)
    complete = done[done["state"] == "COMPLETE"].sort_values("number")
    if not complete.empty:
        ax.step(complete["number"], complete["value"].cummax(), where="post", color="#222", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title("Optimization history (pruned trials at their last reported epoch)")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=CHART_DPI)
    plt.close(fig)
    return path


def _trial_curves_chart(trials: pd.DataFrame, metric: str, path: Path) -> Path:
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for _, t in trials.iterrows():
        steps = sorted(t["intermediate_values"].items(), key=lambda kv: int(kv[0]))
        if steps:
            ax.plot([int(k) for k, _ in steps], [v for _, v in steps], color=_STATE_COLORS.get(t["state"], "k"),
                    alpha=0.7, marker=".")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch of every trial (blue: complete, red: pruned)")
    fig.tight_layout()
    fig.savefig(path, dpi=CHART_DPI)
    plt.close(fig)
    return path


def _importance_chart(importances: dict[str, float], path: Path) -> Path:
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(6, 0.6 * len(importances) + 1.5))
    names = list(importances)
    sns.barplot(x=[importances[n] for n in names], y=names, color="#4c72b0", ax=ax)
    ax.set_xlabel("importance (fANOVA, normalised)")
    ax.set_title("Hyper-parameter importances")
    fig.tight_layout()
    fig.savefig(path, dpi=CHART_DPI)
    plt.close(fig)
    return path


def _slice_chart(trials: pd.DataFrame, params: list[str], metric: str, path: Path) -> Path:
    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(1, len(params), figsize=(3.6 * len(params), 3.6), squeeze=False, sharey=True)
    done = trials.dropna(subset=["value"])
    for ax, param in zip(axes[0], params):
        for state, group in done.groupby("state"):
            ax.scatter([p.get(param) for p in group["params"]], group["value"], color=_STATE_COLORS.get(state, "k"),
                       marker="o" if state == "COMPLETE" else "x", label=state.lower())
        if param in ("lr", "weight_decay"):
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # overlapping labels otherwise
        ax.set_xlabel(param)
    axes[0][0].set_ylabel(metric)
    axes[0][-1].legend(loc="lower right", fontsize="small")
    fig.suptitle("Slice plot: the metric against each parameter")
    fig.tight_layout()
    fig.savefig(path, dpi=CHART_DPI)
    plt.close(fig)
    return path


def _study_html(name, parent, table, trials, best, importances, definition_name, definition, images, metric, ui_url):
    e = html.escape
    experiment_id = parent.info.experiment_id
    run_url = lambda run_id: f"{ui_url}/#/experiments/{experiment_id}/runs/{run_id}"  # noqa: E731
    columns = list(table.columns)
    head = "".join(f"<th>{e(str(c))}</th>" for c in columns if c != "run_id") + "<th>run</th>"
    body = []
    for _, r in table.iterrows():
        cells = []
        for c in columns:
            if c == "run_id":
                continue
            v = r[c]
            cells.append(f"<td>{e(f'{v:.4g}' if isinstance(v, float) and not math.isnan(v) else ('' if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)))}</td>")
        rid = r["run_id"]
        link = f'<a href="{e(run_url(rid))}">{e(str(rid)[:8])}</a>' if isinstance(rid, str) else ""
        body.append("<tr>" + "".join(cells) + f"<td>{link}</td></tr>")
    states = trials["state"].value_counts().to_dict()
    registered = tracking.registered_model(f"{name}-best", set(tracking.child_runs(parent.info.run_id)["run_id"]))
    if registered:
        aliases = ", ".join(f"@{a}" for a in registered["aliases"])
        model_url = f"{ui_url}/#/models/{registered['name']}/versions/{registered['version']}"
        model_html = (
            f"Its model was retrained (run <a href=\"{e(run_url(registered['run_id']))}\">{e(registered['run_id'][:8])}</a>) "
            f"and is registered as <a href=\"{e(model_url)}\"><code>{e(registered['name'])}</code> version "
            f"{e(str(registered['version']))}</a>{' (alias ' + e(aliases) + ')' if aliases else ''}."
        )
    else:
        model_html = "No model of this study is in the Model Registry (it ran with <code>--no-register</code>, or the retrain did not finish)."
    best_html = (
        f"<p>Best: trial {e(str(best.get('trial')))} with {e(metric)} = {e(f'{best.get(metric, math.nan):.4f}')}; "
        f"params <code>{e(json.dumps(best.get('params', {})))}</code>. {model_html}</p>"
        if best
        else "<p>No trial completed yet.</p>"
    )
    imgs = "\n".join(_image(p, p.stem) for p in images)
    tags = parent.data.tags
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(name)}: bench study report</title>
{STYLE}</head>
<body>
<h1>{e(name)} (Optuna study)</h1>
<p>{len(trials)} trials: {e(', '.join(f'{n} {k.lower()}' for k, n in sorted(states.items())))}; data set
<code>{e(tags.get(tracking.TAG_DATASET, ''))}</code>. Parent run
<a href="{e(run_url(parent.info.run_id))}">{e(parent.info.run_id)}</a>.</p>
{best_html}
<h2>Charts</h2>
{imgs}
<h2>Importances</h2>
<p>{e(', '.join(f'{k}: {v:.3f}' for k, v in importances.items())) or 'need at least 3 complete trials'}</p>
<h2>Trials</h2>
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table>
<h2>Definition{': ' + e(definition_name) if definition_name else ''}</h2>
<pre>{e(definition)}</pre>
<h2>Environment</h2>
<p>bench {e(__version__)} (commit {e(tags.get('bench.git_commit', 'unknown'))}), torch {e(tags.get('torch.version', '?'))},
Python {e(tags.get('python.version', ''))}, {e(tags.get('host.platform', ''))}</p>
</body></html>
"""


# ---------------------------------------------------------------------------- HTML


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _cell(mean: float, std: float) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    return f"{mean:.4f}" if std is None or math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def _fmt(value: Any, spec: str = ".4f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return format(value, spec)


def _html(*, name, parent, summary, table, finished, definition_name, definition, images, ui_url, suite, missing) -> str:
    e = html.escape
    experiment_id = parent.info.experiment_id
    run_url = lambda run_id: f"{ui_url}/#/experiments/{experiment_id}/runs/{run_id}"  # noqa: E731
    tags = parent.data.tags
    first_child = finished.iloc[0]
    sources = sorted(set(finished[f"tags.{tracking.TAG_DATA_SOURCE}"].dropna()))
    jpeg = any("JPEG" in s for s in sources)
    pairs = published_columns(summary)

    source_heads = "".join(f"<th>{e(src)}<br>{e(metric.replace('_', ' '))} (ours −)</th>" for src, metric in pairs)
    rows = []
    for _, r in summary.iterrows():
        links = " ".join(f'<a href="{e(run_url(rid))}">{e(rid[:8])}</a>' for rid in str(r["run_ids"]).split())
        versus = baseline_cell(r)
        cells = [f"<td>{e(published_cell(r, src, metric))}</td>" for src, metric in pairs]
        rows.append(
            "<tr>"
            + f"<td>{e(str(r['label']))}</td><td>{e(str(r['variant']))}</td><td>{int(r['n_seeds'])}</td>"
            + "".join(f"<td>{e(_cell(r[f'{m}_mean'], r[f'{m}_std']))}</td>" for m in SUMMARY_METRICS)
            + f"<td>{e(versus)}</td><td class=verdict>{e(str(r['verdict']))}</td>"
            + "".join(cells)
            + f"<td>{int(r['num_parameters']):,}</td><td>{int(r['epochs'])}</td><td>{r['s_per_epoch']:.2f}</td>"
            + f"<td>{e(_fmt(r['train_gflops'], '.1f'))}</td><td>{e(_fmt(r['gemm_fraction'] * 100, '.1f'))}</td>"
            + f"<td>{links}</td></tr>"
        )
    width = 14 + len(pairs)
    for label, why in missing:
        rows.append(f"<tr class=missing><td>{e(label)}</td><td colspan={width - 1}>not run: {e(why)}</td></tr>")
    source_notes = "".join(
        f"<li><code>{e(n)}</code>: {e(str(meta.get('title', '')))}"
        + (f" (after {e(str(meta['epochs']))} epochs)" if meta.get("epochs") else "")
        + (f" — <a href=\"{e(str(meta['url']))}\">{e(str(meta['url']))}</a>" if meta.get("url") else "") + "</li>"
        for n, meta in (suite.sources.items() if suite else [])
    )
    baseline = suite.baseline if suite else None
    n_compared = int(summary["baseline_p_holm"].notna().sum())
    machines = sorted({m for ms in summary["machines"] for m in ms.split("; ")})
    hardware_note = (
        f"<p class=note><strong>Hardware:</strong> these runs came from {len(machines)} different machines, so "
        "their seconds per epoch are not comparable; GFLOP/s as a share of each machine's GEMM rate is.</p>"
        if len(machines) > 1
        else ""
    )
    env = {
        "bench": f"{__version__} (commit {tags.get('bench.git_commit', 'unknown')})",
        "torch": f"{tags.get('torch.version', '?')} (CUDA {tags.get('torch.cuda', 'None')})",
        "python": tags.get("python.version", platform.python_version()),
        "platform": tags.get("host.platform", ""),
        "device": first_child.get("tags.device", ""),
        "machines": " | ".join(machines),
        "data": "; ".join(sources),
        "tracking store": tracking.redact(tracking.tracking_uri()),
    }
    note = (
        "<p class=note><strong>Data note:</strong> CIFAR images came from the JPEG (quality 75) re-encoding "
        "of CIFAR-10: the same pictures, not pixel-identical, so accuracies land close to, not exactly on, "
        "published figures.</p>"
        if jpeg
        else ""
    )
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(name)}: bench report</title>
{STYLE}
</head>
<body>
<h1>{e(name)}</h1>
<p>{e(tags.get('mlflow.note.content', ''))} Profile <code>{e(tags.get(tracking.TAG_PROFILE, ''))}</code>, data set
<code>{e(tags.get(tracking.TAG_DATASET, ''))}</code>, {len(finished)} finished run(s).
Parent run <a href="{e(run_url(parent.info.run_id))}">{e(parent.info.run_id)}</a>
(status {e(parent.info.status)}). Generated {generated}.</p>
{note}
<h2>Accuracy</h2>
{_image(images['accuracy'], 'train and val accuracy per variant')}
<h2>Learning curves</h2>
{_image(images['curves'], 'val accuracy and train loss per epoch')}
<h2>Summary</h2>
{hardware_note}
<table>
<thead><tr><th>row</th><th>variant</th><th>seeds</th><th>train acc</th><th>val acc</th><th>test acc</th>
<th>val acc vs {e(baseline or 'baseline')}<br>diff [95 % CI]</th><th>verdict</th>{source_heads}
<th>parameters</th><th>epochs</th><th>s/epoch</th><th>GFLOP/s</th><th>% of GEMM</th><th>runs</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
<p>Accuracies are the final epoch's, mean ± sample std over seeds. {e(method_note(n_compared)) if baseline else 'This suite declares no baseline, so there are no verdicts.'}
Published values are the sources' own figures at our runs' epochs (a figure taken after as many
epochs, or the source's per-epoch curve there); "ours −" is our mean minus theirs, judged against 2
points only at equal epochs, and otherwise shown with both epochs. GFLOP/s: training FLOPs per image
(forward + backward, counted once with <code>torch.utils.flop_counter</code>) times images per second;
% of GEMM: that against the machine's dense GEMM rate, measured once per machine.
Run links open the MLflow UI at <code>{e(ui_url)}</code> (start it with <code>mlflow ui</code> on the same store).</p>
{('<h2>Sources</h2><ul>' + source_notes + '</ul>') if source_notes else ''}
<h2>Definition{': ' + e(definition_name) if definition_name else ''}</h2>
<pre>{e(definition) if definition else '(no definition file was logged with this run)'}</pre>
<h2>Environment</h2>
<dl>
{''.join(f'<dt>{e(k)}</dt><dd>{e(str(v))}</dd>' for k, v in env.items())}
</dl>
</body>
</html>
"""
