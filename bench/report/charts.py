"""Every chart of bench's reports (the only module that draws), saved as PNG files.

Suites: the seed's train/val accuracy bars and the learning curves. Studies: the optimization
history, every trial's curve, importances and slices. Each function takes plain tables and a
path, and returns the path.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only; never a window

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .. import tracking  # noqa: E402
from ..suites.spec import Suite  # noqa: E402
from ..suites.summary import measure_name, published_columns  # noqa: E402
from ..verdicts import curve_metric  # noqa: E402
from ..verdicts.kinds import BETTER, EQUIVALENT, IDENTICAL, UNDECIDED, UNJUDGED, WORSE  # noqa: E402

CHART_DPI = 110
SOURCE_MARKERS = ("D", "^", "s", "v", "P")  # one per source, black, drawn on the bars
_STATE_COLORS = {"COMPLETE": "#4c72b0", "PRUNED": "#c44e52", "FAIL": "#999999", "RUNNING": "#55a868"}
VERDICT_COLORS = {BETTER: "#2a9d3c", WORSE: "#c0392b", EQUIVALENT: "#2c6fbb", IDENTICAL: "#2c6fbb", UNDECIDED: "#7f7f7f",
                  UNJUDGED: "#c8c8c8"}


def accuracy_chart(finished: pd.DataFrame, summary: pd.DataFrame, suite: Suite | None, path: Path) -> Path:
    """The seed's grouped bar chart: train and val accuracy per variant, mean ± std over seeds,
    with each source's published value marked on its bar (and test bars where a source gives test)."""
    pairs = published_columns(summary)
    # Train accuracy measured after training (eval mode), as the seed's chart did; the running mean of the
    # last epoch only for runs logged before bench measured it.
    measured = "metrics.train_acc_eval" in finished and finished["metrics.train_acc_eval"].notna().all()
    train = "train_acc_eval" if measured else "train_acc"
    splits = [("train", train), ("val", "val_acc")]
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
            hue = hue_order.index(metric.split("_")[0])
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


def curves_chart(histories: pd.DataFrame, summary: pd.DataFrame, suite: Suite | None, path: Path) -> Path:
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


def verdicts_chart(summary: pd.DataFrame, margin: float, path: Path, *, baseline: str | None = None,
                   title: str = "Verdicts against the baseline") -> Path:
    """A forest plot of the verdicts: each row's difference from the baseline in the measure it was judged on, in points,
    with its interval at the level its verdict was decided at, the ±margin band shaded, coloured by verdict; where a source published
    both the row and the baseline, its difference is marked."""
    rows = summary[summary["verdict_kind"] != "baseline"].reset_index(drop=True)
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(9.5, 0.5 * max(len(rows), 1) + 2.0))
    ax.axvspan(-margin * 100, margin * 100, color="#2c6fbb", alpha=0.12, label=f"±{margin * 100:g} pt: no difference that matters")
    ax.axvline(0, color="#444", linewidth=0.8)
    y = list(range(len(rows)))[::-1]
    # An interval at a strict level over few seeds (the first look of --seeds auto) can span a hundred
    # points: the axis stays on the differences and the band, and such an interval ends in an arrow.
    base = summary[summary["verdict_kind"] == "baseline"]
    published = {}  # source -> its difference per row, in points
    for source in dict.fromkeys(s for s, m in published_columns(summary) if m == "val_acc"):
        column = f"{source}.val_acc"
        if not base.empty and not _missing(base[column].iloc[0]):
            published[source] = [(r[column] - base[column].iloc[0]) * 100 for _, r in rows.iterrows()]
    diffs = [abs(d) * 100 for d in rows["baseline_diff"] if not _missing(d)]
    reach = max([margin * 100 * 3, *(d * 1.5 + margin * 100 for d in diffs),
                 *(abs(x) * 1.1 for xs in published.values() for x in xs if not _missing(x))])
    for yi, (_, r) in zip(y, rows.iterrows()):
        kind = r.get("verdict_kind") or UNJUDGED
        color = VERDICT_COLORS.get(kind, VERDICT_COLORS[UNJUDGED])
        if not _missing(r["baseline_ci_low"]):
            low, high = r["baseline_ci_low"] * 100, r["baseline_ci_high"] * 100
            ax.plot([max(low, -reach), min(high, reach)], [yi, yi], color=color, linewidth=2.2)
            for end, side in ((low, -1), (high, 1)):
                if end * side > reach:  # clipped: the arrow says the interval goes on
                    ax.plot(side * reach, yi, ">" if side > 0 else "<", color=color, markersize=8)
        if not _missing(r["baseline_diff"]):
            ax.plot(r["baseline_diff"] * 100, yi, "o", color=color, markersize=7)
    ax.set_xlim(-reach * 1.05, reach * 1.05)
    for k, (source, xs) in enumerate(published.items()):
        points = [(x, yi) for x, yi in zip(xs, y) if not _missing(x)]
        if points:
            ax.scatter([p[0] for p in points], [p[1] for p in points], marker=SOURCE_MARKERS[k % len(SOURCE_MARKERS)],
                       facecolors="none", edgecolors="black", s=45, zorder=5, label=f"published: {source}")
    for kind, color in VERDICT_COLORS.items():
        if kind in set(rows.get("verdict_kind", [])):
            ax.plot([], [], "o-", color=color, label=kind)
    ax.set_yticks(y, [str(label) for label in rows["label"]])
    ax.set_xlabel(difference_label(summary, baseline))
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=CHART_DPI)
    plt.close(fig)
    return path


