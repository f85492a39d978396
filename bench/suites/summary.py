"""A suite's summary: one row per suite row, mean ± std over seeds, verdicts and the sources' numbers.

Pure tables: ``summarize`` reads the child runs as ``mlflow.search_runs`` returns them and
leaves the statistics to ``bench.verdicts``; the ``*_cell`` helpers and ``format_summary``
are the one formatting of those numbers for the printed summary and the report.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from .. import tracking
from ..verdicts import (
    BETTER, DEFAULT_MARGIN, EQUIVALENT, IDENTICAL, UNJUDGED, WORSE, against_baseline, against_source, mean_interval,
    method_note,
)
from ..verdicts.sequential import Look
from .spec import MEASURES, Suite

# Per-run numbers summarised as mean and std over seeds: the final epoch's running train accuracy,
# val and test; the train split measured after training (eval mode); the model left in train mode.
SUMMARY_METRICS = ("train_acc", "val_acc", "test_acc", "train_acc_eval", "train_acc_train_mode", "val_acc_train_mode",
                   "val_acc_last_k", "val_acc_ema")
SOURCE_SUFFIXES = ("", "_epochs", "_diff", "_within_2pt", "_differs", "_ours")  # of <source>.<metric> columns
VERDICT_COLUMNS = {  # summary column -> against_baseline column
    "baseline_diff": "diff", "baseline_ci_low": "ci_low", "baseline_ci_high": "ci_high", "baseline_p_holm": "p_holm",
    "baseline_p_equiv_holm": "p_equiv_holm", "verdict": "verdict", "verdict_kind": "kind", "seeds_needed": "seeds_needed",
}
WIDTH = 100  # the printed summary fits a terminal this wide
# Settings a published figure may have been measured under, read from each row's first run.
RUN_SETTINGS = {"epochs": int, "optimizer": str, "lr": float, "batch_size": int, "train_images": int}

# What became of a row x seed pair: the run that stands for it (its FINISHED run if it has one, else
# its latest attempt) says which. Only "finished" is a measurement; the others are counted, never dropped.
FINISHED, DIVERGED, FAILED, UNFINISHED = "finished", "diverged", "failed", "unfinished"
NOT_STARTED = "not started"
RETRYABLE_ERRORS = ("stale", "interrupted")  # a run stopped from outside, not by an error of its own
DECIDED_KINDS = (BETTER, WORSE, EQUIVALENT, IDENTICAL)


def pair_outcomes(children: pd.DataFrame) -> pd.DataFrame:
    """One row per (label, seed) tried under a parent: the child run that stands for the pair, with
    ``pair_state`` (finished, diverged, failed, unfinished) and ``pair_reason`` (why, for the others).

    A pair tried more than once (a killed run continued, a failed run retried by ``--resume`` before
    its round was judged) is its FINISHED run if it has one, else its latest attempt."""
    label_tag, seed_tag = f"tags.{tracking.TAG_LABEL}", f"tags.{tracking.TAG_SEED}"
    if children.empty or label_tag not in children or seed_tag not in children:
        return pd.DataFrame(columns=list(dict.fromkeys([*children.columns, "run_id", "status", "start_time", "end_time",
                                                        label_tag, seed_tag, "seed", "pair_state", "pair_reason"])))
    runs = children[children[label_tag].notna() & children[seed_tag].notna()].copy()
    runs["seed"] = runs[seed_tag].astype(int)
    finished_first = (runs["status"] != "FINISHED").astype(int)
    order = runs.assign(_rank=finished_first).sort_values(["_rank", "start_time"], ascending=[True, False])
    chosen = order.drop_duplicates([label_tag, "seed"]).drop(columns="_rank")
    error = _column(chosen, f"tags.{tracking.TAG_ERROR}").fillna("").astype(str)
    diverged = _column(chosen, f"tags.{tracking.TAG_DIVERGED}")
    states, reasons = [], []
    for status, err, why in zip(chosen["status"], error, diverged):
        if status == "FINISHED" and pd.notna(why):
            states.append(DIVERGED), reasons.append(f"diverged: {why}")
        elif status == "FINISHED":
            states.append(FINISHED), reasons.append("")
        elif status == "FAILED" and not err.startswith(RETRYABLE_ERRORS):
            states.append(FAILED), reasons.append(err or "FAILED (no error recorded)")
        else:
            states.append(UNFINISHED), reasons.append(err or status)
    chosen["pair_state"], chosen["pair_reason"] = states, reasons
    return chosen.sort_values([label_tag, "seed"])


def per_seed(outcomes: pd.DataFrame, label: str, measure: str = "val_acc") -> pd.Series:
    """A row's measure per seed (``pair_outcomes``): NaN for a run that failed, diverged or did not finish,
    so a comparison with it is not judged on its survivors."""
    runs = outcomes[outcomes[f"tags.{tracking.TAG_LABEL}"] == label]
    values = runs.get(f"metrics.{measure}", pd.Series(math.nan, index=runs.index))
    return pd.Series({int(seed): float(value) if state == FINISHED else math.nan
                      for seed, value, state in zip(runs["seed"], values, runs["pair_state"])}, dtype=float)


def summarize(children: pd.DataFrame, suite: Suite | None = None, *, margin: float | None = None,
              look: Look | None = None, planned: Mapping[str, Sequence[int]] | None = None,
              decided: Mapping[str, Mapping[str, Any]] | None = None,
              reached: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per row of the plan: accuracy mean and std over its measured seeds, how many of its
    runs failed, diverged or did not finish (and why), size and speed, the machines it ran on, the
    verdict against the suite's baseline and the sources' numbers.

    The verdict compares the suite's declared ``measure`` (one number per run) seed by seed when its
    design is paired, else by Welch; ``rho`` is each row's correlation with the baseline over their
    shared seeds. ``planned``: each row's planned seeds (what the parent recorded); a pair of the plan
    with no run counts as not started, runs outside the plan are left out. Without it, the plan is what
    the children ran. A row with any failed, diverged or unfinished run gets no verdict, and says why.
    ``margin``: the smallest difference that matters (default: the suite's); ``look``: which look of
    the suite's schedule this is (default: a suite judged once); ``decided``: rows decided at an
    earlier look, with their verdict columns as recorded then (final: not judged again).
    ``reached``: with a suite ``target``, each run's time to it (``curves.time_to_target``): each row
    then gets epochs and seconds to the target (mean and std over the runs that reached it, how many
    did not), and a verdict on its epochs against the baseline's, in the same family as the others.
    The table's ``attrs`` hold the margin, look, measure and design, for ``format_summary``.
    """
    columns = ["label", "variant", "n_seeds", "seeds", "runs", "failed", "diverged", "unfinished", "failures"]
    for metric in SUMMARY_METRICS:
        columns += [f"{metric}_mean", f"{metric}_std"]
    columns += ["num_parameters", *[k for k in RUN_SETTINGS if k != "epochs"], "epochs", "s_per_epoch", "s_per_run",
                "train_gflops", "gemm_fraction", "machines", "run_ids", "measure_mean", "measure_std", "rho",
                *VERDICT_COLUMNS, "decided_at"]
    measure = suite.measure if suite else "val_acc"
    look = look or Look()
    margin = margin if margin is not None else (suite.margin if suite else DEFAULT_MARGIN)
    attrs = {"margin": margin, "look": look, "measure": measure, "design": suite.design if suite else "unpaired"}
    # The children as mlflow.search_runs returns them, or their pair_outcomes already.
    outcomes = children if "pair_state" in children else pair_outcomes(children if "status" in children
                                                                           else pd.DataFrame())
    label_tag = f"tags.{tracking.TAG_LABEL}"
    if planned is None:
        planned = {label: sorted(group["seed"]) for label, group in outcomes.groupby(label_tag)}
    else:
        wanted = {(label, int(seed)) for label, seeds in planned.items() for seed in seeds}
        keep = [(label, int(seed)) in wanted for label, seed in zip(outcomes[label_tag], outcomes["seed"])]
        outcomes = outcomes.loc[pd.Series(keep, index=outcomes.index, dtype=bool)]
    finished_runs = outcomes[outcomes["pair_state"] == FINISHED]
    if measure != "val_acc" and len(finished_runs) and _column(finished_runs, f"metrics.{measure}").isna().all():
        # Runs logged before bench measured it (an older parent): judged on val after the last step, said so.
        attrs["measure"] = measure = "val_acc"
        attrs["measure_note"] = "these runs predate the suite's measure: judged on val accuracy after the last epoch"
    order = [r.label for r in suite.rows] if suite else sorted(planned)
    order = [label for label in order if planned.get(label)] + sorted(set(planned) - set(order))
    if not order:
        empty = pd.DataFrame(columns=columns)
        empty.attrs.update(attrs)
        return empty
    variants = {r.label: r.variant for r in suite.rows} if suite else {}
    records = [_record(label, outcomes[outcomes[label_tag] == label], sorted(int(s) for s in planned[label]),
                       variants.get(label), measure) for label in order]
    summary = pd.DataFrame(records, columns=columns)
    values = {rec["label"]: rec.pop("_values") for rec in records}
    last_k = _column(outcomes, "params.last_k").dropna()
    if len(last_k):
        attrs["last_k"] = last_k.iloc[0]
    baseline = suite.baseline if suite else None
    # Rows decided at an earlier look are final; rows decided at this look are judged again (the same data).
    earlier = {key: d for key, d in (decided or {}).items()
               if (d.get("target_decided_at" if key.endswith(TIME) else "decided_at") or 0) < look.index}
    decided = {label: d for label, d in earlier.items() if label in values}
    decided_times = {key: d for key, d in earlier.items() if key.endswith(TIME)}
    times = _times(summary, reached, planned) if suite is not None and suite.target is not None and reached is not None \
        else {}
    extra = [(f"{label} {TIME}", -epochs, -times[baseline], suite.target_margin, "epochs") for label, epochs
             in times.items() if label != baseline] if baseline in times else []
    # A row decided at an earlier look stopped growing: its time to the target is final then too (tested
    # again on the same seeds at a later look's looser level, it would spend alpha no schedule set aside).
    settled = {label: d["verdict_kind"] for label, d in decided.items()}
    settled.update({f"{label} {TIME}": d["target_kind"] for label, d in decided.items() if d.get("target_kind")})
    settled.update({key: d["target_kind"] for key, d in decided_times.items()})
    verdicts = against_baseline(values, baseline, margin=margin, look=look, pair=attrs["design"] == "paired",
                                decided=settled, extra=extra).set_index("label")
    # Every comparison corrected together (time comparisons and rows not judged now included), for the note.
    attrs["family"] = int(verdicts["family"].max()) if len(verdicts) else 0
    if extra:
        attrs.update(target=suite.target, target_margin=suite.target_margin)
        for column, source in {**TARGET_VERDICT_COLUMNS, "target_ci_level": "ci_level"}.items():
            summary[column] = [verdicts[source].get(f"{label} {TIME}") for label in summary["label"]]
        summary["target_diff"] = -summary["target_diff"]  # epochs the row took minus the baseline's
        summary[["target_ci_low", "target_ci_high"]] = -summary[["target_ci_high", "target_ci_low"]].to_numpy()
        base_missed = summary.loc[summary["label"] == baseline].iloc[0]
        for i, r in summary.iterrows():
            if r["target_not_reached"]:
                summary.at[i, "target_verdict"] = f"not judged: not reached in {int(r['target_not_reached'])} of " \
                                                  f"{int(r['target_runs'])}"
                summary.at[i, "target_kind"] = UNJUDGED
            elif base_missed["target_not_reached"] and r["target_kind"] == UNJUDGED:
                summary.at[i, "target_verdict"] = (f"not judged: {baseline} did not reach it in "
                                                   f"{int(base_missed['target_not_reached'])} of "
                                                   f"{int(base_missed['target_runs'])}")
        base_rows = summary["label"] == baseline
        summary.loc[base_rows, "target_verdict"], summary.loc[base_rows, "target_kind"] = "baseline", "baseline"
    for column, source_column in VERDICT_COLUMNS.items():
        summary[column] = summary["label"].map(verdicts[source_column])
    summary["baseline_ci_level"] = summary["label"].map(verdicts["ci_level"])
    summary["test"] = summary["label"].map(verdicts["test"])
    for key, record in [*decided.items(), *decided_times.items()]:  # final: as the look that decided it said
        label = key.removesuffix(f" {TIME}")
        if label not in set(summary["label"]):
            continue
        i = summary.index[summary["label"] == label][0]
        # An accuracy decision sets its own columns, and the time comparison's only when no decision of
        # its own holds it (the row stopped growing then: its time stays as it stood).
        own_time = f"{label} {TIME}" in decided_times
        for column, value in record.items():
            if key.endswith(TIME) or column in ACCURACY_DECISION_COLUMNS or not own_time:
                summary.at[i, column] = value
    if baseline in values:
        summary["rho"] = [correlation(values[label], values[baseline]) if label != baseline else math.nan
                          for label in summary["label"]]
    _explain_failures(summary, baseline)
    # A row this look decides was decided at it (one decided at an earlier look kept its look above;
    # after _explain_failures, which may leave a row not judged).
    summary.loc[summary["verdict_kind"].isin(DECIDED_KINDS) & summary["decided_at"].isna(), "decided_at"] = look.index
    if suite and suite.sources:
        _add_sources(summary, records, suite)
    summary.attrs.update(attrs)
    return summary


