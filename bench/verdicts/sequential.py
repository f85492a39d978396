"""Seeds where they matter (``--seeds auto``): rounds of seeds for the rows still undecided, and
the alpha each look may spend.

Every row starts with ``start`` seeds. After each round the suite is judged; each round then
adds ``step`` seeds to every undecided row, and to the baseline while any row is undecided (its
seeds enter every comparison), until every row is decided, ``max_seeds`` is reached or the
budget is spent. So look k of a row still undecided holds ``n_k = min(start + (k - 1) step, max)``
seeds, and its *information fraction* is ``t_k = n_k / n_K``: fixed before the first look.

**Alpha spent by a declared schedule.** Looking after every round must not inflate the error
rate. A hypothesis tested at looks 1..K is a group-sequential test: at look k it is rejected when
its p-value is at most a *nominal level* ``nominal_k``, and the levels are set so that, with no
effect, the chance of a rejection at any look is exactly the hypothesis' alpha. How that alpha is
spread over the looks is a Lan-DeMets spending function ``f(t)`` (the alpha spent by information
fraction t, ``f(1) = alpha``):

- ``obf`` (default): O'Brien-Fleming type, ``f(t) = 2 - 2 Phi(z_{1-a/2} / sqrt t)`` per side (a =
  the one-sided alpha). It spends almost nothing at the first looks and keeps nearly all of alpha
  for the last, so a suite that runs to its maximum seeds is judged almost as if it had looked once;
- ``pocock``: Pocock type, ``f(t) = a ln(1 + (e - 1) t)``: nearly equal nominal levels at every look;
- ``bonferroni``: alpha split evenly over the K looks, each at ``alpha / K``, ignoring that the
  looks share data (what bench did before: valid by the union bound, and the most wasteful).

The boundaries ``c_k`` (on the z scale; ``nominal_k = P(|Z| >= c_k)``) solve
``P(no crossing before k, crossing at k) = f(t_k) - f(t_{k-1})`` for a Brownian motion observed at
the fractions ``t_k`` (correlation ``sqrt(t_j / t_k)`` between looks), computed by the recursive
numerical integration of Armitage, McPherson and Rowe (Jennison & Turnbull 2000, ch. 19) on a
Simpson grid. ``tests/verdicts/test_sequential.py`` checks them against published tables: the
two-sided O'Brien-Fleming-type boundaries 4.877, 3.357, 2.680, 2.290, 2.031 and 4.333, 2.963,
2.359, 2.014 (alpha 0.05, 5 and 4 equally spaced looks; Reboussin et al. 2000, ld98/ldbounds),
the Pocock-type 2.438, 2.427, 2.410, 2.397, 2.386, and a one-sided design.

The tests themselves are t-tests on a few seeds: the nominal level is applied to the t-test's own
p-value (t-based nominal levels), as group-sequential t-tests usually are for small samples.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping

import numpy as np
from scipy import optimize, stats

from .kinds import UNDECIDED

UNDECIDED_KINDS = (UNDECIDED,)
SPENDING = ("obf", "pocock", "bonferroni")
DEFAULT_SPENDING = "obf"
GRID_POINTS = 1001  # Simpson points per look: boundaries to 4 decimals (the tables' precision)


@dataclasses.dataclass(frozen=True)
class AutoSeeds:
    start: int = 3  # seeds every row gets in the first round
    step: int = 2  # seeds an undecided row gets per later round
    max_seeds: int = 10  # per row, the baseline included
    budget_s: float | None = None  # wall-clock seconds for the whole suite (None: no limit)
    spending: str = DEFAULT_SPENDING  # how alpha is spread over the looks (SPENDING)
    # The first seed of every row; a row with n seeds has first_seed .. first_seed + n - 1. Not 0 where
    # the design (a measure, a margin) was chosen on seeds 0.. and must be judged on seeds it never saw.
    first_seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.start <= self.max_seeds:
            raise ValueError(f"--seeds auto needs 2 <= start ({self.start}) <= max seeds ({self.max_seeds})")
        if self.step < 1:
            raise ValueError(f"--seeds auto needs a step >= 1, got {self.step}")
        if self.first_seed < 0:
            raise ValueError(f"--seeds auto needs a first seed >= 0, got {self.first_seed}")
        if self.spending not in SPENDING:
            raise ValueError(f"spending {self.spending!r} is not accepted; accepted: {', '.join(SPENDING)}")

    @property
    def looks(self) -> int:
        """The most times the suite is judged: the first round and every round that can follow."""
        return 1 + math.ceil((self.max_seeds - self.start) / self.step)

    @property
    def schedule(self) -> str:
        """``auto start=3 step=2 max=10 spending obf``: what a parent run records, and a resume must match."""
        first = f" from seed {self.first_seed}" if self.first_seed else ""
        return f"auto start={self.start} step={self.step} max={self.max_seeds}{first} spending {self.spending}"

    def seed_list(self, n: int) -> list[int]:
        """A row's seeds when it has ``n``: the same for every row, so rows pair seed by seed."""
        return list(range(self.first_seed, self.first_seed + n))

    def seeds_at_look(self, look: int) -> int:
        """Seeds a row still undecided has at look ``look`` (1-based) of the schedule."""
        return min(self.start + (look - 1) * self.step, self.max_seeds)

    @property
    def seeds(self) -> tuple[int, ...]:
        """The seeds a row still undecided has at each look."""
        return tuple(self.seeds_at_look(k) for k in range(1, self.looks + 1))

    @property
    def fractions(self) -> tuple[float, ...]:
        """The information fraction of each look: seeds then over seeds at the last look."""
        return tuple(n / self.max_seeds for n in self.seeds)


