"""Which seeds a suite runs: the same fixed seeds for every row, or rounds of ``--seeds auto``.

``Rounds`` is the bookkeeping both runners (serial and workers) share: the seeds of the first
round, and after each round, judged on everything FINISHED so far, the seeds of the next one
(only the undecided rows and the baseline grow), or why there is none.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence

import pandas as pd

from ..verdicts import AutoSeeds, next_round
from .spec import Suite

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``2h``, ``1h30m`` -> seconds; ValueError naming what is accepted."""
    total, number = 0.0, ""
    for char in text.strip().lower():
        if char.isdigit() or char == ".":
            number += char
        elif char in DURATION_UNITS and number:
            total, number = total + float(number) * DURATION_UNITS[char], ""
        else:
            number = "x"
            break
    if number or total <= 0:
        raise ValueError(f"budget {text!r} is not accepted; accepted: a duration such as 90s, 30m, 2h or 1h30m")
    return total


@dataclasses.dataclass
class Rounds:
    suite: Suite
    labels: Sequence[str]  # the rows this run covers
    seeds: Sequence[int] | None = None  # fixed seeds (None: the profile's)
    auto: AutoSeeds | None = None
    started: float = dataclasses.field(default_factory=time.monotonic)
    stop_reason: str = ""

    @property
    def looks(self) -> int:
        return self.auto.looks if self.auto else 1

    def first(self, profile: str) -> dict[str, list[int]]:
        if self.auto:
            return {label: list(range(self.auto.start)) for label in self.labels}
        seeds = list(self.seeds) if self.seeds is not None else list(
            self.suite.profiles[profile].get("seeds", self.suite.seeds))
        return {label: seeds for label in self.labels}

    def every_seed(self, profile: str) -> dict[str, list[int]]:
        """Every seed any round may give a row (what a worker must be able to train)."""
        if self.auto:
            return {label: list(range(self.auto.max_seeds)) for label in self.labels}
        return self.first(profile)

    def next(self, summary: pd.DataFrame, workers: int = 1) -> dict[str, list[int]] | None:
        """The seeds of the next round (only rows that grow), or None with ``stop_reason`` set."""
        if not self.auto:
            return None
        if summary.empty or self.suite.baseline not in set(summary["label"]):
            self.stop_reason = "the baseline has no finished runs to judge against"
            return None
        kinds = dict(zip(summary["label"], summary["verdict_kind"]))
        counts = dict(zip(summary["label"], summary["n_seeds"].astype(int)))
        grow = next_round(kinds, counts, self.suite.baseline, self.auto)
        if not grow:
            undecided = [label for label, kind in kinds.items() if kind == "undecided"]
            self.stop_reason = (f"{len(undecided)} row(s) undecided at the maximum of {self.auto.max_seeds} seeds"
                                if undecided else "every row is decided")
            return None
        if self.auto.budget_s is not None:
            elapsed, cost = time.monotonic() - self.started, self.cost_s(summary, grow, counts, workers)
            if elapsed + cost > self.auto.budget_s:
                self.stop_reason = (f"budget: {elapsed / 60:.1f} min spent, the next round would take about "
                                    f"{cost / 60:.1f} min more of {self.auto.budget_s / 60:.1f}")
                return None
        return {label: list(range(counts.get(label, 0), n)) for label, n in grow.items()}

    @staticmethod
    def cost_s(summary: pd.DataFrame, grow: Mapping[str, int], counts: Mapping[str, int], workers: int) -> float:
        """Wall seconds the round would take: each new run costs what that row's runs took, start to end."""
        fallback = summary["s_per_epoch"] * summary["epochs"]  # runs from stores that lack start and end times
        per_run = dict(zip(summary["label"], summary["s_per_run"].fillna(fallback)))
        total = sum(per_run[label] * (n - counts.get(label, 0)) for label, n in grow.items())
        return total / max(1, workers) if math.isfinite(total) else 0.0