TIME = "(time to target)"  # how a row's time comparison is named in the family
TARGET_CONFIDENCE = 0.95  # each row's interval of its mean epochs to the target (its runs that reached it)
# summary column -> against_baseline column, for the time to the target (the sign made "epochs more than the baseline")
TARGET_VERDICT_COLUMNS = {"target_diff": "diff", "target_ci_low": "ci_low", "target_ci_high": "ci_high",
                          "target_verdict": "verdict", "target_kind": "kind"}


def _times(summary: pd.DataFrame, reached: pd.DataFrame, planned: Mapping[str, Sequence[int]]) -> dict[str, pd.Series]:
    """Each row's epochs to the target per planned seed (NaN: not reached, or no run), and the summary's
    target columns: epochs and seconds (mean, std over the runs that reached it), runs, not reached."""
    out = {}
    for i, r in summary.iterrows():
        mine = reached[reached["row"] == r["label"]].set_index("seed")
        measured = set(int(s) for s in str(r["seeds"]).split())  # runs that failed or diverged are not times
        epochs = pd.Series({seed: mine["epochs"].get(seed, math.nan) if seed in measured else math.nan
                            for seed in planned[r["label"]]}, dtype=float)
        seconds = mine["seconds"][mine.index.isin(list(measured))].dropna()
        summary.loc[i, "target_epochs_mean"] = epochs.mean() if epochs.notna().any() else math.nan
        summary.loc[i, "target_epochs_std"] = epochs.std(ddof=1) if epochs.notna().sum() > 1 else math.nan
        low, high = mean_interval(epochs.dropna(), TARGET_CONFIDENCE)
        summary.loc[i, "target_epochs_ci_low"], summary.loc[i, "target_epochs_ci_high"] = low, high
        summary.loc[i, "target_seconds_mean"] = seconds.mean() if len(seconds) else math.nan
        summary.loc[i, "target_runs"] = len(measured)
        summary.loc[i, "target_not_reached"] = int(sum(1 for seed in measured if math.isnan(epochs.get(seed, math.nan))))
        out[r["label"]] = epochs
    return out