@dataclasses.dataclass(frozen=True)
class Look:
    """Which look of which schedule a suite is judged at: the nominal levels its tests use.

    ``seeds`` (each look's seeds) and ``test`` (paired or Welch) given, the levels are those of the
    t-statistics the suite computes (``t_levels``); without them, of z-statistics (``nominal_levels``).
    """

    fractions: tuple[float, ...] = (1.0,)  # every planned look's information fraction (one: fixed seeds)
    index: int = 1  # 1-based
    spending: str = DEFAULT_SPENDING
    seeds: tuple[int, ...] = ()  # each planned look's seeds
    test: str = ""  # "paired" or "Welch" (the baseline module's names); "" for z-statistics

    def level(self, alpha: float, sides: int) -> float:
        """The nominal p-value level at this look for a hypothesis with ``alpha`` (two-sided, or one-sided)."""
        if len(self.fractions) == 1:
            return alpha
        if self.spending == "bonferroni":
            return alpha / len(self.fractions)
        if self.seeds and self.test:
            return t_levels(self.seeds, alpha, sides, self.spending, self.test)[self.index - 1]
        return float(nominal_levels(self.fractions, alpha, sides, self.spending)[self.index - 1])

    @classmethod
    def of(cls, auto: AutoSeeds | None, index: int, test: str = "") -> Look:
        if auto is None:
            return cls()
        return cls(auto.fractions, min(index, auto.looks), auto.spending, auto.seeds, test)


def spent(t: float, alpha: float, spending: str, sides: int = 2) -> float:
    """Alpha spent by information fraction ``t`` (both sides together for a two-sided test)."""
    a = alpha / sides  # per side
    if spending == "obf":
        per_side = 2 - 2 * stats.norm.cdf(stats.norm.ppf(1 - a / 2) / math.sqrt(t))
    elif spending == "pocock":
        per_side = a * math.log(1 + (math.e - 1) * t)
    else:
        raise ValueError(f"spending {spending!r} has no boundary; accepted: obf, pocock")
    return per_side * sides


@functools.lru_cache(maxsize=4096)
def boundaries(fractions: tuple[float, ...], alpha: float, sides: int = 2, spending: str = DEFAULT_SPENDING,
               points: int = GRID_POINTS) -> tuple[float, ...]:
    """The z boundary of each look: crossing at look k, not before, has probability
    ``spent(t_k) - spent(t_{k-1})`` with no effect (symmetric when two-sided)."""
    out: list[float] = []
    grid = mass = None  # where S_{k-1} (the score: Z sqrt(t)) is still inside, and its probability mass there
    before_t, before_spent = 0.0, 0.0
    for t in fractions:
        target = spent(t, alpha, spending, sides) - before_spent
        sd = math.sqrt(t - before_t)  # the score's increment since the last look

        def crossing(c: float) -> float:
            edge = c * math.sqrt(t)
            if mass is None:
                return sides * stats.norm.sf(edge / sd)
            upper = stats.norm.sf((edge - grid) / sd)
            lower = stats.norm.cdf((-edge - grid) / sd) if sides == 2 else 0.0
            return float(np.dot(mass, upper + lower))

        c = optimize.brentq(lambda c: crossing(c) - target, 0.01, 40.0, xtol=1e-10)
        out.append(float(c))
        edge = c * math.sqrt(t)
        new_grid = np.linspace(-edge if sides == 2 else -12.0 * math.sqrt(t), edge, points)
        weights = np.full(points, (new_grid[1] - new_grid[0]) / 3.0)  # Simpson: 1, 4, 2, 4, ..., 4, 1
        weights[1:-1:2] *= 4.0
        weights[2:-1:2] *= 2.0
        if mass is None:
            density = stats.norm.pdf(new_grid / sd) / sd
        else:
            density = (mass[None, :] * stats.norm.pdf((new_grid[:, None] - grid[None, :]) / sd)).sum(axis=1) / sd
        grid, mass = new_grid, density * weights
        before_t, before_spent = t, before_spent + target
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def nominal_levels(fractions: tuple[float, ...], alpha: float, sides: int = 2,
                   spending: str = DEFAULT_SPENDING) -> tuple[float, ...]:
    """Each look's nominal p-value level: a test's p-value at look k rejects when at most this."""
    return tuple(float(sides * stats.norm.sf(c)) for c in boundaries(fractions, alpha, sides, spending))