def difference_label(summary: pd.DataFrame, baseline: str | None) -> str:
    """The forest plot's x axis: the measure the verdicts judged (``summarize``'s attrs), minus the baseline's."""
    return (f"{measure_name(summary.attrs)} minus {baseline or 'the baseline'}'s, points\n"
            "(each interval at its verdict's level; an arrow: it goes on)")


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# ---------------------------------------------------------------------------- a suite's history


def suite_row_history_chart(rows: pd.DataFrame, label: str, path: Path) -> Path:
    """One row of a suite across its parent runs (``suites.history``): each run's mean in %, with its
    95 % t-interval over seeds, at its run number, one colour per machine; a flagged step (worse or
    broken against the run before it on the same machine) ringed in red."""
    mine = rows[rows["row"] == label]
    machines = list(dict.fromkeys(rows["machine"]))
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(8, 3.6))
    palette = sns.color_palette("deep", max(len(machines), 1))
    for k, machine in enumerate(machines):
        runs = mine[mine["machine"] == machine].sort_values("run")
        measured = runs.dropna(subset=["mean"])
        if measured.empty:
            continue
        low = (measured["mean"] - measured["ci_low"].fillna(measured["mean"])) * 100
        high = (measured["ci_high"].fillna(measured["mean"]) - measured["mean"]) * 100
        ax.errorbar(measured["run"], measured["mean"] * 100, yerr=[low, high], fmt="o-", color=palette[k], capsize=3,
                    label=f"machine {k + 1}")
    flagged = mine[mine["flagged"]]
    for _, r in flagged.iterrows():
        y = r["mean"] * 100 if not _missing(r["mean"]) else ax.get_ylim()[0]
        ax.scatter([r["run"]], [y], s=220, facecolors="none", edgecolors=VERDICT_COLORS[WORSE], linewidths=2, zorder=5)
        ax.annotate(str(r["step_kind"]), (r["run"], y), textcoords="offset points", xytext=(8, -14),
                    color=VERDICT_COLORS[WORSE], fontsize="small")
    runs = sorted(set(rows["run"]))
    ax.set_xticks(runs, [f"#{n}" for n in runs])
    ax.set_xlim(min(runs) - 0.5, max(runs) + 0.5)
    ax.set_xlabel("parent run, oldest first")
    ax.set_ylabel("mean %, 95 % t-interval")
    ax.set_title(f"{label}: {mine['measure'].iloc[0] if len(mine) else ''} per run")
    if len(machines) > 1:
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=CHART_DPI)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- studies


def history_chart(trials: pd.DataFrame, metric: str, path: Path) -> Path:
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


def trial_curves_chart(trials: pd.DataFrame, metric: str, path: Path) -> Path:
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


def importance_chart(importances: dict[str, float], path: Path) -> Path:
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


def slice_chart(trials: pd.DataFrame, params: list[str], metric: str, path: Path) -> Path:
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