# What a row's decision is kept as when a later look does not judge it again.
ACCURACY_DECISION_COLUMNS = ("verdict_kind", "verdict", "baseline_diff", "baseline_ci_low", "baseline_ci_high",
                             "baseline_ci_level", "baseline_p_holm", "baseline_p_equiv_holm", "test", "decided_at")
# An accuracy decision also keeps the row's time comparison as it stood then (the row stops growing).
DECISION_COLUMNS = (*ACCURACY_DECISION_COLUMNS, *TARGET_VERDICT_COLUMNS, "target_ci_level")


def decisions(summary: pd.DataFrame, look: int) -> dict[str, dict[str, Any]]:
    """The rows this summary decides (better, worse, equivalent, identical), their verdict columns, for the
    parent's record: a later look keeps them as they are."""
    out = {}
    for _, r in summary.iterrows():
        if r["verdict_kind"] in DECIDED_KINDS:
            at = r["decided_at"] if not _missing(r.get("decided_at")) else look
            out[r["label"]] = {c: (int(at) if c == "decided_at" else _plain(r.get(c))) for c in DECISION_COLUMNS
                               if c in r.index}
        if r.get("target_kind") in DECIDED_KINDS:  # a time to the target decided, final on its own
            at = r.get("target_decided_at") if not _missing(r.get("target_decided_at")) else look
            out[f"{r['label']} {TIME}"] = {**{c: _plain(r.get(c)) for c in (*TARGET_VERDICT_COLUMNS, "target_ci_level")},
                                           "target_decided_at": int(at)}
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def correlation(row: pd.Series, base: pd.Series) -> float:
    """Pearson's correlation of a row's and the baseline's measure over the seeds both measured."""
    both = pd.concat([row, base], axis=1, join="inner").dropna()
    if len(both) < 3 or both.iloc[:, 0].std() == 0 or both.iloc[:, 1].std() == 0:
        return math.nan
    return float(both.iloc[:, 0].corr(both.iloc[:, 1]))


