"""Each row against the suite's baseline: better, worse, equivalent within a margin, or undecided.

For every row, over its seeds' val accuracies against the baseline's:

- *better* / *worse*: Welch's two-sided t-test (``scipy.stats.ttest_ind``, unequal variances);
- *equivalent within ±margin*: two one-sided Welch tests (TOST) that the difference is above
  -margin and below +margin, the larger of the two p-values being the TOST p-value;
- each family of p-values (differences; equivalences) is Holm-corrected over the suite's
  comparisons at the family-wise level ``alpha / looks``: a suite that looks
  at its data after each round of seeds (``--seeds auto``) splits alpha over its maximum number
  of looks, so no round inflates the error rate (``sequential``);
- a row both significantly different and equivalent is called equivalent: the difference is
  real but smaller than the margin, which is what the user said matters;
- an undecided row gets the seeds per side that would likely decide it at the observed spread
  (``statsmodels``' ``TTestIndPower``);
- a row with non-finite values (a diverged run) is not judged, and neither is any row when the
  baseline has them: a NaN p-value must never count as a rejection.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.power import TTestIndPower

from .kinds import BASELINE, BETTER, EQUIVALENT, UNDECIDED, UNJUDGED, WORSE

ALPHA = 0.05  # family-wise error rate of one suite's verdicts
DEFAULT_MARGIN = 0.01  # 1 point of accuracy: the smallest difference that matters, unless the suite says
POWER = 0.8  # "seeds needed" aims at this chance of deciding
MAX_SEEDS_SHOWN = 200  # beyond this, "needs > 200": practically undecidable at this spread

COLUMNS = ["label", "n", "diff", "ci_low", "ci_high", "p", "p_holm", "p_equiv", "p_equiv_holm", "kind", "verdict",
           "seeds_needed"]


def welch(row: np.ndarray, base: np.ndarray, margin: float, confidence: float = 1 - ALPHA) -> dict[str, np.ndarray]:
    """Welch's tests of ``row`` against ``base`` along the last axis; leading axes are a batch
    (simulations use them). Difference of means, its per-comparison CI, the two-sided p-value,
    and the TOST p-value for equivalence within ±``margin``."""
    row, base = np.asarray(row, dtype=float), np.asarray(base, dtype=float)
    two_sided = stats.ttest_ind(row, base, axis=-1, equal_var=False)
    interval = two_sided.confidence_interval(confidence_level=confidence)
    above_low = stats.ttest_ind(row + margin, base, axis=-1, equal_var=False, alternative="greater")
    below_high = stats.ttest_ind(row - margin, base, axis=-1, equal_var=False, alternative="less")
    return {
        "diff": row.mean(axis=-1) - base.mean(axis=-1),
        "ci_low": np.asarray(interval.low),
        "ci_high": np.asarray(interval.high),
        "p": np.asarray(two_sided.pvalue),
        "p_equiv": np.maximum(above_low.pvalue, below_high.pvalue),
    }


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values: the k-th smallest times (m - k + 1), kept monotone, capped at 1.

    The same numbers as ``statsmodels.stats.multitest.multipletests(p, method="holm")`` (a test checks
    it on random p-values), computed here because that function calls ``gc.collect()`` on every Holm
    call: measured 50 ms in a bare process and over 300 ms in one holding torch and mlflow, per suite
    judged, and far too slow for the thousands of simulated suites the error-rate tests judge.
    """
    p = np.asarray(p, dtype=float)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * np.arange(len(p), 0, -1)))
    out = np.empty_like(adjusted)
    out[order] = adjusted
    return out


def decide(p: Sequence[float], p_equiv: Sequence[float], diff: Sequence[float], alpha: float) -> dict[str, list]:
    """One suite's verdicts from its comparisons' p-values: each family Holm-corrected at ``alpha``."""
    p_holm, p_equiv_holm = holm(p), holm(p_equiv)
    kinds = [EQUIVALENT if e <= alpha else (BETTER if d > 0 else WORSE) if q <= alpha else UNDECIDED
             for q, e, d in zip(p_holm, p_equiv_holm, diff)]
    return {"kind": kinds, "p_holm": p_holm.tolist(), "p_equiv_holm": p_equiv_holm.tolist()}


def seeds_needed(diff: float, sd_row: float, sd_base: float, margin: float, alpha: float) -> int | None:
    """Seeds per side that would decide the row with probability ``POWER`` if the observed
    difference and spread were the truth: the fewer of what the difference test and the
    equivalence test need. None when the spread is zero or the answer exceeds ``MAX_SEEDS_SHOWN``."""
    sd = math.sqrt((sd_row**2 + sd_base**2) / 2)
    if not sd > 0:
        return None
    power, needed = TTestIndPower(), []
    try:
        if abs(diff) > 0:
            needed.append(power.solve_power(effect_size=abs(diff) / sd, alpha=alpha, power=POWER))
        if abs(diff) < margin:  # each one-sided test at sqrt(POWER): TOST then decides with at least POWER
            needed.append(power.solve_power(effect_size=(margin - abs(diff)) / sd, alpha=alpha,
                                            power=math.sqrt(POWER), alternative="larger"))
    except (ValueError, RuntimeError):  # no solution in statsmodels' bracket: an effect too small to find
        pass
    needed = [n for n in needed if np.isfinite(n)]
    if not needed or min(needed) > MAX_SEEDS_SHOWN:
        return None
    return max(2, math.ceil(min(needed)))


