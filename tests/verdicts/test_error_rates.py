"""The error rates the verdicts claim, checked by simulating thousands of suites (numbers, no training).

Every simulated suite is judged by bench's own functions (``welch``, ``decide``, ``next_round``);
only the drawing of seeds is the test's. Each claim is checked twice: the rate stays at or below
alpha plus three Monte-Carlo standard errors with the correction, and goes above that bound with
the correction removed, so the test would catch its removal.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.verdicts import ALPHA, BETTER, EQUIVALENT, WORSE, AutoSeeds, decide, next_round, welch

SUITES = 2000
ROWS = 4  # compared with the baseline
SD = 0.01  # seed-to-seed spread of val accuracy
MARGIN = 0.01
BOUND = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / SUITES)  # alpha plus Monte-Carlo error


def simulate(true_diffs, auto: AutoSeeds | None, alpha: float, looks: int, holm: bool = True, seed: int = 0,
             sd: float = SD) -> dict[str, float]:
    """Run ``SUITES`` suites whose rows truly differ from the baseline by ``true_diffs``; the share of
    suites with any verdict of each kind at any look."""
    rng = np.random.default_rng(seed)
    max_seeds = auto.max_seeds if auto else 3
    rows = 0.90 + np.asarray(true_diffs)[None, :, None] + rng.normal(0, sd, (SUITES, len(true_diffs), max_seeds))
    base = 0.90 + rng.normal(0, sd, (SUITES, max_seeds))
    n_rows = np.full((SUITES, len(true_diffs)), auto.start if auto else 3)
    n_base = np.full(SUITES, auto.start if auto else 3)
    active = np.ones(SUITES, bool)
    seen = {kind: np.zeros(SUITES, bool) for kind in (BETTER, WORSE, EQUIVALENT)}
    labels = [f"r{j}" for j in range(len(true_diffs))]
    for _ in range(looks):
        diff, p, p_equiv = judge(rows, base, n_rows, n_base, active)
        for s in np.flatnonzero(active):
            if holm:
                kinds = decide(p[s], p_equiv[s], diff[s], alpha / looks if auto else alpha)["kind"]
            else:  # each comparison at the full alpha at every look: no correction at all
                kinds = [EQUIVALENT if e <= alpha else (BETTER if d > 0 else WORSE) if q <= alpha else "undecided"
                         for q, e, d in zip(p[s], p_equiv[s], diff[s])]
            for kind in kinds:
                if kind in seen:
                    seen[kind][s] = True
            grow = next_round(dict(zip(labels, kinds)), {**dict(zip(labels, n_rows[s])), "base": n_base[s]}, "base",
                              auto) if auto else {}
            if not grow:
                active[s] = False
            for label, n in grow.items():
                if label == "base":
                    n_base[s] = n
                else:
                    n_rows[s, labels.index(label)] = n
        if not active.any():
            break
    return {kind: float(hit.mean()) for kind, hit in seen.items()}


def judge(rows, base, n_rows, n_base, active):
    """bench's Welch and TOST tests for every active suite, batched over suites with the same seed counts."""
    shape = rows.shape[:2]
    diff, p, p_equiv = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    for j in range(rows.shape[1]):
        for n_row, n_b in {(n_rows[s, j], n_base[s]) for s in np.flatnonzero(active)}:
            which = active & (n_rows[:, j] == n_row) & (n_base == n_b)
            tests = welch(rows[which, j, :n_row], base[which, :n_b], MARGIN)
            diff[which, j], p[which, j], p_equiv[which, j] = tests["diff"], tests["p"], tests["p_equiv"]
    return diff, p, p_equiv


def any_difference(rates: dict[str, float]) -> float:
    return rates[BETTER] + rates[WORSE]  # a suite rarely holds both; counted once each is conservative


AUTO = AutoSeeds(start=3, step=2, max_seeds=9)  # 4 looks


def test_fixed_seeds_no_difference_gives_a_false_verdict_at_most_alpha_of_the_time():
    null = [0.0] * ROWS
    assert any_difference(simulate(null, None, ALPHA, looks=1)) <= BOUND
    assert any_difference(simulate(null, None, ALPHA, looks=1, holm=False)) > BOUND  # without Holm: about 1-(0.95)^4


def test_seeds_auto_looks_do_not_inflate_the_false_verdict_rate():
    null = [0.0] * ROWS
    assert AUTO.looks == 4
    corrected = simulate(null, AUTO, ALPHA, looks=AUTO.looks)
    assert any_difference(corrected) <= BOUND
    # Judging every look at the full alpha (the sequential rule removed) inflates it.
    uncorrected = simulate(null, AUTO, ALPHA * AUTO.looks, looks=AUTO.looks)
    assert any_difference(uncorrected) > BOUND


@pytest.mark.parametrize("auto", [None, AUTO], ids=["fixed seeds", "seeds auto"])
def test_a_true_difference_of_exactly_the_margin_is_called_equivalent_at_most_alpha_of_the_time(auto):
    # A spread small against the margin makes each row's TOST as sharp as it gets (size alpha at the
    # boundary), the hardest case for the correction.
    at_margin = [MARGIN, -MARGIN, MARGIN, -MARGIN]
    looks = auto.looks if auto else 1
    assert simulate(at_margin, auto, ALPHA, looks=looks, sd=0.003)[EQUIVALENT] <= BOUND
    # Without Holm (and, for auto, without the split over looks) four rows at the margin are called
    # equivalent far more often. (Removing only the split barely shows here: the looks' TOST p-values
    # are strongly correlated; the null test above shows the split is needed.)
    loose = simulate(at_margin, auto, ALPHA, looks=looks, holm=False, sd=0.003)
    assert loose[EQUIVALENT] > BOUND


def test_real_differences_and_real_equivalence_get_decided():
    # Power, not error: 1-point differences and exact twins at a 0.2-point spread; --seeds auto decides most.
    rates = simulate([0.01, -0.01, 0.0, 0.0], AUTO, ALPHA, looks=AUTO.looks, seed=1, sd=0.002)
    assert rates[BETTER] > 0.9 and rates[WORSE] > 0.9 and rates[EQUIVALENT] > 0.5