# Simulated null sequences of t-statistics for t_levels: enough that the boundaries' own Monte-Carlo
# error (about 0.0005 on a 5 % crossing rate) is small against the Holm step sizes; fixed, so every
# machine and every resume computes the same levels.
T_PATHS = 200_000
T_PATHS_SEED = 20261202


@functools.lru_cache(maxsize=16)
def _null_t_paths(seeds: tuple[int, ...], test: str) -> np.ndarray:
    """(paths, looks): the t-statistic of each look on one null sequence of seeds. ``paired``: the
    one-sample t of the per-seed differences (its null distribution has no nuisance parameter);
    ``Welch``: two samples of n seeds each with equal spreads, Welch's statistic."""
    rng = np.random.default_rng(T_PATHS_SEED)
    samples = 1 if test == "paired" else 2
    n = np.array(seeds, dtype=float)
    means, variances = [], []
    for _ in range(samples):  # one seed at a time: memory of paths x looks, whatever the seeds
        total, squares = np.zeros(T_PATHS), np.zeros(T_PATHS)
        at_looks = np.empty((2, T_PATHS, len(seeds)))
        for seed in range(1, seeds[-1] + 1):
            x = rng.standard_normal(T_PATHS)
            total += x
            squares += x * x
            for k in [k for k, s in enumerate(seeds) if s == seed]:
                at_looks[0, :, k], at_looks[1, :, k] = total, squares
        mean = at_looks[0] / n
        means.append(mean)
        variances.append((at_looks[1] - n * mean**2) / (n - 1))
    if test == "paired":
        return means[0] / np.sqrt(variances[0] / n)
    return (means[0] - means[1]) / np.sqrt((variances[0] + variances[1]) / n)


@functools.lru_cache(maxsize=4096)
def t_levels(seeds: tuple[int, ...], alpha: float, sides: int, spending: str, test: str) -> tuple[float, ...]:
    """Each look's nominal p-value level for the t-test the suite runs at the planned seeds: the
    boundaries are set on simulated null sequences of that statistic (``_null_t_paths``) so that the
    crossing probability at look k, not before, is ``spent(t_k) - spent(t_{k-1})``, with the
    fractions ``t_k = n_k / n_K``; each boundary is then the t distribution's p-value at the look's
    degrees of freedom (n - 1 paired, 2n - 2 Welch at equal spreads).

    Why not the z boundaries' p-values: with a few seeds the t-statistics of successive looks are less
    correlated than a Brownian motion's, so those levels let one null hypothesis cross about 10 % more
    often than its alpha (``tests/verdicts/test_sequential.py``)."""
    t = _null_t_paths(seeds, test)
    stat = np.abs(t) if sides == 2 else t
    alive = np.ones(len(t), bool)
    levels, before = [], 0.0
    for k, n in enumerate(seeds):
        target = spent(n / seeds[-1], alpha, spending, sides) - before
        before += target
        crossing = int(round(target * len(t)))
        candidates = np.sort(stat[alive, k])[::-1]
        c = candidates[crossing - 1] if crossing >= 1 else candidates[0] + 1.0  # the crossing-th largest
        alive &= stat[:, k] < c
        df = n - 1 if test == "paired" else 2 * n - 2
        levels.append(float(sides * stats.t.sf(c, df)))
    return tuple(levels)


def next_round(kinds: Mapping[str, str], seeds: Mapping[str, int], baseline: str, auto: AutoSeeds) -> dict[str, int]:
    """How many seeds each row should have after the next round, for the rows that get more;
    empty when every row is decided or the undecided ones are at ``max_seeds``.

    ``kinds``: each compared row's verdict kind; ``seeds``: how many seeds each row was given so far
    (its planned seeds, finished or not: a failed seed is never replaced by a new one).
    """
    grow = {label: min(seeds[label] + auto.step, auto.max_seeds)
            for label, kind in kinds.items() if label != baseline and kind in UNDECIDED_KINDS}
    grow = {label: n for label, n in grow.items() if n > seeds[label]}
    if grow and seeds[baseline] < auto.max_seeds:
        grow[baseline] = min(seeds[baseline] + auto.step, auto.max_seeds)
    return grow
