"""Group-sequential boundaries, checked against published tables, and the looks they set."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from bench.verdicts.sequential import AutoSeeds, Look, boundaries, nominal_levels, spent


@pytest.mark.parametrize("fractions, spending, sides, alpha, published", [
    # Lan-DeMets O'Brien-Fleming type, two-sided alpha 0.05, equally spaced (Reboussin et al. 2000, ld98;
    # the ldbounds package's examples).
    ((0.2, 0.4, 0.6, 0.8, 1.0), "obf", 2, 0.05, (4.877, 3.357, 2.680, 2.290, 2.031)),
    ((0.25, 0.5, 0.75, 1.0), "obf", 2, 0.05, (4.333, 2.963, 2.359, 2.014)),
    # Lan-DeMets Pocock type, two-sided 0.05, 5 equally spaced looks (ld98).
    ((0.2, 0.4, 0.6, 0.8, 1.0), "pocock", 2, 0.05, (2.438, 2.427, 2.410, 2.397, 2.386)),
    # One-sided O'Brien-Fleming type at 0.05, 4 looks (SeqBounds.jl's README: 3.74955, 2.53993, 2.01604, 1.72014).
    ((0.25, 0.5, 0.75, 1.0), "obf", 1, 0.05, (3.750, 2.540, 2.016, 1.720)),
])
def test_boundaries_match_published_tables(fractions, spending, sides, alpha, published):
    assert boundaries(fractions, alpha, sides, spending) == pytest.approx(published, abs=1.5e-3)


def test_one_look_is_the_fixed_sample_test_and_the_levels_spend_exactly_alpha():
    assert boundaries((1.0,), 0.05) == pytest.approx((stats.norm.ppf(0.975),))
    assert spent(1.0, 0.05, "obf") == pytest.approx(0.05) and spent(1.0, 0.05, "pocock") == pytest.approx(0.05)
    # Simulated: a Brownian motion observed at the looks crosses some boundary 5 % of the time.
    fractions = AutoSeeds(start=3, step=2, max_seeds=9).fractions
    rng = np.random.default_rng(0)
    increments = rng.normal(0, 1, (200_000, len(fractions))) * np.sqrt(np.diff((0.0, *fractions)))
    z = np.cumsum(increments, axis=1) / np.sqrt(fractions)
    for spending in ("obf", "pocock"):
        crossed = (np.abs(z) >= np.array(boundaries(fractions, 0.05, 2, spending))).any(axis=1).mean()
        assert crossed == pytest.approx(0.05, abs=0.002), spending


def test_a_look_knows_its_nominal_level():
    auto = AutoSeeds(start=3, step=2, max_seeds=9)
    assert auto.fractions == pytest.approx((3 / 9, 5 / 9, 7 / 9, 1.0)) and auto.looks == 4
    levels = [Look.of(auto, k).level(0.05, 2) for k in range(1, 5)]
    assert levels == pytest.approx(nominal_levels(auto.fractions, 0.05, 2, "obf"))
    assert levels[0] < 0.001 and 0.04 < levels[-1] < 0.05  # little spent early, nearly all kept for the last look
    even = AutoSeeds(start=3, step=2, max_seeds=9, spending="bonferroni")
    assert [Look.of(even, k).level(0.05, 2) for k in range(1, 5)] == [0.0125] * 4
    assert Look().level(0.05, 2) == 0.05 and Look().level(0.05, 1) == 0.05  # fixed seeds: one look
    with pytest.raises(ValueError, match="accepted: obf, pocock, bonferroni"):
        AutoSeeds(spending="haybittle")


def crossing_rate(seeds, levels, test: str, paths: int = 200_000) -> float:
    """How often one null hypothesis of no difference, tested at every look with bench's two-sided t-test
    of the look's seeds, is rejected at some look: simulated on draws of its own (not those the levels
    were set on)."""
    from bench.verdicts import paired, welch

    rng = np.random.default_rng(99)
    x, y = rng.standard_normal((paths, seeds[-1])), rng.standard_normal((paths, seeds[-1]))
    rejected = np.zeros(paths, bool)
    for n, level in zip(seeds, levels):
        tests = paired(x[:, :n], np.zeros((paths, n)), 0.01) if test == "paired" else welch(x[:, :n], y[:, :n], 0.01)
        rejected |= tests["p"] <= level
    return float(rejected.mean())


@pytest.mark.parametrize("spending", ["obf", "pocock"])
@pytest.mark.parametrize("test", ["paired", "Welch"])
def test_t_levels_keep_one_null_at_its_alpha_and_the_z_levels_do_not(spending, test):
    auto = AutoSeeds(spending=spending)  # 3, 5, 7, 9, 10 seeds: the command line's default schedule
    bound = 0.05 + 3 * math.sqrt(2 * 0.05 * 0.95 / 200_000)  # both simulations' Monte-Carlo error
    levels = [Look.of(auto, k, test).level(0.05, 2) for k in range(1, auto.looks + 1)]
    assert crossing_rate(auto.seeds, levels, test) <= bound
    if test == "paired":  # the statistic with no nuisance parameter: the normal-theory levels let it through
        z_levels = [Look.of(auto, k).level(0.05, 2) for k in range(1, auto.looks + 1)]
        assert crossing_rate(auto.seeds, z_levels, test) > bound