def _explain_failures(summary: pd.DataFrame, baseline: str | None) -> None:
    """A row not judged because of failures says how many of its runs, and which kind; so does every
    row when the baseline had them."""
    for i, r in summary.iterrows():
        counts = failure_counts(r)
        if r["label"] == baseline:
            if counts:
                summary.at[i, "verdict"] = f"baseline ({counts})"
            continue
        if counts:
            summary.at[i, "verdict"], summary.at[i, "verdict_kind"] = f"not judged: {counts}", UNJUDGED
        elif baseline is not None and r["verdict_kind"] == UNJUDGED and baseline in set(summary["label"]):
            base = summary[summary["label"] == baseline].iloc[0]
            if failure_counts(base):
                summary.at[i, "verdict"] = f"not judged: the baseline has {failure_counts(base)}"


def failure_counts(row: Mapping[str, Any]) -> str:
    """``1 of 3 runs failed, 1 diverged``: what became of a row's runs that are not measurements."""
    parts = [f"{int(row[key])} {word}" for key, word in (("failed", "failed"), ("diverged", "diverged"),
                                                        ("unfinished", "did not finish")) if row[key]]
    if not parts:
        return ""
    return f"{parts[0].split(' ', 1)[0]} of {int(row['runs'])} runs {parts[0].split(' ', 1)[1]}" + \
        "".join(f", {p}" for p in parts[1:])


