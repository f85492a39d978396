"""Which differences are real: each row against the suite's baseline, and ours against the sources.

Against the baseline: the difference in mean val accuracy over seeds with a 95 %
confidence interval from Welch's t-test (unequal variances; ``scipy.stats.ttest_ind``),
and a verdict, *better*, *worse* or *no evidence at n seeds*, from p-values corrected
with Holm's method over all of one suite's comparisons (``statsmodels``), so that nine
rows compared at once do not produce a false "better" one time in two. The intervals
are the per-comparison 95 % ones. A row or baseline with one seed gets no verdict: a
t-test needs at least two seeds on each side.

Against a published number: ours minus theirs, and whether that is within 2 points, taken
at our epochs: the source's figure when it was taken after as many epochs as our runs
trained, else the point of its per-epoch curve at our epochs. Where the source has neither,
the difference from its figure is still given, marked with the source's epochs, but is not
judged: a 1-epoch run is not "beyond 2 points" of a 100-epoch figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

ALPHA = 0.05  # family-wise error rate of one suite's verdicts
WITHIN = 0.02  # "within 2 points" of a published accuracy
VERDICT_METRIC = "val_acc"
BETTER, WORSE = "better", "worse"


def no_evidence(n: int) -> str:
    return f"no evidence at {n} seeds"


def against_baseline(values: Mapping[str, Sequence[float]], baseline: str | None) -> pd.DataFrame:
    """One row per label: diff (row - baseline mean), CI low/high, raw and Holm p, verdict.

    ``values``: each row label's per-seed val accuracies. The baseline's own line says
    it is the baseline; a missing baseline gives every row the verdict "no baseline".
    """
    columns = ["label", "diff", "ci_low", "ci_high", "p", "p_holm", "verdict"]
    if baseline is None or baseline not in values:
        reason = "no baseline declared" if baseline is None else f"baseline {baseline!r} has no finished runs"
        return pd.DataFrame([[label, *[math.nan] * 5, reason] for label in values], columns=columns)
    base = [float(v) for v in values[baseline]]
    records: list[dict[str, Any]] = []
    tested: list[int] = []
    for label, row_values in values.items():
        row = [float(v) for v in row_values]
        record = {"label": label, "diff": _mean(row) - _mean(base), "ci_low": math.nan, "ci_high": math.nan,
                  "p": math.nan, "p_holm": math.nan}
        if label == baseline:
            record.update(diff=0.0, verdict="baseline")
        elif min(len(row), len(base)) < 2:
            record["verdict"] = f"needs 2 seeds per row (has {min(len(row), len(base))})"
        elif _spread(row) == 0 and _spread(base) == 0:  # the t statistic is undefined
            record["verdict"] = "identical runs" if record["diff"] == 0 else f"{no_evidence(min(len(row), len(base)))} (zero variance)"
        else:
            result = stats.ttest_ind(row, base, equal_var=False)
            interval = result.confidence_interval(confidence_level=1 - ALPHA)
            record.update(ci_low=float(interval.low), ci_high=float(interval.high), p=float(result.pvalue))
            tested.append(len(records))
        records.append(record)
    if tested:
        reject, adjusted, _, _ = multipletests([records[i]["p"] for i in tested], alpha=ALPHA, method="holm")
        for i, significant, p in zip(tested, reject, adjusted):
            n = min(len(values[records[i]["label"]]), len(base))
            direction = BETTER if records[i]["diff"] > 0 else WORSE
            records[i].update(p_holm=float(p), verdict=direction if significant else no_evidence(n))
    return pd.DataFrame(records, columns=columns)


def method_note(n_compared: int) -> str:
    return (
        f"Verdicts: Welch's t-test of val accuracy over seeds against the baseline, p-values Holm-corrected over "
        f"the {n_compared} comparison(s) of this suite at a family-wise {ALPHA:.0%} level; intervals are "
        "per-comparison 95 % CIs of the difference in means. One seed gives no verdict."
    )


def curve_metric(published: Mapping[str, Any]) -> str | None:
    """Which accuracy a reference's per-epoch ``curve`` is of: its test, else val, else train figure."""
    return next((m for m in ("test_acc", "val_acc", "train_acc") if m in published), None)


def against_source(ours: Mapping[str, float], our_epochs: int, published: Mapping[str, Any],
                   source_epochs: int | None) -> dict[str, Any]:
    """Per metric the source gives: the published value used, the epochs it was taken at, ours
    minus it, and whether that is within 2 points (None where the epochs differ).

    The value is the figure when the source took it at ``our_epochs`` (or gives no epochs), else
    its ``curve`` point at ``our_epochs`` (a curve is of ``curve_metric``), else the
    figure itself at its own epochs, compared but not judged.
    """
    epochs = published.get("epochs", source_epochs)
    curve = published.get("curve", {})
    curve_of = curve_metric(published)
    out: dict[str, Any] = {"epochs": epochs, "comparable": True}
    for metric in ("train_acc", "val_acc", "test_acc"):
        if metric not in published:
            continue
        value, at = float(published[metric]), epochs
        if at is not None and int(at) != int(our_epochs) and metric == curve_of and str(our_epochs) in curve:
            value, at = float(curve[str(our_epochs)]), int(our_epochs)
        comparable = at is None or int(at) == int(our_epochs)
        diff = ours.get(metric, math.nan) - value
        out[metric] = value
        out[f"{metric}_epochs"] = at
        out[f"{metric}_diff"] = diff
        out[f"{metric}_within_2pt"] = (abs(diff) <= WITHIN + 1e-12) if comparable and not math.isnan(diff) else None
        out["comparable"] = out["comparable"] and comparable
    return out


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _spread(values: Sequence[float]) -> float:
    return max(values) - min(values)
