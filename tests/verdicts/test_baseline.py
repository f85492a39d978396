"""Verdicts against the baseline, on numbers whose answers are known or worked by hand."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.weightstats import ttost_ind

from bench.verdicts import against_baseline, method_note, seeds_needed, welch

A = [0.90, 0.91, 0.89]  # mean .90, sample variance 1e-4
B = [0.88, 0.87, 0.885]  # mean .878333, sample variance 5.833e-5


def test_welch_interval_matches_the_textbook_formula():
    row = against_baseline({"base": B, "row": A}, "base").set_index("label").loc["row"]
    var_a, var_b = stats.tvar(A), stats.tvar(B)
    se = math.sqrt(var_a / 3 + var_b / 3)
    df = (var_a / 3 + var_b / 3) ** 2 / ((var_a / 3) ** 2 / 2 + (var_b / 3) ** 2 / 2)  # Welch-Satterthwaite
    half = stats.t.ppf(0.975, df) * se
    diff = sum(A) / 3 - sum(B) / 3
    assert row["diff"] == pytest.approx(diff)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((diff - half, diff + half))
    assert (round(row["ci_low"], 4), round(row["ci_high"], 4)) == (0.0009, 0.0424)
    assert row["p"] == pytest.approx(2 * stats.t.sf(diff / se, df))
    assert row["verdict"] == "better"  # p = 0.044 < 0.05, and the only comparison


def test_tost_matches_a_hand_worked_example_and_statsmodels():
    # By hand: d = 0.021667, se = sqrt(1e-4/3 + 5.833e-5/3) = 0.0072648, df = 3.741 (Welch).
    # Lower test (d > -0.05): t = 0.071667 / 0.0072648 = 9.865; upper (d < 0.05): t = -0.028333 / 0.0072648 = -3.900.
    # TOST p = max(P(T > 9.865), P(T < -3.900)) with T ~ t(3.741) = 0.00996.
    tests = welch(np.array(A), np.array(B), margin=0.05)
    se = math.sqrt(stats.tvar(A) / 3 + stats.tvar(B) / 3)
    df = (stats.tvar(A) / 3 + stats.tvar(B) / 3) ** 2 / ((stats.tvar(A) / 3) ** 2 / 2 + (stats.tvar(B) / 3) ** 2 / 2)
    assert (round(se, 7), round(df, 3)) == (0.0072648, 3.741)
    upper = stats.t.cdf((float(tests["diff"]) - 0.05) / se, df)
    lower = stats.t.sf((float(tests["diff"]) + 0.05) / se, df)
    assert float(tests["p_equiv"]) == pytest.approx(max(upper, lower))
    assert round(float(tests["p_equiv"]), 4) == 0.0100
    assert float(tests["p_equiv"]) == pytest.approx(ttost_ind(np.array(A), np.array(B), -0.05, 0.05, usevar="unequal")[0])
    # Inside a 5-point margin at 3 seeds: equivalent; with a 1-point margin it cannot be said.
    wide = against_baseline({"base": B, "row": A}, "base", margin=0.05).set_index("label").loc["row"]
    assert wide["kind"] == "equivalent" and wide["verdict"] == "equivalent within ±5 pt"


def test_one_family_correction_takes_back_a_verdict_that_many_comparisons_make_likely():
    worse = [0.80, 0.81, 0.79]  # clearly below the baseline
    table = against_baseline({"base": B, "a": A, "worse": worse, "same": [0.879, 0.875, 0.881]}, "base")
    table = table.set_index("label")
    assert table.loc["a", "p"] < 0.05  # alone it would be "better"...
    assert table.loc["a", "kind"] == "undecided"  # ...but not among 3 comparisons
    assert table.loc["a", "verdict"].startswith("undecided (3 seeds; ~") and table.loc["a", "verdict"].endswith(" needed)")
    assert table.loc["worse", "verdict"] == "worse"
    # The six p-values (a difference and an equivalence per row) adjusted as one family, by hand:
    # step k multiplies by the rows that still have a hypothesis not passed (each row holds at most
    # one true null), kept monotone, capped at 1.
    rows = table.drop("base")
    hypotheses = sorted([(p, label, "p_holm") for label, p in rows["p"].items()]
                        + [(p, label, "p_equiv_holm") for label, p in rows["p_equiv"].items()])
    left, running = {label: 2 for label in rows.index}, 0.0
    for p, label, column in hypotheses:
        running = max(running, min(1.0, sum(n > 0 for n in left.values()) * p))
        assert table.loc[label, column] == pytest.approx(running)
        left[label] -= 1
    assert table.loc["base", "verdict"] == "baseline"


def test_holm_shaffer_on_a_worked_example_is_never_weaker_than_holm_over_all_hypotheses():
    from bench.verdicts import holm, holm_shaffer

    # Row 0: a clear difference; row 1: an equivalence and a difference both near 0.05.
    diff_adj, equiv_adj = holm_shaffer([0.001, 0.04], [0.9, 0.03])
    # 0.001 x 2 rows; 0.03 x 2 (row 0 still has its equivalence); 0.04 x 2 -> 0.08; 0.9 x 1 (only row 0 left).
    assert diff_adj.tolist() == pytest.approx([0.002, 0.08]) and equiv_adj.tolist() == pytest.approx([0.9, 0.06])
    plain = holm([0.001, 0.04, 0.9, 0.03])  # Holm over the 4 hypotheses: x4, x3, x2, x1
    assert plain.tolist() == pytest.approx([0.004, 0.09, 0.9, 0.09])  # 0.04 x 2 = 0.08, kept monotone
    rng = np.random.default_rng(1)
    for _ in range(200):
        p, q = rng.uniform(0, 0.2, 5), rng.uniform(0, 1, 5)
        d, e = holm_shaffer(p, q)
        assert (np.concatenate([d, e]) <= holm(np.concatenate([p, q])) + 1e-12).all()


def test_paired_tests_are_scipys_and_statsmodels():
    from statsmodels.stats.weightstats import ttost_paired

    from bench.verdicts import paired

    row, base = np.array([0.91, 0.93, 0.90, 0.92]), np.array([0.90, 0.915, 0.885, 0.90])
    tests = paired(row, base, margin=0.02)
    assert float(tests["p"]) == pytest.approx(stats.ttest_rel(row, base).pvalue)
    assert float(tests["p_equiv"]) == pytest.approx(ttost_paired(row, base, -0.02, 0.02)[0])
    table = against_baseline({"base": pd.Series(base, index=[3, 4, 5, 6]),
                              "row": pd.Series(row[::-1], index=[6, 5, 4, 3])}, "base", pair=True)
    judged = table.set_index("label").loc["row"]
    assert judged["test"] == "paired" and judged["p"] == pytest.approx(stats.ttest_rel(row, base).pvalue)  # by seed


def test_holm_is_statsmodels_holm(monkeypatch):
    import gc

    from statsmodels.stats.multitest import multipletests

    from bench.verdicts import holm

    # statsmodels' Holm runs gc.collect() per call (0.5 s each in a loaded test process); it changes no number
    monkeypatch.setattr(gc, "collect", lambda *args: 0)
    rng = np.random.default_rng(0)
    for m in (1, 2, 5, 9):
        for _ in range(2):
            p = np.concatenate([rng.uniform(0, 0.1, m // 2), rng.uniform(0, 1, m - m // 2)])
            assert holm(p) == pytest.approx(multipletests(p, method="holm")[1])


def test_looks_spend_alpha_so_the_same_data_decide_less_at_an_early_look():
    from bench.verdicts import AutoSeeds
    from bench.verdicts.sequential import Look

    values = {"base": B, "a": A}
    assert against_baseline(values, "base").set_index("label").loc["a", "kind"] == "better"  # p = 0.044, one look
    auto = AutoSeeds(start=3, step=2, max_seeds=9)
    for spending in ("obf", "bonferroni"):  # alpha spent over 4 looks: p = 0.044 is not enough at look 1
        early = against_baseline(values, "base", look=Look.of(dataclasses.replace(auto, spending=spending), 1))
        assert early.set_index("label").loc["a", "kind"] == "undecided", spending
    # The interval shown is at the level that look used: far wider than the 95 % one, and it holds zero.
    first = against_baseline(values, "base", look=Look.of(auto, 1)).set_index("label").loc["a"]
    assert first["ci_level"] == pytest.approx(1 - Look.of(auto, 1).level(0.05, 2))
    assert first["ci_low"] < 0 < first["ci_high"]


def test_one_seed_gives_no_verdict_rather_than_a_false_one():
    table = against_baseline({"base": [0.80], "row": [0.95]}, "base").set_index("label")
    assert table.loc["row", "verdict"] == "needs 2 seeds per row (has 1)"
    assert math.isnan(table.loc["row", "ci_low"]) and math.isnan(table.loc["row", "p_holm"])
    two = against_baseline({"base": [0.80, 0.81], "row": [0.95]}, "base").set_index("label")
    assert two.loc["row", "verdict"] == "needs 2 seeds per row (has 1)"


def test_no_baseline_and_identical_runs():
    assert set(against_baseline({"a": A, "b": B}, None)["verdict"]) == {"no baseline declared"}
    same = against_baseline({"base": [0.9, 0.91], "twin": [0.91, 0.9]}, "base").set_index("label")
    assert same.loc["twin", "kind"] == "identical" and same.loc["twin", "verdict"] == "identical (every seed the same)"
    # Paired, the same numbers on other seeds are not identical.
    swapped = against_baseline({"base": pd.Series([0.9, 0.91]), "twin": pd.Series([0.91, 0.9])}, "base", pair=True)
    assert swapped.set_index("label").loc["twin", "kind"] != "identical"


def test_a_nan_is_never_a_verdict():
    # A NaN p-value used to count as a rejection in the multiple-test correction: "worse".
    table = against_baseline({"base": B, "nan": [0.9, math.nan, 0.88], "a": A}, "base").set_index("label")
    assert table.loc["nan", "kind"] == "not judged"
    assert table.loc["nan", "verdict"] == "failed or diverged (1 of 3 runs): not judged"
    # The failed row stays in the family, never rejected: the other row is judged as one of two (p = 0.044
    # alone would be "better"; Holm-Shaffer over two rows doubles it), so a row failing at a later look can
    # never make the others' bar lower than it was.
    alone = against_baseline({"base": B, "a": A}, "base").set_index("label").loc["a"]
    assert alone["kind"] == "better"
    assert table.loc["a", "p_holm"] == pytest.approx(2 * alone["p"]) and table.loc["a", "kind"] == "undecided"
    broken_base = against_baseline({"base": [0.9, math.inf, 0.88], "a": A}, "base").set_index("label")
    assert broken_base.loc["a", "kind"] == "not judged" and "the baseline failed or diverged" in broken_base.loc["a", "verdict"]


def test_seeds_needed_decide_the_row_about_as_often_as_promised():
    # A row 0.6 points better than the baseline, seed-to-seed sd 0.5 points: how many seeds decide it?
    rng = np.random.default_rng(0)
    n = seeds_needed(0.006, 0.005, 0.005, margin=0.001, alpha=0.05)
    assert 8 <= n <= 20
    decided = 0
    for _ in range(300):
        row, base = rng.normal(0.906, 0.005, n), rng.normal(0.900, 0.005, n)
        decided += against_baseline({"base": base, "row": row}, "base", margin=0.001).set_index("label").loc["row", "kind"] == "better"
    assert decided / 300 >= 0.70  # promised: 80 %
    assert seeds_needed(0.0, 0.0, 0.0, 0.01, 0.05) is None  # no spread: nothing to compute


def test_the_method_note_names_the_tests_the_looks_and_the_interval_level():
    from bench.verdicts import AutoSeeds
    from bench.verdicts.sequential import Look

    note = method_note(8, margin=0.01, look=Look.of(AutoSeeds(start=3, step=2, max_seeds=9), 2), test="paired",
                       measure="mean val accuracy over the last 5 epochs")
    assert "paired t-test" in note and "TOST" in note and "Holm-Shaffer" in note and "±1 pt" in note
    assert "4 looks" in note and "O'Brien-Fleming-type" in note and "look 2" in note
    assert "mean val accuracy over the last 5 epochs" in note and "at the level its verdict was decided at" in note


def test_an_interval_inside_the_band_means_equivalent_and_one_clear_of_zero_better_or_worse():
    rng = np.random.default_rng(3)
    base = rng.normal(0.90, 0.004, 8)
    rows = {"same": base + rng.normal(0, 0.001, 8), "up": base + 0.02 + rng.normal(0, 0.002, 8),
            "noisy": base + rng.normal(0, 0.03, 8)}
    table = against_baseline({"base": pd.Series(base), **{k: pd.Series(v) for k, v in rows.items()}}, "base",
                             pair=True).set_index("label")
    assert table.loc["same", "kind"] == "equivalent" and -0.01 < table.loc["same", "ci_low"]
    assert table.loc["same", "ci_high"] < 0.01
    assert table.loc["up", "kind"] == "better" and table.loc["up", "ci_low"] > 0
    assert table.loc["noisy", "kind"] == "undecided" and table.loc["noisy", "ci_low"] < 0 < table.loc["noisy", "ci_high"]
    for label in rows:  # the level: what the step-down used for the row, never looser than 95 %
        assert 0.95 <= table.loc[label, "ci_level"] < 1


def test_a_large_difference_needs_few_seeds_not_more_than_can_be_shown():
    """statsmodels' solver finds no root when even 2 seeds give the power (its bracket starts above
    that): the answer is the fewest seeds, not "> 200", and no ConvergenceWarning reaches the user."""
    import warnings

    from bench.verdicts import seeds_needed

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        needed = seeds_needed(0.0257, 0.00245, 0.0252, 0.01, 0.025, paired=True)
        tiny = seeds_needed(1e-5, 0.05, 0.05, 0.01, 0.05 / 14)
        welch = seeds_needed(0.05, 0.001, 0.001, 0.01, 0.05)
    # 10.5 spreads apart, at level 0.025: 2 seeds (one degree of freedom) have power 0.44, 3 have 0.9997.
    assert needed == 3 and welch == 2
    # A row 2 pt worse at spreads of 1.9 and 0.6 pt, Welch at 0.05 / 7: statsmodels' power is NaN at 200 seeds
    # here, which must not read as "> 200": the fewest seeds with the power, by the integrated power.
    from bench.verdicts.baseline import _t_power

    n = seeds_needed(-0.02, 0.0192, 0.0064, 0.01, 0.05 / 7)
    effect = 0.02 / ((0.0192**2 + 0.0064**2) / 2) ** 0.5
    assert n is not None
    assert _t_power(effect, n, 0.05 / 7, "two-sided", True) >= 0.8 > _t_power(effect, n - 1, 0.05 / 7, "two-sided", True)
    assert tiny is None  # a difference of 0.001 pt at a 5-pt spread: beyond what is shown
    assert not [w for w in caught if "converge" in str(w.message).lower()]
    # In between, the solver's answer: the smallest n with the power, checked against statsmodels' power.
    from statsmodels.stats.power import TTestPower

    n = seeds_needed(0.012, 0.01, 0.0, 0.01, 0.05, paired=True)  # beyond the margin: the difference test alone
    assert TTestPower().power(1.2, n, 0.05) >= 0.8 > TTestPower().power(1.2, n - 1, 0.05)


@pytest.mark.parametrize("effect, n, alpha, alternative, two_samples", [
    (1.2, 5, 0.05, "two-sided", False), (0.8, 10, 0.05, "two-sided", True), (1.5, 3, 0.01, "two-sided", True),
    (0.8, 6, 0.05, "larger", False), (0.5, 20, 0.003, "larger", True), (0.3, 150, 0.007, "two-sided", False),
    (0.3, 150, 0.007, "two-sided", True)])
def test_the_power_fallback_is_statsmodels_power_where_that_is_finite(effect, n, alpha, alternative, two_samples):
    from statsmodels.stats.power import TTestIndPower, TTestPower

    from bench.verdicts.baseline import _t_power

    expected = (TTestIndPower() if two_samples else TTestPower()).power(effect, n, alpha, alternative=alternative)
    assert _t_power(effect, n, alpha, alternative, two_samples) == pytest.approx(expected, abs=1e-7)