def _record(label: str, pairs: pd.DataFrame, planned: list[int], variant: str | None, measure: str) -> dict[str, Any]:
    measured = pairs[pairs["pair_state"] == FINISHED]
    runs = measured if len(measured) else pairs  # settings and sizes: from any run of the row
    state = dict(zip(pairs["seed"], pairs["pair_state"]))
    not_measured = [(seed, state.get(seed, NOT_STARTED),
                     dict(zip(pairs["seed"], pairs["pair_reason"])).get(seed, "no run was started"))
                    for seed in planned if state.get(seed) != FINISHED]
    record: dict[str, Any] = {
        "label": label,
        "variant": variant or (runs[f"tags.{tracking.TAG_VARIANT}"].iloc[0] if len(runs) else ""),
        "n_seeds": len(measured),
        "seeds": " ".join(str(s) for s in sorted(measured["seed"])),
        "runs": len(planned),
        "failed": sum(s == FAILED for _, s, _ in not_measured),
        "diverged": sum(s == DIVERGED for _, s, _ in not_measured),
        "unfinished": sum(s in (UNFINISHED, NOT_STARTED) for _, s, _ in not_measured),
        "failures": _grouped(not_measured),
    }
    for metric in SUMMARY_METRICS:
        metric_values = _column(measured, f"metrics.{metric}").astype(float)
        record[f"{metric}_mean"] = metric_values.mean() if metric_values.notna().any() else math.nan
        record[f"{metric}_std"] = metric_values.std(ddof=1) if metric_values.notna().sum() > 1 else math.nan
    # Per planned seed: the measure, or NaN for a run that failed, diverged or did not finish (or, from
    # before bench logged this measure, has none).
    by_seed = dict(zip(measured["seed"], _column(measured, f"metrics.{measure}").astype(float)))
    record["_values"] = pd.Series({seed: by_seed.get(seed, math.nan) for seed in planned}, dtype=float)
    measured_values = record["_values"].dropna()
    record["measure_mean"] = measured_values.mean() if len(measured_values) else math.nan
    record["measure_std"] = measured_values.std(ddof=1) if len(measured_values) > 1 else math.nan
    parameters = _column(runs, "params.num_parameters").dropna()
    record["num_parameters"] = int(parameters.iloc[0]) if len(parameters) else math.nan
    for key, kind in RUN_SETTINGS.items():  # absent from runs logged before bench recorded them
        value = _column(runs, f"params.{key}").iloc[0] if len(runs) else None
        record[key] = kind(value) if isinstance(value, str) and value not in ("None", "") else None
    record["s_per_epoch"] = _column(measured, "metrics.epoch_time_s").astype(float).mean()
    # Wall seconds from a run's start to its end: training plus evaluation, logging and the model. A
    # resumed run's span holds the hours it lay stopped: left out (NaN when every run was resumed: the
    # cost is then epochs x seconds per epoch), and the median guards against runs resumed before
    # bench tagged them.
    spans = (measured["end_time"] - measured["start_time"]).dt.total_seconds() \
        if {"start_time", "end_time"} <= set(measured) else pd.Series(dtype=float)
    resumed = _column(measured, f"tags.{tracking.TAG_RESUMED}").notna() if len(spans) else pd.Series(dtype=bool)
    record["s_per_run"] = spans[~resumed].median() if len(spans) and (~resumed).any() else math.nan
    for metric in ("train_gflops", "gemm_fraction"):
        record[metric] = _column(measured, f"metrics.{metric}").astype(float).mean()
    machines = _column(runs, f"tags.{tracking.TAG_HARDWARE}.machine").dropna().unique().tolist()
    record["machines"] = "; ".join(sorted(machines)) or "not recorded"
    record["run_ids"] = " ".join(pairs.sort_values("seed")["run_id"]) if "run_id" in pairs else ""
    return record


