"""Seeds where they matter (``--seeds auto``): rounds of seeds for the rows still undecided.

Every row starts with ``start`` seeds. After each round the suite is judged; each round then
adds ``step`` seeds to every undecided row, and to the baseline while any row is undecided (its
seeds enter every comparison), until every row is decided, ``max_seeds`` is reached or the
budget is spent.

Looking after every round must not inflate the error rate. The scheme: alpha is split evenly
over the maximum number of looks, ``looks = 1 + ceil((max_seeds - start) / step)``, and every
look tests at ``alpha / looks`` (with Holm over the rows). By the union bound the chance of any
false verdict at any look stays at or below alpha, whatever the data decide about the next
round; ``tests/verdicts/test_error_rates.py`` checks it by simulation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from .kinds import UNDECIDED

UNDECIDED_KINDS = (UNDECIDED,)


@dataclasses.dataclass(frozen=True)
class AutoSeeds:
    start: int = 3  # seeds every row gets in the first round
    step: int = 2  # seeds an undecided row gets per later round
    max_seeds: int = 10  # per row, the baseline included
    budget_s: float | None = None  # wall-clock seconds for the whole suite (None: no limit)

    def __post_init__(self) -> None:
        if not 2 <= self.start <= self.max_seeds:
            raise ValueError(f"--seeds auto needs 2 <= start ({self.start}) <= max seeds ({self.max_seeds})")
        if self.step < 1:
            raise ValueError(f"--seeds auto needs a step >= 1, got {self.step}")

    @property
    def looks(self) -> int:
        """The most times the suite is judged: the first round and every round that can follow."""
        return 1 + math.ceil((self.max_seeds - self.start) / self.step)

    @property
    def schedule(self) -> str:
        """``auto start=3 step=2 max=10``: what a parent run records, and a resume must match."""
        return f"auto start={self.start} step={self.step} max={self.max_seeds}"

    def seeds_at_look(self, look: int) -> int:
        """Seeds a row still undecided has at look ``look`` (1-based) of the schedule."""
        return min(self.start + (look - 1) * self.step, self.max_seeds)


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

