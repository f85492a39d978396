"""Each row against a reference (the suite's baseline, or run A of ``bench diff``): better, worse,
equivalent within a margin, identical, or undecided.

For every row, over its seeds' val accuracies against the reference's:

- *better* / *worse*: a two-sided t-test of the difference: Welch's (``scipy.stats.ttest_ind``,
  unequal variances) for unpaired seeds, or the paired t-test (``scipy.stats.ttest_1samp`` on the
  per-seed differences) when both sides ran the same seeds and the caller asks for pairing;
- *equivalent within ±margin*: two one-sided tests (TOST) of the same kind that the difference is
  above -margin and below +margin, the larger of the two p-values being the TOST p-value;
- *identical*: every seed gave the same number on both sides (a rerun on the same machine): no test;
- **one family for the whole suite**: every row brings two null hypotheses, "no difference" and
  "a difference of at least the margin", and all of them are corrected together, so the chance of
  *any* false verdict (better, worse or equivalent, any row) stays at or below ``alpha``. The
  correction is Holm's step-down with Shaffer's refinement: a row's two nulls exclude each other
  (a difference cannot be both 0 and at least the margin), so at each step the divisor is the
  number of rows that can still hold a true null, not the number of hypotheses left. It is never
  weaker than Holm over the 2m hypotheses, and ``tests/verdicts/test_error_rates.py`` shows that
  correcting each family on its own (as bench did before) lets a suite with a null row and a row at
  the margin exceed alpha;
- a row both significantly different and equivalent is called equivalent: the difference is real
  but smaller than the margin, which is what the user said matters;
- an undecided row gets the seeds per side that would likely decide it at the observed spread
  (``statsmodels``' ``TTestIndPower``);
- a row with non-finite values (a failed or diverged run) is not judged, and neither is any row when
  the reference has them: a NaN p-value must never count as a rejection.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import integrate, stats
from statsmodels.stats.power import TTestIndPower, TTestPower
from statsmodels.tools.sm_exceptions import ConvergenceWarning

from .kinds import BASELINE, BETTER, EQUIVALENT, IDENTICAL, UNDECIDED, UNJUDGED, WORSE
from .sequential import Look

ALPHA = 0.05  # family-wise error rate of one suite's verdicts
DEFAULT_MARGIN = 0.01  # 1 point of accuracy: the smallest difference that matters, unless the suite says
POWER = 0.8  # "seeds needed" aims at this chance of deciding
MAX_SEEDS_SHOWN = 200  # beyond this, "needs > 200": practically undecidable at this spread
PAIRED, WELCH = "paired", "Welch"

COLUMNS = ["label", "n", "diff", "ci_low", "ci_high", "ci_level", "p", "p_holm", "p_equiv", "p_equiv_holm", "kind",
           "verdict", "seeds_needed", "test", "family"]  # family: how many comparisons were corrected together

Values = Sequence[float] | pd.Series | Mapping[int, float]


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


def paired(row: np.ndarray, base: np.ndarray, margin: float, confidence: float = 1 - ALPHA) -> dict[str, np.ndarray]:
    """The paired tests of ``row`` against ``base`` (the same seeds, in the same order along the last
    axis): a one-sample t-test of the per-seed differences, and its TOST (statsmodels' ``ttost_paired``)."""
    d = np.asarray(row, dtype=float) - np.asarray(base, dtype=float)
    two_sided = stats.ttest_1samp(d, 0.0, axis=-1)
    interval = two_sided.confidence_interval(confidence_level=confidence)
    above_low = stats.ttest_1samp(d + margin, 0.0, axis=-1, alternative="greater")
    below_high = stats.ttest_1samp(d - margin, 0.0, axis=-1, alternative="less")
    return {
        "diff": d.mean(axis=-1),
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


def holm_shaffer(p: Sequence[float], p_equiv: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Adjusted p-values of every row's two hypotheses, corrected as one family.

    Holm's step-down over all 2m p-values, except that the k-th smallest is multiplied by the number
    of rows that still have a hypothesis not rejected before it (including it), rather than by the
    number of hypotheses left: each row holds at most one true null, so that is the most true nulls
    there can be among what is left (Shaffer 1986). The proof is Holm's: the first true null reached
    is the smallest true p-value, tested at alpha over at most as many rows as there are true nulls.
    A NaN p-value counts as 1 (never a rejection).
    """
    p = np.nan_to_num(np.asarray(p, dtype=float), nan=1.0)
    q = np.nan_to_num(np.asarray(p_equiv, dtype=float), nan=1.0)
    m = len(p)
    values = np.concatenate([p, q])
    rows = np.concatenate([np.arange(m), np.arange(m)])
    order = np.argsort(values, kind="stable")
    left = np.full(m, 2)  # hypotheses of each row not yet passed in the step-down order
    adjusted = np.empty(2 * m)
    running = 0.0
    for index in order:
        could_be_true = int((left > 0).sum())
        running = max(running, min(1.0, could_be_true * values[index]))
        adjusted[index] = running
        left[rows[index]] -= 1
    return adjusted[:m], adjusted[m:]


def step_down(p: Sequence[float], p_equiv: Sequence[float], level_diff: Callable[[int], float],
              level_equiv: Callable[[int], float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Holm-Shaffer's step-down with the level of each step given: the hypotheses in order of p-value,
    each rejected while its p-value is at most ``level_diff(t)`` (a row's "no difference") or
    ``level_equiv(t)`` (its "a difference of at least the margin"), t being the rows that still have a
    hypothesis not rejected; the first that is not stops the procedure. (reject diff, reject equiv,
    level diff, level equiv): the level each hypothesis was judged at, where the procedure stopped for
    those after it (so an interval at that level shows what decided). A NaN p-value counts as 1."""
    p = np.nan_to_num(np.asarray(p, dtype=float), nan=1.0)
    q = np.nan_to_num(np.asarray(p_equiv, dtype=float), nan=1.0)
    m = len(p)
    values, rows = np.concatenate([p, q]), np.concatenate([np.arange(m), np.arange(m)])
    left = np.full(m, 2)
    reject, level = np.zeros(2 * m, bool), np.empty(2 * m)
    stopped: float | None = None
    for index in np.argsort(values, kind="stable"):
        if stopped is None:
            t = int((left > 0).sum())
            own = level_diff(t) if index < m else level_equiv(t)
            if values[index] <= own:
                reject[index] = True
            else:
                stopped = own
            level[index] = own
        else:  # p >= the stopping p-value > stopped: an interval at this level shows it undecided
            level[index] = stopped
        left[rows[index]] -= 1
    return reject[:m], reject[m:], level[:m], level[m:]


def decide(p: Sequence[float], p_equiv: Sequence[float], diff: Sequence[float], alpha: float,
           *, look: Look = Look(), one_family: bool = True) -> dict[str, list]:
    """One suite's verdicts from its comparisons' p-values, corrected as one family at ``alpha``, at
    ``look`` of the suite's schedule: each step of the step-down uses the look's nominal level for a
    hypothesis of alpha / t (two-sided for a difference, one-sided for an equivalence: TOST's).

    ``one_family=False`` is the old per-family Holm (differences and equivalences each at ``alpha``),
    kept only so the error-rate simulations can show what it costs. ``p_holm`` / ``p_equiv_holm``:
    the Holm-Shaffer adjusted p-values of this look (what a one-look suite compares with alpha)."""
    p_holm, p_equiv_holm = holm_shaffer(p, p_equiv)
    if one_family:
        reject, reject_equiv, level, level_equiv = step_down(
            p, p_equiv, lambda t: look.level(alpha / t, 2), lambda t: look.level(alpha / t, 1))
    else:
        a_diff, a_equiv = look.level(alpha, 2), look.level(alpha, 1)
        reject = holm(np.nan_to_num(p, nan=1.0)) <= a_diff
        reject_equiv = holm(np.nan_to_num(p_equiv, nan=1.0)) <= a_equiv
        level, level_equiv = np.full(len(p), a_diff), np.full(len(p), a_equiv)
    kinds = [EQUIVALENT if e else (BETTER if d > 0 else WORSE) if r else UNDECIDED
             for r, e, d in zip(reject, reject_equiv, diff)]
    return {"kind": kinds, "p_holm": list(p_holm), "p_equiv_holm": list(p_equiv_holm),
            "level": list(level), "level_equiv": list(level_equiv)}


def mean_interval(values: pd.Series, confidence: float = 1 - ALPHA) -> tuple[float, float]:
    """The t-interval of the mean of ``values`` (over seeds; NaN with fewer than two), ``scipy.stats.t``."""
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return values.mean() - half, values.mean() + half


def seeds_needed(diff: float, sd_row: float, sd_base: float, margin: float, alpha: float,
                 paired: bool = False) -> int | None:
    """Seeds per side that would decide the row with probability ``POWER`` if the observed
    difference and spread were the truth: the fewer of what the difference test and the
    equivalence test need. ``paired``: ``sd_row`` is the spread of the per-seed differences and the
    test a one-sample t-test on them (statsmodels' ``TTestPower``); else Welch's two samples
    (``TTestIndPower`` at the pooled spread). None when the spread is zero or the answer exceeds
    ``MAX_SEEDS_SHOWN``."""
    sd = sd_row if paired else math.sqrt((sd_row**2 + sd_base**2) / 2)
    if not sd > 0:
        return None
    power, needed = (TTestPower() if paired else TTestIndPower()), []
    if abs(diff) > 0:
        needed.append(_seeds_for(power, abs(diff) / sd, alpha, POWER, "two-sided"))
    if abs(diff) < margin:  # each one-sided test at sqrt(POWER): TOST then decides with at least POWER
        needed.append(_seeds_for(power, (margin - abs(diff)) / sd, alpha, math.sqrt(POWER), "larger"))
    needed = [n for n in needed if n is not None]
    return min(needed) if needed else None


def _t_power(effect: float, n: float, alpha: float, alternative: str, two_samples: bool) -> float:
    """The t-test's power by integrating over the chi-square of its variance estimate: what statsmodels
    computes with the noncentral t, whose distribution function scipy returns as NaN for the very large
    noncentralities of large differences at few seeds."""
    df = 2 * n - 2 if two_samples else n - 1
    nc = effect * math.sqrt(n / 2 if two_samples else n)
    crit = stats.t.ppf(1 - alpha / (2 if alternative == "two-sided" else 1), df)

    def beyond(v: float) -> float:
        scale = crit * math.sqrt(v / df)
        lower = stats.norm.cdf(-nc - scale) if alternative == "two-sided" else 0.0
        return (stats.norm.sf(scale - nc) + lower) * stats.chi2.pdf(v, df)

    # Over where the chi-square's mass is (quad over [0, inf) misses it at many degrees of freedom).
    low, high = stats.chi2.ppf(1e-12, df), stats.chi2.isf(1e-12, df)
    return float(integrate.quad(beyond, low, high, points=[df], limit=200)[0])


def _seeds_for(power: TTestPower | TTestIndPower, effect: float, alpha: float, target: float,
               alternative: str) -> int | None:
    """The fewest seeds (2 or more) with ``target`` power, or None beyond ``MAX_SEEDS_SHOWN``. The
    bracket is checked first: statsmodels' solver finds no root when 2 seeds already have the power (a
    large difference) or 200 do not, and says so only in a ConvergenceWarning."""
    def power_at(n: float) -> float:
        value = float(power.power(effect, n, alpha, alternative=alternative))
        return value if np.isfinite(value) else _t_power(effect, n, alpha, alternative,
                                                         two_samples=isinstance(power, TTestIndPower))

    if power_at(2) >= target:
        return 2
    if power_at(MAX_SEEDS_SHOWN) < target:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            n = power.solve_power(effect_size=effect, alpha=alpha, power=target, alternative=alternative)
        except (ValueError, RuntimeError):
            n = math.nan
    if not np.isfinite(n):  # inside the bracket, yet no root: count up (power rises with n)
        return next(k for k in range(3, MAX_SEEDS_SHOWN + 1) if power_at(k) >= target)
    return max(2, math.ceil(float(n) - 1e-9))


def verdict_text(kind: str, n: int, margin: float, needed: int | None, unit: str = "pt") -> str:
    if kind == EQUIVALENT:
        return f"equivalent within ±{margin * 100:g} pt" if unit == "pt" else f"equivalent within ±{margin:g} {unit}"
    if kind == UNDECIDED:  # seeds per side that would likely decide it
        return f"undecided ({n} seeds; " + (f"~{needed} needed)" if needed else f"> {MAX_SEEDS_SHOWN} needed)")
    return kind


def against_baseline(values: Mapping[str, Values], baseline: str | None, *, margin: float = DEFAULT_MARGIN,
                     look: Look = Look(), alpha: float = ALPHA, pair: bool = False,
                     decided: Mapping[str, str] | None = None,
                     extra: Sequence[tuple[str, Values, Values, float, str]] = ()) -> pd.DataFrame:
    """One row per label (``COLUMNS``). ``values``: each row's per-seed val accuracies (NaN where
    a run failed or diverged; a ``pd.Series`` or mapping is indexed by seed). ``look``: which look of
    the suite's schedule this is (one look for fixed seeds). ``pair``: paired tests over the seeds a
    row shares with the baseline. ``decided``: rows decided at an earlier look (their verdict kind),
    not judged again but kept in the family. ``extra``: more comparisons in the same family, each
    ``(name, values, reference values, margin, unit)`` (a suite's time to its target), as more rows."""
    if baseline is None or baseline not in values:
        reason = "no baseline declared" if baseline is None else f"baseline {baseline!r} has no finished runs"
        return pd.DataFrame([_record(label, len(v), UNJUDGED, reason) for label, v in values.items()], columns=COLUMNS)
    pairs = [(label, row, values[baseline]) for label, row in values.items() if label != baseline]
    margins, units = [margin] * len(pairs), ["pt"] * len(pairs)
    for name, row, base, extra_margin, unit in extra:
        pairs.append((name, row, base))
        margins.append(extra_margin)
        units.append(unit)
    records = {r["label"]: r for r in compare(pairs, margin=margins, alpha=alpha, against="the baseline", pair=pair,
                                              look=look, decided=decided, units=units)}
    records[baseline] = _record(baseline, len(values[baseline]), BASELINE, BASELINE, diff=0.0)
    return pd.DataFrame([records[label] for label in [*values, *(name for name, *_ in extra)]], columns=COLUMNS)


def _series(values: Values) -> pd.Series:
    if isinstance(values, pd.Series):
        return values.astype(float)
    if isinstance(values, Mapping):
        return pd.Series(values, dtype=float)
    return pd.Series(list(values), dtype=float)


def compare(pairs: Sequence[tuple[str, Values, Values]], *, margin: float | Sequence[float], alpha: float,
            against: str = "the reference", pair: bool | Sequence[bool] = False,
            look: Look = Look(), decided: Mapping[str, str] | None = None,
            units: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Each ``(label, values, reference values)``: the difference of means and its verdict, all
    comparisons corrected together at ``alpha`` (``step_down``), at ``look`` of the schedule. ``pair``
    (for all, or one flag per comparison): seed by seed over the seeds both sides ran (values as
    ``pd.Series`` or mappings indexed by seed), else Welch. The interval of each row is at the level its
    verdict was decided at (``ci_level``): 1 - 2 x its equivalence level when equivalent (inside the
    band), else 1 - its difference level (clear of zero when better or worse)."""
    flags = [pair] * len(pairs) if isinstance(pair, bool) else list(pair)
    margins = [margin] * len(pairs) if isinstance(margin, int | float) else list(margin)
    units = list(units or ["pt"] * len(pairs))
    # tested: judged now; settled: decided at an earlier look; counted: not judged now (a failed run, one
    # seed, no spread). All of them stay in the family, never rejected, so no step divides by fewer rows
    # than could hold a true null, whatever becomes of a row between looks.
    records, tested, settled, counted = [], [], [], []
    for (label, row_values, base_values), pair, margin in zip(pairs, flags, margins):
        if decided and label in decided:
            # Decided at an earlier look, and final: not tested again, but its hypotheses stay in the family
            # (the one it rejected as rejected, the other as never rejected), so no step divides by less.
            if decided[label] != IDENTICAL:
                records.append(_record(label, 0, decided[label], "", p=0.0 if decided[label] in (BETTER, WORSE)
                                       else math.nan, p_equiv=0.0 if decided[label] == EQUIVALENT else math.nan))
                settled.append(len(records) - 1)
            else:
                records.append(_record(label, 0, IDENTICAL, ""))
            continue
        row_s, base_s = _series(row_values), _series(base_values)
        if pair:
            common = row_s.index.intersection(base_s.index, sort=True)
            row_s, base_s = row_s.loc[common], base_s.loc[common]
        row, base = row_s.to_numpy(), base_s.to_numpy()
        n = len(row) if pair else min(len(row), len(base))
        test = PAIRED if pair else WELCH
        if not np.isfinite(base).all():
            records.append(_record(label, len(row), UNJUDGED, f"not judged: {against} failed or diverged "
                                                              f"({int((~np.isfinite(base)).sum())} of {len(base)} runs)"))
            counted.append(len(records) - 1)
        elif not np.isfinite(row).all():
            records.append(_record(label, len(row), UNJUDGED, f"failed or diverged ({int((~np.isfinite(row)).sum())} "
                                                              f"of {len(row)} runs): not judged"))
            counted.append(len(records) - 1)
        elif len(row) and (np.array_equal(row, base) if pair else np.array_equal(np.sort(row), np.sort(base))):
            records.append(_record(label, len(row), IDENTICAL, "identical (every seed the same)", diff=0.0,
                                   ci_low=0.0, ci_high=0.0, test=test))
        elif n < 2:
            records.append(_record(label, len(row), UNJUDGED, f"needs 2 seeds per row (has {n})",
                                   diff=float(row.mean() - base.mean()) if n else math.nan))
            counted.append(len(records) - 1)
        elif (np.ptp(row - base) == 0) if pair else (np.ptp(row) == 0 and np.ptp(base) == 0):
            records.append(_record(label, len(row), UNDECIDED, f"undecided ({n} seeds; zero variance)",
                                   diff=float(row.mean() - base.mean()), test=test))
            counted.append(len(records) - 1)
        else:
            tests = (paired if pair else welch)(row, base, margin)
            spread = (float((row - base).std(ddof=1)), 0.0) if pair else (float(row.std(ddof=1)), float(base.std(ddof=1)))
            records.append(_record(label, n, UNDECIDED, "", **{k: float(v) for k, v in tests.items()},
                                   sd_row=spread[0], sd_base=spread[1], test=test, _data=(row, base, pair, margin)))
            tested.append(len(records) - 1)
    if tested:
        family = tested + settled + counted
        outcome = decide([records[i]["p"] if i not in counted else math.nan for i in family],
                         [records[i]["p_equiv"] if i not in counted else math.nan for i in family],
                         [records[i]["diff"] for i in family], alpha, look=look)
        judged = {key: values[: len(tested)] for key, values in outcome.items()}
        for j, i in enumerate(tested):
            record = records[i]
            record.update(kind=judged["kind"][j], p_holm=judged["p_holm"][j], p_equiv_holm=judged["p_equiv_holm"][j])
            row, base, was_paired, margin = record.pop("_data")
            level = 2 * judged["level_equiv"][j] if record["kind"] == EQUIVALENT else judged["level"][j]
            interval = (paired if was_paired else welch)(row, base, margin, confidence=1 - level)
            record.update(ci_low=float(interval["ci_low"]), ci_high=float(interval["ci_high"]), ci_level=1 - level)
            sd_row, sd_base = record.pop("sd_row"), record.pop("sd_base")
            if record["kind"] == UNDECIDED:
                # Seeds that would decide it at a fixed-seeds look of the same family (the level of a
                # difference test at the family's first step): what another run of the suite would need.
                record["seeds_needed"] = seeds_needed(record["diff"], sd_row, sd_base, margin, alpha / len(family),
                                                      paired=was_paired)
            record["verdict"] = verdict_text(record["kind"], record["n"], margin, record["seeds_needed"], units[i])
    for record in records:  # what every interval and p-value here was corrected for
        record["family"] = len(tested) + len(settled) + len(counted)
    return records


def _record(label: str, n: int, kind: str, verdict: str, **numbers: Any) -> dict[str, Any]:
    record = {"label": label, "n": n, "diff": math.nan, "ci_low": math.nan, "ci_high": math.nan, "ci_level": math.nan,
              "p": math.nan,
              "p_holm": math.nan, "p_equiv": math.nan, "p_equiv_holm": math.nan, "kind": kind, "verdict": verdict,
              "seeds_needed": None, "test": "", "family": 0}
    record.update(numbers)
    return record


SPENDING_NAMES = {"obf": "O'Brien-Fleming-type", "pocock": "Pocock-type", "bonferroni": "even (Bonferroni)"}


def method_note(n_compared: int, margin: float = DEFAULT_MARGIN, look: Look = Look(), alpha: float = ALPHA,
                test: str = WELCH, measure: str = "val accuracy") -> str:
    """How the verdicts were reached, in words, for the summary and the report."""
    looks = len(look.fractions)
    sequential = (f" Alpha is spent over the {looks} looks --seeds auto may take by the {SPENDING_NAMES[look.spending]}"
                  f" schedule fixed before the first (this is look {look.index}; nominal level for a lone "
                  f"difference {look.level(alpha, 2):.3g}); rows decided at a look keep their verdict."
                  if looks > 1 else "")
    how = "paired t-test over the seeds both ran" if test == PAIRED else "Welch's t-test"
    return (
        f"Verdicts: {measure} over seeds against the baseline. Better/worse: {how}; equivalent: two one-sided "
        f"tests (TOST) that the difference lies within ±{margin * 100:g} pt. All {2 * n_compared} hypotheses "
        f"of the {n_compared} comparison(s) form one family, Holm-Shaffer-corrected at a family-wise "
        f"{alpha:.0%} (any false verdict in the suite).{sequential} Each interval is at the level its verdict "
        "was decided at (its confidence is shown): inside the ±margin band means equivalent, clear of zero "
        f"better or worse. Undecided rows show the seeds per side that would decide them with {POWER:.0%} "
        "probability at the observed spread (t-test power, statsmodels). One seed gives no verdict; a row "
        "with a failed, diverged or unfinished run is not judged (failures are counted, never dropped)."
    )