def _grouped(not_measured: list[tuple[int, str, str]]) -> str:
    """``seeds 0, 1: NonFiniteLossError: ...; seed 4: diverged: ...``: one entry per distinct reason."""
    by_reason: dict[str, list[int]] = {}
    for seed, _, why in not_measured:
        by_reason.setdefault(_one_line(why), []).append(seed)
    return "; ".join(f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}: {why}"
                     for why, seeds in by_reason.items())


def _one_line(text: str, width: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _column(runs: pd.DataFrame, name: str) -> pd.Series:
    return runs[name] if name in runs else pd.Series([None] * len(runs), index=runs.index, dtype=object)


def _add_sources(summary: pd.DataFrame, records: list[dict[str, Any]], suite: Suite) -> None:
    by_label = {r.label: r for r in suite.rows}
    for source, meta in suite.sources.items():
        found = [
            against_source({m: rec[f"{m}_mean"] for m in SUMMARY_METRICS}, {k: rec[k] for k in RUN_SETTINGS},
                           by_label[rec["label"]].reference[source], meta)
            if rec["label"] in by_label and source in by_label[rec["label"]].reference and rec["n_seeds"]
            and rec["epochs"] is not None else {}
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
    if row["verdict_kind"] == "baseline" or _missing(row["baseline_diff"]):
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


MEASURE_COLUMNS = {"val_acc": "val acc %", "val_acc_last_k": "val last-k %", "val_acc_ema": "val EMA %"}


def format_summary(summary: pd.DataFrame, *, margin: float | None = None) -> str:
    """The summary as text no wider than ``WIDTH``: the verdicts (the suite's measure in %, differences in
    points with the interval at the level that decided each row, the correlation with the baseline),
    what became of runs that are not measurements, the runs' size and speed, and one line per
    published number. Margin, look, measure and design come from ``summarize``'s attrs."""
    if summary.empty:
        return "(no runs planned)"
    margin = summary.attrs.get("margin", DEFAULT_MARGIN) if margin is None else margin
    measure = summary.attrs.get("measure", "val_acc")
    baseline = next((r["label"] for _, r in summary.iterrows() if r["verdict_kind"] == "baseline"), "baseline")
    header = f"vs {_clip(baseline, 14)}, pt [CI]"

    def verdict_table(clip: int) -> str:
        return pd.DataFrame({
            "row": summary["label"].map(lambda s: _clip(str(s), 18)),
            "seeds": [seeds_cell(r) for _, r in summary.iterrows()],
            MEASURE_COLUMNS.get(measure, measure): [percent(r["measure_mean"], r["measure_std"])
                                                    for _, r in summary.iterrows()],
            header: [points(r["baseline_diff"], r["baseline_ci_low"], r["baseline_ci_high"])
                     if r["verdict_kind"] != "baseline" else "" for _, r in summary.iterrows()],
            "conf": [f"{r['baseline_ci_level'] * 100:.1f}" if not _missing(r.get("baseline_ci_level")) else ""
                     for _, r in summary.iterrows()],
            "rho": summary.get("rho", pd.Series(math.nan, index=summary.index)).map(
                lambda v: "" if _missing(v) else f"{v:+.2f}"),
            "verdict": summary["verdict"].map(lambda s: _clip(str(s), clip)),
        }).to_string(index=False)

    table = fit(verdict_table, 42)
    size = pd.DataFrame({
        "row": summary["label"].map(lambda s: _clip(str(s), 18)),
        "train acc %": [percent(r["train_acc_eval_mean"], r["train_acc_eval_std"]) or
                        percent(r["train_acc_mean"], r["train_acc_std"]) for _, r in summary.iterrows()],
        "test acc %": [percent(r["test_acc_mean"], r["test_acc_std"]) for _, r in summary.iterrows()],
        "params": summary["num_parameters"].map(lambda v: "" if _missing(v) else f"{int(v):,}"),
        "epochs": summary["epochs"].map(lambda v: "" if _missing(v) else str(int(v))),
        "s/epoch": summary["s_per_epoch"].map(lambda v: "" if _missing(v) else f"{v:.2f}"),
        "GFLOP/s": summary["train_gflops"].map(lambda v: "" if _missing(v) else f"{v:.1f}"),
    })
    lines = [table, *_failure_lines(summary), *_target_lines(summary), "", size.to_string(index=False)]
    lines += _published_lines(summary)
    lines += ["", *textwrap.wrap(method_text(summary, margin), WIDTH)]
    if summary.attrs.get("measure_note"):
        lines += textwrap.wrap(f"Note: {summary.attrs['measure_note']}.", WIDTH)
    machines = sorted({m for ms in summary["machines"] for m in ms.split("; ") if m != "not recorded"})
    if len(machines) > 1:
        lines += textwrap.wrap(f"Runs came from {len(machines)} machines ({' | '.join(machines)}): seconds per epoch "
                               "do not compare.", WIDTH)
    return "\n".join(lines)


def fit(table: Callable[[int], str], widest: int, narrowest: int = 12) -> str:
    """``table(clip)`` with the largest ``clip`` (of its last column) at which it fits ``WIDTH``."""
    clip = widest
    text = table(clip)
    while max(map(len, text.splitlines())) > WIDTH and clip > narrowest:  # wide intervals: the verdict gives way
        clip -= max(1, max(map(len, text.splitlines())) - WIDTH)
        text = table(clip)
    return text


def method_text(summary: pd.DataFrame, margin: float | None = None) -> str:
    """``method_note`` for this summary: its measure, design, look and how many rows it compared."""
    attrs = summary.attrs
    decided = summary["decided_at"].notna() if "decided_at" in summary else False
    n_compared = attrs.get("family") or \
        int(((summary["baseline_p_holm"].notna() | decided) & (summary["verdict_kind"] != IDENTICAL)).sum())
    measure = measure_name(attrs)
    if attrs.get("measure") == "val_acc_last_k" and "last_k" in attrs:
        k = int(attrs["last_k"])
        epochs = summary["epochs"] if "epochs" in summary else pd.Series(dtype=float)
        short = [f"{label} {int(e)}" for label, e in zip(summary["label"], epochs) if not _missing(e) and e < k]
        if short:  # the mean then runs from the first epoch: say so where the verdicts are explained
            measure += f" (all epochs of the rows that ran fewer: {', '.join(short)})"
    return method_note(n_compared, attrs.get("margin", DEFAULT_MARGIN) if margin is None else margin,
                       attrs.get("look", Look()), test="paired" if attrs.get("design") == "paired" else "Welch",
                       measure=measure)


def measure_name(attrs: Mapping[str, Any]) -> str:
    """The words for the measure a summary (``attrs``, from ``summarize``) judged, its k filled in:
    "mean val accuracy over the last 5 epochs"."""
    name = MEASURES.get(attrs.get("measure", "val_acc"), "val accuracy")
    return name.replace("last k", f"last {int(attrs['last_k'])}") if "last_k" in attrs else name


def seeds_cell(row: Mapping[str, Any]) -> str:
    """``3``, or ``2 of 3`` when some of the row's planned runs are not measurements."""
    return str(int(row["n_seeds"])) if int(row["n_seeds"]) == int(row["runs"]) else \
        f"{int(row['n_seeds'])} of {int(row['runs'])}"


def _target_lines(summary: pd.DataFrame) -> list[str]:
    """With a target: each row's epochs and seconds to reach it, and its verdict against the baseline's."""
    if "target_verdict" not in summary:
        return []
    measure = MEASURE_COLUMNS.get(summary.attrs.get("measure", "val_acc"), "val").removesuffix(" %")
    table = pd.DataFrame({
        "row": summary["label"].map(lambda s: _clip(str(s), 18)),
        "reached": [f"{int(r['target_runs'] - r['target_not_reached'])} of {int(r['target_runs'])}"
                    for _, r in summary.iterrows()],
        "epochs [95 % CI]": [_mean_interval(r["target_epochs_mean"], r["target_epochs_ci_low"],
                                            r["target_epochs_ci_high"]) for _, r in summary.iterrows()],
        "seconds": summary["target_seconds_mean"].map(lambda v: "" if _missing(v) else f"{v:.0f}"),
        "vs baseline, epochs [CI]": [_interval(r["target_diff"], r["target_ci_low"], r["target_ci_high"])
                                     if r["target_kind"] != "baseline" else "" for _, r in summary.iterrows()],
        "verdict": summary["target_verdict"].map(lambda s: _clip(str(s), 30)),
    })
    return ["", f"Time to {measure} >= {summary.attrs['target'] * 100:g} % (first epoch, mean over the runs that "
                f"reached it with a t-interval; judged in the same family, fewer epochs is better, equivalent "
                f"within ±{summary.attrs['target_margin']:g}):",
            table.to_string(index=False)]


def _mean_interval(mean: float, low: float, high: float) -> str:
    return "" if _missing(mean) else f"{mean:.1f}" + ("" if _missing(low) else f" [{low:.1f}, {high:.1f}]")


def _interval(diff: float, low: float, high: float) -> str:
    return "" if _missing(diff) else f"{diff:+.1f}" + ("" if _missing(low) else f" [{low:+.1f}, {high:+.1f}]")


def _failure_lines(summary: pd.DataFrame) -> list[str]:
    """Every run that is not a measurement, by row: which seed, and why."""
    lines = []
    for _, r in summary.iterrows():
        if r["failures"]:
            lines += textwrap.wrap(f"{r['label']}: {failure_counts(r)}: {r['failures']}", WIDTH,
                                   subsequent_indent="    ")
    return ["", "Runs that are not measurements (counted, never dropped):", *lines] if lines else []


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