def verdict_text(kind: str, n: int, margin: float, needed: int | None) -> str:
    if kind == EQUIVALENT:
        return f"equivalent within ±{margin * 100:g} pt"
    if kind == UNDECIDED:  # seeds per side that would likely decide it
        return f"undecided ({n} seeds; " + (f"~{needed} needed)" if needed else f"> {MAX_SEEDS_SHOWN} needed)")
    return kind


def against_baseline(values: Mapping[str, Sequence[float]], baseline: str | None, *, margin: float = DEFAULT_MARGIN,
                     looks: int = 1, alpha: float = ALPHA) -> pd.DataFrame:
    """One row per label (``COLUMNS``). ``values``: each row's per-seed val accuracies (NaN where
    a run diverged). ``looks``: how many times the suite may look at its data (1 for fixed seeds)."""
    if baseline is None or baseline not in values:
        reason = "no baseline declared" if baseline is None else f"baseline {baseline!r} has no finished runs"
        return pd.DataFrame([_record(label, len(v), UNJUDGED, reason) for label, v in values.items()], columns=COLUMNS)
    pairs = [(label, row, values[baseline]) for label, row in values.items() if label != baseline]
    records = {r["label"]: r for r in compare(pairs, margin=margin, alpha=alpha / looks, against="the baseline")}
    records[baseline] = _record(baseline, len(values[baseline]), BASELINE, BASELINE, diff=0.0)
    return pd.DataFrame([records[label] for label in values], columns=COLUMNS)


def compare(pairs: Sequence[tuple[str, Sequence[float], Sequence[float]]], *, margin: float, alpha: float,
            against: str = "the reference") -> list[dict[str, Any]]:
    """Each ``(label, values, reference values)``: the difference of means and its verdict, the
    comparisons Holm-corrected together at ``alpha`` (one family of differences, one of equivalences)."""
    records, tested = [], []
    for label, row_values, base_values in pairs:
        row, base = np.asarray(row_values, dtype=float), np.asarray(base_values, dtype=float)
        n = min(len(row), len(base))
        if not np.isfinite(base).all():
            records.append(_record(label, len(row), UNJUDGED, f"not judged: {against} diverged "
                                                              f"({int((~np.isfinite(base)).sum())} of {len(base)} runs)"))
        elif not np.isfinite(row).all():
            records.append(_record(label, len(row), UNJUDGED, f"diverged ({int((~np.isfinite(row)).sum())} of "
                                                              f"{len(row)} runs): not judged"))
        elif n < 2:
            records.append(_record(label, len(row), UNJUDGED, f"needs 2 seeds per row (has {n})",
                                   diff=row.mean() - base.mean()))
        elif np.ptp(row) == 0 and np.ptp(base) == 0:  # no spread: the t statistic is undefined
            same = row[0] == base[0]
            records.append(_record(label, len(row), EQUIVALENT if same else UNDECIDED,
                                   "identical runs" if same else f"undecided ({n} seeds; zero variance)",
                                   diff=row.mean() - base.mean()))
        else:
            tests = welch(row, base, margin)
            records.append(_record(label, n, UNDECIDED, "", **{k: float(v) for k, v in tests.items()},
                                   sd_row=float(row.std(ddof=1)), sd_base=float(base.std(ddof=1))))
            tested.append(len(records) - 1)
    if tested:
        decided = decide([records[i]["p"] for i in tested], [records[i]["p_equiv"] for i in tested],
                         [records[i]["diff"] for i in tested], alpha)
        for j, i in enumerate(tested):
            record = records[i]
            record.update(kind=decided["kind"][j], p_holm=decided["p_holm"][j], p_equiv_holm=decided["p_equiv_holm"][j])
            sd_row, sd_base = record.pop("sd_row"), record.pop("sd_base")
            if record["kind"] == UNDECIDED:
                record["seeds_needed"] = seeds_needed(record["diff"], sd_row, sd_base, margin, alpha / len(tested))
            record["verdict"] = verdict_text(record["kind"], record["n"], margin, record["seeds_needed"])
    for record, (_, row_values, _) in zip(records, pairs):
        record["n"] = len(row_values)
    return records


def _record(label: str, n: int, kind: str, verdict: str, **numbers: Any) -> dict[str, Any]:
    record = {"label": label, "n": n, "diff": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan,
              "p_holm": math.nan, "p_equiv": math.nan, "p_equiv_holm": math.nan, "kind": kind, "verdict": verdict,
              "seeds_needed": None}
    record.update(numbers)
    return record


def method_note(n_compared: int, margin: float = DEFAULT_MARGIN, looks: int = 1, alpha: float = ALPHA) -> str:
    sequential = (f", split over the {looks} looks --seeds auto may take (alpha {alpha / looks:.3g} per look), so "
                  "adding seeds after a look does not inflate the error rate" if looks > 1 else "")
    return (
        f"Verdicts: val accuracy over seeds against the baseline. Better/worse: Welch's t-test; equivalent: two "
        f"one-sided Welch tests (TOST) that the difference lies within ±{margin * 100:g} pt. Each family of "
        f"p-values is Holm-corrected over the {n_compared} comparison(s) of this suite at a family-wise "
        f"{alpha:.0%}{sequential}. Intervals are per-comparison 95 % CIs of the difference in means. Undecided "
        f"rows show the seeds per side that would decide them with {POWER:.0%} probability at the observed spread "
        "(t-test power, statsmodels). One seed gives no verdict; diverged runs are not judged."
    )
